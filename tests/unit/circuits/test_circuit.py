"""Circuit value, selection, signal weights and artifact names (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psylens.circuits import artifacts as art
from psylens.circuits.circuit import Circuit, Selection, select
from psylens.circuits.scores import UnitScores
from psylens.circuits.signal import contrast_weights, is_grouped


def _scores() -> UnitScores:
    h = torch.zeros(3, 4)
    n = torch.zeros(3, 8)
    h[1, 2], h[0, 0], h[2, 3] = 5.0, 1.0, 9.0  # layer 2 is above the read-out layer 1
    n[0, 3], n[1, 1], n[1, 7] = 3.0, 2.0, -4.0
    nan = torch.full_like
    return UnitScores(h, n, h, n, nan(h, float("nan")), nan(n, float("nan")), 1.0, 1)


def test_select_threshold_and_top_k():
    c = select("joy", "probes", _scores(), Selection(mode="threshold", threshold=0.8))
    assert c.heads == ((1, 2),)  # 5 of 6 positive (>= 0.8); layer 2 never enters
    assert c.neurons == ((0, 3), (1, 1))  # 3 then 2 reach 0.8 of 5; the negative one never
    c = select("joy", "probes", _scores(), Selection(mode="top_k", k_heads=2, k_neurons=1))
    assert c.heads == ((1, 2), (0, 0)) and c.neurons == ((0, 3),)
    assert c.top(1).neurons == () and c.top(1).heads == ((1, 2),)


def test_circuit_round_trip(tmp_path):
    c = select("joy", "probes", _scores(), Selection(mode="top_k", k_heads=2, k_neurons=2), model="tiny")
    p = c.save(tmp_path / "joy.json")
    assert p.with_suffix(".safetensors").is_file()
    back = Circuit.load(p)
    assert back == c
    d = __import__("json").loads(p.read_text())
    assert d["heads"] == [[1, 2], [0, 0]] and d["readout_layer"] == 1 and d["emotion"] == "joy" and d["source"] == "probes"


def test_prefix_keeps_the_best_units_with_their_scores():
    c = Circuit("joy", "p", 1, heads=((0, 1), (1, 2)), neurons=((0, 3), (1, 1), (1, 5)),
                head_scores=(5.0, 1.0), neuron_scores=(4.0, 2.0, 0.5))
    p = c.prefix(3)
    assert p.heads == ((0, 1),) and p.neurons == ((0, 3), (1, 1))
    assert p.head_scores == (5.0,) and p.neuron_scores == (4.0, 2.0)
    assert p.emotion == "joy" and p.readout_layer == 1 and p.selection == c.selection
    assert c.prefix(5) == c and len(c.prefix(0).units) == 0
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        c.prefix(6)


def test_selection_drop_mode_keeps_the_threshold_candidates():
    """``select`` cannot ablate; in ``drop`` mode it returns the threshold candidates for the cut."""
    a = select("joy", "probes", _scores(), Selection(mode="drop", threshold=0.8, drop=0.6, confidence=0.9))
    b = select("joy", "probes", _scores(), Selection(mode="threshold", threshold=0.8))
    assert (a.heads, a.neurons) == (b.heads, b.neurons)
    assert Selection.from_dict(a.selection.to_dict()) == a.selection


def test_circuit_and_selection_reject_bad_values():
    with pytest.raises(ValueError, match="duplicates"):
        Circuit("joy", "p", 1, heads=((0, 1), (0, 1)), neurons=())
    with pytest.raises(ValueError, match="scores"):
        Circuit("joy", "p", 1, heads=((0, 1),), neurons=(), head_scores=(1.0, 2.0))
    with pytest.raises(ValueError, match="threshold"):
        Selection(threshold=0)
    with pytest.raises(ValueError, match="mode"):
        Selection(mode="best")
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="drop"):
            Selection(mode="drop", drop=bad)
    for bad in (0.0, 1.0, 95):
        with pytest.raises(ValueError, match="confidence"):
            Selection(mode="drop", confidence=bad)
    with pytest.raises(ValueError, match="unknown selection settings"):
        Selection.from_dict({"mode": "drop", "share": 0.5})


def test_contrast_weights_centre_on_scenarios():
    labels = ["joy", "anger", "fear", "neutral", "joy", "anger"]
    groups = ["a", "a", "a", "a", "b", "b"]
    w = contrast_weights(labels, groups, "joy", ("joy", "anger", "fear"))
    assert w.sum() == pytest.approx(0.0)
    assert w[3] == 0  # neutral is not contrasted
    assert w[0] == pytest.approx(0.5) and w[1] == pytest.approx(-0.25) and w[5] == pytest.approx(-0.5)
    # a constant shift of one scenario's projections leaves the signal unchanged (group-centred)
    p = np.arange(6.0)
    q = p + np.array([10, 10, 10, 10, 0, 0])
    assert float(w @ p) == pytest.approx(float(w @ q))


def test_contrast_weights_pool_only_when_asked():
    labels, groups = ["joy", "anger", "fear"], ["x", "y", "z"]
    assert not is_grouped(labels, groups, ("joy", "anger", "fear"))
    with pytest.raises(ValueError, match="pooled"):
        contrast_weights(labels, groups, "joy", ("joy", "anger", "fear"))
    w = contrast_weights(labels, groups, "joy", ("joy", "anger", "fear"), pooled=True)
    assert list(w) == [1.0, -0.5, -0.5]


def test_artifact_names():
    assert art.score_key("joy", "atp", "heads") == "joy.atp.heads"
    assert art.influence_key("joy", "mlp") == "joy.influence.mlp"
    assert art.circuit_file("joy") == "circuits/joy.json"
    for bad in ("a/b", "..", "a.b", ""):
        with pytest.raises(ValueError):
            art.circuit_file(bad)
    with pytest.raises(ValueError, match="score"):
        art.score_key("joy", "gradient", "heads")
