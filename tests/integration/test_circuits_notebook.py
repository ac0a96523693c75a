"""notebooks/03_emotion_circuits.ipynb executed top to bottom on the embedded model, shrunk by
``PSYLENS_NOTEBOOK_SMALL=1`` (one emotion, read-out layer 4, 2 discovery + 2 held-out scenarios, 2 patched units a kind, mean ablation at
the full size only, one eval topic, expression directions from 2 prompts):
every section runs, prints its number beside its control and draws its figure."""

from __future__ import annotations

import pytest

from tests.conftest import run_small_notebook

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_circuits_notebook_runs_small(tmp_path, monkeypatch) -> None:
    outs, text = run_small_notebook("03_emotion_circuits.ipynb", tmp_path, monkeypatch, timeout=1800)
    assert "read-out layer 4" in text and "eval file:" in text
    assert "joy: circuit of" in text and "vs random sets" in text and "ablation target met:" in text
    assert "top heads by atp" in text and "the other heads' std" in text
    assert "circuit drop" in text and "over 5 draws" in text and "(eval file): circuit drop" in text
    assert "(chance: 0.17)" in text
    figs = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) >= 4  # direct + atp heatmaps, ablation curves, sublayer bars (enhancement when the circuit has units)
