"""notebooks/02_validating_emotion_directions.ipynb executed top to bottom on the embedded model, shrunk
by ``PSYLENS_NOTEBOOK_SMALL=1`` (2 stories a concept, 3 contexts, 2 prompts): every gate's cell runs and
prints its number beside its control."""

from __future__ import annotations

import pytest

from tests.conftest import run_small_notebook

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_validation_notebook_runs_small(tmp_path, monkeypatch) -> None:
    outs, text = run_small_notebook("02_validating_emotion_directions.ipynb", tmp_path, monkeypatch, timeout=600)
    assert "gated checks passed (quick suite: True)" in text
    for gate in ("feels_matrix", "implicit_scenarios", "dose_response", "geometry", "logit_lens", "read_back", "preferences"):
        assert gate in text, gate
    assert "own shift minus the random draws' mean shift" in text and "control: a random draw's gap" in text
    assert "logit lens:" in text and "(random:" in text and "read-back: steered beats unsteered" in text
    figs = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) >= 3  # feels heatmap, dose curves, PC1×PC2
