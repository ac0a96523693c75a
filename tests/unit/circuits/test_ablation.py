"""Ablation, enhancement, faithfulness and completeness on the planted model, against random sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psylens.circuits.ablation import (
    ablation_curve,
    curve_sizes,
    enhancement,
    faithfulness_completeness,
    random_like,
    drop_ci,
    smallest_prefix,
)
from psylens.circuits.circuit import Circuit
from psylens.circuits.signal import Edit, Units, contrast_weights, prepare, signal, unit_baseline

from tests.unit.circuits.circuits_planted import EMOS, HEAD_LAYER, PLANT_HEAD, PLANT_LAYER, PLANT_NEURON, READOUT, neutral_texts, stimuli


@pytest.fixture(scope="module")
def setup(planted):
    model, v = planted
    texts, labels, groups = stimuli()
    data = prepare(model, texts, labels=labels, groups=groups, batch_size=12)
    w = contrast_weights(labels, groups, "joy", EMOS)
    base = unit_baseline(model, prepare(model, neutral_texts()), range(READOUT + 1))
    circ = Circuit("joy", "test", READOUT, heads=((HEAD_LAYER, PLANT_HEAD),), neurons=((PLANT_LAYER, PLANT_NEURON),),
                   head_scores=(0.3,), neuron_scores=(4.5,))
    return model, v, data, w, base, circ


def test_ablating_the_planted_units_removes_the_signal_random_sets_do_not(setup):
    model, v, data, w, base, circ = setup
    df = ablation_curve(model, data, w, v, circ, base, methods=("mean", "zero"), n_random=5)
    full = df[df.n_units == 2]
    for method in ("mean", "zero"):
        m = full[full.method == method]
        assert float(m[m.kind == "circuit"]["drop"].iloc[0]) > 0.9
        assert float(m[m.kind == "random"]["drop"].abs().mean()) < 0.1
    assert sorted(df.n_units.unique()) == [1, 2]
    # the top unit alone (the neuron: the larger score) removes most of it
    one = df[(df.n_units == 1) & (df.method == "mean") & (df.kind == "circuit")]
    assert float(one["drop"].iloc[0]) > 0.5


def test_enhancement_raises_the_signal_random_sets_do_not(setup):
    model, v, data, w, base, circ = setup
    df = enhancement(model, data, w, v, circ, base, factors=(2.0,), n_random=5)
    assert float(df[df.kind == "circuit"]["gain"].iloc[0]) > 0.5
    assert float(df[df.kind == "random"]["gain"].abs().max()) < 0.05


def test_faithfulness_and_completeness(setup):
    model, v, data, w, base, circ = setup
    fc = faithfulness_completeness(model, data, w, v, circ, base)
    assert fc["completeness"] > 0.9
    assert fc["faithfulness"] > 0.8
    # control: a random pair of units from the same layers explains nothing
    rnd = random_like(circ.units, 4, 64, seed=3)
    fake = Circuit("joy", "test", READOUT, heads=rnd.heads, neurons=rnd.neurons)
    fr = faithfulness_completeness(model, data, w, v, fake, base)
    assert abs(fr["completeness"]) < 0.1 and fr["faithfulness"] < 0.2


def test_scaled_edit_is_exact_on_the_readout_layer(setup):
    """Scaling a read-out-layer unit by 0 is zero ablation."""
    model, v, data, w, base, _ = setup
    u = Units(heads=((HEAD_LAYER, PLANT_HEAD),))
    a = signal(model, data, w, v, READOUT, Edit(u, "scale", 0.0))
    b = signal(model, data, w, v, READOUT, Edit(u, "zero"))
    assert a == pytest.approx(b, rel=1e-5)


def test_random_like_keeps_the_layer_profile_and_avoids_the_circuit():
    u = Units(heads=((0, 1), (0, 2), (2, 0)), neurons=((1, 5),))
    for seed in range(5):
        r = random_like(u, 4, 64, seed)
        assert sorted(la for la, _ in r.heads) == [0, 0, 2] and [la for la, _ in r.neurons] == [1]
        assert not set(r.heads) & set(u.heads) and not set(r.neurons) & set(u.neurons)
    assert random_like(u, 4, 64, 0) != random_like(u, 4, 64, 1)
    assert curve_sizes(100, 5)[-1] == 100 and curve_sizes(1, 5) == [1] and curve_sizes(0) == []


def _decoys(n: int) -> tuple[tuple[int, int], ...]:
    """``n`` neurons of layer 0 that are not the planted one."""
    return tuple((PLANT_LAYER, i) for i in range(20, 20 + n))


def test_smallest_prefix_cuts_to_the_fewest_units_that_reach_the_target(setup):
    """Three decoys outrank the planted neuron: the fewest units removing half the signal are exactly the
    decoys plus the neuron (4), and the cut keeps rank order and scores."""
    model, v, data, w, base, _ = setup
    circ = Circuit("joy", "test", READOUT, heads=((HEAD_LAYER, PLANT_HEAD),),
                   neurons=_decoys(3) + ((PLANT_LAYER, PLANT_NEURON),) + _decoys(8)[3:],
                   head_scores=(0.3,), neuron_scores=(9.0, 8.0, 7.0, 4.5, 0.2, 0.1, 0.05, 0.01, 0.005))
    cut, rec = smallest_prefix(model, data, w, v, circ, base, target=0.5)
    assert rec["reached"] and rec["n"] == 4 and rec["n_candidates"] == 10 and rec["drop"] >= 0.5
    assert cut.neurons == _decoys(3) + ((PLANT_LAYER, PLANT_NEURON),) and cut.heads == ()
    assert cut.neuron_scores == (9.0, 8.0, 7.0, 4.5)
    drops = dict(rec["evaluated"])
    assert drops[3] < 0.5 <= drops[4]  # the size below the cut does not reach it
    # the same search with zero ablation finds the same cut
    assert smallest_prefix(model, data, w, v, circ, base, target=0.5, method="zero")[1]["n"] == 4


def test_smallest_prefix_with_confidence_agrees_when_the_scenarios_agree(setup):
    """On the planted model every scenario loses the signal with the planted neuron, so the lower end of
    the interval reaches the target at the same size as the point drop."""
    model, v, data, w, base, _ = setup
    circ = Circuit("joy", "test", READOUT, heads=((HEAD_LAYER, PLANT_HEAD),),
                   neurons=_decoys(3) + ((PLANT_LAYER, PLANT_NEURON),) + _decoys(8)[3:],
                   head_scores=(0.3,), neuron_scores=(9.0, 8.0, 7.0, 4.5, 0.2, 0.1, 0.05, 0.01, 0.005))
    cut, rec = smallest_prefix(model, data, w, v, circ, base, target=0.5, confidence=0.95)
    assert rec["reached"] and rec["n"] == 4 and rec["confidence"] == 0.95
    assert 0.5 <= rec["drop_lower"] <= rec["drop"]
    lower = dict(rec["evaluated_lower"])
    assert lower[3] < 0.5 <= lower[4]


def _synthetic_projections(per_size: dict[int, list[float]]):
    """A stand-in for ``projections``: 8 scenarios of one joy and one anger stimulus; before any ablation
    joy reads 1 and anger 0 in each; ablating the top ``n`` units removes ``per_size[n][s]`` of scenario
    ``s``'s joy reading (the planted truth of the test below)."""

    def fake(model, data, direction, layer, edit=None, baseline=None, **kw):
        n = 0 if edit is None else len(edit.units)
        removed = per_size[n] if n else [0.0] * 8
        return torch.tensor([x for r in removed for x in (1.0 - r, 0.0)])

    return fake


