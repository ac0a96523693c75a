"""Matryoshka SAEs (``arch="matryoshka"``): a planted parent feature is one latent, where BatchTopK absorbs it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from psylens.saes.synthetic import planted_hierarchy
from psylens.saes.train import SAETrainConfig, default_matryoshka_widths, encode, load_sae, save_sae, train_sae


def _parents_found(arch: str, tmp_path, **kw) -> tuple[list[float], list[float], list[int], object]:
    """Per planted parent: the best single latent's AUROC on "parent fires", its decoder cosine and index."""
    data = planted_hierarchy(n_steps=4096, seed=0)
    cfg = SAETrainConfig(arch=arch, d_sae=64, k=4, epochs=40, batch_size=128, lr=3e-3, seed=0, **kw)
    result = train_sae(data.steps, cfg, progress=False)
    save_sae(result.sae, tmp_path / arch)
    sae = load_sae(tmp_path / arch)  # what users get: the saved JumpReLU
    z, _ = encode(sae, data.steps.acts)
    aucs, coss, idx = [], [], []
    for p in range(4):
        y = data.labels[f"parent{p}"].numpy()
        scores = [roc_auc_score(y, z[:, j].numpy()) if bool((z[:, j] != 0).any()) else 0.5 for j in range(z.shape[1])]
        j = int(np.argmax(scores))
        aucs.append(scores[j])
        coss.append(float(torch.nn.functional.cosine_similarity(sae.W_dec[j].detach(), data.directions[p], dim=0)))
        idx.append(j)
    return aucs, coss, idx, sae


@pytest.mark.slow
def test_matryoshka_recovers_planted_parents_and_batchtopk_absorbs_them(tmp_path):
    aucs, coss, idx, sae = _parents_found("matryoshka", tmp_path, matryoshka_widths=(8, 64))
    assert type(sae).__name__ == "JumpReLUSAE"  # saved as JumpReLU, like BatchTopK
    found = [a >= 0.95 and c >= 0.8 for a, c in zip(aucs, coss)]
    assert sum(found) >= 3 and float(np.mean(aucs)) >= 0.95, (aucs, coss)  # seeds 0-3: 3, 4, 3, 4 of 4
    assert all(j < 8 for j, f in zip(idx, found) if f), idx  # found parents live in the first (8-latent) level
    # control: BatchTopK on the same steps reconstructs them as well but folds each parent into its
    # parent + child latents (decoder cosine ~0.7 to the parent), so no single latent recovers a parent
    aucs_b, coss_b, _, _ = _parents_found("batchtopk", tmp_path)
    found_b = sum(a >= 0.95 and c >= 0.8 for a, c in zip(aucs_b, coss_b))
    assert found_b <= 1, (aucs_b, coss_b)  # seeds 0-3: 0 of 4 each


def test_matryoshka_config_defaults_validates_and_round_trips():
    assert default_matryoshka_widths(512, 24) == (32, 128, 512)
    assert default_matryoshka_widths(64, 4) == (16, 64)
    assert default_matryoshka_widths(8, 16) == (8,)
    cfg = SAETrainConfig(arch="matryoshka", d_sae=512, k=24)
    assert cfg.matryoshka_widths == (32, 128, 512)  # filled in, so the saved config records the ladder
    assert SAETrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    assert SAETrainConfig(arch="matryoshka", d_sae=64, k=4, matryoshka_widths=[8, 64]).matryoshka_widths == (8, 64)
    with pytest.raises(ValueError, match="must be strictly increasing positive prefix sizes ending at d_sae=64"):
        SAETrainConfig(arch="matryoshka", d_sae=64, k=4, matryoshka_widths=(8, 32))
    with pytest.raises(ValueError, match="strictly increasing"):
        SAETrainConfig(arch="matryoshka", d_sae=64, k=4, matryoshka_widths=(32, 8, 64))
    with pytest.raises(ValueError, match="apply to arch 'matryoshka' only"):
        SAETrainConfig(arch="batchtopk", matryoshka_widths=(8, 64))
    with pytest.raises(ValueError, match="k=80 is larger than d_sae=64"):
        SAETrainConfig(arch="matryoshka", d_sae=64, k=80)
    with pytest.raises(ValueError, match="d >= n_parents"):
        planted_hierarchy(d=16)


def test_cli_rejects_bad_matryoshka_widths_before_loading_a_model(tmp_path):
    from typer.testing import CliRunner

    from psylens.saes.cli import sae_app

    res = CliRunner().invoke(sae_app, ["train", "--run", str(tmp_path), "--layer", "1", "--arch", "matryoshka",
                                       "--d-sae", "64", "--matryoshka-widths", "8,x"])
    assert res.exit_code != 0 and "not a comma-separated list of integers" in str(res.exception)
    res = CliRunner().invoke(sae_app, ["train", "--run", str(tmp_path), "--layer", "1", "--arch", "matryoshka",
                                       "--d-sae", "64", "--matryoshka-widths", "8,32"])
    assert res.exit_code != 0 and "ending at d_sae=64" in str(res.exception)
