"""Circuit modulation beside steering and prompting: the table, the equal-fluency choice, a null control."""

from __future__ import annotations

import pytest

from psylens.circuits.circuit import Circuit
from psylens.circuits.modulation import ModulationConfig, circuit_interventions, modulation

from tests.unit.circuits.circuits_planted import HEAD_LAYER, PLANT_HEAD, PLANT_LAYER, PLANT_NEURON, READOUT

WORDS = {"joy": ["happy", "glad"], "anger": ["angry", "furious"], "fear": ["afraid", "scared"]}


@pytest.mark.slow
def test_modulation_table_and_the_identity_control(planted):
    model, v = planted
    circ = Circuit("joy", "test", READOUT, heads=((HEAD_LAYER, PLANT_HEAD),), neurons=((PLANT_LAYER, PLANT_NEURON),))
    cfg = ModulationConfig(factors=(1.0, 8.0), steer_scales=(0.5,), max_new_tokens=4, batch_size=4)
    df = modulation(model, circ, v, ["Tell me about your day.", "Describe a morning walk."],
                    emotions=("joy", "anger", "fear"), words=WORDS,
                    contexts=["I opened the letter and felt joy. I feel", "The room was quiet. I feel"], config=cfg)
    assert list(df.method) == ["none", "circuit", "circuit", "steering", "prompting"]
    ident = df[(df.method == "circuit") & (df.strength == 1.0)].iloc[0]
    # scaling the circuit by 1 changes nothing: no shift, no read-back win (ties are not wins)
    assert ident.feels_shift == pytest.approx(0.0, abs=1e-6) and ident.read_back_win == 0.0
    # scaling the planted units by 8 moves the "joy" context's next-token distribution
    strong = df[(df.method == "circuit") & (df.strength == 8.0)].iloc[0]
    assert abs(strong.feels_shift) > 1e-4
    assert df.groupby("method")["chosen"].sum().to_dict() == {"circuit": 1, "none": 1, "prompting": 1, "steering": 1}
    assert ((df.read_back_win_ci_low <= df.read_back_win) & (df.read_back_win <= df.read_back_win_ci_high)).all()


def test_circuit_interventions_group_units_by_site():
    circ = Circuit("joy", "t", 2, heads=((0, 1), (0, 3), (2, 0)), neurons=((1, 5),))
    ivs = circuit_interventions(circ, 3.0)
    assert [(i.site, i.layer, i.units) for i in ivs] == [("head_out", 0, (1, 3)), ("head_out", 2, (0,)), ("mlp_post", 1, (5,))]
    assert all(i.op == "scale" and i.value == 3.0 for i in ivs)
    with pytest.raises(ValueError):
        ModulationConfig(factors=())
