"""notebooks/05_base_vs_rl_tuned.ipynb executed top to bottom on the embedded model against a random LoRA stand-in
for the organism (``PSYLENS_NB05_TUNED_ADAPTER``), shrunk by ``PSYLENS_NOTEBOOK_SMALL=1`` (2 + 2 texts, 4 scenarios,
2 stories a concept, 3 contexts, 2 short generations, no PNGs): every section runs, prints its number beside its
control and draws its figure; the planted layers are found."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_small_notebook

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYERS = [10, 11]


def _stand_in(out: Path) -> Path:
    """A random LoRA on SmolLM2 (r=4, q_proj/v_proj of layers 10-11)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from psylens.models import DEFAULT_MODEL, load_model

    m = load_model(DEFAULT_MODEL, device="cpu")  # a fresh model: get_peft_model edits it
    torch.manual_seed(0)
    peft = get_peft_model(m.hf_model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 layers_to_transform=LAYERS))
    with torch.no_grad():
        for mod in peft.modules():
            if hasattr(mod, "lora_B") and "default" in mod.lora_B:
                mod.lora_B["default"].weight.normal_(std=0.02)
    peft.save_pretrained(str(out))
    return out


def test_compare_notebook_runs_small(tmp_path, monkeypatch) -> None:
    adapter = _stand_in(tmp_path / "adapter")
    outs, text = run_small_notebook("05_base_vs_rl_tuned.ipynb", tmp_path, monkeypatch, timeout=900,
                                    env={"PSYLENS_NB05_TUNED_ADAPTER": str(adapter)})
    assert f"the adapter {adapter}" in text and "random LoRA stand-in" not in text.split("tuned:")[0]
    assert "4 of 210 modules changed" in text and "vs random directions" in text
    assert f"tasks: first changed layer {LAYERS[0]}" in text and f"emotions: first changed layer {LAYERS[0]}" in text
    assert "mean KL" in text and "difference lens at layer" in text
    assert "base probes at layer" in text and "mean direction cosine" in text
    assert "rise:" in text and "concepts permuted" in text
    assert "own shift tuned − base" in text
    assert "--- base ---" in text and "--- tuned, steered ---" in text
    assert "plots: none (not drawn (plots=False))" in text
    figs = [o for o in outs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figs) == 8  # weights, 2 activation curves, KL, probes, directions, concepts, steering
