"""Clamping an SAE latent through the SAE: the latent reads exactly the clamped value where it fired, the
other latents are untouched, and clamping a control latent leaves the planted one alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from psylens.interventions import record
from psylens.saes.clamp import FeatureClamp, matched_control_feature

PROMPT = "Ann lost her keys. How does Ann feel?"
FEATURE, D_SAE = 3, 8


def _stream(m, enc) -> torch.Tensor:
    with torch.no_grad(), record(m.hf_model, ["resid_post"], [1]) as rec:
        m.hf_model(**enc)
    return rec["resid_post", 1][0]  # [pos, d_model]


def _planted_sae(m, folder: Path, enc) -> torch.Tensor:
    """A JumpReLU SAE (threshold 0) with orthonormal encoder columns; latent 3 reads and writes the
    stream's mean direction at layer 1, so it fires on most positions. Returns the encoder ``[d, d_sae]``."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    from psylens.saes.train import save_sae

    x = _stream(m, enc)
    u = x.mean(0) / x.mean(0).norm()
    basis = torch.randn(m.d_model, D_SAE, generator=torch.Generator().manual_seed(0))
    basis[:, 0] = u
    q, _ = torch.linalg.qr(basis)  # orthonormal columns, the first ±u
    q[:, 0] *= torch.sign(q[:, 0] @ u)
    w_enc = q[:, [1, 2, 3, 0, 4, 5, 6, 7]].contiguous()  # latent 3 is the planted direction
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=m.d_model, d_sae=D_SAE))
    with torch.no_grad():
        sae.W_enc.copy_(w_enc)
        sae.W_dec.copy_(w_enc.T)
        sae.b_enc.zero_(), sae.b_dec.zero_(), sae.threshold.zero_()
    save_sae(sae, folder)
    (folder / "step_sae.json").write_text(json.dumps({"model": "tiny-llama", "site": "resid_post", "layer": 1}))
    return w_enc


