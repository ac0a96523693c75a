"""preferences' Elo shift under steering: a planted preference change is recovered, no change gives none."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psylens.probes import Directions
from psylens.steering.vector import SteeringVector
from psylens.stimuli import EMOTIONS
from psylens.validation.preferences import elo_shift, preferences, sparse_pairs

ACTS = [("walk in the park", "pleasant"), ("eat cake", "pleasant"), ("get a fine", "unpleasant"),
        ("clean a drain", "unpleasant")]


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def test_elo_shift_recovers_a_planted_preference_change() -> None:
    n, pairs = 6, _pairs(6)
    base = np.full(len(pairs), 0.5)
    liked = {0, 1}  # steering makes activities 0 and 1 win every pair they are in
    steered = np.array([0.9 if i in liked and j not in liked else 0.1 if j in liked and i not in liked else 0.5
                        for i, j in pairs])
    s = elo_shift(n, pairs, base, steered)
    assert s.shape == (n,)
    assert s[0] > 100 and s[1] > 100 and all(s[k] < 0 for k in range(2, n))
    assert abs(s[0] - s[1]) < 1e-6
    # the control: the same probabilities steered and unsteered shift nothing
    assert np.allclose(elo_shift(n, pairs, steered, steered), 0.0)
    # a letter bias alone (every first option gains) cancels over both orders
    assert np.allclose(elo_shift(n, pairs, base, np.full(len(pairs), 0.8)), 0.0, atol=1e-6)


def test_elo_shift_needs_one_probability_per_pair() -> None:
    with pytest.raises(ValueError, match="one probability per pair"):
        elo_shift(3, _pairs(3), [0.5] * 6, [0.5] * 5)


def _dirs(m, seed: int = 0) -> Directions:
    g = torch.Generator().manual_seed(seed)
    return Directions.from_raw(torch.randn(6, m.n_layers, m.d_model, generator=g), EMOTIONS, list(range(m.n_layers)))


def test_preferences_reports_the_elo_shift_of_each_emotion_beside_random(tiny_model) -> None:
    m = tiny_model("llama")
    dirs = _dirs(m)
    g = preferences(m, dirs, 1, activities=ACTS, emotions=["joy", "anger"], scale=4.0)
    st = g["steering"]
    assert st["from"] == "directions" and st["layer"] == 1 and st["alpha"] > 0
    assert set(st["emotions"]) == {"joy", "anger"}
    for v in st["emotions"].values():
        assert v["mean_abs_shift"] > 0 and v["random_mean_abs_shift"] > 0
        assert v["pleasant_minus_unpleasant"] is not None and v["random_pleasant_minus_unpleasant"] is not None
    t = g.tables["elo_shift"]
    assert list(t["activity"]) == [a for a, _ in ACTS]
    assert {"shift_joy", "shift_anger", "shift_random_joy", "shift_random_anger"} <= set(t.columns)
    assert np.allclose(t["shift_joy"].mean(), 0.0, atol=1e-6)  # Elo is relative: shifts sum to zero
    assert preferences(m, dirs, 1, activities=ACTS, emotions=["joy"], steer=False)["steering"] is None


def test_preferences_a_zero_vector_shifts_nothing(tiny_model) -> None:
    m = tiny_model("llama")
    dirs = _dirs(m)
    zero = {e: SteeringVector(vectors=torch.zeros(1, m.d_model), layers=(1,), alpha=1.0) for e in ("joy", "anger")}
    live = {e: SteeringVector(vectors=200.0 * dirs[e, 1].float().unsqueeze(0), layers=(1,), alpha=1.0) for e in ("joy", "anger")}
    g0 = preferences(m, dirs, 1, activities=ACTS, emotions=["joy", "anger"], vectors=zero)
    assert g0["steering"]["from"] == "vectors"
    assert np.allclose(g0.tables["elo_shift"]["shift_joy"], 0.0, atol=1e-6)
    g1 = preferences(m, dirs, 1, activities=ACTS, emotions=["joy", "anger"], vectors=live)
    # a random tiny model has no preferences to shift much; what matters is that a live vector moves them
    assert g1["steering"]["emotions"]["joy"]["mean_abs_shift"] > 1e-3


def test_sparse_pairs_give_every_activity_its_opponents_in_both_orders() -> None:
    n, pairs = 12, _pairs(12)
    idx = sparse_pairs(n, 4, 0, pairs)
    chosen = [pairs[k] for k in idx]
    assert len(chosen) == n * 4 and len(set(chosen)) == len(chosen)
    assert all((b, a) in set(chosen) for a, b in chosen)
    assert all(sum(a == i for a, _ in chosen) == 4 for i in range(n))
    assert sparse_pairs(n, None, 0, pairs) == list(range(len(pairs))) == sparse_pairs(n, 11, 0, pairs)
    with pytest.raises(ValueError, match="steer_opponents"):
        sparse_pairs(n, 1, 0, pairs)
    # the planted change is recovered on the sparse tournament too, and its control stays at zero
    liked = {0, 1}
    steered = np.array([0.9 if i in liked and j not in liked else 0.1 if j in liked and i not in liked else 0.5
                        for i, j in chosen])
    s = elo_shift(n, chosen, np.full(len(chosen), 0.5), steered)
    assert s[0] > 50 and s[1] > 50 and all(s[k] < 0 for k in range(2, n))
    assert np.allclose(elo_shift(n, chosen, steered, steered), 0.0)
