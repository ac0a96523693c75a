"""Known answers for sublayer influence: a write at the read-out layer's MLP output reaches the read-out
unchanged (influence exactly 1), a planted head that copies the direction amplifies writes below it, and a
layer above the read-out is not measured."""

from __future__ import annotations

import pytest
import torch

from psylens.circuits.signal import prepare
from psylens.circuits.sublayers import sublayer_influence, sublayer_scales
from psylens.interventions import record

from tests.unit.circuits.circuits_planted import HEAD_LAYER, PLANT_LAYER, READOUT, stimuli


def _data(model):
    texts, labels, groups = stimuli(2)
    return prepare(model, texts, labels=labels, groups=groups, batch_size=4)


def _unit(seed: int = 0) -> torch.Tensor:
    v = torch.randn(32, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def test_the_readout_layers_mlp_write_reaches_the_readout_unchanged(tiny_model):
    model = tiny_model("llama")
    data = _data(model)
    df = sublayer_influence(model, data, _unit(), 2, alphas=(0.5, 1.0))
    infl = df.groupby(["layer", "sublayer"]).influence.first()
    assert infl[(2, "mlp")] == pytest.approx(1.0, abs=1e-4)  # nothing sits between mlp_out[L] and resid_post[L]
    # every other sublayer passes its write through later norms and blocks: not exactly 1
    assert all(abs(infl[k] - 1.0) > 1e-3 for k in infl.index if k != (2, "mlp"))
    assert set(infl.index) == {(lay, s) for lay in range(3) for s in ("attn", "mlp")}
    # the change is α·σ per unit of influence, σ the sublayer's mean output norm over the text tokens
    row = df[(df.layer == 2) & (df.sublayer == "mlp") & (df.alpha == 1.0)].iloc[0]
    assert row.change == pytest.approx(row.sigma, rel=1e-4)
    b = data.batches[0]
    with torch.no_grad(), record(model, ["mlp_out"], [2]) as rec:
        model.hf_model(input_ids=b.input_ids, attention_mask=b.attention_mask)
    sig = sublayer_scales(model, data.subset(list(b.rows), model, batch_size=len(b.rows)), 2)[("mlp", 2)]
    assert sig == pytest.approx(float(rec["mlp_out", 2][b.text_mask].norm(dim=-1).mean()), rel=1e-5)


def test_a_planted_head_that_copies_the_direction_amplifies_writes_below_it(planted, tiny_model):
    """The planted head of layer 1 reads the direction into its value and writes 20× it: a write along the
    direction at layer 0 reaches the read-out (layer 1) many times over. Control: the same write in the
    unplanted tiny model, and random directions through the planted model."""
    model, v = planted
    data = _data(model)
    infl = sublayer_influence(model, data, v, READOUT, alphas=(0.25, 0.5)).groupby(["layer", "sublayer"]).influence.first()
    assert PLANT_LAYER < HEAD_LAYER == READOUT
    assert infl[(PLANT_LAYER, "mlp")] > 3.0
    plain = sublayer_influence(tiny_model("llama"), _data(tiny_model("llama")), v, READOUT, alphas=(0.25, 0.5))
    assert plain.groupby(["layer", "sublayer"]).influence.first()[(PLANT_LAYER, "mlp")] < 1.5
    # random directions share a little of the planted one (the head copies that part 20×): their median stays near 1
    others = [sublayer_influence(model, data, _unit(s), READOUT, alphas=(0.25, 0.5))
              .groupby(["layer", "sublayer"]).influence.first()[(PLANT_LAYER, "mlp")] for s in range(2, 9)]
    assert sorted(others)[len(others) // 2] < 1.5 and max(others) < 0.6 * infl[(PLANT_LAYER, "mlp")]