def _latents(w_enc: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    pre = x @ w_enc
    return pre * (pre > 0)


def test_clamp_holds_the_latent_and_keeps_the_rest(tiny_model, tmp_path):
    m = tiny_model("llama")
    enc = m.tokenizer([m.format_prompt(PROMPT)], return_tensors="pt", add_special_tokens=False)
    w_enc = _planted_sae(m, tmp_path / "sae", enc)
    before = _latents(w_enc, _stream(m, enc))
    fired = before[:, FEATURE] > 0
    assert fired.float().mean() > 0.5 and float(before[:, FEATURE].max()) > 0.1  # the planted latent is live

    off = FeatureClamp.from_sae(tmp_path / "sae", FEATURE, value=0.0)
    assert (off.site, off.layer, off.feature) == ("resid_post", 1, FEATURE)
    with off.apply(m):
        during = _latents(w_enc, _stream(m, enc))
    assert float(during[:, FEATURE].abs().max()) < 1e-4  # switched off everywhere
    keep = [j for j in range(D_SAE) if j != FEATURE]
    torch.testing.assert_close(during[:, keep], before[:, keep], atol=1e-4, rtol=1e-4)  # the rest untouched
    after = _latents(w_enc, _stream(m, enc))
    torch.testing.assert_close(after, before)  # removed on exit

    with FeatureClamp.from_sae(tmp_path / "sae", FEATURE, value=5.0).apply(m):
        held = _latents(w_enc, _stream(m, enc))
    torch.testing.assert_close(held[fired, FEATURE], torch.full((int(fired.sum()),), 5.0), atol=1e-4, rtol=1e-4)

    # control: clamping another latent leaves the planted one as it was
    with off.with_feature(0).apply(m):
        ctl = _latents(w_enc, _stream(m, enc))
    torch.testing.assert_close(ctl[:, FEATURE], before[:, FEATURE], atol=1e-4, rtol=1e-4)
    assert float(ctl[:, 0].abs().max()) < 1e-4


def test_clamp_rejects_bad_input(tiny_model, tmp_path):
    m = tiny_model("llama")
    enc = m.tokenizer([m.format_prompt(PROMPT)], return_tensors="pt", add_special_tokens=False)
    _planted_sae(m, tmp_path / "sae", enc)
    with pytest.raises(ValueError, match="out of range"):
        FeatureClamp.from_sae(tmp_path / "sae", D_SAE)
    with pytest.raises(ValueError, match="finite number"):
        FeatureClamp.from_sae(tmp_path / "sae", 0, value=float("nan"))
    with pytest.raises(ValueError, match="step_sae.json is missing"):
        FeatureClamp.from_sae(tmp_path, 0)
    info = tmp_path / "sae" / "step_sae.json"
    info.write_text(json.dumps({"site": "mlp_post", "layer": 1}))
    with pytest.raises(ValueError, match="residual SAEs"):
        FeatureClamp.from_sae(tmp_path / "sae", 0)


def test_matched_control_feature_fires_about_as_often():
    feats = [{"feature": j, "frequency": f} for j, f in enumerate([0.30, 0.25, 0.0, 0.5, 0.02, 0.31, 0.9])]
    picks = {matched_control_feature(feats, 0, seed=s) for s in range(40)}
    assert picks == {1, 3, 5}  # within 2x of 0.30, never itself, never a dead latent
    assert matched_control_feature(feats, 4, seed=0) == 1  # none within 2x of 0.02: the nearest frequency
    with pytest.raises(ValueError, match="never fires"):
        matched_control_feature(feats, 2)
    with pytest.raises(ValueError, match="not in features.json"):
        matched_control_feature(feats, 99)


@pytest.mark.slow
def test_feature_steering_with_a_clamp_reads_the_latent_off_beside_a_control(tiny_model, tmp_path, monkeypatch):
    import psylens.saes.traces as traces_mod
    from psylens.saes.steer import feature_steering
    from psylens.tasks import Task

    m = tiny_model("llama")
    enc = m.tokenizer([m.format_prompt(PROMPT)], return_tensors="pt", add_special_tokens=False)
    d = tmp_path / "sae"
    w_enc = _planted_sae(m, d, enc)
    seen: dict[str, float] = {}
    real = traces_mod.generate_traces

    def spy(model, tasks, folder, **kw):
        seen[Path(folder).name] = float(_latents(w_enc, _stream(model, enc))[:, FEATURE].max())
        return real(model, tasks, folder, **kw)

    monkeypatch.setattr(traces_mod, "generate_traces", spy)
    tasks = [Task(id=f"t{i}", kind="emotion_inference", story="Ann lost her keys.", question="How does Ann feel?",
                  choices=("calm", "upset"), answer="upset", split="test") for i in range(2)]
    rep = feature_steering(m, d, FEATURE, "reflection", alphas=[], clamps=[0.0], control_feature=5, tasks=tasks,
                           samples=1, max_new_tokens=6, batch_size=2, progress=False)
    assert set(rep["conditions"]) == {"none", "feature@clamp0", "random@clamp0"}
    assert rep["clamps"] == [0.0] and rep["control_feature"] == 5 and rep["layer"] == 1
    assert seen["feature_at_clamp0"] < 1e-4 < 0.1 < seen["none"]  # the latent is off while the clamp generates
    assert seen["random_at_clamp0"] == pytest.approx(seen["none"], rel=1e-3)  # the control latent is another
    assert rep["target_clamp"]["condition"] == "feature@clamp0" and rep["target"] is None
    assert rep["conditions"]["feature@clamp0"]["vector_norm"] == 0.0
    with pytest.raises(ValueError, match="differ from the feature"):
        feature_steering(m, d, FEATURE, "reflection", alphas=[], clamps=[0.0], control_feature=FEATURE, tasks=tasks,
                         progress=False)
    with pytest.raises(ValueError, match="features.json"):
        feature_steering(m, d, FEATURE, "reflection", alphas=[], clamps=[0.0], tasks=tasks, progress=False)
    with pytest.raises(ValueError, match="finite numbers"):
        feature_steering(m, d, FEATURE, "reflection", alphas=[], clamps=[float("inf")], tasks=tasks, progress=False)


@pytest.mark.slow
def test_run_feature_steering_clamps_in_units_of_the_mean_activation(tiny_model, task_run):
    from typer.testing import CliRunner

    from psylens.cli import app
    from psylens.saes.steer import run_feature_steering

    m = tiny_model("llama")
    run = task_run
    enc = m.tokenizer([m.format_prompt(PROMPT)], return_tensors="pt", add_special_tokens=False)
    d = run.path / "saes" / "tiny"
    _planted_sae(m, d, enc)
    freqs = [0.9, 0.05, 0.0, 0.3, 0.8, 0.02, 0.6, 0.01]  # only latent 6 fires within 2x of latent 3's 0.3
    (d / "features.json").write_text(json.dumps({
        "labels": {"reflection": {"feature": FEATURE, "auroc": 0.9, "control_auroc": 0.5}},
        "features": [{"feature": j, "frequency": f, "mean_activation": 2.5 if f else 0.0} for j, f in enumerate(freqs)]}))
    rep = run_feature_steering(run.path, "tiny", "reflection", strengths=[], clamps=[0.0, -1.0], model=m, samples=1,
                               max_new_tokens=5, batch_size=2, progress=False)
    assert set(rep["conditions"]) == {"none", "feature@clamp0", "random@clamp0", "feature@clamp-2.5", "random@clamp-2.5"}
    assert rep["control_feature"] == 6 and rep["clamps"] == [0.0, -2.5]  # activation units: -1 x mean activation 2.5
    assert rep["target_clamp"]["condition"] == "feature@clamp-2.5"  # the strongest suppression
    step = json.loads((run.path / "steps" / "sae-steer-tiny.json").read_text())["config"]
    assert step["clamps"] == [0.0, -1.0] and step["clamp_values"] == [0.0, -2.5] and step["control_feature"] == 6
    # the CLI takes --clamp and reaches the run's checks before any model loads
    res = CliRunner().invoke(app, ["sae", "steer", "--run", str(run.path), "--name", "other", "--clamp", "0"])
    assert res.exit_code != 0 and "SAEs there" in str(res.exception)
