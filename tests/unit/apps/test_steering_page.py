"""The explorer's Steering page on a synthetic run (no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("streamlit")

from psylens.apps.views import check_page  # noqa: E402
from psylens.apps.views import steering as page  # noqa: E402
from psylens.runs import Run, create_run  # noqa: E402
from pages import render_page  # noqa: E402

EMOS = ["joy", "sadness"]


def make_run(root: Path, *, grid: bool = True) -> Run:
    run = create_run(root, command="psylens steer sweep", model={"spec": "tiny-random-llama"})
    emotions = {
        e: {
            "best_layer": 2, "best_alpha": 8.0 + i, "best_scale": 0.2, "success": 0.6 - 0.2 * i,
            "perplexity_ratio": 1.3, "baselines": {"prompting": 0.3, "random": 0.1, "none": 0.0},
            "meets_fluency": True, "beats_random": True, "beats_prompting": True,
        }
        for i, e in enumerate(EMOS)
    }
    run.write_json("steering/summary.json", {
        "emotions": emotions, "mean_success": 0.5, "mean_baselines": {"prompting": 0.3, "random": 0.1, "none": 0.0},
        "targets": {"success": 0.8, "max_perplexity_ratio": 1.5}, "meets_target": False, "model": "tiny-random-llama",
        "judge": "nrc", "n_prompts": {"dev": 2, "test": 2}, "residual_norms": {"1": 40.0, "2": 41.0},
        "judge_validation": {"set": "explicit", "accuracy": 0.433, "no_call": 0.5, "n": 90},
        "fluency_reference": {"unsteered_sampled": 3.52, "temperature": 1.0, "n": 8, "prompting": 1.02},
    })
    if grid:
        cells = [
            {"emotion": e, "layer": layer, "scale": s, "alpha": s * 40, "success": 0.5, "perplexity_ratio": 1.0 + s * 4}
            for e in EMOS for layer in (1, 2) for s in (0.1, 0.2)
        ]
        run.write_json("steering/grid.json", {"layers": [1, 2], "scales": [0.1, 0.2], "cells": cells})
    gens = [
        {"split": "test", "condition": c, "sampled": False, "emotion": None if c == "none" else e, "prompt_index": k,
         "prompt": f"prompt {k}", "text": f"{c} text {k}", "judged": "joy" if c == "steer" else None}
        for e in EMOS for k in (0, 1) for c in ("none", "steer", "prompting", "random")
    ]
    run.file("steering/generations.jsonl").write_text("\n".join(json.dumps(g) for g in gens) + "\nnot json\n")
    return run


def test_page_contract(tmp_path):
    check_page(page)
    assert page.TITLE == "Steering"
    run = make_run(tmp_path / "run")
    assert page.available(run)
    assert not page.available(create_run(tmp_path / "bare", command="x"))


def test_summary_table_and_heatmap(tmp_path):
    run = make_run(tmp_path / "run")
    summary = run.read_json("steering/summary.json")
    table = page.summary_table(summary)
    assert list(table["emotion"]) == EMOS
    assert table.loc[0, "steering"] == pytest.approx(0.6) and table.loc[0, "random direction"] == pytest.approx(0.1)
    frame = page.grid_frame(run.read_json("steering/grid.json"))
    fig = page.heatmap(frame, "joy", 1.5, best=(2, 0.2))
    z = fig.data[0].z
    assert len(z) == 2 and len(z[0]) == 2
    text = fig.data[0].text
    assert "★" in text[1][1] and "✗" not in text[0][0] and "✗" in text[0][1]  # ratio 1.8 > 1.5
    assert "steering (sampled)" not in table  # a quick (greedy-only) sweep has no sampled columns
    summary["emotions"]["joy"]["sampled"] = {"success": 0.25, "perplexity_ratio": 1.1,
                                             "baselines": {"prompting": 0.5, "random": 0.0, "none": 0.125}}
    full = page.summary_table(summary)
    assert full.loc[0, "steering (sampled)"] == pytest.approx(0.25) and full.loc[0, "prompting (sampled)"] == pytest.approx(0.5)
    assert pd.isna(full.loc[1, "steering (sampled)"])  # an emotion without sampled numbers shows none
    assert page.summary_table({"emotions": "bad"}).empty
    assert page.grid_frame({"cells": "bad"}).empty


def test_examples_frame(tmp_path):
    run = make_run(tmp_path / "run")
    gens = page.read_generations(run.file("steering/generations.jsonl").read_text())
    assert len(gens) == 16  # the malformed line is skipped
    ex = page.examples_frame(gens, "joy")
    assert list(ex.columns) == ["prompt", "condition", "judged", "text"]  # the judged emotion in its own column
    assert len(ex) == 8 and list(ex["prompt"]) == ["prompt 0"] * 4 + ["prompt 1"] * 4
    assert list(ex["condition"][:4]) == ["no steering", "steered", "prompting", "random direction"]
    steered = ex[ex["condition"] == "steered"].iloc[0]
    assert steered["text"] == "steer text 0" and steered["judged"] == "joy"  # the full text, no tag appended
    long = [{**g, "text": "word " * 200} for g in gens]
    assert page.examples_frame(long, "joy")["text"].str.len().min() == 1000  # never cut


def test_page_renders_without_loading_a_model(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    at = render_page(monkeypatch, "steering", run)
    assert not at.exception, at.exception
    assert "Steering" in [t.value for t in at.title]
    assert len(at.get("plotly_chart")) == 1
    subheaders = [s.value for s in at.subheader]
    assert "Playground" in subheaders and "Sweep: layer × scale" in subheaders
    # no directions file and no saved vector: the playground says so instead of loading a model
    assert any("nothing to steer with" in i.value for i in at.info)
    assert any("judge's own ceiling" in c.value and "0.43" in c.value for c in at.caption)
    assert any("perplexity cap" in c.value and "3.52" in c.value for c in at.caption)
    at.selectbox(key="steering_heatmap_emotion").select("sadness").run()
    assert not at.exception


def test_page_tolerates_a_missing_grid(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", grid=False)
    at = render_page(monkeypatch, "steering", run)
    assert not at.exception, at.exception
    assert any("no heatmap" in i.value for i in at.info)


def test_playground_steers_with_the_sweeps_directions(tmp_path, monkeypatch):
    import torch

    from psylens.probes import Directions

    run = make_run(tmp_path / "run")
    summary = run.read_json("steering/summary.json")
    assert page._sweep_directions(run, summary) == "probes/directions.safetensors"  # nothing recorded: the probes'
    summary["directions"] = {"source": "expression", "file": "steering/expression_directions.safetensors"}
    run.write_json("steering/summary.json", summary)
    assert page._sweep_directions(run, summary) == "probes/directions.safetensors"  # recorded but missing
    dirs = Directions.from_raw(torch.randn(2, 3, 8), EMOS, [4, 5, 6], site="resid_post", method="mean_diff")
    dirs.save(run.file("steering/expression_directions.safetensors"))
    assert page._sweep_directions(run, summary) == "steering/expression_directions.safetensors"
    at = render_page(monkeypatch, "steering", run)
    assert not at.exception, at.exception
    assert at.selectbox(key="steering_play_layer").options == ["4", "5", "6"]  # the sweep's file, not the probes'
