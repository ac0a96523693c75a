"""Known answers of the features section: a planted tuned-only direction, a model against itself, planted label
shifts with their equal-label controls, planted feature-frequency shifts; and the section wired into run_compare."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.unit.compare.compare_planted import tiny_dirs  # noqa: F401  (fixture)
from psylens.compare import artifacts as art
from psylens.compare.crosscoder import latent_classes, noise_control, train_crosscoder
from psylens.compare.features import FeaturesConfig, feature_frequencies, label_frequencies

CC = {"d_latent": 48, "k": 4, "steps": 400, "lr": 3e-3, "seed": 0, "batch_size": 128}


def planted_pair(n: int = 1200, d: int = 32, n_shared: int = 24, seed: int = 0):
    """Shared sparse directions in both models; one extra direction ``v`` on 15% of rows only in "tuned"."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_shared + 1, d, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    codes = (torch.rand(n, n_shared, generator=g) < 0.12).float() * (0.5 + torch.rand(n, n_shared, generator=g))
    xb = codes @ dirs[:n_shared] + 0.02 * torch.randn(n, d, generator=g)
    new = (torch.rand(n, generator=g) < 0.15).float() * (0.5 + torch.rand(n, generator=g))
    return xb, xb + new[:, None] * dirs[n_shared], dirs[n_shared]


def test_crosscoder_finds_the_planted_tuned_only_latent_with_base_beta_zero():
    xb, xt, v = planted_pair()
    cc = train_crosscoder(xb, xt, **CC)
    res = latent_classes(cc, xb, xt)
    cos = torch.nn.functional.cosine_similarity(cc.W_dec[:, 1].detach(), v[None], dim=-1)
    j = int(cos.argmax())
    row = res.table.iloc[j]
    assert float(cos[j]) > 0.95
    assert row["cls"] == "tuned_only" and row["ratio"] > 0.9
    assert abs(row["beta_base_error"]) < 0.05 and abs(row["beta_base_recon"]) < 0.15  # latent scaling: base carries none of it
    assert abs(row["beta_tuned_error"] - 1) < 0.1
    assert res.tuned_only == [j] and res.counts["base_only"] == 0
    # the ratio alone is not enough: read where the base carries v too, the same weights (ratio > 0.9) fail scaling
    shrunk = latent_classes(cc, xt, xt).table.iloc[j]
    assert shrunk["ratio"] > 0.9 and shrunk["cls"] == "tuned_norm_only" and shrunk["nu_error"] > 0.5
    control, sigma = noise_control(xb, xt, **CC)
    assert sigma > 0 and control.counts["tuned_only"] < res.counts["tuned_only"]  # beyond the noise level


def test_model_against_itself_has_no_tuned_only_latents():
    xb, _, _ = planted_pair(n=600)
    kw = {**CC, "steps": 150}
    cc = train_crosscoder(xb, xb.clone(), **kw)
    assert torch.equal(cc.W_dec[:, 0], cc.W_dec[:, 1])  # identical inputs keep both halves identical
    res = latent_classes(cc, xb, xb.clone())
    assert float((res.table["ratio"] - 0.5).abs().max()) == 0.0
    assert res.counts["tuned_only"] == res.counts["tuned_norm_only"] == res.counts["base_only"] == 0
    control, sigma = noise_control(xb, xb.clone(), **kw)
    assert sigma == 0.0 and control.counts["tuned_only"] == 0


def _labelled(rng, n_traces: int, p_reflection: float, n_steps: int = 6):
    out = []
    for _ in range(n_traces):
        steps = []
        for _ in range(n_steps):
            labs = []
            if rng.random() < p_reflection:
                labs.append("reflection")
            if rng.random() < 0.3:
                labs.append("perspective_taking")
            steps.append(labs)
        out.append(steps)
    return out


def test_planted_label_shift_is_recovered_and_equal_labels_are_not():
    rng = np.random.default_rng(0)
    base = _labelled(rng, 40, 0.15)
    tuned = _labelled(rng, 40, 0.5)
    res = label_frequencies(base, tuned, n_boot=500)
    r = res["reflection"]
    assert r["excludes_zero"] and r["difference_ci95"][0] > 0 and abs(r["difference"] - 0.35 * 6) < 0.8
    assert r["share_difference_ci95"][0] > 0
    # control: perspective-taking has the same rate in both (drawn independently) → its interval covers 0
    p = res["perspective_taking"]
    assert p["difference_ci95"][0] <= 0 <= p["difference_ci95"][1] and not p["excludes_zero"]
    # control: identical labels → exactly zero, interval [0, 0]
    same = label_frequencies(base, base, n_boot=200)
    assert all(v["difference"] == 0 and v["difference_ci95"] == [0.0, 0.0] for v in same.values())
    with pytest.raises(ValueError, match="one labelled trace per pair"):
        label_frequencies(base, tuned[:-1])


