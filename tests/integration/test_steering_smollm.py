"""Steering the embedded SmolLM2-135M-Instruct: real directions, real generations, small and fast.

Directions are fitted here from a slice of the built-in ``emotions`` set (group-centred mean
differences at the last token), so these tests do not depend on the probes package.
"""

from __future__ import annotations

import json

import pytest
import torch

from psylens import stimuli
from psylens.steering import SteeringVector
from psylens.steering.judges import EMOTIONS, LexiconJudge

pytestmark = pytest.mark.integration

LAYER = 13
PROMPTS = [
    "Describe what you did this morning.",
    "Tell me about the weather where you live.",
    "Describe a park in the middle of the afternoon.",
    "Tell me about your plans for the weekend.",
]


class FittedDirections:
    """Directions-shaped stand-in: unit vectors [emotion, layer] at resid_post."""

    site = "resid_post"
    method = "mean_diff"

    def __init__(self, vectors: torch.Tensor, emotions: list[str], layers: list[int]) -> None:
        self.vectors, self.emotions, self.layers = vectors, tuple(emotions), tuple(layers)

    def __getitem__(self, key):
        e, layer = key
        return self.vectors[self.emotions.index(e), self.layers.index(layer)].clone()


@pytest.fixture(scope="module")
def directions(smollm) -> FittedDirections:
    """Group-centred mean differences from 8 scenarios × 6 emotions, last token, at LAYER."""
    st = stimuli.load("emotions")
    groups = sorted({g for g in st.groups if g})[:8]
    items = [s for s in st if s.group in groups and s.label in EMOTIONS]
    tok = smollm.tokenizer
    texts = [smollm.format_prompt(s.text) for s in items]
    layers = [LAYER]
    tok.padding_side = "left"
    try:
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            hs = smollm.hf_model(**enc, output_hidden_states=True).hidden_states
    finally:
        tok.padding_side = "right"
    x = torch.stack([hs[layer + 1][:, -1] for layer in layers], dim=1)  # [n, L, d]
    g = [groups.index(s.group) for s in items]
    gt = torch.tensor(g)
    for k in range(len(groups)):
        x[gt == k] -= x[gt == k].mean(dim=0)
    labels = [s.label for s in items]
    means = torch.stack([x[[i for i, lab in enumerate(labels) if lab == e]].mean(dim=0) for e in EMOTIONS])
    raw = means - means.mean(dim=0, keepdim=True)
    return FittedDirections(raw / raw.norm(dim=-1, keepdim=True), list(EMOTIONS), layers)


def hook_count(model) -> int:
    """psylens steering hooks left on the model (transformers installs hooks of its own lazily)."""
    roots = [model.hf_model] + ([model.bridge] if getattr(model, "_bridge", None) is not None else [])
    return sum(
        getattr(h, "__module__", "").startswith(("psylens.steering", "psylens.interventions"))
        for r in roots for m in r.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
    )


def _alpha(smollm, scale: float) -> float:
    from psylens.steering.sweep import residual_norms

    return scale * residual_norms(smollm, [smollm.format_prompt(p) for p in PROMPTS], [LAYER])[LAYER]


def test_steering_changes_text_and_raises_the_target_score(smollm, directions):
    sv = SteeringVector.from_directions(directions, "joy", layers=[LAYER], alpha=_alpha(smollm, 0.2))
    base = smollm.generate(PROMPTS, max_new_tokens=24)
    with sv.apply(smollm):
        steered = smollm.generate(PROMPTS, max_new_tokens=24)
    assert hook_count(smollm) == 0
    assert steered != base
    judge = LexiconJudge()
    joy = EMOTIONS.index("joy")
    before, after = judge.intensity(base)[:, joy].mean(), judge.intensity(steered)[:, joy].mean()
    assert after > before, (base, steered)
    # the control that must fail: the opposite vector lowers it
    with (-sv).apply(smollm):
        opposite = smollm.generate(PROMPTS, max_new_tokens=24)
    assert judge.intensity(opposite)[:, joy].mean() < before


