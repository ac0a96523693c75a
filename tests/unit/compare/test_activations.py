from __future__ import annotations

import json

import pytest

from tests.unit.compare.compare_planted import PLANT_LAYER, tiny_dirs  # noqa: F401  (fixture)
from psylens.compare import artifacts as art
from psylens.compare.activations import ActivationsConfig, activation_diffs, run_activations
from psylens.compare.pair import load_pair, pair_run

CFG = ActivationsConfig(n_emotion=3, n_tasks=3, trace_tokens=3, lens_tokens=2, top_tokens=5, top_positions=5)
SHORT = dict(emotion_texts=["My dog ran away this morning.", "We won the final!"],
             task_texts=["Ava put the ball in the box and left. Where will she look?", "Why did Tom smile?"])


def test_rank1_change_starts_at_its_layer(tiny_dirs, tmp_path):
    pair = load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu")
    run = pair_run(tmp_path / "run", pair)
    head = run_activations(run, pair, CFG)
    res = json.loads((tmp_path / "run" / art.ACTIVATIONS).read_text())
    for name in ("emotions", "tasks"):
        s = res["sets"][name]
        assert s["first_changed_layer"] == PLANT_LAYER
        assert s["embedding_diff_norm"] == 0.0
        for row in s["layers"][:PLANT_LAYER]:
            assert row["token_diff_norm"] == 0.0 and row["mean_diff_norm"] == 0.0
        assert s["layers"][PLANT_LAYER]["token_diff_norm"] > 0
        lo, hi = s["layers"][PLANT_LAYER]["mean_diff_norm_ci95"]
        assert lo <= s["layers"][PLANT_LAYER]["mean_diff_norm"] <= hi
    assert head["tasks"]["first_changed_layer"] == PLANT_LAYER
    assert res["kl"]["mean_kl"] > 0
    assert len(res["kl"]["top_positions"]) == 5
    assert len(res["cosine_between_sets"]) == 3


def test_model_against_itself_is_within_float_noise(tiny_dirs):
    pair = load_pair(tiny_dirs["base"], tiny_dirs["base"], device="cpu")
    res = activation_diffs(pair, CFG, **SHORT)
    for s in res["sets"].values():
        assert s["first_changed_layer"] is None and s["layers_ranked"] == []
        assert all(row["token_diff_norm"] <= s["float_noise_level"] for row in s["layers"])
        assert all(row["token_cosine"] == pytest.approx(1.0, abs=1e-5) for row in s["layers"])
    assert res["kl"]["mean_kl"] == pytest.approx(0.0, abs=1e-6)


