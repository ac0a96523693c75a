"""notebooks/02_validating_emotion_directions.ipynb executed top to bottom on the embedded model, shrunk
by ``PSYLENS_NOTEBOOK_SMALL=1`` (2 stories a concept, 3 contexts, 2 prompts): every gate's cell runs and
prints its number beside its control."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "02_validating_emotion_directions.ipynb"


def test_validation_notebook_runs_small(tmp_path, monkeypatch) -> None:
    import nbclient
    import nbformat

    monkeypatch.setenv("PSYLENS_NOTEBOOK_SMALL", "1")  # the kernel inherits it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outs) + "".join(str(o.get("data", {}).get("text/plain", "")) for o in outs)
    assert "gated checks passed (quick suite: True)" in text
    for gate in ("feels_matrix", "implicit_scenarios", "dose_response", "geometry", "logit_lens", "read_back", "preferences"):
        assert gate in text, gate
    assert "own shift minus the random draws' mean shift" in text and "control: a random draw's gap" in text
    assert "logit lens:" in text and "(random:" in text and "read-back: steered beats unsteered" in text
    figs = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) >= 3  # feels heatmap, dose curves, PC1×PC2
