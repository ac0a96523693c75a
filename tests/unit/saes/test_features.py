"""Features: a planted label feature is found (AUROC ≥ 0.95) and its shuffled control sits at 0.5; summaries, map, lens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psylens.saes.features import (
    auroc,
    auroc_matrix,
    decoder_map,
    feature_summaries,
    features_report,
    label_aurocs,
    logit_lens_tokens,
    norm_gain,
)
from psylens.saes.train import encode


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=(300, 3)).astype(float)  # many ties
    y = rng.random(300) < 0.3
    want = [roc_auroc for roc_auroc in (roc_auc_score(y, s[:, j]) for j in range(3))]
    assert np.allclose(auroc_matrix(s, y), want)
    assert auroc(s[:, 0], y) == pytest.approx(want[0])
    assert np.isnan(auroc_matrix(s, np.zeros(300, bool))).all()


@pytest.mark.slow
def test_planted_label_feature_gets_its_label_and_controls_fail(planted_sae):
    data, train_ids, held_ids, sae, _ = planted_sae
    z, _ = encode(sae, data.steps.acts)
    held = data.steps.mask(held_ids)
    gen = torch.Generator().manual_seed(5)
    labels = {
        "reflection": data.labels["reflection"],  # planted: feature 0 fires only on these steps
        "backtracking": torch.rand(len(data.steps), generator=gen) < 0.15,  # control: no feature behind it
    }
    table = label_aurocs(z[held], {k: v[held] for k, v in labels.items()},
                         z_train=z[~held], labels_train={k: v[~held] for k, v in labels.items()},
                         groups_held=[t for t, h in zip(data.steps.trace_ids, held.tolist()) if h])
    refl = table["reflection"]
    assert refl["selected_on"] == "train"
    assert refl["auroc"] >= 0.95, refl
    assert abs(refl["control_auroc"] - 0.5) < 0.08, refl
    lo, hi = refl["auroc_ci"]
    assert lo <= refl["auroc"] <= hi
    # the chosen latent is the one whose decoder column is the planted direction
    cos = torch.nn.functional.cosine_similarity(sae.W_dec.detach()[refl["feature"]], data.directions[0], dim=0)
    assert cos >= 0.9
    # a label nothing encodes: the best training latent does not carry over to held-out steps
    assert table["backtracking"]["auroc"] < 0.65 and abs(table["backtracking"]["control_auroc"] - 0.5) < 0.08


def test_feature_summaries_top_steps_and_position_profile():
    # latent 0 fires late in traces, latent 1 early, latent 2 never
    trace = [f"t{i // 5}" for i in range(50)]
    step = [i % 5 for i in range(50)]
    z = torch.zeros(50, 3)
    for i, s in enumerate(step):
        if s == 4:
            z[i, 0] = 1.0 + i / 100
        if s == 0:
            z[i, 1] = 2.0
    texts = {(t, s): f"{t}-step{s}" for t, s in zip(trace, step)}
    from psylens.saes.data import relative_positions

    pos = relative_positions(trace, step)
    out = feature_summaries(z, trace, step, pos, texts=texts, top=3, bins=5)
    assert out[0]["frequency"] == pytest.approx(0.2) and out[2]["frequency"] == 0 and out[2]["top_steps"] == []
    top = out[0]["top_steps"][0]
    assert top["trace"] == "t9" and top["step"] == 4 and top["text"] == "t9-step4" and top["before"] == "t9-step3"
    assert top["after"] == ""  # the last step has nothing after it
    assert out[0]["position_profile"]["rate"] == [0, 0, 0, 0, 1.0]
    assert out[1]["position_profile"]["rate"] == [1.0, 0, 0, 0, 0]


def test_decoder_map_separates_planted_groups_and_keeps_dead_ones_out():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, generator=g), torch.randn(16, generator=g)
    dec = torch.stack([a + 0.05 * torch.randn(16, generator=g) for _ in range(6)]
                      + [b + 0.05 * torch.randn(16, generator=g) for _ in range(6)] + [torch.randn(16, generator=g)])
    live = torch.ones(13, dtype=torch.bool)
    live[12] = False
    m = decoder_map(dec, live=live, n_clusters=2)
    c = m["cluster"]
    assert len(set(c[:6])) == 1 and len(set(c[6:12])) == 1 and c[0] != c[6] and c[12] == -1
    assert len(m["xy"]) == 13 and all(len(p) == 2 for p in m["xy"])
    # control: shuffled rows give the same partition, permuted (clustering follows the columns, not their order)
    perm = torch.randperm(12, generator=g)
    m2 = decoder_map(dec[:12][perm], n_clusters=2)
    groups = [0 if int(i) < 6 else 1 for i in perm]
    same = [m2["cluster"][i] == m2["cluster"][j] for i in range(12) for j in range(12)]
    want = [groups[i] == groups[j] for i in range(12) for j in range(12)]
    assert same == want


def test_logit_lens_reads_the_planted_token(smollm_tokenizer):
    g = torch.Generator().manual_seed(0)
    W_U = torch.randn(100, 8, generator=g)
    dec = torch.stack([W_U[42] * 3, W_U[7]])
    ids = logit_lens_tokens(dec, W_U, k=3)
    assert ids[0][0] == 42 and ids[1][0] == 7
    assert logit_lens_tokens(-dec, W_U, k=1)[0][0] != 42  # control: the opposite direction reads another token
    words = logit_lens_tokens(dec, W_U, smollm_tokenizer, k=2)
    assert words[0][0] == smollm_tokenizer.decode([42])


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_norm_gain_is_the_gain_the_model_applies(arch):
    from conftest import build_tiny_hf

    hf = build_tiny_hf(arch)
    norm = hf.model.norm
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-0.5, 0.5, norm.weight.numel()))
    gain = norm_gain(norm, hf.config.hidden_size)
    x = torch.randn(3, hf.config.hidden_size)
    rms = x.pow(2).mean(-1, keepdim=True).add(norm.variance_epsilon if hasattr(norm, "variance_epsilon") else norm.eps).rsqrt()
    torch.testing.assert_close(norm(x), x * rms * gain, atol=1e-5, rtol=1e-4)
    # Gemma scales by 1 + w, Llama by w: the raw weight is the gain only for Llama
    assert torch.allclose(gain, norm.weight.float()) == (arch == "llama")
    ln = torch.nn.LayerNorm(4)
    assert torch.equal(norm_gain(ln, 4), ln.weight.detach()) and norm_gain(None, 4) is None


def test_features_report_layout():
    n, f = 40, 6
    g = torch.Generator().manual_seed(1)
    z = torch.relu(torch.randn(n, f, generator=g))
    trace = [f"t{i // 4}" for i in range(n)]
    step = [i % 4 for i in range(n)]
    from psylens.saes.data import relative_positions

    held = torch.tensor([int(t[1:]) >= 7 for t in trace])
    labels = {"conclusion": torch.tensor([s == 3 for s in step])}
    rep = features_report(z_all=z, trace_ids=trace, steps=step, positions=relative_positions(trace, step),
                          held_rows=held, labels=labels, decoder=torch.randn(f, 8, generator=g),
                          logit_lens=[["a"]] * f)
    assert set(rep["labels"]["conclusion"]) >= {"feature", "auroc", "control_auroc"}
    assert len(rep["features"]) == f and rep["n_held_out_steps"] == int(held.sum())
    for rec in rep["features"]:
        assert {"frequency", "top_steps", "position_profile", "logit_lens", "cluster", "xy"} <= set(rec)
    import json

    json.dumps(rep, allow_nan=False)  # strict JSON
