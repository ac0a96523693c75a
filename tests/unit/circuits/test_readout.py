"""``readout="last"``: the projection is read at each stimulus' last text token (as ``psylens probe --positions
last`` reads), edits still touch every text token. Known answer on the planted model: the planted neuron writes
at the " joy" token only, so at the last token its *direct* write is gone while its effect through the planted
head (which carries it to later positions) remains — the head ranks first either way."""

from __future__ import annotations

import pytest
import torch

from psylens.circuits.scores import attribution, patching
from psylens.circuits.signal import contrast_weights, prepare, projections, unit_baseline
from psylens.interventions import record

from tests.unit.circuits.circuits_planted import EMOS, HEAD_LAYER, PLANT_HEAD, PLANT_LAYER, PLANT_NEURON, READOUT, neutral_texts, stimuli


def _scores(model, v, readout):
    texts, labels, groups = stimuli()
    data = prepare(model, texts, labels=labels, groups=groups, batch_size=6, readout=readout)
    w = contrast_weights(labels, groups, "joy", EMOS)
    base = unit_baseline(model, prepare(model, neutral_texts()), range(READOUT + 1))
    sc = attribution(model, data, w, v, READOUT, base)
    return data, patching(model, data, w, v, sc, base, top_heads=4, top_neurons=8)


def test_the_last_token_is_read_and_nothing_else(tiny_model):
    model = tiny_model("llama")
    texts, labels, groups = stimuli(2)
    data = prepare(model, texts, labels=labels, groups=groups, batch_size=4, readout="last")
    v = torch.randn(32, generator=torch.Generator().manual_seed(2))
    got = projections(model, data, v, 1)
    for b in data.batches:
        last = b.attention_mask.sum(1) - 1
        assert torch.equal(b.read_mask.sum(1), torch.ones(len(b.rows), dtype=torch.long))
        assert torch.equal(b.read_mask.float().argmax(1), last) and bool(b.text_mask[torch.arange(len(last)), last].all())
        with torch.no_grad(), record(model, ["resid_post"], [1]) as rec:
            model.hf_model(input_ids=b.input_ids, attention_mask=b.attention_mask)
        x = rec["resid_post", 1][torch.arange(len(last)), last]
        torch.testing.assert_close(got[list(b.rows)], x @ v, rtol=1e-5, atol=1e-5)
    mean = projections(model, prepare(model, texts, labels=labels, groups=groups, batch_size=4), v, 1)
    assert (mean - got).abs().max() > 1e-3  # control: the mean read-out is another number
    assert data.subset([0, 1], model).readout == "last"
    with pytest.raises(ValueError, match="readout 'first' is not one of"):
        prepare(model, texts, readout="first")


def test_at_the_last_token_the_planted_neuron_acts_only_through_the_head(planted):
    model, v = planted
    _, mean = _scores(model, v, "mean")
    _, last = _scores(model, v, "last")
    for sc in (mean, last):  # the head that carries the direction to every later position ranks first
        assert int(torch.argmax(sc.direct_heads[HEAD_LAYER])) == PLANT_HEAD
        assert int(torch.argmax(sc.atp_heads.flatten())) == HEAD_LAYER * sc.atp_heads.shape[1] + PLANT_HEAD
    n_mean = float(mean.direct_neurons[PLANT_LAYER, PLANT_NEURON])
    n_last = float(last.direct_neurons[PLANT_LAYER, PLANT_NEURON])
    assert n_mean == float(mean.direct_neurons.max())  # read over every token: the neuron's own write counts
    assert abs(n_last) < 0.05 * abs(n_mean)  # read at the last token: its write sits at " joy", not there
    # ... but patching it still removes the signal (through the head), as atp and real patching agree
    assert float(last.patching_neurons[PLANT_LAYER, PLANT_NEURON]) > 0.5 * last.signal
    assert float(last.atp_neurons[PLANT_LAYER, PLANT_NEURON]) > 0.5 * last.signal
