from __future__ import annotations

import json

import pytest

from compare_planted import PLANT_LAYER, tiny_dirs  # noqa: F401  (fixture)
from psylens.compare import artifacts as art
from psylens.compare.activations import ActivationsConfig
from psylens.compare.pair import load_pair
from psylens.compare.pipeline import CompareConfig, parse_sections, run_compare


def test_sections_parse_and_reject():
    assert parse_sections("features,weights") == ("weights", "features")
    with pytest.raises(ValueError, match="valid: weights,activations"):
        parse_sections("weights,crosscoder")


def test_compare_writes_summary_and_report(tiny_dirs, tmp_path):
    pair = load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu")
    cfg = CompareConfig(sections=("weights", "activations", "steering", "features"), plots=False,
                        activations=ActivationsConfig(n_emotion=2, n_tasks=2, trace_tokens=2, lens_tokens=1))
    summary = run_compare(pair, tmp_path / "run", cfg)
    on_disk = json.loads((tmp_path / "run" / art.SUMMARY).read_text())
    assert on_disk["sections"].keys() == summary["sections"].keys() == {"weights", "activations", "steering", "features"}
    w = on_disk["sections"]["weights"]
    assert w["status"] == "done" and w["headline"]["modules_changed"] == 1
    assert w["headline"]["top_module"] == f"model.layers.{PLANT_LAYER}.mlp.down_proj"
    assert on_disk["sections"]["activations"]["headline"]["tasks"]["first_changed_layer"] == PLANT_LAYER
    for name in ("features",):
        sec = on_disk["sections"][name]
        assert sec["status"] == "skipped" and "SAE" in sec["reason"]
    assert on_disk["sections"]["steering"]["status"] in ("done", "skipped")
    assert on_disk["models"]["base"]["spec"] == tiny_dirs["base"]
    assert on_disk["models"]["tuned"]["spec"] == tiny_dirs["rank1"]
    report = (tmp_path / "run" / art.REPORT).read_text()
    assert "## Weights" in report and f"model.layers.{PLANT_LAYER}.mlp.down_proj" in report
    assert "## Features" in report and "*skipped*" in report
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["command_name"].startswith("psylens compare")
    steps = {p.stem for p in (tmp_path / "run" / "steps").glob("*.json")}
    assert {"compare_weights", "compare_activations", "compare_report"} <= steps
    # the same run directory refuses another pair
    other = load_pair(tiny_dirs["base"], tiny_dirs["base"], device="cpu")
    with pytest.raises(ValueError, match="another tuned model"):
        run_compare(other, tmp_path / "run", cfg)
