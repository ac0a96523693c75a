"""notebooks/05_base_vs_rl_tuned.ipynb executed top to bottom on the embedded model against its shipped organism
``smollm2-135m-psy-grpo``, shrunk by ``PSYLENS_NOTEBOOK_SMALL=1`` (2 + 2 texts, 4 scenarios, 2 stories a concept,
3 contexts, 2 short generations, no PNGs): every section runs, prints its number beside its control and draws
its figure."""

from __future__ import annotations

import pytest

from tests.conftest import run_small_notebook

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_compare_notebook_runs_on_the_shipped_organism(tmp_path, monkeypatch) -> None:
    """The notebook as a user runs it: SmolLM2 against the shipped organism ``smollm2-135m-psy-grpo`` (its LoRA
    changes q_proj and v_proj of all 30 layers, so the 60 modules and layer 0 are known answers; planted
    single-layer changes are the unit tests' known answers, tests/unit/compare/)."""
    monkeypatch.delenv("PSYLENS_NB05_TUNED_ADAPTER", raising=False)
    outs, text = run_small_notebook("05_base_vs_rl_tuned.ipynb", tmp_path, monkeypatch, timeout=900)
    assert "tuned: the organism smollm2-135m-psy-grpo" in text and "random LoRA stand-in" not in text
    assert "60 of 210 modules changed" in text and "vs random directions" in text
    assert "tasks: first changed layer 0" in text and "emotions: first changed layer 0" in text
    assert "mean KL" in text and "difference lens at layer" in text
    assert "base probes at layer" in text and "mean direction cosine" in text
    assert "rise:" in text and "concepts permuted" in text
    assert "own shift tuned − base" in text
    assert "--- base ---" in text and "--- tuned, steered ---" in text
    assert "plots: none (not drawn (plots=False))" in text
    figs = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) == 8  # weights, 2 activation curves, KL, probes, directions, concepts, steering
