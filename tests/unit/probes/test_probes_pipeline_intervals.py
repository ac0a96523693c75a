"""The probes step writes the lexical baseline, intervals and the best-layer explanation (tiny random model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psylens.probes.pipeline import run_probes
from psylens.runs import create_run
from psylens.stimuli import load

HELDOUT = Path(__file__).resolve().parents[2] / "data" / "heldout_emotions.jsonl"


@pytest.fixture(scope="module")
def small_run(tiny_model, tmp_path_factory):
    model = tiny_model("llama")
    root = tmp_path_factory.mktemp("probes_ci")
    stim = load("emotions")
    stim = stim.filter(groups=list(dict.fromkeys(stim.groups))[:8])
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()]
    (root / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[::10]))
    run = create_run(root / "run", command="test", model=model.describe())
    # a separation summary that names layer 2 (as summary/layers.json does before the probes run)
    run.write_json("summary/layers.json", {"sites": {"resid_post": {"best_layer": 2}}})
    summary = run_probes(model, run, stimuli=stim, eval_path=root / "eval.jsonl", analyses=[], progress=False)
    return run, summary


def test_summary_has_lexical_baseline_and_intervals(small_run):
    run, summary = small_run
    on_disk = run.read_json("probes/summary.json")
    lex = on_disk["lexical_baseline"]
    assert set(lex) >= {"accuracy", "ci95"} and lex["ci95"][0] <= lex["accuracy"] <= lex["ci95"][1]
    assert len(on_disk["accuracy_ci95_by_layer"]) == len(on_disk["layers"])
    for (lo, hi), acc in zip(on_disk["accuracy_ci95_by_layer"], on_disk["accuracy_by_layer"]):
        assert lo <= acc <= hi
    lo, hi = on_disk["best_accuracy_ci95"]
    assert lo <= on_disk["best_accuracy"] <= hi
    assert len(on_disk["rise_above_lexical_by_layer"]) == len(on_disk["layers"])
    assert on_disk["rise_above_lexical_by_layer"][0] == pytest.approx(on_disk["accuracy_by_layer"][0] - lex["accuracy"],
                                                                      abs=2e-4)
    assert isinstance(on_disk["beats_lexical_at_best_layer"], bool)
    assert on_disk["best_layer"] in on_disk["layers_tied_with_best"]
    assert on_disk["all_labels"]["lexical_baseline"]["accuracy"] >= 0  # the 7-way curve has its own baseline
    ev = on_disk["eval"]
    lo, hi = ev["accuracy_ci95_at_best_layer"]
    assert lo <= ev["accuracy_at_best_layer"] <= hi


def test_layer_curve_has_the_rise_above_lexical(small_run):
    run, _ = small_run
    curve = run.read_table("probes/layer_curve.parquet")
    assert {"rise_above_lexical", "lexical_accuracy", "accuracy_ci95_lo", "accuracy_ci95_hi",
            "rise_above_lexical_ci95_lo", "rise_above_lexical_ci95_hi"} <= set(curve)
    head = curve[curve["label_set"] == "headline"]
    assert (head["accuracy"] - head["lexical_accuracy"]).tolist() == pytest.approx(head["rise_above_lexical"].tolist())


def test_best_layer_vs_separation_is_explained(small_run):
    _, summary = small_run
    b = summary["best_layer_vs_separation"]
    assert b["separation_best_layer"] == 2 and b["probe_best_layer"] == summary["best_layer"]
    assert b["probe_accuracy_at_separation_best_layer"] == pytest.approx(summary["accuracy_by_layer"][2], abs=1e-4)
    assert b["separation_best_layer_tied"] == (2 in summary["layers_tied_with_best"])
    assert "Fisher ratio" in b["why"] and "held-out" in b["why"]
