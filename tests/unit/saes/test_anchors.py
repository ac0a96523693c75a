"""Step importance (Thought Anchors): a planted deciding step is recovered, a prefix-blind model scores ≈ 0,
features correlated with importance are found and the shuffled control is ≈ 0; the run step on a tiny model."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from psylens.saes.anchors import (
    ANSWER_CUE,
    answer_stats,
    feature_importance_correlation,
    importance_by_label,
    run_anchors,
    step_importance,
)

PROMPT = ("Mia put her keys in the drawer and left the room.\n\nQuestion: Where will Mia look first?\n"
          "A. drawer\nB. table\nC. bag\nD. shelf\n\nThink step by step, then give the letter.")
KEY = "ZETA"
# step 1 carries the key: a perspective-taking step ("She knows ...")
PLANTED_TEXT = ("We read the story carefully. She knows the marker ZETA is there. "
                "Other people matter too. We weigh everything now.")


def _uniform(seed: int) -> str:
    return "ABCD"[random.Random(seed).randrange(4)]


def planted_generator(prompts, seeds, max_new_tokens, temperature):
    """With the key in the prefix every rollout answers A; without it the answer is uniform (per-row seed)."""
    out = []
    for p, s in zip(prompts, seeds):
        if p.endswith(ANSWER_CUE):
            out.append(" A")
        elif KEY in p:
            out.append(" So it is settled.\nAnswer: A")
        else:
            out.append(f" Hard to say.\nAnswer: {_uniform(s)}")
    return out


def blind_generator(prompts, seeds, max_new_tokens, temperature):
    """Control: the answer ignores the prefix entirely."""
    return [f" Hmm.\nAnswer: {_uniform(s)}" for s in seeds]


def _traces(n: int, text: str = PLANTED_TEXT) -> list[dict]:
    return [{"id": f"t{i}", "task_id": "fb-1", "kind": "false_belief", "prompt": PROMPT, "text": text, "answer": "A"}
            for i in range(n)]


def test_answer_stats_definitions():
    s = answer_stats(["A"] * 4, ["A", "B", "C", "D"], "A")
    assert s["tv"] == pytest.approx(0.75)
    assert s["resampling"] == pytest.approx(0.75) and s["change_without"] == pytest.approx(0.75)
    assert s["change_with"] == 0.0 and s["p_value"] == pytest.approx(10 / 70)  # 10 of the 70 splits are as extreme
    assert 0 < s["tv_null"] < s["tv"] and s["importance"] == pytest.approx(s["tv"] - s["tv_null"])
    same = answer_stats(["A", "B"] * 2, ["B", "A"] * 2, "A")
    assert same["tv"] == 0.0 and same["importance"] < 0 and same["p_value"] == 1.0 and same["kl"] == pytest.approx(0.0)


def test_planted_step_has_the_top_importance_and_the_others_are_near_zero(tiny_model):
    model = tiny_model("llama")
    table = step_importance(model, _traces(4), n_rollouts=32, seed=1, generator=planted_generator, batch_size=64)
    assert len(table) == 16 and set(table["n_steps"]) == {4}
    for _tid, g in table.groupby("trace_id"):
        imp = g.sort_values("step")["importance"].to_numpy()
        assert int(np.argmax(imp)) == 1
        assert imp[1] > 0.5
        assert np.abs(np.delete(imp, 1)).max() < 0.2
    key = table[table["step"] == 1]
    assert (key["p_value"] < 0.01).all() and (key["p_orig_with"] == 1.0).all()
    # the simpler reading: without the step the original answer changes ~3/4 of the time
    assert key["change_without"].between(0.5, 0.95).all() and (key["change_with"] == 0).all()
    assert table.attrs["cost"]["rollouts"] == 4 * 5 * 32 and table.attrs["cost"]["forced"] == 0
    # which behaviours are anchors: the planted step is the perspective-taking one
    assert "perspective_taking" in key["labels"].iloc[0]
    by = importance_by_label(table, n_boot=300).set_index("label")
    pt = by.loc["perspective_taking"]
    assert pt["n_steps"] == 4 and pt["ci_low"] > 0.4 and pt["diff_ci_low"] > 0.3
    assert by.loc["unlabelled", "mean"] < 0.2


def test_control_prefix_blind_answers_give_importance_within_noise_of_zero(tiny_model):
    model = tiny_model("llama")
    table = step_importance(model, _traces(5), n_rollouts=32, seed=2, generator=blind_generator, batch_size=64)
    imp = table["importance"].to_numpy()
    assert len(imp) == 20
    assert abs(imp.mean()) < 0.06 and np.abs(imp).max() < 0.3
    assert (table["p_value"] > 0.01).mean() > 0.9
    # the raw TV is not ≈ 0 with 32 rollouts: the null correction is what centres it
    assert table["tv"].mean() > 0.1
    by = importance_by_label(table, n_boot=300).set_index("label")
    lo, hi = by.loc["perspective_taking", ["ci_low", "ci_high"]]
    assert lo < 0.1 and hi > -0.1


def test_unfinished_rollouts_are_forced_to_an_answer(tiny_model):
    model = tiny_model("llama")

    def gen(prompts, seeds, n, t):
        return [" C" if p.endswith(ANSWER_CUE) else " and then she" for p in prompts]

    table = step_importance(model, _traces(1), n_rollouts=2, generator=gen)
    assert set(table["answers_with"]) == {"C:2"} and (table["forced_with"] == 1.0).all()
    off = step_importance(model, _traces(1), n_rollouts=2, generator=gen, force_answer=False)
    assert set(off["answers_with"]) == {"none:2"} and off.attrs["cost"]["unparsed"] == 10


def test_feature_correlation_finds_the_planted_feature_and_the_shuffled_control_is_near_zero():
    rng = np.random.default_rng(0)
    n, f = 400, 32
    importance = rng.normal(size=n)
    z = np.maximum(rng.normal(size=(n, f)), 0)  # sparse-ish, unrelated
    z[:, 7] = np.maximum(importance + 0.3 * rng.normal(size=n) + 1.0, 0)
    z[:, 30] = 0.0  # dead: not tested
    rep = feature_importance_correlation(z, importance, seed=0)
    assert rep["top"][0]["feature"] == 7 and rep["top"][0]["spearman"] > 0.85 and rep["top"][0]["p_value"] < 1e-6
    assert abs(rep["top"][0]["control_spearman"]) < 0.15
    assert rep["control_max_abs_spearman"] < 0.25 and rep["n_tested"] == 31 and rep["spearman"][30] is None
    # control: features unrelated to importance look like the shuffled control
    null = feature_importance_correlation(np.delete(z, 7, axis=1), importance, seed=0)
    assert null["max_abs_spearman"] < 0.25 and null["mean_abs_spearman"] < 0.08
    with pytest.raises(ValueError, match="one importance per step"):
        feature_importance_correlation(z, importance[:-1])


def test_bad_arguments_say_what_is_valid(tiny_model):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="n_rollouts"):
        step_importance(model, _traces(1), n_rollouts=0, generator=blind_generator)
    with pytest.raises(ValueError, match="no trace with at least one step"):
        step_importance(model, [{"id": "x", "prompt": PROMPT, "text": "  "}], generator=blind_generator)


def test_run_anchors_on_a_tiny_model_writes_the_table_summary_and_feature_correlations(tiny_model, tmp_path):
    from psylens.runs import open_or_create_run
    from psylens.saes import artifacts as art
    from psylens.saes.train import SAETrainConfig, build_training_sae, save_sae

    model = tiny_model("llama")
    run = open_or_create_run(tmp_path / "run", command="psylens traces", model=model)
    (run.path / "traces").mkdir()
    recs = [{"id": f"t{i}#0", "task_id": f"t{i}", "kind": "false_belief", "prompt": PROMPT,
             "text": "Mia left the room. She thinks the keys are in the drawer. Answer: A", "answer": "A",
             "correct": True, "seed": i} for i in range(3)]
    (run.path / art.TRACES).write_text("".join(json.dumps(r) + "\n" for r in recs))
    sae = build_training_sae(SAETrainConfig(arch="standard", d_sae=16, seed=0), d_in=model.d_model)
    folder = save_sae(sae, run.file(art.sae_dir("tiny")))
    (folder / art.STEP_SAE).write_text(json.dumps({"model": "tiny-llama", "site": "resid_post", "layer": 1,
                                                   "pooling": "delimiter", "segmentation": "sentence"}))
    summary = run_anchors(run.path, model=model, n_rollouts=2, max_new_tokens=3, max_traces=2, name="tiny",
                          batch_size=4, progress=False)
    table = run.read_table(art.ANCHORS)
    assert len(table) == 6 and set(table["trace_id"]) == {"t0#0", "t1#0"}
    assert summary["cost"]["rollouts"] == 2 * 4 * 2 and summary["cost"]["seconds_per_trace"] >= 0
    on_disk = json.loads(run.file(art.ANCHORS_SUMMARY).read_text())
    assert on_disk["n_steps"] == 6 and {r["label"] for r in on_disk["by_label"]} >= {"perspective_taking", "unlabelled"}
    assert on_disk["features"]["sae"] == "tiny" and on_disk["features"]["n_features"] == 16
    assert "sae-anchors" in run.steps
    with pytest.raises(ValueError, match="no SAE 'missing'"):
        run_anchors(run.path, model=model, name="missing", progress=False)
