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
    assert set(rep["conditions"]) == {"none", "feature@50", "random@50", "random_feature@50"} and rep["layer"] == 1
    texts = {}
    for name in rep["conditions"]:
        lines = (d / "steering" / name.replace("@", "_at_") / "traces" / "traces.jsonl").read_text().splitlines()
        texts[name] = [json.loads(x)["text"] for x in lines]
    assert texts["feature@50"] != texts["none"] and texts["random@50"] != texts["none"]
    assert texts["random_feature@50"] != texts["none"]
    # both random controls have the feature vector's norm
    c = rep["conditions"]
    assert c["random@50"]["vector_norm"] == pytest.approx(c["feature@50"]["vector_norm"], rel=1e-5)
    assert c["random_feature@50"]["vector_norm"] == pytest.approx(c["feature@50"]["vector_norm"], rel=1e-5)
    assert c["random_feature@50"]["latent"] == rep["control_feature"] != 3
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
    ``random_feature@ablate`` removes the control latent's direction instead and leaves the feature's (the
    second control); the target reads the ablation with both controls."""
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
    seen_ctrl: dict[str, float] = {}
    real = traces_mod.generate_traces

    def spy(model, tasks, folder, **kw):
        with torch.no_grad(), record(model.hf_model, ["resid_post"], [1]) as rec:
            model.hf_model(**enc)
        h = rec["resid_post", 1][0]
        seen[Path(folder).name] = float((h @ u).abs().max())
        seen_ctrl[Path(folder).name] = h.clone()
        return real(model, tasks, folder, **kw)

    monkeypatch.setattr(traces_mod, "generate_traces", spy)
    tasks = [Task(id=f"t{i}", kind="emotion_inference", story="Ann lost her keys.", question="How does Ann feel?",
                  choices=("calm", "upset"), answer="upset", split="test") for i in range(2)]
    rep = feature_steering(m, d, 3, "reflection", alphas=[], ablate=True, tasks=tasks, samples=1, max_new_tokens=6,
                           batch_size=2, progress=False)
    assert set(rep["conditions"]) == {"none", "feature@ablate", "random@ablate", "random_feature@ablate"}
    assert rep["ablate"] is True and rep["random_feature"] is True
    assert seen["feature_at_ablate"] < 1e-4 < 0.01 < seen["none"]  # nothing left along the feature
    assert seen["random_at_ablate"] == pytest.approx(seen["none"], rel=0.5)  # the control keeps it
    c = rep["control_feature"]
    assert c not in (None, 3) and rep["conditions"]["random_feature@ablate"]["latent"] == c
    v = w_dec[c] / w_dec[c].norm()
    along = {k: float((h @ v).abs().max()) for k, h in seen_ctrl.items()}
    assert along["random_feature_at_ablate"] < 1e-4 < 0.01 < along["none"]  # the control latent's direction is gone
    assert seen["random_feature_at_ablate"] > 0.01  # and the feature's is not
    assert rep["conditions"]["feature@ablate"]["vector_norm"] == 0.0  # nothing of fixed norm is added
    assert rep["target"] is None and rep["target_ablate"]["condition"] == "feature@ablate"
    assert rep["target_ablate"]["random_feature_fails"] is not None  # the second control is read
    assert set(rep["effects"]) == {"feature@ablate", "random@ablate", "random_feature@ablate"}
    bare = feature_steering(m, d, 3, "reflection", alphas=[], ablate=True, tasks=tasks, samples=1, max_new_tokens=6,
                            batch_size=2, progress=False, random_feature=False, out=tmp_path / "bare")
    assert set(bare["conditions"]) == {"none", "feature@ablate", "random@ablate"} and bare["random_feature"] is False
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
    assert set(rep["conditions"]) == {"none", "feature@-10", "random@-10", "random_feature@-10"}
    assert set(rep["effects"]) == {"feature@-10", "random@-10", "random_feature@-10"}
    assert rep["effects"]["feature@-10"]["n_pairs"] == 2
    # the random feature: a live latent (6 never fires) other than 5, at the feature's norm; recorded in the step
    assert rep["control_feature"] not in (5, 6) and rep["conditions"]["random_feature@-10"]["latent"] == rep["control_feature"]
    assert rep["conditions"]["random_feature@-10"]["vector_norm"] == pytest.approx(10 * float(w_dec[5].norm()), rel=1e-5)
    assert rep["conditions"]["feature@-10"]["vector_norm"] == pytest.approx(10 * float(w_dec[5].norm()), rel=1e-5)
    assert rep["target"]["condition"] == "feature@-10"
    saved = json.loads((run.path / "saes" / "tiny" / "steering" / "summary.json").read_text())
    assert saved["feature"] == 5 and saved["mean_activation"] == 2.5
    step_config = json.loads((run.path / "steps" / "sae-steer-tiny.json").read_text())["config"]
    assert step_config["tasks"].endswith("tasks.jsonl")
    assert step_config["random_feature"] is True and step_config["control_feature"] == rep["control_feature"]
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
    res = CliRunner().invoke(app, ["sae", "steer", "--run", str(run.path), "--name", "other", "--no-random-feature"])
    assert res.exit_code != 0 and "SAEs there" in str(res.exception)  # the flag is accepted


def _orthogonal_sae(folder: Path, d_model: int, *, dead: tuple[int, ...] = ()) -> torch.Tensor:
    """An SAE folder whose 8 decoder columns are orthogonal with norms 1, 2, …, 8 (``dead`` ones zero).
    Returns ``W_dec`` ``[8, d_model]``."""
    folder.mkdir(parents=True, exist_ok=True)
    q, _ = torch.linalg.qr(torch.randn(d_model, 8, generator=torch.Generator().manual_seed(1)))
    w_dec = (q.T * torch.arange(1, 9, dtype=torch.float32).unsqueeze(-1)).contiguous()  # row j has norm j + 1
    for j in dead:
        w_dec[j] = 0.0
    save_file({"W_dec": w_dec, "W_enc": w_dec.T.contiguous(), "b_enc": torch.zeros(8), "b_dec": torch.zeros(d_model)},
              str(folder / "sae_weights.safetensors"))
    (folder / "step_sae.json").write_text(json.dumps({"model": "tiny-llama", "site": "resid_post", "layer": 1}))
    return w_dec


def test_random_feature_control_is_another_decoder_column_of_the_same_norm(tmp_path):
    """Known answer: the control is exactly one decoder column of the SAE (cosine 1), never the steered latent
    nor a dead one, rescaled to the steered vector's norm (columns here have norms 1–8), reproducible by seed;
    with frequencies it fires about as often as the feature (the clamp control's rule)."""
    from psylens.saes.clamp import matched_control_feature
    from psylens.saes.steer import random_control_feature, random_feature_like
    from psylens.steering.vector import SteeringVector

    d = tmp_path / "sae"
    w_dec = _orthogonal_sae(d, 32, dead=(6,))
    unit = w_dec / w_dec.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sv = SteeringVector.from_sae(d, 3, alpha=-4.0)
    picked = set()
    for seed in range(30):
        ctrl = random_feature_like(sv, d, seed=seed)
        cos = unit @ (ctrl.vectors[0] / ctrl.vectors[0].norm())  # [8]
        j = int(cos.argmax())
        assert float(cos[j]) == pytest.approx(1.0, abs=1e-5) and j not in (3, 6)  # a live column, not the feature
        assert ctrl.meta["feature"] == j and ctrl.meta["control_for"] == 3 and ctrl.meta["source"] == "random_feature"
        assert float(ctrl.norms()[0]) == pytest.approx(float(w_dec[3].norm()), rel=1e-6)  # the steered norm, not |W_dec[j]|
        assert (ctrl.alpha, ctrl.layers, ctrl.mode, ctrl.site) == (sv.alpha, sv.layers, sv.mode, sv.site)
        assert torch.equal(ctrl.vectors, random_feature_like(sv, d, seed=seed).vectors)  # reproducible
        assert random_control_feature(d, 3, seed=seed) == j
        picked.add(j)
    assert picked == {0, 1, 2, 4, 5, 7}  # the draw covers every live latent but the feature
    # the added vector really differs from the random-direction control (which is no decoder column)
    assert float((unit @ (sv.random_like(0).vectors[0] / sv.random_like(0).vectors[0].norm())).abs().max()) < 0.9
    # with features.json frequencies: a latent of similar frequency, the same one the clamp control takes
    freqs = [0.9, 0.05, 0.0, 0.3, 0.8, 0.25, 0.6, 0.01]  # within 2x of latent 3's 0.3: 5 (6 is dead: zero column)
    feats = [{"feature": j, "frequency": f} for j, f in enumerate(freqs)]
    for seed in range(5):
        assert random_control_feature(d, 3, seed=seed, features=feats) == 5
    assert random_feature_like(sv, d, seed=0, features=feats).meta["feature"] == 5
    assert matched_control_feature([f for f in feats if f["feature"] != 6], 3, seed=0) == 5
    # no frequencies recorded: latents with no mean activation are dead
    live = [{"feature": j, "mean_activation": 2.0 if j in (1, 3) else 0.0} for j in range(8)]
    assert {random_control_feature(d, 3, seed=s, features=live) for s in range(10)} == {1}
    # bad input: the feature itself, a dead latent, no other live latent, a vector not from an SAE
    with pytest.raises(ValueError, match="differ from the steered feature"):
        random_feature_like(sv, d, 3)
    with pytest.raises(ValueError, match="dead latent"):
        random_feature_like(sv, d, 6)
    with pytest.raises(ValueError, match="no live latent other than 3"):
        random_control_feature(d, 3, features=[{"feature": 3, "mean_activation": 1.0}])
    with pytest.raises(ValueError, match="from_sae"):
        random_feature_like(sv.random_like(0), d)
    with pytest.raises(ValueError, match="out of range"):
        random_control_feature(d, 8)


def test_planted_behaviour_moves_with_the_feature_not_with_the_random_feature(tiny_model, tmp_path, monkeypatch):
    """Known answer: a fake generator writes reflection steps only while the stream along latent 3's decoder
    column (read at the SAE's layer, inside each condition) is not pushed down. Suppressing latent 3 removes
    them (ratio 0); the random feature — another decoder column, same norm — moves the stream by exactly as much
    but elsewhere, and leaves them (ratio 1): the control fails the bar, as it must."""
    import psylens.saes.traces as traces_mod
    from psylens.interventions import record
    from psylens.tasks import Task

    m = tiny_model("llama")
    d = tmp_path / "sae"
    w_dec = _orthogonal_sae(d, m.d_model)
    u = w_dec[3] / w_dec[3].norm()
    enc = m.tokenizer([m.format_prompt("Ann lost her keys. How does Ann feel?")], return_tensors="pt",
                      add_special_tokens=False)

    def stream() -> torch.Tensor:
        with torch.no_grad(), record(m.hf_model, ["resid_post"], [1]) as rec:
            m.hf_model(**enc)
        return rec["resid_post", 1][0]  # [pos, d_model]

    clean = stream()
    alpha = -4.0
    shifts: dict[str, torch.Tensor] = {}

    def fake(model, tasks, folder, **kw):
        delta = (stream() - clean).mean(0)  # what the condition adds at every position
        shifts[Path(folder).name] = delta
        reflect = 2 if float(delta @ u) > 0.5 * alpha * float(w_dec[3].norm()) else 0  # behaviour follows latent 3
        path = Path(folder) / "traces" / "traces.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({
            "id": f"{t.id}#0", "task_id": t.id, "prompt": f"{t.story} {t.question}", "correct": True,
            "text": "The ball is in the box. " + "Let me check that again. " * reflect + "Answer: B"}) + "\n"
            for t in tasks))
        return {}

    monkeypatch.setattr(traces_mod, "generate_traces", fake)
    tasks = [Task(id=f"t{i}", kind="emotion_inference", story="Ann lost her keys.", question="How does Ann feel?",
                  choices=("calm", "upset"), answer="upset", split="test") for i in range(4)]
    rep = feature_steering(m, d, 3, "reflection", alphas=[alpha], tasks=tasks, samples=1, max_new_tokens=6,
                           batch_size=2, random_seed=0, progress=False)
    assert set(rep["conditions"]) == {"none", "feature@-4", "random@-4", "random_feature@-4"}
    ctrl = rep["control_feature"]
    assert ctrl not in (None, 3) and rep["random_feature"] is True
    assert rep["conditions"]["random_feature@-4"]["latent"] == ctrl and rep["conditions"]["feature@-4"]["latent"] == 3
    assert rep["conditions"]["random@-4"]["latent"] is None and rep["conditions"]["none"]["latent"] is None
    # in the model: the control adds -4 x |W_dec[3]| along the control latent's own decoder column
    rf = shifts["random_feature_at_-4"]
    assert float(rf.norm()) == pytest.approx(4 * float(w_dec[3].norm()), rel=1e-4)
    assert float(rf @ w_dec[ctrl]) / float(rf.norm() * w_dec[ctrl].norm()) == pytest.approx(-1.0, abs=1e-4)
    assert float(shifts["feature_at_-4"] @ u) == pytest.approx(alpha * float(w_dec[3].norm()), rel=1e-4)
    c = rep["conditions"]
    assert c["random_feature@-4"]["vector_norm"] == pytest.approx(c["feature@-4"]["vector_norm"], rel=1e-5)
    # the behaviour moves with the feature, not with the random feature
    e = rep["effects"]
    assert c["none"]["label_steps_per_trace"] == 2.0
    assert e["feature@-4"]["label_steps_ratio"] == 0.0
    assert e["random_feature@-4"]["label_steps_ratio"] == 1.0
    t = rep["target"]
    assert t["random_feature_ratio"] == 1.0 and t["random_feature_fails"] is True and t["met_ignoring_fluency"]
    assert t["control_fails"] == (t["random_ratio"] > 0.5)
    saved = json.loads((d / "steering" / "summary.json").read_text())
    assert saved["control_feature"] == ctrl and "random_feature@-4" in saved["effects"]
    # control: switched off, the condition is not run
    off = feature_steering(m, d, 3, "reflection", alphas=[alpha], tasks=tasks, samples=1, random_feature=False,
                           out=tmp_path / "off", progress=False)
    assert set(off["conditions"]) == {"none", "feature@-4", "random@-4"} and off["target"]["random_feature_fails"] is None
    # a given control latent is used; the feature itself is refused
    given = feature_steering(m, d, 3, "reflection", alphas=[alpha], tasks=tasks, samples=1, control_feature=0,
                             out=tmp_path / "given", progress=False)
    assert given["conditions"]["random_feature@-4"]["latent"] == 0
    with pytest.raises(ValueError, match="differ from the feature"):
        feature_steering(m, d, 3, "reflection", alphas=[alpha], tasks=tasks, control_feature=3, progress=False)


