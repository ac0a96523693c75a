"""The sweep's plumbing on a tiny random model: config, batching with per-row vectors, the run layout."""

from __future__ import annotations

import json

import pytest
import torch

from psylens.runs import create_run
from psylens.steering import SteeringVector
from psylens.steering.judges import EMOTIONS
from psylens.steering.sweep import SweepConfig, default_layers, generate_rows, run_sweep

PROMPTS = ["Describe your morning.", "Tell me about the weather.", "Write about the ocean.", "Plan a grocery list."]


class StandInDirections:
    site = "resid_post"
    method = "mean_diff"

    def __init__(self, d: int = 32, layers=(0, 1, 2), emotions=EMOTIONS):
        self.emotions, self.layers = tuple(emotions), tuple(layers)
        v = torch.randn(len(self.emotions), len(self.layers), d, generator=torch.Generator().manual_seed(0))
        self.vectors = v / v.norm(dim=-1, keepdim=True)

    def __getitem__(self, key):
        e, layer = key
        return self.vectors[self.emotions.index(e), self.layers.index(layer)].clone()


def test_config_validation_and_json_roundtrip():
    cfg = SweepConfig.full()
    assert SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SweepConfig.quick().n_dev < cfg.n_dev
    for kw, msg in [
        (dict(emotions=("awe",)), "unknown emotions"),
        (dict(scales=(0.0,)), "scales must be positive"),
        (dict(n_test=0), "n_test must be at least 1"),
        (dict(prompting_template="be happy"), "must contain"),
        (dict(layers=()), "layers is empty"),
    ]:
        with pytest.raises(ValueError, match=msg):
            SweepConfig(**kw)
    with pytest.raises(ValueError, match="unknown sweep settings"):
        SweepConfig.from_dict({"nope": 1})


def test_default_layers():
    assert default_layers(30, (0.3, 0.45, 0.6)) == [9, 13, 17]
    assert default_layers(30, (0.3, 0.45), available=[0, 10, 20]) == [10]
    assert default_layers(3, (0.0, 1.0)) == [0, 2]


def test_generate_rows_zero_rows_are_unsteered_and_rows_are_independent(tiny_model):
    model = tiny_model("llama")
    formatted = [model.format_prompt(p) for p in PROMPTS[:3]]
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))
    deltas = {1: torch.stack([torch.zeros(32), 40 * v / v.norm(), torch.zeros(32)])}
    rows = generate_rows(model, formatted, deltas, max_new_tokens=5)
    plain = model.generate(PROMPTS[:3], max_new_tokens=5)
    assert rows[0] == plain[0] and rows[2] == plain[2]
    with SteeringVector.from_tensor(v / v.norm(), layers=[1], alpha=40.0).apply(model):
        steered = model.generate(PROMPTS[1], max_new_tokens=5)
    assert rows[1] == steered[0]
    with pytest.raises(ValueError, match="rows for 3 prompts"):
        generate_rows(model, formatted, {1: torch.zeros(2, 32)})


def test_run_sweep_on_a_tiny_model(tiny_model, tmp_path):
    model = tiny_model("llama")
    run = create_run(tmp_path / "run", command="test", model=model.describe())
    cfg = SweepConfig(emotions=("joy", "fear"), layers=(1,), scales=(0.5, 1.0), n_dev=2, n_test=2, max_new_tokens=4)
    summary = run_sweep(model, run, directions=StandInDirections(), prompts=PROMPTS, config=cfg, progress=False)
    # the contract's keys, exactly
    assert set(summary) >= {"emotions", "mean_success"}
    # the judge's own ceiling is reported beside every success rate
    jv = summary["judge_validation"]
    assert jv["set"] == "explicit" and jv["n"] == 90 and 0 <= jv["no_call"] <= 1 and set(jv["by_emotion"]) == set(EMOTIONS)
    ref = summary["fluency_reference"]
    assert ref["n"] == 2 and ref["temperature"] == 1.0 and ref["unsteered_sampled"] > 0
    for e in ("joy", "fear"):
        v = summary["emotions"][e]
        assert {"best_layer", "best_alpha", "success", "perplexity_ratio", "baselines"} <= set(v)
        assert set(v["baselines"]) == {"prompting", "random", "none"}
        assert isinstance(v["best_layer"], int) and isinstance(v["best_alpha"], float)
        assert isinstance(v["success"], float) and v["n_test"] == 2
        sv = SteeringVector.load(run.file(f"steering/vectors/{e}.safetensors"))
        assert sv.alpha == v["best_alpha"] and sv.layers == (v["best_layer"],) and sv.label == e
    assert summary["n_prompts"] == {"dev": 2, "test": 2}
    grid = run.read_json("steering/grid.json")
    assert len(grid["cells"]) == 2 * 1 * 2
    lines = run.file("steering/generations.jsonl").read_text().splitlines()
    gens = [json.loads(x) for x in lines]
    test = [g for g in gens if g["split"] == "test"]
    assert len(test) == 2 + 2 * 3 * 2  # none + (steer, random, prompting) per emotion and prompt
    dev_prompts = {g["prompt"] for g in gens if g["split"] == "dev"}
    assert dev_prompts.isdisjoint({g["prompt"] for g in test})  # held-out prompts
    assert "Respond in a way that shows joy." in {g.get("system_prompt") for g in test}
    assert run.steps["steering"]["mean_success"] == summary["mean_success"]
    left = [h for m in model.hf_model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
            if getattr(h, "__module__", "").startswith(("psylens.steering", "psylens.interventions"))]
    assert not left  # no steering hook left behind


