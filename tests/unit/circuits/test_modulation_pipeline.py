"""``psylens circuits --modulation``: the summary's modulation block (each method at its strength of equal
fluency, paired intervals circuit minus steering, the issue's verdict) and the table on disk."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from psylens.circuits import artifacts as art
from psylens.circuits.circuit import Selection
from psylens.circuits.modulation import METHODS, ModulationConfig, choose
from psylens.circuits.pipeline import CircuitsConfig, _modulation_summary, modulate_run, run_circuits
from psylens.probes import Directions
from psylens.runs import create_run

PAIRED = {"a": "circuit", "b": "steering", "read_back_win": {"diff": 0.0, "ci95": [0.0, 0.0], "beats": False, "n": 2}}


def _table(circuit: tuple[float, bool, bool], steering: tuple[float, bool, bool]) -> pd.DataFrame:
    """(read_back_win, row_win, fluent) of the circuit and of steering, one strength each."""
    rows = [("none", 0.0, 0.0, False, True), ("prompting", 1.0, 0.0, False, True),
            ("circuit", 2.0, *circuit), ("steering", 0.2, *steering)]
    df = pd.DataFrame([{"method": m, "strength": s, "read_back_win": rb, "row_win": rw, "fluent": fl,
                        "n_fluency_failed": 0 if fl else 1, "feels_shift": 0.1, "fluency": -3.0,
                        "lexicon_hit_rate": 0.0} for m, s, rb, rw, fl in rows])
    df.attrs["fluency_criterion"] = "relative"
    return choose(df)


def test_the_verdict_needs_both_measures_and_both_fluent():
    ok = _modulation_summary(_table((0.75, True, True), (0.5, True, True)), METHODS, PAIRED)
    assert ok["circuit_at_least_steering"] and ok["circuit"]["strength"] == 2.0 and ok["fluency_criterion"] == "relative"
    assert ok["circuit_minus_steering"] == PAIRED and set(ok) >= {*METHODS, "fluency_reference"}
    # controls: a lower read-back, a lost row win, or a disfluent circuit each fail the verdict
    for circuit, steering in (((0.25, True, True), (0.5, True, True)), ((0.75, False, True), (0.5, True, True)),
                              ((0.75, True, False), (0.5, True, True))):
        assert not _modulation_summary(_table(circuit, steering), METHODS, PAIRED)["circuit_at_least_steering"]


@pytest.mark.slow
def test_run_circuits_with_modulation_writes_the_paired_block(tiny_model, tmp_path, monkeypatch):
    model = tiny_model("llama")
    run = create_run(tmp_path / "run", command="test", model=model)
    emos = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
    g = torch.Generator().manual_seed(0)
    Directions.from_raw(torch.randn(6, 2, 32, generator=g), emos, [0, 1], model=model.spec).save(
        run.file("probes/directions.safetensors"))
    # a small grid keeps this seconds long (the defaults are exercised by the planted-word test's table)
    import psylens.circuits.modulation as modm

    small = ModulationConfig(factors=(2.0,), steer_scales=(0.2,), max_new_tokens=3, n_reference=1)
    monkeypatch.setattr(modm, "ModulationConfig", lambda seed=0, **kw: ModulationConfig(**{**small.to_dict(), **kw, "seed": seed}))
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text("".join(
        f'{{"text": "On day {i} at the market I felt {e}.", "label": "{e}", "group": "m{i}"}}\n'
        for i in range(2) for e in ("joy", "anger")))
    cfg = CircuitsConfig(emotions=("joy",), layer=1, eval_file=str(eval_file), n_discovery=2, n_heldout=2,
                         selection=Selection(mode="top_k", k_heads=1, k_neurons=2), patch_heads=1, patch_neurons=1,
                         methods=("mean",), curve_points=1, alphas=(), n_top_neurons=1, n_top_stimuli=1,
                         measure_cost=False, modulation=True, n_modulation_prompts=2, n_modulation_contexts=2)
    summary = run_circuits(model, run, cfg)
    m = run.read_json(art.SUMMARY)["emotions"]["joy"]["modulation"]
    assert m.keys() == summary["emotions"]["joy"]["modulation"].keys()
    assert {"circuit", "steering", "prompting", "none", "circuit_minus_steering", "circuit_at_least_steering",
            "fluency_criterion", "fluency_reference"} <= set(m)
    assert m["fluency_criterion"] == "relative" and set(m["fluency_reference"]) >= {"perplexity_ratio", "distinct_2", "zlib_ratio"}
    pv = m["circuit_minus_steering"]
    assert pv["read_back_win"]["n"] == 2 and pv["feels_shift"]["n"] == 2 and isinstance(pv["equal_fluency"], bool)
    lo, hi = pv["read_back_win"]["ci95"]
    assert lo <= pv["read_back_win"]["diff"] <= hi
    assert isinstance(m["circuit"]["fluent"], bool) and isinstance(m["circuit"]["perplexity_ratio"], float)
    table = run.read_table(art.MODULATION)
    assert list(table.columns[: len(art.MODULATION_COLUMNS)]) == list(art.MODULATION_COLUMNS)
    assert list(table.method) == ["none", "circuit", "steering", "prompting"] + ["random"] * 3 and table.chosen.sum() == 4
    assert [len(w) for w in table.read_back_wins] == [2] * 7
    assert m["random"]["n"] == 3 and m["random"]["strength"] == m["circuit"]["strength"] and m["circuit_op"] == "scale"
    # the finished run's circuit modulated again (e.g. under another fluency criterion) gives the same block
    # with the same settings, and names the other criterion when asked for it
    again = modulate_run(model, run, n_prompts=2, n_contexts=2)
    # unrounded (the file's floats are rounded), and as JSON text so that a NaN equals a NaN
    assert json.dumps(again["joy"], sort_keys=True) == json.dumps(summary["emotions"]["joy"]["modulation"], sort_keys=True)
    greedy = modulate_run(model, run, ["joy"], n_prompts=2, n_contexts=2, fluency="relative_greedy")["joy"]
    assert greedy["fluency_criterion"] == "relative_greedy" and greedy["circuit"]["feels_shift"] == m["circuit"]["feels_shift"]
    with pytest.raises(ValueError, match=r"no circuit for \['anger'\]"):
        modulate_run(model, run, ["anger"])
    # the shift op re-judged on the finished run: the contrasts come from its recorded discovery scenarios
    shifted = modulate_run(model, run, ["joy"], n_prompts=2, n_contexts=2, op="shift")["joy"]
    assert shifted["circuit_op"] == "shift" and shifted["circuit"]["strength"] in ModulationConfig().shift_factors
    assert shifted["random"]["n"] == 3 and shifted["steering"] == again["joy"]["steering"]
    # the circuit's strengths given by hand: the chosen one and the random control's are among them
    half = modulate_run(model, run, ["joy"], n_prompts=2, n_contexts=2, op="shift", factors=(0.5,))["joy"]
    assert half["circuit"]["strength"] == 0.5 == half["random"]["strength"]
    # steering's strengths given by hand: its chosen one is among them, and the circuit's side is untouched
    weak = modulate_run(model, run, ["joy"], n_prompts=2, n_contexts=2, steer_scales=(0.05,))["joy"]
    assert weak["steering"]["strength"] == 0.05 != again["joy"]["steering"]["strength"]
    assert json.dumps(weak["circuit"], sort_keys=True) == json.dumps(again["joy"]["circuit"], sort_keys=True)
    # further text judges: each method's generations judged by them too, beside the lexicon
    judged = modulate_run(model, run, ["joy"], n_prompts=2, n_contexts=2, judges={"always_joy": _Always("joy"),
                                                                                  "never": _Always("anger")})["joy"]
    for m in ("none", *METHODS):
        assert judged[m]["judge_always_joy"] == 1.0 and judged[m]["judge_never"] == 0.0
    assert "judge_always_joy" not in again["joy"]["circuit"]
    with pytest.raises(ValueError, match="plain names"):
        modulate_run(model, run, ["joy"], n_prompts=2, n_contexts=2, judges={"a b": _Always("joy")})


class _Always:
    """A text judge that names one emotion for every text."""

    def __init__(self, emotion: str) -> None:
        self.i = ("anger", "disgust", "fear", "joy", "sadness", "surprise").index(emotion)

    def score(self, texts):
        out = torch.zeros(len(texts), 6)
        out[:, self.i] = 1.0
        return out


def test_top_neurons_stop_at_their_layer_and_find_the_planted_neuron_stimuli(planted):
    """The planted neuron fires on " joy": its top stimuli are the joy ones (control: the others rank below),
    and the early-stopped forward reads the same activations as a full forward under record()."""
    from psylens.circuits.circuit import Circuit
    from psylens.circuits.pipeline import _top_neurons
    from psylens.circuits.signal import _forward, prepare
    from psylens.interventions import record

    from tests.unit.circuits.circuits_planted import PLANT_LAYER, PLANT_NEURON, stimuli

    model, _ = planted
    texts, labels, groups = stimuli(2)
    data = prepare(model, texts, labels=labels, groups=groups, batch_size=8)
    circ = Circuit("joy", "t", 1, heads=(), neurons=((PLANT_LAYER, PLANT_NEURON),), neuron_scores=(1.0,))
    top = _top_neurons(model, data, circ, 1, len(texts))
    assert list(top.label[:2]) == ["joy", "joy"] and set(top.label[2:]) == {"anger", "fear"}
    with torch.no_grad(), record(model, ["mlp_post"], [PLANT_LAYER]) as rec:
        _forward(model, data.batches[0])
    b = data.batches[0]
    m = b.text_mask.float()
    full = (rec["mlp_post", PLANT_LAYER][..., PLANT_NEURON].float() * m).sum(1) / m.sum(1)
    got = top.set_index("stimulus_id").activation
    for r, i in enumerate(b.rows):
        assert got[data.ids[i]] == pytest.approx(float(full[r]), rel=1e-5)