def test_smallest_prefix_with_confidence_keeps_units_until_the_interval_clears(monkeypatch):
    """Planted: two units remove 0.9 of half the scenarios and 0.2 of the rest (mean 0.55: the point drop
    clears 0.5, its interval does not); three remove 0.6 of every scenario. The point cut keeps 2 units,
    the confidence cut 3."""
    import types

    import psylens.circuits.ablation as ab

    per_size = {1: [0.3] * 8, 2: [0.9, 0.2] * 4, 3: [0.6] * 8, 4: [0.9] * 8}
    monkeypatch.setattr(ab, "projections", _synthetic_projections(per_size))
    monkeypatch.setattr(ab, "signal", lambda m, d, w, v, L, edit=None, b=None: float(
        torch.from_numpy(np.asarray(w, float)) @ _synthetic_projections(per_size)(m, d, v, L, edit).double()))
    groups = [f"s{i}" for i in range(8) for _ in range(2)]
    data = types.SimpleNamespace(groups=groups)
    w = np.array([0.125, -0.125] * 8)
    circ = Circuit("joy", "test", 3, heads=(), neurons=((0, 0), (0, 1), (0, 2), (0, 3)),
                   neuron_scores=(4.0, 3.0, 2.0, 1.0))
    point = smallest_prefix(None, data, w, None, circ, None, target=0.5)[1]
    assert point["n"] == 2 and point["drop"] == pytest.approx(0.55)
    cut, rec = smallest_prefix(None, data, w, None, circ, None, target=0.5, confidence=0.95)
    assert rec["n"] == 3 and cut.neurons == ((0, 0), (0, 1), (0, 2))
    assert rec["drop_lower"] == pytest.approx(0.6)
    lower = dict(rec["evaluated_lower"])
    assert lower[2] < 0.5 < dict(rec["evaluated"])[2]
    # control: when every size's scenarios agree, confidence changes nothing
    flat = {1: [0.3] * 8, 2: [0.55] * 8, 3: [0.6] * 8, 4: [0.9] * 8}
    monkeypatch.setattr(ab, "projections", _synthetic_projections(flat))
    assert smallest_prefix(None, data, w, None, circ, None, target=0.5, confidence=0.95)[1]["n"] == 2


