"""Known answers for direct / atp / patching on a planted tiny model, with random-direction controls."""

from __future__ import annotations

import pytest
import torch

from psylens.circuits.scores import attribution, patching, spearman
from psylens.circuits.signal import contrast_weights, prepare, signal, unit_baseline

from tests.unit.circuits.circuits_planted import EMOS, HEAD_LAYER, PLANT_HEAD, PLANT_LAYER, PLANT_NEURON, READOUT, neutral_texts, stimuli


def _setup(model, v, readout=READOUT):
    texts, labels, groups = stimuli()
    data = prepare(model, texts, labels=labels, groups=groups, batch_size=6)
    w = contrast_weights(labels, groups, "joy", EMOS)
    base = unit_baseline(model, prepare(model, neutral_texts()), range(readout + 1))
    return data, w, base


def _stands_out(x: torch.Tensor) -> float:
    """The top score over the largest magnitude among the rest (> 1: above everything else)."""
    flat = x.flatten()
    top = int(torch.argmax(flat))
    rest = torch.cat([flat[:top], flat[top + 1 :]])
    return float(flat[top] / rest.abs().max())


@pytest.fixture(scope="module")
def scored(planted):
    model, v = planted
    data, w, base = _setup(model, v)
    sc = attribution(model, data, w, v, READOUT, base)
    sc = patching(model, data, w, v, sc, base, top_heads=8, top_neurons=8)
    return model, v, data, w, base, sc


@pytest.mark.parametrize("score", ["direct", "atp", "patching"])
def test_planted_head_and_neuron_rank_first(scored, score):
    *_, sc = scored
    heads = torch.nan_to_num(sc.get(score, "heads"), nan=-1e9)
    neurons = torch.nan_to_num(sc.get(score, "neurons"), nan=-1e9)
    assert divmod(int(torch.argmax(heads)), heads.shape[1]) == (HEAD_LAYER, PLANT_HEAD)
    assert divmod(int(torch.argmax(neurons)), neurons.shape[1]) == (PLANT_LAYER, PLANT_NEURON)
    if score != "patching":  # patching only exists for the top units; the rest is NaN
        assert _stands_out(sc.get(score, "neurons")[: READOUT + 1]) > 10
        assert _stands_out(sc.get(score, "heads")[: READOUT + 1]) > 10


@pytest.mark.parametrize("seed", [5, 6])
def test_random_direction_nothing_stands_out(planted, seed):
    model, v = planted
    torch.manual_seed(seed)
    r = torch.randn(32)
    r = r - (r @ v) * v  # orthogonal to the planted direction
    r = r / r.norm()
    data, w, base = _setup(model, r)
    sc = attribution(model, data, w, r, READOUT, base)
    # the planted units write v, not r: no unit is far above the others (the planted ones are > 10x)
    for score in ("direct", "atp"):
        assert _stands_out(sc.get(score, "neurons")[: READOUT + 1]) < 3
        assert _stands_out(sc.get(score, "heads")[: READOUT + 1]) < 3


def test_signal_is_the_sum_and_atp_scores_units_above_readout_zero(scored, tiny_model):
    model, v, data, w, base, sc = scored
    assert sc.signal == pytest.approx(signal(model, data, w, v, READOUT), rel=1e-5)
    unplanted = signal(tiny_model("llama"), data, w, v, READOUT)  # same weights before planting
    assert sc.signal > 10 * abs(unplanted)
    assert torch.all(sc.atp_neurons[READOUT + 1 :] == 0) and torch.all(sc.direct_heads[READOUT + 1 :] == 0)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_atp_equals_patching_where_linear(tiny_model, arch):
    """Neurons of the read-out layer reach resid_post linearly: atp is exact there."""
    model = tiny_model(arch)
    torch.manual_seed(3)
    v = torch.randn(32)
    v = v / v.norm()
    data, w, base = _setup(model, v, readout=2)
    sc = attribution(model, data, w, v, 2, base)
    sc = patching(model, data, w, v, sc, base, top_heads=1, top_neurons=40)
    ok = ~torch.isnan(sc.patching_neurons[2])
    assert int(ok.sum()) >= 5
    a, p = sc.atp_neurons[2][ok], sc.patching_neurons[2][ok]
    assert torch.allclose(a, p, rtol=1e-3, atol=1e-6 * float(p.abs().max()))


def test_atp_is_only_approximate_through_a_nonlinearity(scored):
    """Control: the planted neuron's write is read again by the planted head through attention and
    norms; its atp is a first-order estimate and differs from real patching."""
    *_, sc = scored
    a = float(sc.atp_neurons[PLANT_LAYER, PLANT_NEURON])
    p = float(sc.patching_neurons[PLANT_LAYER, PLANT_NEURON])
    assert abs(a - p) / abs(p) > 1e-3
    assert spearman(sc.atp_neurons[~torch.isnan(sc.patching_neurons)], sc.patching_neurons[~torch.isnan(sc.patching_neurons)]) > 0


def test_gemma3_scores_run_and_agree_with_patching(tiny_model):
    model = tiny_model("gemma3")
    torch.manual_seed(4)
    v = torch.randn(32)
    v = v / v.norm()
    data, w, base = _setup(model, v, readout=2)
    sc = attribution(model, data, w, v, 2, base)
    sc = patching(model, data, w, v, sc, base, top_heads=4, top_neurons=12)
    ok = ~torch.isnan(sc.patching_neurons)
    # Gemma's post-feedforward norm makes the last layer nonlinear in a neuron, but only slightly
    assert spearman(sc.atp_neurons[ok], sc.patching_neurons[ok]) > 0.8
    assert sc.atp_heads.shape == (3, 4) and sc.atp_neurons.shape == (3, 64)
