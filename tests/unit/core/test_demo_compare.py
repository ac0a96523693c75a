"""The demo's base-vs-tuned step: the model's shipped organism compared at the demo's sizes, or skipped with why.

Known answer: a tiny Llama whose "organism" is a LoRA on one module (``model.layers.1.self_attn.q_proj``):
the comparison in the demo's run ranks that module first and the closing lines name it. Control: a model
without an organism gets the step recorded as skipped, with the reason, and nothing of compare is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import build_tiny_hf

from psylens import demo as demo_mod
from psylens import models as models_mod

PLANTED = "model.layers.1.self_attn.q_proj"


@pytest.fixture(scope="module")
def tiny_with_organism(tmp_path_factory: pytest.TempPathFactory, smollm_tokenizer) -> tuple[str, Path]:
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("demo-compare")
    base = root / "base"
    build_tiny_hf("llama").save_pretrained(base)
    smollm_tokenizer.save_pretrained(base)
    lora = get_peft_model(build_tiny_hf("llama"), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"],
                                                             layers_to_transform=[1], init_lora_weights=False))
    lora.save_pretrained(str(root / "adapter"))
    return str(base), root / "adapter"


@pytest.fixture(autouse=True)
def few_stimuli(monkeypatch):
    """The demo harvests two scenarios of the emotions set here (its 1,120 texts are the demo's, not this test's)."""
    from psylens.stimuli import Stimuli, load

    every = load("emotions")
    groups = sorted({s.group for s in every})[:2]
    monkeypatch.setattr(demo_mod, "load_stimuli", lambda name: Stimuli([s for s in every if s.group in groups],
                                                                      name="emotions[:2 scenarios]"))


class _Shipped:
    def __init__(self, alias: str, base: str, adapter: Path | None) -> None:
        self.alias, self.base, self._adapter = alias, base, adapter

    def adapter_dir(self) -> Path:
        if self._adapter is None:
            raise ValueError(f"model {self.alias!r}: its adapter is not shipped in this installation")
        return self._adapter


def _small(seed: int = 0, *, reuse_directions: bool = True):
    """The demo's comparison at test sizes: weights, activations and features (which skips: no SAE)."""
    from psylens.compare.activations import ActivationsConfig
    from psylens.compare.generations import GenerationsConfig
    from psylens.compare.pipeline import CompareConfig

    return CompareConfig(sections=("weights", "activations", "features"), plots=False, seed=seed,
                         activations=ActivationsConfig(n_emotion=2, n_tasks=2, trace_tokens=4),
                         generations=GenerationsConfig(n_prompts=0))


def test_demo_compare_config_runs_every_section() -> None:
    from psylens.compare import artifacts as art

    cfg = demo_mod.demo_compare_config()
    assert cfg.sections == art.SECTIONS and cfg.emotions.n_stories is None  # reuses the validation's directions
    own = demo_mod.demo_compare_config(reuse_directions=False).emotions
    assert (own.n_stories, own.n_neutral) == (8, 32)


def test_demo_compares_the_model_with_its_organism(tiny_with_organism, tmp_path, monkeypatch) -> None:
    base, adapter = tiny_with_organism
    monkeypatch.setitem(models_mod.ORGANISMS, "tiny-organism", _Shipped("tiny-organism", base, adapter))
    monkeypatch.setattr(demo_mod, "demo_compare_config", _small)
    assert demo_mod.demo_organism(base) == ("tiny-organism", None)
    seen: list[tuple[str, dict]] = []
    run = demo_mod.run_demo(tmp_path / "run", model=base, device="cpu", steps=("load", "harvest", "compare"),
                            progress=False, on_step=lambda name, s, info: seen.append((name, info)))
    info = dict(seen)["compare"]
    assert info["tuned"] == "tiny-organism" and info["weights"] == "done" and info["features"] == "skipped"
    assert run.models["tuned"]["spec"] == "tiny-organism"
    h = demo_mod.headlines(run)["compare"]
    weights = h["sections"]["weights"]["headline"]
    assert weights["top_module"] == PLANTED and weights["modules_changed"] == 1 and weights["exact_lora"]
    lines = demo_mod.headline_lines({"compare": h})
    assert lines[0].startswith("base vs tuned (tiny-organism") and any(PLANTED in ln for ln in lines)
    assert any(ln.strip().startswith("features") and "skipped" in ln for ln in lines)
    assert run.file("compare/report.md").is_file() and run.file("compare/weights.json").is_file()


def test_demo_skips_the_comparison_without_an_organism(tiny_with_organism, tmp_path, monkeypatch) -> None:
    base, _ = tiny_with_organism
    why = demo_mod.demo_organism(base)[1]
    assert why is not None and "no RL-tuned organism is registered" in why
    monkeypatch.setitem(models_mod.ORGANISMS, "tiny-organism", _Shipped("tiny-organism", base, None))
    alias, why = demo_mod.demo_organism(base)
    assert alias is None and "not shipped" in why
    run = demo_mod.run_demo(tmp_path / "run", model=base, device="cpu", steps=("load", "harvest", "compare"),
                            progress=False)
    assert not run.file("compare/summary.json").exists()
    h = demo_mod.headlines(run)
    assert h["compare"] == {"skipped": why}
    assert demo_mod.headline_lines(h) == [f"base vs tuned: skipped: {why}"]
