from __future__ import annotations

import pytest
import torch

from tests.unit.compare.compare_planted import tiny_dirs  # noqa: F401  (fixture)
from psylens.compare.pair import ModelPair
from psylens.compare.steering_transfer import SteeringTransferConfig, steering_transfer
from psylens.concepts import feel_words
from psylens.models import load_model
from psylens.probes import Directions
from psylens.stimuli import EMOTIONS
from psylens.validation.gates import word_token_ids

LAYER = 2  # the last layer: the steered vector reaches the unembedding almost unchanged
CFG = SteeringTransferConfig(layer=LAYER, scale=4.0, n_contexts=3, n_random=5)
TARGET = "joy"


@pytest.fixture(scope="module")
def setup(tiny_dirs):
    base = load_model(tiny_dirs["base"], device="cpu")
    twin = load_model(tiny_dirs["base"], device="cpu")
    tuned = load_model(tiny_dirs["base"], device="cpu")
    with torch.no_grad():  # a random init's logits are nearly flat: sharpen the unembedding (all three alike)
        for m in (base, twin, tuned):
            m.hf_model.lm_head.weight.mul_(50.0)
    words = feel_words()
    ids = word_token_ids(base.tokenizer, {e: words[e] for e in EMOTIONS})
    w_u = base.hf_model.lm_head.weight.detach()
    # joy's direction: the mean unembedding of its words (it raises them); the others: random
    g = torch.Generator().manual_seed(2)
    raw = torch.randn(len(EMOTIONS), 3, 32, generator=g)
    raw[EMOTIONS.index(TARGET)] = w_u[ids[TARGET]].mean(0)
    dirs = Directions.from_raw(raw, EMOTIONS, [0, 1, 2], meta={"kind": "test"})
    with torch.no_grad():  # the tuned model can no longer say joy's words
        tuned.hf_model.lm_head.weight[ids[TARGET]] = 0.0
    return base, twin, tuned, dirs


def test_tuned_model_loses_the_planted_emotion(setup):
    base, _, tuned, dirs = setup
    res = steering_transfer(ModelPair(base, tuned), dirs, CFG)
    b, t = res["base"]["own_shift"], res["tuned"]["own_shift"]
    assert b[TARGET] > 1.0                     # the base's joy vector raises joy's words
    assert t[TARGET] < b[TARGET] - 1.0         # the tuned model cannot
    others = [abs(t[e] - b[e]) for e in EMOTIONS if e != TARGET]
    assert max(others) < 0.5 * (b[TARGET] - t[TARGET])
    assert res["alpha"] > 0 and res["layer"] == LAYER


def test_model_against_itself_transfers_exactly(setup):
    base, twin, _, dirs = setup
    res = steering_transfer(ModelPair(base, twin), dirs, CFG)
    b, t = res["base"], res["tuned"]  # the same numbers up to float rounding (alpha is passed on rounded)
    assert b["passed"] == t["passed"] and b["rows_won"] == t["rows_won"]
    assert t["value"] == pytest.approx(b["value"], abs=1e-4)
    assert t["own_shift"] == pytest.approx(b["own_shift"], abs=1e-4)
    assert res["own_shift_difference"] == pytest.approx(0.0, abs=1e-4)
    assert all(abs(v) < 1e-4 for v in res["own_shift_difference_ci95"])


def test_config_is_validated():
    with pytest.raises(ValueError, match="n_random"):
        SteeringTransferConfig(n_random=2)
