"""psylens validate --quick end to end on the embedded model: the summary's keys and a control beside each gate."""

from __future__ import annotations

import json

import pytest

from psylens.runs import create_run
from psylens.validation import artifacts as art
from psylens.validation.suite import GATES, ValidationConfig, run_validation

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_validation_on_smollm(smollm, tmp_path) -> None:
    run = create_run(tmp_path / "run", command="psylens validate", model=smollm)
    cfg = ValidationConfig.quick_config(n_stories_per_concept=4, n_neutral=12, n_scenarios=6, n_contexts=4,
                                        n_prompts=3, max_new_tokens=8, n_activities=6)
    summary = run_validation(smollm, run, cfg)
    on_disk = json.loads((tmp_path / "run" / art.SUMMARY).read_text())
    assert on_disk["source"] == "stories" and on_disk["layer"] == 13 and on_disk["quick"] is True
    assert set(on_disk["gates"]) == set(GATES)
    for name, g in on_disk["gates"].items():
        assert {"value", "threshold", "control", "passed"} <= set(g), name
        assert g["control"] is not None, f"{name} reports no control"
        assert isinstance(g["value"], (int, float)), name
    assert on_disk["total"] == 6 and 0 <= on_disk["passed"] <= 6
    assert summary["directions"]["concepts"][:6] == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert len(summary["directions"]["concepts"]) == 24
    assert (tmp_path / "run" / art.DIRECTIONS).is_file()
