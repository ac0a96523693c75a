"""Side-by-side generations (``psylens.compare.generations``) on a tiny random model: a model against itself gives
identical columns; the base's vector at a large alpha changes the steered text, at alpha 0 it does not (control)."""

from __future__ import annotations

import pytest
import torch

from psylens.compare.generations import GenerationsConfig, side_by_side
from psylens.compare.pair import ModelPair
from psylens.probes import Directions
from psylens.stimuli import EMOTIONS


@pytest.fixture(scope="module")
def setup(tiny_model):
    m = tiny_model("llama")
    g = torch.Generator().manual_seed(3)
    dirs = Directions.from_raw(torch.randn(len(EMOTIONS), 3, m.d_model, generator=g), list(EMOTIONS), [0, 1, 2])
    return ModelPair(m, m), dirs


CFG = GenerationsConfig(n_prompts=2, max_new_tokens=5, format="raw")


def test_a_model_against_itself_gives_identical_columns(setup) -> None:
    pair, dirs = setup
    res = side_by_side(pair, CFG, prompts=["The weather today", "My friend said"], kinds=["a", "b"],
                       directions=dirs, layer=1, alpha=0.0)
    assert [r["kind"] for r in res["prompts"]] == ["a", "b"] and res["decoding"] == "greedy"
    assert all(r["base"] == r["tuned"] and r["base"] for r in res["prompts"])
    s = res["steered"]
    assert s["base"] == s["tuned"] == s["base_steered"] == s["tuned_steered"]  # alpha 0: steering changes nothing


def test_a_large_alpha_changes_the_steered_text(setup) -> None:
    pair, dirs = setup
    res = side_by_side(pair, CFG, prompts=["The weather today"], directions=dirs, layer=1, alpha=200.0)
    s = res["steered"]
    assert s["emotion"] == "joy" and s["layer"] == 1 and s["alpha"] == 200.0
    assert s["base_steered"] != s["base"] and s["base_steered"] == s["tuned_steered"]


def test_no_steered_text_without_a_layer_and_bad_settings(setup) -> None:
    pair, _ = setup
    res = side_by_side(pair, CFG, prompts=["Hi"])
    assert res["steered"] is None and "steering section" in res["steered_reason"]
    for bad in (dict(n_prompts=-1), dict(max_new_tokens=0), dict(format="html"), dict(prompt_index=True)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GenerationsConfig(**bad)
