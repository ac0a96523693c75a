"""Feature steering of new traces: the counts are right on known records, and only the steered conditions change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from psylens.saes.steer import condition_summary, feature_steering


def test_condition_summary_counts_the_label_per_trace():
    recs = [
        {"prompt": "p", "text": "She feels sad. Let me check that again. Answer: B", "correct": True},
        {"prompt": "p", "text": "He is at home. Let me double-check. Is that right? Answer: A", "correct": False},
        {"prompt": "p", "text": "The ball is in the box. Answer: C", "correct": True},
    ]
    s = condition_summary(recs, "reflection")
    assert s["label_steps_per_trace"] == pytest.approx(1.0)  # 1 + 2 + 0 over three traces
    assert s["n_traces"] == 3 and s["accuracy"] == pytest.approx(2 / 3)
    lo, hi = s["accuracy_ci"]
    assert lo < 2 / 3 < hi
    # control: a label none of these steps has
    assert condition_summary(recs, "backtracking")["label_steps_per_trace"] == 0.0


@pytest.mark.slow
def test_feature_steering_changes_only_the_steered_conditions(tiny_model, tmp_path, monkeypatch):
    from psylens.tasks import Task

    m = tiny_model("llama")
    d = tmp_path / "sae"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    w_dec = torch.randn(8, m.d_model, generator=g)
    save_file({"W_dec": w_dec, "W_enc": w_dec.T.contiguous(), "b_enc": torch.zeros(8), "b_dec": torch.zeros(m.d_model)},
              str(d / "sae_weights.safetensors"))
    (d / "step_sae.json").write_text(json.dumps({"model": "tiny-llama", "site": "resid_post", "layer": 1}))
    tasks = [Task(id=f"t{i}", kind="emotion_inference", story="Ann lost her keys.", question="How does Ann feel?",
                  choices=("calm", "upset"), answer="upset", split="test") for i in range(2)]
    rep = feature_steering(m, d, 3, "reflection", alphas=[50.0], tasks=tasks, samples=1, max_new_tokens=6,
                           batch_size=2, progress=False)
    assert set(rep["conditions"]) == {"none", "feature@50", "random@50"} and rep["layer"] == 1
    texts = {}
    for name in rep["conditions"]:
        lines = (d / "steering" / name.replace("@", "_at_") / "traces" / "traces.jsonl").read_text().splitlines()
        texts[name] = [json.loads(x)["text"] for x in lines]
    assert texts["feature@50"] != texts["none"] and texts["random@50"] != texts["none"]
    # the random control has the feature vector's norm
    c = rep["conditions"]
    assert c["random@50"]["vector_norm"] == pytest.approx(c["feature@50"]["vector_norm"], rel=1e-5)
    assert c["feature@50"]["vector_norm"] == pytest.approx(50 * float(w_dec[3].norm()), rel=1e-5)
    # fluency, read by the unsteered model after the trace's own formatted prompt (known answer: the same number
    # computed directly, outside any steering; perplexity itself is tested in the steering metrics' tests)
    from psylens.saes.traces import format_trace_prompt
    from psylens.steering.metrics import perplexity

    for name in ("none", "feature@50"):
        recs = [json.loads(x) for x in (d / "steering" / name.replace("@", "_at_") / "traces" / "traces.jsonl")
                .read_text().splitlines()]
        want = perplexity(m, [format_trace_prompt(m, r["prompt"]) for r in recs], [r["text"] for r in recs], format="raw")
        assert c[name]["perplexity"] == pytest.approx(want, rel=1e-5), name
    assert all(np.isfinite(v["perplexity"]) and v["perplexity"] > 1 for v in c.values())
    assert rep["effects"]["feature@50"]["perplexity_ratio"] == pytest.approx(c["feature@50"]["perplexity"] / c["none"]["perplexity"])
    # control: the unsteered condition is reproducible (same seeds) — steering is the only difference
    again = feature_steering(m, d, 3, "reflection", alphas=[50.0], tasks=tasks, samples=1, max_new_tokens=6,
                             batch_size=2, out=tmp_path / "again", progress=False)
    plain = [json.loads(x)["text"] for x in (tmp_path / "again" / "none" / "traces" / "traces.jsonl").read_text().splitlines()]
    assert plain == texts["none"] and again["conditions"]["none"]["n_traces"] == 2
    assert again["conditions"]["none"]["perplexity"] == pytest.approx(c["none"]["perplexity"], rel=1e-6)
    assert json.loads((d / "steering" / "summary.json").read_text())["feature"] == 3
    # a resumed run re-reads no perplexity: each condition's is kept beside a digest of its texts
    import psylens.steering.metrics as metrics

    def no_read(*args, **kwargs):
        raise AssertionError("perplexity read again")

    monkeypatch.setattr(metrics, "perplexity", no_read)
    resumed = feature_steering(m, d, 3, "reflection", alphas=[50.0], tasks=tasks, samples=1, max_new_tokens=6,
                               batch_size=2, progress=False)
    assert {k: v["perplexity"] for k, v in resumed["conditions"].items()} == {k: v["perplexity"] for k, v in c.items()}
    # control: changed texts are read again
    path = d / "steering" / "feature_at_50" / "traces" / "traces.jsonl"
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    recs[0]["text"] += " More."
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(AssertionError, match="read again"):
        feature_steering(m, d, 3, "reflection", alphas=[50.0], tasks=tasks, samples=1, max_new_tokens=6,
                         batch_size=2, progress=False)


def test_feature_ablation_projects_the_direction_out_beside_a_random_one(tiny_model, tmp_path, monkeypatch):
    """``ablate=True``: while ``feature@ablate`` generates, the stream carries nothing along the decoder column
    (a known answer, read inside each condition's generate call); ``random@ablate`` leaves it (the control);
    the target reads the ablation."""
    import psylens.saes.traces as traces_mod
    from psylens.interventions import record
    from psylens.tasks import Task

    m = tiny_model("llama")
    d = tmp_path / "sae"
    d.mkdir()
    w_dec = torch.randn(8, m.d_model, generator=torch.Generator().manual_seed(0))
    save_file({"W_dec": w_dec, "W_enc": w_dec.T.contiguous(), "b_enc": torch.zeros(8), "b_dec": torch.zeros(m.d_model)},
              str(d / "sae_weights.safetensors"))
    (d / "step_sae.json").write_text(json.dumps({"model": "tiny-llama", "site": "resid_post", "layer": 1}))
    u = w_dec[3] / w_dec[3].norm()
    enc = m.tokenizer([m.format_prompt("Ann lost her keys. How does Ann feel?")], return_tensors="pt",
                      add_special_tokens=False)
    seen: dict[str, float] = {}
    real = traces_mod.generate_traces

    def spy(model, tasks, folder, **kw):
        with torch.no_grad(), record(model.hf_model, ["resid_post"], [1]) as rec:
            model.hf_model(**enc)
        seen[Path(folder).name] = float((rec["resid_post", 1][0] @ u).abs().max())
        return real(model, tasks, folder, **kw)

    monkeypatch.setattr(traces_mod, "generate_traces", spy)
    tasks = [Task(id=f"t{i}", kind="emotion_inference", story="Ann lost her keys.", question="How does Ann feel?",
                  choices=("calm", "upset"), answer="upset", split="test") for i in range(2)]
    rep = feature_steering(m, d, 3, "reflection", alphas=[], ablate=True, tasks=tasks, samples=1, max_new_tokens=6,
                           batch_size=2, progress=False)
    assert set(rep["conditions"]) == {"none", "feature@ablate", "random@ablate"} and rep["ablate"] is True
    assert seen["feature_at_ablate"] < 1e-4 < 0.01 < seen["none"]  # nothing left along the feature
    assert seen["random_at_ablate"] == pytest.approx(seen["none"], rel=0.5)  # the control keeps it
    assert rep["conditions"]["feature@ablate"]["vector_norm"] == 0.0  # nothing of fixed norm is added
    assert rep["target"] is None and rep["target_ablate"]["condition"] == "feature@ablate"
    assert set(rep["effects"]) == {"feature@ablate", "random@ablate"}
    with pytest.raises(ValueError, match="ablate=True"):
        feature_steering(m, d, 3, "reflection", alphas=[], tasks=tasks, progress=False)


def _recs(n_reflect: list[int], correct: list[bool]) -> list[dict]:
    return [{"id": f"t{i // 2}-{i % 2}", "task_id": f"t{i // 2}", "prompt": "p",
             "text": "The ball is in the box. " + "Let me check that again. " * k + "Answer: B", "correct": c}
            for i, (k, c) in enumerate(zip(n_reflect, correct))]


def test_paired_effect_recovers_a_planted_halving_and_a_null_control():
    from psylens.saes.steer import _target, paired_effect

    counts = [2, 4, 0, 2, 6, 2, 4, 0, 2, 2, 4, 2]
    acc = [True, False] * 6
    none = _recs(counts, acc)
    halved = _recs([k // 2 for k in counts], acc)
    e = paired_effect(none, list(reversed(halved)), "reflection")  # pairing by id, not by order
    assert e["n_pairs"] == 12 and e["label_steps_ratio"] == pytest.approx(0.5)
    lo, hi = e["label_steps_ratio_ci"]
    assert lo <= 0.5 <= hi and hi < 1.0
    assert e["label_steps_diff"]["diff"] == pytest.approx(-sum(counts) / 24) and e["label_steps_diff"]["ci95"][1] < 0
    assert e["accuracy_diff"]["diff"] == 0.0
    same_e = paired_effect(none, none, "reflection")
    t = _target({"feature@-4": {**e, "perplexity_ratio": 1.1}, "random@-4": same_e}, [-4.0, 4.0])
    assert t["met"] and t["fluent"] and t["random_ratio"] == pytest.approx(1.0)
    # the same halving with broken text (perplexity 3× the unsteered text's): not met, though the bare bar holds
    broken = _target({"feature@-4": {**e, "perplexity_ratio": 3.0}, "random@-4": same_e}, [-4.0])
    assert broken["met_ignoring_fluency"] and not broken["fluent"] and not broken["met"]
    assert not _target({"feature@-4": e, "random@-4": same_e}, [-4.0])["met"]  # fluency not measured: not met
    # the random control halving the label too: the count cannot tell the feature from noise
    noisy = _target({"feature@-4": {**e, "perplexity_ratio": 1.0}, "random@-4": {**e, "perplexity_ratio": 1.0}}, [-4.0])
    assert noisy["fluent"] and not noisy["control_fails"] and not noisy["met"]
    # control: the same traces against themselves change nothing
    same = paired_effect(none, none, "reflection")
    assert same["label_steps_ratio"] == pytest.approx(1.0) and same["label_steps_diff"]["ci95"] == [0.0, 0.0]
    # an accuracy drop of more than 5 points fails the target even when the label halves
    worse = _recs([k // 2 for k in counts], [False] * 12)
    worse_t = _target({"feature@-4": {**paired_effect(none, worse, "reflection"), "perplexity_ratio": 1.0},
                       "random@-4": same_e}, [-4.0])
    assert worse_t["fluent"] and not worse_t["met"]
    with pytest.raises(ValueError, match="no trace id"):
        paired_effect(none, [dict(r, id="other") for r in none], "reflection")
    with pytest.raises(ValueError, match="not one of"):
        paired_effect(none, none, "nostalgia")


def _run_with_sae(run, d_model: int):
    """The run with an SAE folder written by hand (weights, step_sae.json, features.json)."""
    d = run.path / "saes" / "tiny"
    d.mkdir(parents=True)
    w_dec = torch.randn(8, d_model, generator=torch.Generator().manual_seed(0))
    save_file({"W_dec": w_dec, "W_enc": w_dec.T.contiguous(), "b_enc": torch.zeros(8), "b_dec": torch.zeros(d_model)},
              str(d / "sae_weights.safetensors"))
    (d / "step_sae.json").write_text(json.dumps({"model": "tiny-llama", "site": "resid_post", "layer": 1}))
    feats = {"labels": {"reflection": {"feature": 5, "auroc": 0.9, "control_auroc": 0.5}, "backtracking": {"feature": None}},
             "features": [{"feature": j, "mean_activation": 2.5 if j != 6 else 0.0} for j in range(8)]}
    (d / "features.json").write_text(json.dumps(feats))
    return run, w_dec


@pytest.mark.slow
def test_run_feature_steering_picks_the_best_feature_and_scales_by_its_activation(tiny_model, task_run):
    from typer.testing import CliRunner

    from psylens.cli import app
    from psylens.saes.steer import run_feature_steering

    m = tiny_model("llama")
    run, w_dec = _run_with_sae(task_run, m.d_model)
    rep = run_feature_steering(run.path, "tiny", "reflection", strengths=[-4.0], model=m, samples=1,
                               max_new_tokens=5, batch_size=2, progress=False)
    assert rep["feature"] == 5 and rep["alphas"] == [pytest.approx(-10.0)]  # -4 x mean activation 2.5
    assert set(rep["conditions"]) == {"none", "feature@-10", "random@-10"}
    assert set(rep["effects"]) == {"feature@-10", "random@-10"} and rep["effects"]["feature@-10"]["n_pairs"] == 2
    assert rep["conditions"]["feature@-10"]["vector_norm"] == pytest.approx(10 * float(w_dec[5].norm()), rel=1e-5)
    assert rep["target"]["condition"] == "feature@-10"
    saved = json.loads((run.path / "saes" / "tiny" / "steering" / "summary.json").read_text())
    assert saved["feature"] == 5 and saved["mean_activation"] == 2.5
    assert json.loads((run.path / "steps" / "sae-steer-tiny.json").read_text())["config"]["tasks"].endswith("tasks.jsonl")
    # bad input: a dead feature, a label with no best feature, an unknown SAE
    with pytest.raises(ValueError, match="never fires"):
        run_feature_steering(run.path, "tiny", feature=6, model=m)
    with pytest.raises(ValueError, match="no best feature"):
        run_feature_steering(run.path, "tiny", "backtracking", model=m)
    with pytest.raises(ValueError, match="SAEs there: \\['tiny'\\]"):
        run_feature_steering(run.path, "other", model=m)
    with pytest.raises(ValueError, match="non-zero"):
        run_feature_steering(run.path, "tiny", strengths=[0.0], model=m)
    # the CLI's argument checks reach the same errors before any model loads
    res = CliRunner().invoke(app, ["sae", "steer", "--run", str(run.path), "--name", "other"])
    assert res.exit_code != 0 and "SAEs there" in str(res.exception)
