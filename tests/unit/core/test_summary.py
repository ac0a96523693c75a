"""The per-layer summary: Fisher ratio known answers, with shuffled-label controls."""

from __future__ import annotations

import pytest
import torch

from psylens.activations import Activations
from psylens.summary import fisher_ratio, layer_summary

K, PER, D = 3, 60, 10
N = K * PER
NO_SIGNAL = (K - 1) / (N - K)  # E[tr S_between] / E[tr S_within] for isotropic noise


def planted(sep: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(K).repeat_interleave(PER)
    means = torch.zeros(K, D)
    means[torch.arange(K), torch.arange(K)] = sep  # class c moves along axis c
    return means[y] + torch.randn(N, D, generator=g), y


def test_known_answer_small() -> None:
    x = torch.tensor([[0.0], [2.0], [10.0], [12.0]])
    y = torch.tensor([0, 0, 1, 1])
    # means 1 and 11, grand mean 6: between = 2*25 + 2*25 = 100; within = 4*1 = 4
    assert fisher_ratio(x, y) == pytest.approx(25.0)
    assert fisher_ratio(torch.ones(4, 3), y) == 0.0  # classes coincide


def test_planted_separation_vs_shuffled() -> None:
    x, y = planted(sep=5.0)
    high = fisher_ratio(x, y)
    # between = sum_c PER * |mu_c - mu|^2 = PER * sep^2 * (K-1); within ≈ (N-K) * D (unit noise)
    expected = PER * 5.0**2 * (K - 1) / ((N - K) * D)
    assert high > 50 * NO_SIGNAL and high == pytest.approx(expected, rel=0.35)
    g = torch.Generator().manual_seed(1)
    shuffled = [fisher_ratio(x, y[torch.randperm(N, generator=g)]) for _ in range(20)]
    mean_shuf = sum(shuffled) / len(shuffled)
    assert mean_shuf == pytest.approx(NO_SIGNAL, rel=0.5)
    assert max(shuffled) < high / 10


def test_no_signal_is_near_chance() -> None:
    x, y = planted(sep=0.0)
    assert fisher_ratio(x, y) == pytest.approx(NO_SIGNAL, rel=0.6)


def test_layer_summary_finds_the_planted_layer() -> None:
    x1, y = planted(sep=4.0, seed=2)
    x0, _ = planted(sep=0.0, seed=3)
    x2, _ = planted(sep=1.0, seed=4)
    labels = [["anger", "joy", "fear"][int(c)] for c in y]
    acts = Activations(
        {"resid_post": torch.stack([x0, x1, x2], dim=1)}, layers=[3, 7, 9], labels=labels,
        groups=[None] * N, ids=[f"s{i}" for i in range(N)], texts=["t"] * N,
    )
    s = layer_summary(acts, seed=0)
    site = s["sites"]["resid_post"]
    assert s["n"] == N and s["label_counts"] == {"anger": PER, "joy": PER, "fear": PER}
    assert site["layers"] == [3, 7, 9] and site["best_layer"] == 7
    assert "not the probes' best layer" in site["best_layer_meaning"]  # why it can differ from probes/summary.json
    fr, sh = site["fisher_ratio"], site["shuffled_fisher_ratio"]
    assert fr[1] > fr[2] > fr[0]
    assert all(0 < v < 3 * NO_SIGNAL for v in sh), sh  # one permutation: chance level, give or take
    assert fr[1] > 20 * max(sh)
    assert len(site["mean_norm"]) == 3 and site["mean_norm"][1] > site["mean_norm"][0]
    assert layer_summary(acts, seed=0) == s  # seeded


def test_layer_summary_edge_cases() -> None:
    n = 4
    base = dict(layers=[0], groups=[None] * n, ids=[str(i) for i in range(n)], texts=["t"] * n)
    unlabelled = Activations({"resid_post": torch.randn(n, 1, 3)}, labels=[None] * n, **base)
    s = layer_summary(unlabelled)
    assert "fisher_ratio" not in s["sites"]["resid_post"] and s["label_counts"] == {}
    partly = Activations({"head_out": torch.randn(n, 1, 2, 3)}, labels=["a", None, "b", "a"], **base)
    s = layer_summary(partly)
    assert s["label_counts"] == {"a": 2, "b": 1} and len(s["sites"]["head_out"]["fisher_ratio"]) == 1
    every = Activations(
        {"resid_post": torch.randn(5, 1, 3)}, labels=["a", "b", "a", "b"], positions="all",
        token_stimulus=torch.tensor([0, 1, 2, 3, 3]), token_position=torch.tensor([0, 0, 0, 0, 1]), **base,
    )
    with pytest.raises(ValueError, match="positions"):
        layer_summary(every)
