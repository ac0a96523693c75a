"""notebooks/03_emotion_circuits.ipynb executed top to bottom on the embedded model, shrunk by
``PSYLENS_NOTEBOOK_SMALL=1`` (one emotion, read-out layer 4, 2 discovery + 2 held-out scenarios, 2 patched units a kind, mean ablation at
the full size only, one eval topic, expression directions from 2 prompts):
every section runs, prints its number beside its control and draws its figure."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03_emotion_circuits.ipynb"


def test_circuits_notebook_runs_small(tmp_path, monkeypatch) -> None:
    import nbclient
    import nbformat

    monkeypatch.setenv("PSYLENS_NOTEBOOK_SMALL", "1")  # the kernel inherits it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outs if o.get("output_type") == "error"]
    assert not errors, [(o.get("ename"), o.get("evalue")) for o in errors]
    text = "".join(o.get("text", "") for o in outs) + "".join(str(o.get("data", {}).get("text/plain", "")) for o in outs)
    assert "read-out layer 4" in text and "eval file:" in text
    assert "joy: circuit of" in text and "vs random sets" in text and "ablation target met:" in text
    assert "top heads by atp" in text and "the other heads' std" in text
    assert "circuit drop" in text and "over 5 draws" in text and "(eval file): circuit drop" in text
    assert "(chance: 0.17)" in text
    figs = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) >= 4  # direct + atp heatmaps, ablation curves, sublayer bars (enhancement when the circuit has units)
