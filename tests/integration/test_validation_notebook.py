"""notebooks/02_validating_emotion_directions.ipynb executed top to bottom on the embedded model, shrunk
by ``PSYLENS_NOTEBOOK_SMALL=1`` (2 stories a concept, 3 contexts, 2 prompts): every gate's cell runs and
prints its number beside its control, and the run it wrote (``run_validation`` with
``ValidationConfig.quick_config``, what ``psylens validate --quick`` runs) holds the summary's keys, a
control beside each gate, and the 24 validated directions."""

from __future__ import annotations

import json

import pytest

from psylens.validation import artifacts as art
from psylens.validation.suite import GATES
from tests.conftest import run_small_notebook

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_validation_notebook_runs_small(tmp_path, monkeypatch) -> None:
    # the notebook makes its run with tempfile.mkdtemp: TMPDIR puts it where this test can read it
    runs = tmp_path / "runs"
    runs.mkdir()
    outs, text = run_small_notebook("02_validating_emotion_directions.ipynb", tmp_path, monkeypatch, timeout=600,
                                    env={"TMPDIR": str(runs)})
    assert "gated checks passed (quick suite: True)" in text
    for gate in ("feels_matrix", "implicit_scenarios", "dose_response", "geometry", "logit_lens", "read_back", "preferences"):
        assert gate in text, gate
    assert "own shift minus the random draws' mean shift" in text and "control: a random draw's gap" in text
    assert "logit lens:" in text and "(random:" in text and "read-back: steered beats unsteered" in text
    figs = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) >= 3  # feels heatmap, dose curves, PC1×PC2

    # the run on disk: the summary's schema, with a control beside every gate
    (run,) = [p for p in runs.glob("validation-*") if (p / art.SUMMARY).is_file()]
    on_disk = json.loads((run / art.SUMMARY).read_text())
    assert on_disk["source"] == "stories" and on_disk["layer"] == 13 and on_disk["quick"] is True
    assert set(on_disk["gates"]) == set(GATES)
    for name, g in on_disk["gates"].items():
        assert {"value", "threshold", "control", "passed"} <= set(g), name
        assert g["control"] is not None, f"{name} reports no control"
        assert isinstance(g["value"], (int, float)), name
    assert on_disk["total"] == 6 and 0 <= on_disk["passed"] <= 6
    assert on_disk["directions"]["concepts"][:6] == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert len(on_disk["directions"]["concepts"]) == 24
    assert (run / art.DIRECTIONS).is_file()
