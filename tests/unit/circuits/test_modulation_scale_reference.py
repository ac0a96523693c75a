"""``scale_reference`` beside circuit modulation: steering's strengths multiply the plain or the centred norm."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from psylens.circuits.circuit import Circuit
from psylens.circuits.modulation import METHODS, ModulationConfig, choose, modulation
from psylens.circuits.pipeline import CircuitsConfig, _modulation_summary
from psylens.steering.sweep import residual_norms

WORDS = {"joy": ["happy", "glad"], "anger": ["angry", "furious"]}


def test_modulation_config_validation_and_round_trip():
    assert ModulationConfig().scale_reference == "norm"
    cfg = ModulationConfig(scale_reference="centred")
    assert ModulationConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="scale_reference 'centered' is not one of"):
        ModulationConfig(scale_reference="centered")


def test_circuits_config_forwards_and_validates_the_reference():
    assert CircuitsConfig().modulation_scale_reference == "norm"
    cfg = CircuitsConfig(modulation=True, modulation_scale_reference="centred")
    assert CircuitsConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="modulation_scale_reference 'centered' is not one of"):
        CircuitsConfig(modulation_scale_reference="centered")


def test_steering_beside_modulation_scales_by_the_centred_norm(tiny_model):
    m = tiny_model("llama")
    layer = 1
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(2))
    v = v / v.norm()
    circ = Circuit("joy", "test", layer, heads=((0, 1),), neurons=())
    prompts = ["Tell me about your day."]
    cfg = ModulationConfig(factors=(1.0,), steer_scales=(0.5,), max_new_tokens=2, batch_size=4, fluency="drop",
                           scale_reference="centred")
    df = modulation(m, circ, v, prompts, emotions=("joy", "anger"), words=WORDS,
                    contexts=["The room was quiet. I feel"], config=cfg)
    plain = [m.format_prompt(p) for p in prompts]
    want = residual_norms(m, plain, [layer], reference="centred")[layer]
    assert df.attrs["scale_reference"] == "centred"
    assert df.attrs["residual_norm"] == pytest.approx(want, rel=1e-9)
    assert want < residual_norms(m, plain, [layer])[layer]  # control: not the plain norm
    summary = _modulation_summary(df, ("none", *METHODS), {})
    assert summary["scale_reference"] == "centred"


def test_the_summary_says_norm_for_tables_made_before_the_option():
    rows = [("none", 0.0), ("prompting", 1.0), ("circuit", 2.0), ("steering", 0.2)]
    df = pd.DataFrame([{"method": m_, "strength": s, "read_back_win": 0.5, "row_win": True, "fluent": True,
                        "n_fluency_failed": 0, "feels_shift": 0.1, "fluency": -3.0, "lexicon_hit_rate": 0.0}
                       for m_, s in rows])
    assert _modulation_summary(choose(df), METHODS, {})["scale_reference"] == "norm"