def test_feature_frequencies_recover_a_planted_shift():
    g = torch.Generator().manual_seed(0)
    n_pairs, per, f = 30, 5, 12
    tr = torch.arange(n_pairs).repeat_interleave(per)
    zb = (torch.rand(n_pairs * per, f, generator=g) < 0.2).float()
    zt = (torch.rand(n_pairs * per, f, generator=g) < 0.2).float()
    zt[:, 3] = (torch.rand(n_pairs * per, generator=g) < 0.7).float()
    table, div = feature_frequencies(zb, tr, zt, tr, n_pairs, n_boot=500)
    assert bool(table.loc[3, "changed"]) and table.loc[3, "difference"] > 0.3
    assert int(table["changed"].sum()) <= 2  # the others: equal rates, at most a chance flag
    assert div["difference"] > 0
    same, div0 = feature_frequencies(zb, tr, zb, tr, n_pairs, n_boot=200)
    assert not same["changed"].any() and div0["difference"] == 0


def _tiny_sae(run_dir, d_in: int, layer: int) -> None:
    from psylens.saes import artifacts as sart
    from psylens.saes.train import SAETrainConfig, build_training_sae, save_sae

    sae = build_training_sae(SAETrainConfig(arch="topk", d_sae=16, k=3, normalize="none"), d_in=d_in)
    folder = run_dir / sart.sae_dir("tiny")
    save_sae(sae, folder)
    (folder / sart.STEP_SAE).write_text(json.dumps({
        "schema_version": sart.SCHEMA_VERSION, "model": "tiny", "site": "resid_post", "layer": layer,
        "pooling": "delimiter", "segmentation": "sentence", "d_sae": 16, "k": 3, "tokens": False}))


def test_run_compare_features_on_a_tiny_pair_against_itself(tiny_dirs, tmp_path):
    from psylens.compare.pair import load_pair, pair_run
    from psylens.compare.pipeline import CompareConfig, run_compare

    pair = load_pair(tiny_dirs["base"], tiny_dirs["base"], device="cpu")
    run_dir = tmp_path / "run"
    cfg = CompareConfig(sections=("features",), plots=False,
                        features=FeaturesConfig(n_tasks=3, samples=1, max_new_tokens=24, d_latent=16, k=2, steps=40,
                                                cc_batch_size=32, n_boot=100))
    # without an SAE or traces the section skips and says why
    skipped = run_compare(pair, run_dir, cfg)
    assert skipped["sections"]["features"]["status"] == "skipped"
    assert "SAE" in skipped["sections"]["features"]["reason"]
    pair_run(run_dir, pair)
    _tiny_sae(run_dir, pair.base.d_model, layer=1)
    summary = run_compare(pair, run_dir, cfg)
    sec = summary["sections"]["features"]
    assert sec["status"] == "done", sec
    h = sec["headline"]
    assert h["sae"] == "tiny" and h["layer"] == 1 and h["n_traces"] == 3
    assert h["labels_changed"] == [] and all(v == 0 for v in h["label_difference"].values())
    assert h["tuned_only"] == 0 and h["tuned_only_beyond_noise"] == 0 and h["diversity_difference"] == 0
    res = json.loads((run_dir / art.FEATURES).read_text())
    assert res["traces"]["n_steps"]["base"] == res["traces"]["n_steps"]["tuned"] > 0
    import pandas as pd

    freq = pd.read_parquet(run_dir / art.FEATURE_FREQUENCIES)
    assert list(freq.columns) == ["feature", "base", "tuned", "difference", "difference_lo", "difference_hi", "changed",
                                  "label"]
    assert len(freq) == 16 and (freq["difference"] == 0).all()
    lat = pd.read_parquet(run_dir / art.CROSSCODER_LATENTS)
    assert (lat["ratio"] == 0.5).all() and set(lat["cls"]) <= set(art.CROSSCODER_CLASSES)
    cc = json.loads((run_dir / art.CROSSCODER).read_text())
    assert cc["settings"]["layer"] == 1 and cc["noise"]["sigma"] == 0.0
    from safetensors.torch import load_file

    w = load_file(str(run_dir / art.CROSSCODER_WEIGHTS))
    assert w["W_dec"].shape == (16, 2, pair.base.d_model)
    traces = (run_dir / art.FEATURE_TRACES).read_text().splitlines()
    assert len(traces) == 6 and {json.loads(t)["model"] for t in traces} == {"base", "tuned"}
    report = (run_dir / art.REPORT).read_text()
    assert "## Features" in report and "tuned-only" in report
