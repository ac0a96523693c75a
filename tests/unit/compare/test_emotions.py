from __future__ import annotations

import pytest
import torch

from tests.unit.compare.compare_planted import tiny_dirs  # noqa: F401  (fixture)
from psylens.compare.emotions import EmotionsConfig, emotion_shifts, headline
from psylens.compare.pair import ModelPair
from psylens.concepts import CONCEPTS
from psylens.models import load_model
from psylens.probes import Directions

CFG = EmotionsConfig(n_scenarios=4, n_tasks=6, band=(0.5, 1.0))
PLANTED = "calm"


@pytest.fixture(scope="module")
def directions():
    """24 orthonormal concept directions, the same at every layer of the tiny model."""
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(3)))
    raw = q.T[: len(CONCEPTS)][:, None].expand(-1, 3, -1).contiguous()
    return Directions.from_raw(raw, CONCEPTS, [0, 1, 2], method="mean_diff", meta={"kind": "test"})


@pytest.fixture(scope="module")
def models(tiny_dirs, directions):
    base = load_model(tiny_dirs["bias_base"], device="cpu")
    tuned = load_model(tiny_dirs["bias_base"], device="cpu")
    with torch.no_grad():  # a bias at layer 0 along one concept's direction
        tuned.hf_model.model.layers[0].mlp.down_proj.bias += 5.0 * directions[PLANTED, 1]
    twin = load_model(tiny_dirs["bias_base"], device="cpu")
    return base, tuned, twin


def test_planted_concept_rises_most(models, directions):
    base, tuned, _ = models
    res = emotion_shifts(ModelPair(base, tuned), CFG, directions=directions)
    c = res["concepts"]
    top = max(c["concepts"], key=lambda r: r["change"])
    assert top["concept"] == PLANTED
    assert top["change"] == pytest.approx(5.0, rel=0.2)
    assert c["rises"][0] == PLANTED
    others = [abs(r["change"]) for r in c["concepts"] if r["concept"] != PLANTED]
    assert max(others) < 0.2 * top["change"]
    # every task kind moves the same way: the change vectors correlate; the permuted control does not
    assert c["mean_kind_correlation"] > 0.9
    assert abs(c["permuted_control_mean_r"]) < 0.3
    # control: the same change on 200 random directions; the other concepts (orthogonal to the shift) stay within it
    assert c["n_random_directions"] == 200 and top["beyond_random"]
    assert not any(r["beyond_random"] for r in c["concepts"] if r["concept"] != PLANTED)
    assert set(c["rises"]) <= set(c["rises_interval_only"])
    h = headline(res)
    assert PLANTED in h["rises"]
    assert len(res["probes"]["transfer"]) == 3


def test_model_against_itself_changes_nothing(models, directions):
    base, _, twin = models
    res = emotion_shifts(ModelPair(base, twin), CFG, directions=directions)
    c = res["concepts"]
    assert all(r["change"] == 0.0 and r["change_ci95"] == [0.0, 0.0] for r in c["concepts"])
    assert c["rises"] == [] and c["falls"] == []
    for row in res["probes"]["transfer"]:
        assert row["base_on_tuned"] == row["base_on_base"] and row["difference"] == 0.0
    assert res["probes"]["base"]["accuracy"] == res["probes"]["tuned"]["accuracy"]
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in res["directions"]["mean_cosine_by_layer"])


def test_config_is_validated():
    with pytest.raises(ValueError, match="band"):
        EmotionsConfig(band=(0.8, 0.2))
    with pytest.raises(ValueError, match="n_scenarios"):
        EmotionsConfig(n_scenarios=2)

    with pytest.raises(ValueError, match="n_neutral"):
        EmotionsConfig(n_neutral=4)  # a quick neutral set needs a quick story set
    with pytest.raises(ValueError, match="n_neutral"):
        EmotionsConfig(n_stories=2, n_neutral=1)


def test_quick_fit_reads_the_first_neutral_texts():
    from psylens import stimuli
    from psylens.compare.emotions import _neutral

    assert _neutral(None) is None
    got = _neutral(5)
    assert list(got.texts) == list(stimuli.load("neutral_texts").texts)[:5]
