"""Ablation, enhancement, faithfulness and completeness on the planted model, against random sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psylens.circuits.ablation import ablation_curve, curve_sizes, enhancement, faithfulness_completeness, random_like
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


def test_ablation_needs_five_random_draws(setup):
    model, v, data, w, base, circ = setup
    with pytest.raises(ValueError, match="at least 5"):
        ablation_curve(model, data, w, v, circ, base, n_random=4)
    _ = np, torch
