"""psylens compare on the embedded SmolLM2 against SmolLM2 + a small random LoRA adapter (made in tmp_path)."""

from __future__ import annotations

import json

import pytest
import torch

from psylens.compare import artifacts as art
from psylens.compare.activations import ActivationsConfig
from psylens.compare.pair import ModelPair
from psylens.compare.pipeline import CompareConfig, run_compare
from psylens.models import DEFAULT_MODEL, Model, load_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYERS = [4, 17]
TARGETS = ["q_proj", "down_proj"]


@pytest.fixture(scope="module")
def lora_pair(smollm, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    adapter = tmp_path_factory.mktemp("compare_lora") / "adapter"
    fresh = load_model(DEFAULT_MODEL, device="cpu")  # get_peft_model edits the model: never the shared fixture
    torch.manual_seed(0)
    peft = get_peft_model(fresh.hf_model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, layers_to_transform=LAYERS))
    with torch.no_grad():
        for mod in peft.modules():
            if hasattr(mod, "lora_B") and "default" in mod.lora_B:
                mod.lora_B["default"].weight.normal_(std=0.01)
    peft.save_pretrained(str(adapter))
    tuned = Model(peft.merge_and_unload(), fresh.tokenizer, spec=DEFAULT_MODEL, adapter=str(adapter))
    return ModelPair(smollm, tuned, adapter=str(adapter), adapter_on_base=True)


def test_weights_find_exactly_the_adapted_modules(lora_pair, tmp_path):
    cfg = CompareConfig(sections=("weights", "activations", "features"), plots=False,
                        activations=ActivationsConfig(n_emotion=1, n_tasks=1, trace_tokens=2, lens_tokens=1))
    summary = run_compare(lora_pair, tmp_path / "run", cfg)
    rows = json.loads((tmp_path / "run" / art.WEIGHTS).read_text())
    expected = {f"model.layers.{layer}.{'self_attn' if t == 'q_proj' else 'mlp'}.{t}" for layer in LAYERS for t in TARGETS}
    assert len(rows) == 30 * 7
    changed = {r["module"] for r in rows if r["relative_norm"] > 0}
    assert changed == expected
    assert {r["module"] for r in rows[: len(expected)]} == expected
    assert all(r["effective_rank"] <= 4 + 1e-6 for r in rows[: len(expected)])
    assert summary["sections"]["weights"]["headline"]["exact_lora"] is True
    acts = summary["sections"]["activations"]["headline"]
    assert acts["emotions"]["first_changed_layer"] == LAYERS[0]
    assert summary["sections"]["features"]["status"] == "skipped"
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["models"]["tuned"]["adapter"] == lora_pair.adapter
    assert run_json["models"]["base"]["fingerprint"] != run_json["models"]["tuned"]["fingerprint"]
