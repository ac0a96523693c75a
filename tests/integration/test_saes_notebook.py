"""notebooks/04_reasoning_step_saes.ipynb executed top to bottom on the embedded model, shrunk by
``PSYLENS_NOTEBOOK_SMALL=1`` (6 tasks × 1 sample × 32 tokens, a 32-latent SAE, steering 1 task × 16 tokens):
every section runs, prints its number beside its control and draws its figures."""

from __future__ import annotations

import pytest

from tests.conftest import run_small_notebook

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_saes_notebook_runs_small(tmp_path, monkeypatch) -> None:
    outs, text = run_small_notebook("04_reasoning_step_saes.ipynb", tmp_path, monkeypatch, timeout=900)
    assert "6 traces of 6 task kinds" in text and "(chance: 0.25)" in text
    assert "steps per label:" in text and "× d_model 576" in text
    assert "held-out explained variance" in text and "(k = 4)" in text
    assert "AUROC (held-out)" in text and "control AUROC (shuffled)" in text
    assert "logit lens:" in text
    assert "steering vector: layer 15" in text
    for cond in ("none:", "feature@", "random@"):
        assert cond in text, cond
    figs = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) >= 3  # histogram, position profile, decoder map
    html = [o for o in outs if "text/html" in o.get("data", {}) and "<mark" in o["data"]["text/html"]]
    assert html or "fires on 0% of steps" in text  # top steps highlighted in their traces (a dead latent has none)
