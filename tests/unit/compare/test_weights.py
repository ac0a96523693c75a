from __future__ import annotations

import json

import pytest
import torch

from psylens.compare import artifacts as art
from psylens.compare.pair import load_pair, pair_run
from psylens.compare.weights import (
    WeightsConfig,
    changed_fraction,
    effective_rank,
    lora_deltas,
    run_weights,
    weight_diffs,
)
from psylens.runs import open_run

from tests.unit.compare.compare_planted import PLANT_LAYER, PLANT_MODULE, tiny_dirs  # noqa: F401  (fixture)


def test_effective_rank_known_spectra():
    assert effective_rank(torch.tensor([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.ones(5)) == pytest.approx(5.0)
    assert effective_rank(torch.zeros(4)) == 0.0


def test_changed_fraction_ignores_sub_ulp_noise():
    w = torch.ones(10, 10, dtype=torch.float64)
    noise = torch.full_like(w, torch.finfo(torch.float32).eps / 4)
    assert changed_fraction(w, noise, torch.float32) == 0.0
    real = torch.zeros_like(w)
    real[0, :5] = 1e-3
    assert changed_fraction(w, real, torch.float32) == pytest.approx(0.05)
    # bf16 tolerance is coarser: a 1e-3 relative change is within one bf16 ulp
    assert changed_fraction(w, real, torch.bfloat16) == 0.0


def test_planted_rank1_change_ranked_first(tiny_dirs, tmp_path):
    pair = load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu")
    run = pair_run(tmp_path / "run", pair)
    run_weights(run, pair)
    rows = json.loads((tmp_path / "run" / art.WEIGHTS).read_text())
    assert list(rows[0]) == list(art.WEIGHT_KEYS)
    assert rows[0]["module"] == f"model.layers.{PLANT_LAYER}.{PLANT_MODULE}"
    assert rows[0]["layer"] == PLANT_LAYER
    assert rows[0]["effective_rank"] == pytest.approx(1.0, abs=1e-3)
    assert rows[0]["changed_fraction"] > 0.9
    # every other module is untouched: exactly zero
    assert all(r["relative_norm"] == 0.0 and r["changed_fraction"] == 0.0 for r in rows[1:])
    norms = [r["relative_norm"] for r in rows]
    assert norms == sorted(norms, reverse=True)
    dirs = open_run(tmp_path / "run").read_tensors(art.WEIGHT_DIRECTIONS)
    vec = dirs[rows[0]["module"]]
    assert vec.shape == tiny_dirs["u"].shape
    assert abs(float(torch.nn.functional.cosine_similarity(vec, tiny_dirs["u"], dim=0))) >= 0.9
    # control: a random direction is far from u
    rnd = torch.randn(vec.shape[0], generator=torch.Generator().manual_seed(5))
    assert abs(float(torch.nn.functional.cosine_similarity(rnd, tiny_dirs["u"], dim=0))) < 0.9
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(meta["models"]) >= {"base", "tuned"}
    assert meta["models"]["base"]["fingerprint"] != meta["models"]["tuned"]["fingerprint"]


def test_model_against_itself_is_exactly_zero(tiny_dirs):
    pair = load_pair(tiny_dirs["base"], tiny_dirs["base"], device="cpu")
    rows, dirs, summary = weight_diffs(pair)
    assert rows and all(r.relative_norm == 0.0 and r.changed_fraction == 0.0 and r.effective_rank == 0.0 for r in rows)
    assert summary["modules_changed"] == 0 and summary["top_module"] is None
    assert all(float(v.abs().sum()) == 0.0 for v in dirs.values())


def test_lora_delta_is_exact_and_finds_adapted_modules(tiny_dirs, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_dirs["base"])
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=6, target_modules=["q_proj", "down_proj"],
                                                 layers_to_transform=[0, 2], init_lora_weights=False))
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    deltas = lora_deltas(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    plain = AutoModelForCausalLM.from_pretrained(tiny_dirs["base"])
    for name, delta in deltas.items():
        got = merged.get_submodule(name).weight - plain.get_submodule(name).weight
        torch.testing.assert_close(delta, got, atol=1e-6, rtol=1e-4)
    pair = load_pair(tiny_dirs["base"], tuned_adapter=tmp_path / "adapter", device="cpu")
    assert pair.adapter_on_base
    rows, _, summary = weight_diffs(pair)
    changed = {r.module for r in rows if r.relative_norm > 0}
    assert changed == set(deltas) and len(changed) == 4
    assert summary["exact_lora"] is True
    for r in rows:
        if r.module in changed:
            assert r.effective_rank <= 2.0 + 1e-6
    # control: without the adapter tensors (subtracting merged weights) the same modules are found
    rows2, _, _ = weight_diffs(pair, WeightsConfig(exact_lora=False))
    assert {r.module for r in rows2 if r.changed_fraction > 0} == changed


def test_incompatible_pair_is_refused(tiny_dirs, tiny_model):
    from psylens.compare.pair import ModelPair
    from psylens.models import load_model

    base = load_model(tiny_dirs["base"], device="cpu")
    with pytest.raises(ValueError, match="differ in"):
        ModelPair(base, tiny_model("gemma3"))
    with pytest.raises(ValueError, match="--tuned"):
        load_pair(tiny_dirs["base"])