def test_target_needs_the_random_feature_to_fail_too():
    from psylens.saes.steer import _target, paired_effect

    counts = [2, 4, 0, 2, 6, 2, 4, 0, 2, 2, 4, 2]
    acc = [True, False] * 6
    none = _recs(counts, acc)
    halved = {**paired_effect(none, _recs([k // 2 for k in counts], acc), "reflection"), "perplexity_ratio": 1.0}
    same = {**paired_effect(none, none, "reflection"), "perplexity_ratio": 1.0}
    ok = _target({"feature@-4": halved, "random@-4": same, "random_feature@-4": same}, [-4.0])
    assert ok["met"] and ok["random_feature_fails"] and ok["random_feature_ratio"] == pytest.approx(1.0)
    # another latent of the same norm halves the label too: not specific to the feature
    both = _target({"feature@-4": halved, "random@-4": same, "random_feature@-4": halved}, [-4.0])
    assert both["met_ignoring_fluency"] and not both["control_fails"] and not both["met"]
    assert both["random_feature_fails"] is False and both["random_feature_ratio"] == pytest.approx(0.5)
    # the same for the directional ablation: another latent's direction projected out halves it too
    abl = _target({"feature@ablate": halved, "random@ablate": same, "random_feature@ablate": halved}, [], "ablate")
    assert abl["met_ignoring_fluency"] and abl["random_feature_fails"] is False and not abl["met"]
    assert _target({"feature@ablate": halved, "random@ablate": same, "random_feature@ablate": same}, [], "ablate")["met"]
    # an older summary without the condition reads as before
    old = _target({"feature@-4": halved, "random@-4": same}, [-4.0])
    assert old["met"] and old["random_feature_fails"] is None and old["random_feature_ratio"] is None
