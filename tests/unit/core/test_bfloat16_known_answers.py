"""The planted truths of the circuits and validation tests, recovered with the model in bfloat16 — the dtype every
command loads on CUDA — and their controls still failing there.

The float32 versions live beside each analysis (tests/unit/circuits/test_scores.py,
tests/unit/validation/test_validation_gates.py); these take the same planted models to bfloat16.
"""

from __future__ import annotations

import pytest
import torch

from psylens.circuits.scores import attribution, patching
from psylens.validation.gates import feels_matrix, logit_lens
from tests.unit.circuits.circuits_planted import HEAD_LAYER, PLANT_HEAD, PLANT_LAYER, PLANT_NEURON, READOUT, planted_model
from tests.unit.circuits.test_scores import _setup, _stands_out
from tests.unit.validation.test_validation_gates import CONTEXTS, _deranged, _planted


def _bf16(model):
    model.hf_model.to(torch.bfloat16)
    assert model.dtype == torch.bfloat16
    return model


@pytest.fixture(scope="module")
def planted_bf16(smollm_tokenizer):
    model, v = planted_model(smollm_tokenizer)
    return _bf16(model), v


@pytest.mark.parametrize("score", ["direct", "atp", "patching"])
def test_circuits_find_the_planted_head_and_neuron_in_bfloat16(planted_bf16, score) -> None:
    model, v = planted_bf16
    data, w, base = _setup(model, v)
    sc = patching(model, data, w, v, attribution(model, data, w, v, READOUT, base), base, top_heads=8, top_neurons=8)
    heads = torch.nan_to_num(sc.get(score, "heads"), nan=-1e9)
    neurons = torch.nan_to_num(sc.get(score, "neurons"), nan=-1e9)
    assert divmod(int(torch.argmax(heads)), heads.shape[1]) == (HEAD_LAYER, PLANT_HEAD)
    assert divmod(int(torch.argmax(neurons)), neurons.shape[1]) == (PLANT_LAYER, PLANT_NEURON)
    if score != "patching":
        assert _stands_out(sc.get(score, "heads")[: READOUT + 1]) > 10
        assert _stands_out(sc.get(score, "neurons")[: READOUT + 1]) > 10


def test_circuits_random_direction_scores_stay_at_rounding_level_in_bfloat16(planted_bf16) -> None:
    """On a direction orthogonal to the planted one, float32 scores of the planted units are ~0 and nothing stands out.
    In bfloat16 the planted neuron's weights, rounded to 8 significant bits, write ~1e-4 of their size onto any
    direction, which is still 15× the scores of this tiny model's idle units. So the control here is the scale: no
    unit scores 1% of what the planted units score on their own direction (measured: 1.5e-4 of it)."""
    model, v = planted_bf16
    torch.manual_seed(5)
    r = torch.randn(32)
    r = r - (r @ v) * v
    r = r / r.norm()
    data_v, w_v, base_v = _setup(model, v)
    own = attribution(model, data_v, w_v, v, READOUT, base_v)
    data, w, base = _setup(model, r)
    sc = attribution(model, data, w, r, READOUT, base)
    for score in ("direct", "atp"):
        for kind in ("neurons", "heads"):
            planted_scale = float(own.get(score, kind)[: READOUT + 1].abs().max())
            assert float(sc.get(score, kind)[: READOUT + 1].abs().max()) < 0.01 * planted_scale, (score, kind)


def test_validation_planted_words_in_bfloat16(smollm_tokenizer) -> None:
    model, dirs, words = _planted(smollm_tokenizer, n_words=3)
    model = _bf16(model)
    lens = logit_lens(model, dirs, 1, words=words)
    assert lens["value"] == 6 and lens["passed"] is True and lens["control"] == 0
    assert logit_lens(model, _deranged(dirs), 1, words=words)["value"] == 0  # the control still fails
    model, dirs, one = _planted(smollm_tokenizer, n_words=1)  # the feels-matrix planting (one word an emotion)
    model = _bf16(model)
    last = model.n_layers - 1
    g = feels_matrix(model, dirs, last, words=one, contexts=CONTEXTS, alpha=50.0)
    assert g["rows_won"] == 6 and g["cols_won"] == 6 and g["value"] > g["control"] + 1.0
    bad = feels_matrix(model, _deranged(dirs), last, words=one, contexts=CONTEXTS, alpha=50.0)
    assert bad["rows_won"] == 0 and bad["passed"] is False