def test_bridge_hooks_see_the_steered_residual(smollm, directions):
    """Steering a psylens Model steers its bridge too: hook_resid_post and HF hidden states agree."""
    sv = SteeringVector.from_directions(directions, "fear", layers=[LAYER], alpha=20.0)
    ids = smollm.tokenizer(["The meeting is at noon."], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        _, base_cache = smollm.bridge.run_with_cache(ids, names_filter=f"blocks.{LAYER}.hook_resid_post")
        with sv.apply(smollm):
            _, cache = smollm.bridge.run_with_cache(ids, names_filter=f"blocks.{LAYER}.hook_resid_post")
            hf = smollm.hf_model(ids, output_hidden_states=True).hidden_states[LAYER + 1]
    key = f"blocks.{LAYER}.hook_resid_post"
    torch.testing.assert_close(cache[key], base_cache[key] + sv.deltas()[LAYER])
    # the bridge's twin modules and the plain HF model sum in different orders: ~1e-5 on |x|~10
    torch.testing.assert_close(hf, cache[key], rtol=1e-5, atol=1e-4)


def test_bad_inputs_are_clear_errors(smollm, directions, tmp_path):
    with pytest.raises(ValueError, match="d_model 32 but .* hidden size 576"):
        SteeringVector.from_tensor(torch.ones(32), layers=[3]).attach(smollm)
    with pytest.raises(ValueError, match=r"layer 30 out of range: the model has 30 layers \(0–29\)"):
        SteeringVector.from_tensor(torch.ones(576), layers=[30]).attach(smollm)
    with pytest.raises(ValueError, match="unknown emotion 'awe'"):
        SteeringVector.from_directions(directions, "awe", layers=[LAYER])
    import psylens.probes.directions as probes
    dirs = probes.Directions.from_raw(directions.vectors, list(EMOTIONS), list(directions.layers))
    path = dirs.save(tmp_path / "directions.safetensors")
    with pytest.raises(ValueError, match="unknown emotion 'awe'"):
        SteeringVector.from_directions(path, "awe", layers=[LAYER])


def test_small_sweep_writes_the_run(smollm, directions, tmp_path):
    from psylens.runs import create_run
    from psylens.steering.sweep import SweepConfig, run_sweep

    run = create_run(tmp_path / "run", command="test", model=smollm.describe())
    cfg = SweepConfig(emotions=("joy", "sadness"), layers=(LAYER,), scales=(0.5,), n_dev=2, n_test=2, max_new_tokens=8)
    summary = run_sweep(smollm, run, directions=directions, prompts=PROMPTS, config=cfg, progress=False)
    assert set(summary["emotions"]) == {"joy", "sadness"}
    for e, v in summary["emotions"].items():
        assert v["best_layer"] == LAYER and isinstance(v["best_alpha"], float)
        assert set(v["baselines"]) == {"prompting", "random", "none"}
        assert 0.0 <= v["success"] <= 1.0
        sv = SteeringVector.load(run.file(f"steering/vectors/{e}.safetensors"))
        assert sv.label == e and sv.layers == (LAYER,) and sv.alpha == v["best_alpha"]
    on_disk = json.loads(run.file("steering/summary.json").read_text())
    assert on_disk["mean_success"] == summary["mean_success"]
    assert "steering" in run.steps
    gens = [json.loads(line) for line in run.file("steering/generations.jsonl").read_text().splitlines()]
    assert {g["condition"] for g in gens} == {"steer", "random", "prompting", "none"}
    assert hook_count(smollm) == 0


def test_cli_steer_writes_jsonl(smollm, directions, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import psylens.models
    from psylens.steering.cli import steer_app

    sv = SteeringVector.from_directions(directions, "joy", layers=[LAYER], alpha=30.0)
    vec = sv.save(tmp_path / "joy.safetensors")
    monkeypatch.setattr(psylens.models, "load_model", lambda *a, **k: smollm)  # reuse the session model
    out = tmp_path / "gens.jsonl"
    result = CliRunner().invoke(
        steer_app, ["--vectors", str(vec), "--prompts", PROMPTS[0], "--out", str(out), "--max-new-tokens", "6"]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    rec = json.loads(out.read_text().splitlines()[0])
    assert set(rec) >= {"prompt", "baseline", "steered", "emotion", "layer", "alpha"}
    assert rec["emotion"] == "joy" and rec["layer"] == LAYER and rec["alpha"] == 30.0
    bad = CliRunner().invoke(steer_app, ["--vectors", str(vec), "--prompts", "x", "--out", str(tmp_path / "g.txt")])
    assert isinstance(bad.exception, ValueError) and ".jsonl" in str(bad.exception)


NOTEBOOK = "notebooks/01_emotion_directions_and_steering.ipynb"


def test_notebook_runs(tmp_path):
    """Execute the directions-and-steering notebook top to bottom in a fresh kernel."""
    from pathlib import Path

    import nbclient
    import nbformat

    path = Path(__file__).resolve().parents[2] / NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "joy intensity" in outputs and "joy share" in outputs and "joy.gguf" in outputs


def test_expression_directions_steer_the_embedded_model(smollm):
    """Directions read from SmolLM2 prompted to express each emotion: centred, and the joy one steers towards joy."""
    from psylens.steering.expression import expression_directions

    dirs = expression_directions(smollm, layers=[LAYER])
    assert dirs.layers == (LAYER,) and dirs.d_model == 576
    raw = dirs.vectors * dirs.norms.unsqueeze(-1)
    assert float(raw.sum(dim=0).norm()) < 1e-3 * float(dirs.norms.max())
    sv = SteeringVector.from_directions(dirs, "joy", layers=[LAYER], alpha=_alpha(smollm, 0.2))
    judge = LexiconJudge()
    joy = EMOTIONS.index("joy")
    base = smollm.generate(PROMPTS, max_new_tokens=24)
    with sv.apply(smollm):
        steered = smollm.generate(PROMPTS, max_new_tokens=24)
    with (-sv).apply(smollm):
        opposite = smollm.generate(PROMPTS, max_new_tokens=24)
    assert hook_count(smollm) == 0
    assert judge.intensity(steered)[:, joy].mean() > judge.intensity(base)[:, joy].mean() > judge.intensity(opposite)[:, joy].mean()
