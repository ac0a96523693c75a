"""The model organism on the embedded SmolLM2: one real GRPO step, and the shipped alias."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psylens.compare.organism import OrganismConfig, read_reward_curve, train_organism
from psylens.models import DEFAULT_MODEL, ORGANISMS, load_model

pytestmark = pytest.mark.integration


def _changed_modules(a: torch.nn.Module, b: torch.nn.Module) -> set[str]:
    pb = dict(b.named_parameters())
    return {n.rsplit(".", 2)[-2] for n, p in a.named_parameters() if not torch.equal(p, pb[n])}


@pytest.mark.slow
def test_one_grpo_step_on_smollm_writes_a_loadable_adapter(smollm, tmp_path: Path) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = OrganismConfig(max_steps=1, num_generations=2, max_completion_length=8, save_steps=1, learning_rate=1e-2)
    r = train_organism(cfg, tmp_path / "org", progress=False)
    assert r.steps == 1
    curve = read_reward_curve(tmp_path / "org")
    assert curve["complete"] and len(curve["steps"]) == 1 and curve["steps"][0]["n"] == 2
    tuned = load_model(DEFAULT_MODEL, adapter=str(tmp_path / "org"), device="cpu")
    changed = _changed_modules(tuned.hf_model, smollm.hf_model)
    # only the LoRA's modules can change (a zero advantage leaves them equal too); never anything else
    assert changed <= {"q_proj", "v_proj"}


def test_shipped_organism_alias_loads_offline(smollm) -> None:
    src = ORGANISMS["smollm2-135m-psy-grpo"]
    try:
        src.adapter_dir()
    except ValueError as e:
        pytest.skip(f"adapter not shipped in this checkout: {e}")
    tuned = load_model("smollm2-135m-psy-grpo", device="cpu")
    assert tuned.spec == "smollm2-135m-psy-grpo" and tuned.adapter is not None
    changed = _changed_modules(tuned.hf_model, smollm.hf_model)
    assert changed and changed <= {"q_proj", "v_proj"}  # the organism differs from its base, only where trained
    assert _changed_modules(smollm.hf_model, smollm.hf_model) == set()  # control: the base against itself
    out = tuned.generate("How are you?", max_new_tokens=4)
    assert len(out) == 1 and isinstance(out[0], str) and out[0]  # generate always returns a list
