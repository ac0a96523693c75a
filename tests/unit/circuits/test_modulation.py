"""Circuit modulation beside steering and prompting: the table, the equal-fluency choice, the paired
intervals, and a planted circuit whose modulation must raise its word while random sets must not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from psylens.circuits.circuit import Circuit
from psylens.circuits.modulation import ModulationConfig, choose, circuit_interventions, modulation, paired_vs
from psylens.models import Model

from tests.unit.circuits.circuits_planted import (HEAD_LAYER, PLANT_HEAD, PLANT_LAYER, PLANT_NEURON, READOUT, plant,
                                                  tiny_llama)

WORDS = {"joy": ["happy", "glad"], "anger": ["angry", "furious"], "fear": ["afraid", "scared"]}


@pytest.mark.slow
def test_modulation_table_and_the_identity_control(planted):
    model, v = planted
    circ = Circuit("joy", "test", READOUT, heads=((HEAD_LAYER, PLANT_HEAD),), neurons=((PLANT_LAYER, PLANT_NEURON),))
    cfg = ModulationConfig(factors=(1.0, 8.0), steer_scales=(0.5,), max_new_tokens=4, batch_size=4)
    df = modulation(model, circ, v, ["Tell me about your day.", "Describe a morning walk."],
                    emotions=("joy", "anger", "fear"), words=WORDS,
                    contexts=["I opened the letter and felt joy. I feel", "The room was quiet. I feel"], config=cfg)
    assert list(df.method) == ["none", "circuit", "circuit", "steering", "prompting", "random", "random", "random"]
    # the control rows: random units at the circuit's chosen strength, never chosen themselves
    chosen_f = df[(df.method == "circuit") & df.chosen].strength.iloc[0]
    rnd = df[df.method == "random"]
    assert (rnd.strength == chosen_f).all() and not rnd.chosen.any()
    ident = df[(df.method == "circuit") & (df.strength == 1.0)].iloc[0]
    # scaling the circuit by 1 changes nothing: no shift, no read-back win (ties are not wins)
    assert ident.feels_shift == pytest.approx(0.0, abs=1e-6) and ident.read_back_win == 0.0
    # scaling the planted units by 8 moves the "joy" context's next-token distribution
    strong = df[(df.method == "circuit") & (df.strength == 8.0)].iloc[0]
    assert abs(strong.feels_shift) > 1e-4
    assert df.groupby("method")["chosen"].sum().to_dict() == {"circuit": 1, "none": 1, "prompting": 1, "steering": 1,
                                                          "random": 0}
    assert ((df.read_back_win_ci_low <= df.read_back_win) & (df.read_back_win <= df.read_back_win_ci_high)).all()


def test_circuit_interventions_group_units_by_site():
    circ = Circuit("joy", "t", 2, heads=((0, 1), (0, 3), (2, 0)), neurons=((1, 5),))
    ivs = circuit_interventions(circ, 3.0)
    assert [(i.site, i.layer, i.units) for i in ivs] == [("head_out", 0, (1, 3)), ("head_out", 2, (0,)), ("mlp_post", 1, (5,))]
    assert all(i.op == "scale" and i.value == 3.0 for i in ivs)
    with pytest.raises(ValueError):
        ModulationConfig(factors=())


# -- a planted circuit that writes a word: modulating it must raise the word; random sets must not ------------------

JOY_WORDS = {"joy": ["joy"], "anger": ["angry", "furious"], "fear": ["afraid", "scared"]}
JOY_PROMPTS = ["I felt joy at the party.", "Tell me about joy in the morning."]
JOY_CONTEXTS = ["I opened the letter and felt joy. I feel", "Joy again, I said joy. I feel"]


@pytest.fixture(scope="module")
def planted_word(smollm_tokenizer):
    """(model, v): circuits_planted's neuron (fires on " joy", writes v) and head (reads v, writes v) with the
    head's write cut to 0.25 v, and the unembedding of " joy" set to 0.25 v — so the unmodified model's last
    state leans on v too little for " joy" to be its greedy token (the template's tokens dominate), and the
    circuit scaled ×8 makes it so. Re-read, " joy" fires the neuron: the read-back projection rises with it."""
    torch.manual_seed(1)
    v = torch.randn(32)
    v = v / v.norm()
    hf = tiny_llama()
    plant(hf, smollm_tokenizer, v)
    joy = smollm_tokenizer(" joy", add_special_tokens=False)["input_ids"][0]
    dh = hf.config.hidden_size // hf.config.num_attention_heads
    with torch.no_grad():
        hf.model.layers[HEAD_LAYER].self_attn.o_proj.weight[:, PLANT_HEAD * dh] = 0.25 * v
        hf.lm_head.weight[joy] = 0.25 * v
    return Model(hf, smollm_tokenizer, spec="tiny-planted-word"), v


def _mod(model, v, circ, factors):
    cfg = ModulationConfig(factors=factors, steer_scales=(0.5,), max_new_tokens=4, batch_size=8, n_reference=1)
    return modulation(model, circ, v, JOY_PROMPTS, emotions=("joy", "anger", "fear"), words=JOY_WORDS,
                      contexts=JOY_CONTEXTS, config=cfg)


@pytest.mark.slow
def test_planted_circuit_modulation_raises_its_word_and_read_back_random_sets_do_not(planted_word):
    model, v = planted_word
    circ = Circuit("joy", "planted", READOUT, heads=((HEAD_LAYER, PLANT_HEAD),), neurons=((PLANT_LAYER, PLANT_NEURON),))
    df = _mod(model, v, circ, (1.0, 8.0))
    row = {(r.method, r.strength): r for r in df.itertuples()}
    strong, ident = row[("circuit", 8.0)], row[("circuit", 1.0)]
    # the planted truth: the circuit ×8 lifts " joy" after "… I feel" above the other emotions' words, and the
    # greedy text it writes, re-read by the unmodified model, projects higher on v on every prompt
    assert strong.row_win and strong.feels_shift > 0.3, strong
    assert strong.read_back_win == 1.0 and strong.read_back_win_ci_low > 0.1
    assert all(m > 0.3 for m in strong.feels_margins) and strong.read_back_wins == [1.0, 1.0]
    # control 1: ×1 changes nothing, exactly (same logits, same text: ties are not wins, no row win)
    assert ident.feels_shift == 0.0 and ident.read_back_win == 0.0 and not ident.row_win
    assert ident.perplexity_ratio == pytest.approx(1.0) and ident.distinct_2 == row[("none", 0.0)].distinct_2
    # the relative fluency criterion (the steering sweep's) sees the degenerate " joy joy joy joy": its
    # distinct-2 falls below the model's own T=1 text's, so the ×8 row is not fluent
    ref = df.attrs["fluency_reference"]
    assert df.attrs["fluency_criterion"] == "relative" and strong.distinct_2 < ref["distinct_2"] and not strong.fluent
    # paired, on the same prompts and contexts: circuit minus steering at their chosen strengths
    pv = paired_vs(df)
    assert pv["read_back_win"]["n"] == len(JOY_PROMPTS) and pv["feels_shift"]["n"] == len(JOY_CONTEXTS)
    # control 2: random size-matched sets of the same layers (one head of layer 1, one neuron of layer 0), ×8,
    # do not move the word's row nor the read-back
    rng = np.random.default_rng(0)
    for _ in range(2):
        h = int(rng.choice([x for x in range(4) if x != PLANT_HEAD]))
        n = int(rng.choice([x for x in range(64) if x != PLANT_NEURON]))
        rnd = _mod(model, v, Circuit("joy", "random", READOUT, heads=((HEAD_LAYER, h),), neurons=((PLANT_LAYER, n),)),
                   (8.0,))
        r = rnd[rnd.method == "circuit"].iloc[0]
        assert abs(r.feels_shift) < 0.05 * strong.feels_shift and r.read_back_win == 0.0, (h, n, r)


# -- the equal-fluency choice and the paired intervals, on tables whose answer is known ---------------------------

def _table(rows):
    cols = ["method", "strength", "read_back_win", "feels_shift", "row_win", "fluent", "n_fluency_failed",
            "read_back_wins", "feels_margins"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


def test_choose_keeps_the_best_fluent_strength_and_reports_when_none_is_fluent():
    df = choose(_table([
        ("none", 0.0, 0.0, 0.0, False, True, 0, [0, 0], [0, 0]),
        ("circuit", 2.0, 0.5, 0.2, True, True, 0, [1, 0], [0.2, 0.2]),
        ("circuit", 8.0, 1.0, 0.9, True, False, 1, [1, 1], [0.9, 0.9]),  # best read-back, but not fluent
        ("steering", 0.25, 0.5, 0.1, True, False, 2, [1, 0], [0.1, 0.1]),
        ("steering", 0.5, 1.0, 0.3, True, False, 1, [1, 1], [0.3, 0.3]),  # none fluent: fewest failed checks
        ("prompting", 1.0, 0.0, 0.0, False, True, 0, [0, 0], [0, 0]),
    ]))
    picked = df[df.chosen].set_index("method")["strength"].to_dict()
    assert picked == {"none": 0.0, "circuit": 2.0, "steering": 0.5, "prompting": 1.0}
    # control: with every circuit strength fluent, the stronger (better read-back) one is kept
    df2 = choose(df.assign(fluent=True, n_fluency_failed=0))
    assert df2[df2.chosen & (df2.method == "circuit")].strength.item() == 8.0


def test_paired_vs_is_paired_over_prompts_and_ties_do_not_beat():
    base = [("none", 0.0, 0.0, 0.0, False, True, 0, [0.0] * 8, [0.0] * 6),
            ("prompting", 1.0, 0.0, 0.0, False, True, 0, [0.0] * 8, [0.0] * 6)]
    wins_c, wins_s = [1.0] * 8, [0.0] * 8
    df = choose(_table(base + [("circuit", 4.0, 1.0, 0.5, True, True, 0, wins_c, [0.5] * 6),
                               ("steering", 0.5, 0.0, 0.1, False, True, 0, wins_s, [0.1] * 6)]))
    pv = paired_vs(df, "circuit", "steering")
    assert pv["read_back_win"]["diff"] == 1.0 and pv["read_back_win"]["beats"] and pv["read_back_win"]["n"] == 8
    assert pv["feels_shift"]["diff"] == pytest.approx(0.4) and pv["feels_shift"]["beats"]
    assert pv["row_win"] == 1 and pv["equal_fluency"] and (pv["strength_a"], pv["strength_b"]) == (4.0, 0.5)
    # control: identical outcomes give a zero-width interval at 0 and no win
    same = choose(_table(base + [("circuit", 4.0, 0.5, 0.1, True, True, 0, [1.0, 0.0] * 4, [0.1] * 6),
                                 ("steering", 0.5, 0.5, 0.1, True, False, 1, [1.0, 0.0] * 4, [0.1] * 6)]))
    pv = paired_vs(same)
    assert pv["read_back_win"] == {"diff": 0.0, "ci95": [0.0, 0.0], "beats": False, "n": 8}
    assert pv["row_win"] == 0 and not pv["equal_fluency"]
    with pytest.raises(ValueError, match="chosen rows of method 'circuit'"):
        paired_vs(same[same.method != "circuit"])


@pytest.mark.slow
def test_relative_greedy_fluency_holds_text_to_the_models_own_greedy_text(planted_word):
    model, v = planted_word
    circ = Circuit("joy", "planted", READOUT, heads=((HEAD_LAYER, PLANT_HEAD),), neurons=((PLANT_LAYER, PLANT_NEURON),))
    cfg = ModulationConfig(factors=(1.0, 8.0), steer_scales=(0.5,), max_new_tokens=4, batch_size=8, n_reference=1,
                           fluency="relative_greedy")
    df = modulation(model, circ, v, JOY_PROMPTS, emotions=("joy", "anger", "fear"), words=JOY_WORDS,
                    contexts=JOY_CONTEXTS, config=cfg)
    row = {(r.method, r.strength): r for r in df.itertuples()}
    ref = df.attrs["fluency_reference"]
    assert df.attrs["fluency_criterion"] == "relative_greedy"
    assert ref["unsteered_greedy"]["distinct_2"] == row[("none", 0.0)].distinct_2
    # the known answer: ×1 writes the unmodified greedy text, as diverse as itself and no more perplexing
    assert row[("circuit", 1.0)].fluent
    # the control: the degenerate " joy joy joy joy" of ×8 is less diverse than the greedy text, still not fluent
    assert not row[("circuit", 8.0)].fluent


def test_circuits_config_checks_the_modulation_fluency():
    from psylens.circuits.pipeline import CircuitsConfig

    assert CircuitsConfig(modulation_fluency="relative_greedy").modulation_fluency == "relative_greedy"
    with pytest.raises(ValueError, match="relative_greedy"):
        CircuitsConfig(modulation_fluency="greedy")