def test_planted_bias_ranked_first_and_lens_finds_its_tokens(tiny_dirs):
    pair = load_pair(tiny_dirs["bias_base"], tiny_dirs["bias"], device="cpu")
    res = activation_diffs(pair, CFG, **SHORT)
    for name in ("emotions", "tasks"):
        assert res["sets"][name]["layers_ranked"][0] == PLANT_LAYER
    lens = res["lens"]["layers"][PLANT_LAYER]
    promoted = tiny_dirs["bias_tokens"][0]
    assert promoted in [t["id"] for t in lens["tuned"]]
    assert promoted in [t["id"] for t in lens["base"]]
    # control: the layer before the plant has no difference, so its lens is empty
    assert res["lens"]["layers"][PLANT_LAYER - 1]["base"] == []
    # control: the rank-1 change (not along that token) does not surface it
    other = activation_diffs(load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu"), CFG, **SHORT)
    assert promoted not in [t["id"] for t in other["lens"]["layers"][PLANT_LAYER]["tuned"]]


def test_config_is_validated():
    with pytest.raises(ValueError, match="lens_tokens"):
        ActivationsConfig(lens_tokens=0)
    with pytest.raises(ValueError, match="nothing to compare"):
        ActivationsConfig(n_emotion=0, n_tasks=0)


# -- per-layer KL (each model's own logit lens) ---------------------------------------------------------
def test_layer_kl_is_zero_for_a_model_against_itself(tiny_dirs, tmp_path):
    """Control: the base against itself gives exactly 0 at every layer (and its interval is [0, 0])."""
    pair = load_pair(tiny_dirs["bias_base"], tiny_dirs["bias_base"], device="cpu")
    run = pair_run(tmp_path / "run", pair)
    head = run_activations(run, pair, CFG, **SHORT)
    res = json.loads((tmp_path / "run" / art.ACTIVATIONS).read_text())
    rows = res["layer_kl"]["layers"]
    assert [r["layer"] for r in rows] == [0, 1, 2]
    assert all(r["kl"] == 0.0 and r["kl_lo"] == 0.0 and r["kl_hi"] == 0.0 for r in rows)
    assert res["layer_kl"]["first_nonzero_layer"] is None and head["layer_kl_first_nonzero_layer"] is None
    table = run.read_table(art.LAYER_KL)  # the same rows as a table
    assert tuple(table.columns) == art.LAYER_KL_COLUMNS and list(table["kl"]) == [0.0, 0.0, 0.0]


def test_layer_kl_starts_at_the_planted_bias_layer(tiny_dirs, tmp_path):
    """A bias planted in one layer's residual: ~0 below that layer, > 0 (interval above 0) from it on; the last
    layer's logit-lens KL is the models' own output KL(base ‖ tuned)."""
    import torch

    from psylens.compare.activations import _encode, _trace, layer_kl, paired_pass

    pair = load_pair(tiny_dirs["bias_base"], tiny_dirs["bias"], device="cpu")
    run = pair_run(tmp_path / "run", pair)
    head = run_activations(run, pair, CFG, **SHORT)
    res = json.loads((tmp_path / "run" / art.ACTIVATIONS).read_text())
    rows = res["layer_kl"]["layers"]
    for r in rows[:PLANT_LAYER]:
        assert r["kl"] == pytest.approx(0.0, abs=1e-7)
    for r in rows[PLANT_LAYER:]:
        assert r["kl"] > 1e-3 and r["kl_lo"] > 0 and r["kl_lo"] <= r["kl"] <= r["kl_hi"]
    assert res["layer_kl"]["first_nonzero_layer"] == PLANT_LAYER == head["layer_kl_first_nonzero_layer"]
    assert len(res["layer_kl"]["per_text"]) == len(SHORT["task_texts"])
    assert run.read_table(art.LAYER_KL)["kl"].tolist() == pytest.approx([r["kl"] for r in rows])
    # the last layer read through the final norm and unembedding is the model's own output
    ids = _encode(pair.base, SHORT["task_texts"][0], CFG.format)
    p = paired_pass(pair, _trace(pair.tuned, ids, CFG.trace_tokens), n_prompt=len(ids))
    with torch.no_grad():
        lb = torch.log_softmax(pair.base.hf_model(input_ids=p.ids[None]).logits[0].float(), -1)
        lt = torch.log_softmax(pair.tuned.hf_model(input_ids=p.ids[None]).logits[0].float(), -1)
    pos = torch.arange(p.n_prompt - 1, len(p.ids) - 1)
    out_kl = float((lb.exp() * (lb - lt)).sum(-1)[pos].mean())
    lk = layer_kl(pair, p, "trace")
    assert float(lk[-1]) == pytest.approx(out_kl, rel=1e-4)
    assert float(lk[0]) == pytest.approx(0.0, abs=1e-7)
    # "all" positions: the same pattern
    assert float(layer_kl(pair, p, "all")[0]) == pytest.approx(0.0, abs=1e-7) and float(layer_kl(pair, p, "all")[-1]) > 0


def test_layer_kl_off_writes_no_table(tiny_dirs, tmp_path):
    from dataclasses import replace

    pair = load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu")
    run = pair_run(tmp_path / "run", pair)
    run_activations(run, pair, CFG, **SHORT)
    assert run.has(art.LAYER_KL)
    run_activations(run, pair, replace(CFG, layer_kl="off"), **SHORT)
    assert "layer_kl" not in json.loads(run.file(art.ACTIVATIONS).read_text()) and not run.has(art.LAYER_KL)
    with pytest.raises(ValueError, match="'trace'"):
        ActivationsConfig(layer_kl="layers")