def test_run_sweep_errors(tiny_model, tmp_path):
    model = tiny_model("llama")
    run = create_run(tmp_path / "run", command="test")
    with pytest.raises(ValueError, match="no directions at"):
        run_sweep(model, run, prompts=PROMPTS, config=SweepConfig(directions="probes"), progress=False)
    with pytest.raises(ValueError, match="width 16 but the model"):
        run_sweep(model, run, directions=StandInDirections(d=16), prompts=PROMPTS, progress=False)
    with pytest.raises(ValueError, match="none of the emotions"):
        run_sweep(model, run, directions=StandInDirections(emotions=("calm",)), prompts=PROMPTS, progress=False)
    cfg = SweepConfig(layers=(7,))
    with pytest.raises(ValueError, match=r"layers \[7\] have no directions"):
        run_sweep(model, run, directions=StandInDirections(), prompts=PROMPTS, config=cfg, progress=False)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        run_sweep(model, run, directions=StandInDirections(), prompts=PROMPTS[:1], progress=False)


def test_sampled_decoding_is_reported_and_reproducible(tiny_model, tmp_path):
    model = tiny_model("llama")
    cfg = SweepConfig(emotions=("joy",), layers=(1,), scales=(1.0,), n_dev=1, n_test=2, max_new_tokens=3, sampled=True)
    a = run_sweep(model, create_run(tmp_path / "a", command="t"), directions=StandInDirections(), prompts=PROMPTS[:3],
                  config=cfg, progress=False)
    b = run_sweep(model, create_run(tmp_path / "b", command="t"), directions=StandInDirections(), prompts=PROMPTS[:3],
                  config=cfg, progress=False)
    s = a["emotions"]["joy"]["sampled"]
    assert set(s) >= {"success", "perplexity_ratio", "baselines"} and set(s["baselines"]) == {"prompting", "random", "none"}
    assert set(s) >= {"ci95", "baselines_ci95", "vs", "beats_random", "beats_prompting", "beats_none"}
    assert s["beats_random"] == s["vs"]["random"]["beats"] and "mean_sampled" in a
    gens = [json.loads(x) for x in (tmp_path / "a" / "steering" / "generations.jsonl").read_text().splitlines()]
    assert any(g["sampled"] for g in gens) and any(not g["sampled"] for g in gens)
    assert (tmp_path / "a" / "steering" / "generations.jsonl").read_text() == (tmp_path / "b" / "steering" / "generations.jsonl").read_text()
    assert a["emotions"] == b["emotions"]


def test_fluency_reference_is_one_for_near_greedy_sampling_and_above_one_at_temperature_one(tiny_model):
    from psylens.steering.metrics import perplexity
    from psylens.steering.sweep import _fluency_reference

    model = tiny_model("llama")
    formatted = [model.format_prompt(p) for p in PROMPTS]
    cfg = SweepConfig(max_new_tokens=6)
    greedy = generate_rows(model, formatted, {}, max_new_tokens=6)
    ppl_greedy = perplexity(model, PROMPTS, greedy)
    # known answer: sampling at a vanishing temperature is greedy decoding, so the ratio is exactly 1
    cold = _fluency_reference(model, formatted, PROMPTS, cfg, 0, ppl_greedy, temperature=1e-5)
    assert cold["unsteered_sampled"] == pytest.approx(1.0, abs=1e-6)
    # control: real sampling leaves the mode, so its text is less likely than greedy text
    hot = _fluency_reference(model, formatted, PROMPTS, cfg, 0, ppl_greedy, temperature=1.0)
    assert hot["unsteered_sampled"] > 1.05 and hot["n"] == len(PROMPTS)
