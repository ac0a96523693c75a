"""Circuit modulation by shifting (``circuit_op="shift"``): each unit's own emotion contrast, recovered on a
planted model, added while generating. Known answers: the planted neuron's contrast stands out (shuffled labels:
it does not), the contrast is exactly the weighted per-stimulus mean, and on prompts that never name the emotion
the shifted circuit raises the planted word, the opposite shift lowers it, and random units shifted by their own
contrasts leave it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psylens.circuits.circuit import Circuit
from psylens.circuits.modulation import ModulationConfig, circuit_interventions, modulation
from psylens.circuits.pipeline import CircuitsConfig
from psylens.circuits.signal import Baseline, contrast_weights, prepare, unit_baseline, unit_contrast

from tests.unit.circuits.circuits_planted import (EMOS, HEAD_LAYER, PLANT_HEAD, PLANT_LAYER, PLANT_NEURON, READOUT,
                                                  stimuli)
from tests.unit.circuits.test_modulation import JOY_WORDS, planted_word  # noqa: F401 (fixture)

NEUTRAL_PROMPTS = ["Tell me about the weather today.", "Describe the bus station at noon."]
NEUTRAL_CONTEXTS = ["The room was quiet. I feel", "We walked to the station. I feel"]


def _data(model, shuffle: int | None = None):
    texts, labels, groups = stimuli(4)
    if shuffle is not None:  # labels permuted within each scenario: the contrast loses its emotion
        rng = np.random.default_rng(shuffle)
        labels = [lab for g in range(4) for lab in rng.permutation(labels[3 * g: 3 * g + 3]).tolist()]
    data = prepare(model, texts, labels=labels, groups=groups, batch_size=5)
    return data, contrast_weights(data.labels, data.groups, "joy", EMOS)


def test_unit_contrast_finds_the_planted_neuron_and_shuffled_labels_do_not(planted):
    model, _ = planted
    data, w = _data(model)
    c = unit_contrast(model, data, w, range(READOUT + 1))
    row = c.neurons[PLANT_LAYER].abs()
    assert int(row.argmax()) == PLANT_NEURON and float(c.neurons[PLANT_LAYER, PLANT_NEURON]) > 0
    rest = torch.cat([row[:PLANT_NEURON], row[PLANT_NEURON + 1:]])
    assert float(row[PLANT_NEURON]) > 10 * float(rest.max())
    assert torch.all(c.neurons[READOUT + 1:] == 0) and torch.all(c.heads[READOUT + 1:] == 0)  # layers not asked for
    # control: with labels shuffled inside each scenario, whichever text is called "joy" is not the " joy" one
    # for most scenarios, and the planted neuron no longer stands out by an order of magnitude
    for seed in (1, 2):
        data_s, w_s = _data(model, shuffle=seed)
        rs = unit_contrast(model, data_s, w_s, range(READOUT + 1)).neurons[PLANT_LAYER].abs()
        assert float(rs[PLANT_NEURON]) < 0.6 * float(row[PLANT_NEURON]), seed


def test_unit_contrast_is_the_weighted_mean_of_per_stimulus_means(planted):
    model, _ = planted
    data, w = _data(model)
    c = unit_contrast(model, data, w, [0, 1])
    heads = torch.zeros_like(c.heads, dtype=torch.float64)
    neurons = torch.zeros_like(c.neurons, dtype=torch.float64)
    for i in range(len(data)):  # one stimulus alone: unit_baseline is its token mean
        b = unit_baseline(model, data.subset([i], model), [0, 1])
        heads += w[i] * b.heads.double()
        neurons += w[i] * b.neurons.double()
    torch.testing.assert_close(c.heads, heads.float(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c.neurons, neurons.float(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="one per stimulus"):
        unit_contrast(model, data, w[:-1], [0])
    with pytest.raises(ValueError, match="within 0"):
        unit_contrast(model, data, w, [7])


def test_shift_interventions_add_the_units_contrast_times_the_factor():
    shift = Baseline(heads=torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3),
                     neurons=torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6))
    circ = Circuit("joy", "t", 1, heads=((0, 1), (0, 3)), neurons=((1, 5),))
    ivs = circuit_interventions(circ, 2.0, shift)
    assert [(i.site, i.layer, i.units, i.op) for i in ivs] == [("head_out", 0, (1, 3), "add"), ("mlp_post", 1, (5,), "add")]
    torch.testing.assert_close(ivs[0].value, 2.0 * shift.heads[0, [1, 3]])
    torch.testing.assert_close(ivs[1].value, torch.tensor([2.0 * 11.0]))
    with pytest.raises(ValueError, match="compute it on the circuit's model"):
        circuit_interventions(Circuit("joy", "t", 1, heads=(), neurons=((1, 9),)), 1.0, shift)
    with pytest.raises(ValueError, match="circuit_op"):
        ModulationConfig(circuit_op="boost")
    with pytest.raises(ValueError, match="modulation_op"):
        CircuitsConfig(modulation_op="boost")
    with pytest.raises(ValueError, match="finite"):
        ModulationConfig(shift_factors=(float("nan"),))
    with pytest.raises(ValueError, match="modulation_factors"):
        CircuitsConfig(modulation_factors=())
    with pytest.raises(ValueError, match="modulation_steer_scales"):
        CircuitsConfig(modulation_steer_scales=(0.1, float("inf")))
    cfg = CircuitsConfig(modulation_op="shift", modulation_factors=[0.5, 1], modulation_steer_scales=[0.025, 0.05])
    assert CircuitsConfig.from_dict(cfg.to_dict()) == cfg and cfg.modulation_factors == (0.5, 1.0)
    assert cfg.modulation_steer_scales == (0.025, 0.05)
    assert CircuitsConfig.from_dict(CircuitsConfig(modulation_judges=["probe"]).to_dict()).modulation_judges == ("probe",)
    for bad in (["nrc"], ["probe", "probe"]):
        with pytest.raises(ValueError, match="modulation_judges"):
            CircuitsConfig(modulation_judges=bad)


def _run(model, v, circ, op, shift, factors):
    cfg = ModulationConfig(factors=factors, shift_factors=factors, circuit_op=op, steer_scales=(0.5,),
                           max_new_tokens=4, batch_size=8, n_reference=1)
    return modulation(model, circ, v, NEUTRAL_PROMPTS, emotions=EMOS, words=JOY_WORDS, contexts=NEUTRAL_CONTEXTS,
                      config=cfg, shift=shift)


@pytest.mark.slow
def test_shifting_the_planted_circuit_raises_its_word_on_neutral_prompts_and_random_sets_do_not(planted_word):
    model, v = planted_word
    data, w = _data(model)
    shift = unit_contrast(model, data, w, range(READOUT + 1))
    circ = Circuit("joy", "planted", READOUT, heads=((HEAD_LAYER, PLANT_HEAD),), neurons=((PLANT_LAYER, PLANT_NEURON),))
    with pytest.raises(ValueError, match="pass shift="):
        _run(model, v, circ, "shift", None, (1.0,))
    df = _run(model, v, circ, "shift", shift, (1.0, 4.0))
    assert df.attrs["circuit_op"] == "shift"
    strong = df[(df.method == "circuit") & (df.strength == 4.0)].iloc[0]
    # the planted truth: nothing in these prompts names joy, yet the shifted circuit lifts " joy" after "… I feel"
    # above the other emotions' words, in every context
    assert strong.row_win and strong.feels_shift > 0.3 and all(m > 0.1 for m in strong.feels_margins), strong
    # control 1: the effect follows the contrast's sign — the same units shifted by −4 × the contrast push " joy" down
    neg = _run(model, v, circ, "shift", shift, (-4.0,))
    down = neg[neg.method == "circuit"].iloc[0]
    assert down.feels_shift < -0.3 and not down.row_win, down
    # control 2: size-matched random units of the same layers, shifted by their own contrasts, do not lift it
    rng = np.random.default_rng(0)
    for _ in range(2):
        h = int(rng.choice([x for x in range(4) if x != PLANT_HEAD]))
        n = int(rng.choice([x for x in range(64) if x != PLANT_NEURON]))
        rnd = _run(model, v, Circuit("joy", "random", READOUT, heads=((HEAD_LAYER, h),), neurons=((PLANT_LAYER, n),)),
                   "shift", shift, (4.0,))
        r = rnd[rnd.method == "circuit"].iloc[0]
        assert abs(r.feels_shift) < 0.01 * strong.feels_shift and r.read_back_win == 0.0, (h, n, r)
