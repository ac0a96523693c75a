"""``python -m benchmarks.circuits --only modulation`` hands every modulation setting of its config to
``modulate_run``. It once accepted ``modulation_judges`` and dropped it, so a run meant to measure the judges
measured none."""

from __future__ import annotations

import json

import pytest

import benchmarks.circuits as bench
from psylens.circuits import pipeline


@pytest.mark.parametrize("judges", [("probe", "llm"), ()])
def test_modulation_judges_reach_modulate_run(tmp_path, monkeypatch, judges):
    seen: dict = {}
    monkeypatch.setattr(pipeline, "modulation_judges", lambda model, names: {n: f"judge:{n}" for n in names})
    monkeypatch.setattr(pipeline, "modulate_run", lambda model, run, emotions, **kw: seen.update(kw) or
                        {"joy": {"circuit_at_least_steering": True}})
    monkeypatch.setattr("psylens.runs.open_run", lambda path: path)
    out = bench.bench_modulation(object(), tmp_path, "RUN", "joy",
                                 {"modulation_fluency": "relative_greedy", "modulation_judges": list(judges)})
    # control: without judges nothing is built and the file name says nothing of them
    assert seen["judges"] == ({n: f"judge:{n}" for n in judges} or None)
    name = "modulation_relative_greedy" + ("_judges-probe-llm" if judges else "") + ".json"
    assert json.loads((tmp_path / name).read_text())["circuit_at_least_steering"] == out["circuit_at_least_steering"] == 1