def test_drop_ci_of_a_pooled_set_resamples_within_labels():
    """Planted: 8 joy texts read 101 before and 100.5 after, 40 others read 100 throughout — every joy text
    loses exactly half of its contrast, so the drop is 0.5 in every resample that keeps the label counts.
    Resampling the texts freely (each its own group, no strata) lets the count of joy texts vary, so the common
    level leaks into the contrast and the interval spreads; stratified by label it is the point."""
    from psylens.circuits.signal import contrast_weights

    labels = ["joy"] * 8 + ["anger", "fear", "sadness", "disgust", "surprise"] * 8
    ids = [f"t{i}" for i in range(len(labels))]
    w = contrast_weights(labels, ids, "joy", ("joy", "anger", "fear", "sadness", "disgust", "surprise"), pooled=True)
    p0 = torch.tensor([101.0] * 8 + [100.0] * 40)
    p1 = torch.tensor([100.5] * 8 + [100.0] * 40)
    lo, hi = drop_ci(p0, p1, w, ids, strata=labels)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(0.5)
    free = drop_ci(p0, p1, w, ids)
    assert free[1] - free[0] > 0.4 and free[0] < 0.1  # the control: unstratified, it spans nearly all of [0, 0.5]
    # grouped sets (one stratum) are unchanged by strata=None, and bad input is refused
    with pytest.raises(ValueError, match="spans strata"):
        drop_ci(p0, p1, w, ["g"] * 48, strata=labels)
    with pytest.raises(ValueError, match="one entry per stimulus"):
        drop_ci(p0, p1, w, ids[:-1])


def test_smallest_prefix_of_decoys_never_reaches_the_target(setup):
    """Control: a circuit of units that write nothing is returned whole, marked as not reaching the target."""
    model, v, data, w, base, _ = setup
    circ = Circuit("joy", "test", READOUT, heads=(), neurons=_decoys(6), neuron_scores=(6.0, 5.0, 4.0, 3.0, 2.0, 1.0))
    cut, rec = smallest_prefix(model, data, w, v, circ, base, target=0.5)
    assert cut == circ and not rec["reached"] and rec["n"] == 6 and abs(rec["drop"]) < 0.1


def test_smallest_prefix_rejects_bad_input(setup):
    model, v, data, w, base, circ = setup
    with pytest.raises(ValueError, match="target"):
        smallest_prefix(model, data, w, v, circ, base, target=1.0)
    with pytest.raises(ValueError, match="method"):
        smallest_prefix(model, data, w, v, circ, base, method="resample")
    with pytest.raises(ValueError, match="positive signal"):
        smallest_prefix(model, data, -w, v, circ, base)
    with pytest.raises(ValueError, match="confidence"):
        smallest_prefix(model, data, w, v, circ, base, confidence=95)


def test_ablation_needs_five_random_draws(setup):
    model, v, data, w, base, circ = setup
    with pytest.raises(ValueError, match="at least 5"):
        ablation_curve(model, data, w, v, circ, base, n_random=4)
    _ = np, torch
