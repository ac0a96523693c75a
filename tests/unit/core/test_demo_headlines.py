"""The demo's closing lines: each headline beside its controls, with intervals; "beats" only by the paired interval.

Known answer: a steering sweep whose generations are planted (1 of 8 for anger, 7 of 8 for joy, nothing for the
baselines) and a probes summary on planted activations, both written by the real producers.
"""

from __future__ import annotations

import torch

from psylens.demo import headline_lines, headlines
from psylens.probes import fit_probes, planted_activations
from psylens.runs import create_run
from psylens.steering import sweep as sweep_mod
from psylens.steering.judges import EMOTIONS
from psylens.steering.sweep import SweepConfig, run_sweep


class MarkerJudge:
    name = "marker"

    def score(self, texts):
        out = torch.zeros(len(texts), len(EMOTIONS))
        for i, t in enumerate(texts):
            for k, e in enumerate(EMOTIONS):
                out[i, k] = float(f"MARK_{e}" in t)
        return out


class Dirs:
    site, method = "resid_post", "mean_diff"

    def __init__(self):
        self.emotions, self.layers = tuple(EMOTIONS), (0, 1, 2)
        self.v = torch.nn.functional.normalize(torch.randn(6, 3, 32, generator=torch.Generator().manual_seed(0)), dim=-1)

    def __getitem__(self, key):
        return self.v[self.emotions.index(key[0]), self.layers.index(key[1])].clone()


def _planted(hits):
    def fake(model, rows, cfg, seed, progress, desc, *, do_sample=False):
        seen: dict[str, int] = {}
        for r in rows:
            r.text = "a plain reply"
            if r.split == "test" and r.condition == "steer":
                seen[r.emotion] = seen.get(r.emotion, 0) + 1
                if seen[r.emotion] <= hits.get(r.emotion, 0):
                    r.text = f"MARK_{r.emotion}"

    return fake


def test_headlines_put_each_number_beside_its_controls(tiny_model, tmp_path, monkeypatch):
    model = tiny_model("llama")
    run = create_run(tmp_path / "run", command="test", model=model.describe())
    monkeypatch.setattr(sweep_mod, "_generate", _planted({"anger": 1, "joy": 7}))
    cfg = SweepConfig(emotions=("anger", "joy"), layers=(1,), scales=(0.5,), n_dev=1, n_test=8, max_new_tokens=2)
    run_sweep(model, run, directions=Dirs(), prompts=[f"Prompt {i}." for i in range(9)], config=cfg,
              judge=MarkerJudge(), progress=False)
    acts, _ = planted_activations(n_groups=20, n_layers=2, d=48, strength=[0.0, 4.0], context_scale=3.0)
    run.write_json("probes/summary.json", fit_probes(acts, seed=0, controls=("shuffled",)).summary())

    h = headlines(run.path)
    p = h["probes"]
    assert p["best_layer"] == 1 and p["accuracy"] > 0.95 and p["ci95"][0] <= p["accuracy"] <= p["ci95"][1]
    assert abs(p["shuffled"] - 1 / 6) < 0.1 and p["shuffled_ci95"][0] < 1 / 6 < p["shuffled_ci95"][1]
    assert p["chance"] == round(1 / 6, 4) and p["lexical"]["accuracy"] > 0.95 and p["beats_lexical"] is False
    st = h["steering"]
    assert st["success"] == 0.5 and st["n_test"] == 8 and st["ci95"][0] <= 0.5 <= st["ci95"][1]
    assert set(st["baselines"]) == {"prompting", "random", "none"}
    for b in st["baselines"].values():
        assert b["success"] == 0.0 and b["diff"] == 0.5 and b["beats"] is True and b["diff_ci95"][0] > 0

    lines = headline_lines(h)
    assert lines[0].startswith("probes: best layer 1 accuracy") and "shuffled labels" in lines[0]
    assert "chance 0.17" in lines[0] and "lexical" in lines[0] and "does not beat the words alone" in lines[0]
    assert lines[1].startswith("steering: mean success 0.50 [") and "over 8 held-out prompts" in lines[1]
    assert "(marker judge;" in lines[1] and "target 0.80" not in lines[1]  # the retired target is not shown
    assert sum("vs random" in x and "beats it" in x for x in lines) == 1
    # issue #10's target, from the sweep's own summary: the NRC lexicon reads the emotion word inside each mark
    # (success 0.5 over its ceiling 0.433), but the planted marks are not fluent text, so it is not met
    t = st["nrc_target"]
    assert t["success_over_ceiling"] == 1.1538 and t["min_success_over_ceiling"] == 0.6 and t["all_fluent"] is False
    assert t["met"] is False
    assert lines[2].startswith("  target: NRC success ÷ ceiling 1.15 (needs ≥ 0.60)") and lines[2].endswith("fluent "
                                                                                                            "(relative): no → not met")


def test_one_in_eight_is_printed_as_no_beat(tiny_model, tmp_path, monkeypatch):
    model = tiny_model("llama")
    run = create_run(tmp_path / "run", command="test", model=model.describe())
    monkeypatch.setattr(sweep_mod, "_generate", _planted({"anger": 1}))
    cfg = SweepConfig(emotions=("anger",), layers=(1,), scales=(0.5,), n_dev=1, n_test=8, max_new_tokens=2)
    run_sweep(model, run, directions=Dirs(), prompts=[f"Prompt {i}." for i in range(9)], config=cfg,
              judge=MarkerJudge(), progress=False)
    h = headlines(run)
    assert h["probes"] is None
    b = h["steering"]["baselines"]["random"]
    assert b["diff"] == 0.125 and b["beats"] is False
    lines = headline_lines(h)
    assert any("vs random" in x and "does not beat it" in x for x in lines)
    assert not any("beats it" in x and "does not" not in x for x in lines)


def test_the_demo_command_prints_the_headlines(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import psylens.demo as demo_mod
    from psylens.cli import app

    run = create_run(tmp_path / "run", command="psylens demo")
    run.write_json("probes/summary.json", {
        "best_layer": 16, "best_accuracy": 0.904, "best_accuracy_ci95": [0.88, 0.925], "chance": 0.1667,
        "shuffled_accuracy_at_best_layer": 0.158, "shuffled_accuracy_ci95_at_best_layer": [0.136, 0.183],
        "lexical_baseline": {"accuracy": 0.816, "ci95": [0.792, 0.841]}, "beats_lexical_at_best_layer": True,
    })
    run.write_json("steering/summary.json", {
        "mean_success": 0.2, "mean_success_ci95": [0.15, 0.25], "n_prompts": {"dev": 5, "test": 20},
        "mean_baselines": {"prompting": 0.1, "random": 0.19, "none": 0.1},
        "mean_baselines_ci95": {"prompting": [0.06, 0.14], "random": [0.14, 0.24], "none": [0.06, 0.14]},
        "mean_vs": {"prompting": {"diff": 0.1, "ci95": [0.04, 0.16], "beats": True},
                    "random": {"diff": 0.01, "ci95": [-0.05, 0.07], "beats": False},
                    "none": {"diff": 0.1, "ci95": [0.04, 0.16], "beats": True}},
        "targets": {"success": 0.8}, "judge_validation": {"accuracy": 0.433}, "judge": "nrc",
        "target": {"judge": "nrc", "fluency": "relative", "success_over_ceiling": 0.65, "min_success_over_ceiling": 0.6,
                   "margin": 0.1, "over_prompting": 0.2, "over_random": 0.12, "all_fluent": True, "met": True},
    })
    monkeypatch.setattr(demo_mod, "run_demo", lambda *a, **k: run)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "probes: best layer 16 accuracy 0.90 [0.88, 0.93] vs shuffled labels 0.16 [0.14, 0.18]" in out
    assert "words alone (lexical) 0.82 [0.79, 0.84]: beats the words alone" in out
    assert "steering: mean success 0.20 [0.15, 0.25] over 20 held-out prompts (nrc judge; its own ceiling 0.43)" in out
    assert ("target: NRC success ÷ ceiling 0.65 (needs ≥ 0.60), above prompting +0.20 and random +0.12 (needs ≥ "
            "0.10 each), every vector fluent (relative): yes → met") in out
    assert "vs random    0.19 [0.14, 0.24]: difference 0.01 [-0.05, 0.07] → does not beat it" in out
    assert "vs prompting 0.10 [0.06, 0.14]: difference 0.10 [0.04, 0.16] → beats it" in out


def test_validation_headline_shows_gates_passed_with_their_controls(tmp_path):
    from psylens.demo import DEMO_STEPS, demo_validation_config

    run = create_run(tmp_path / "run", command="psylens demo")
    assert headlines(run)["validation"] is None  # no validation step: no line
    assert not any(x.startswith("validation") for x in headline_lines(headlines(run)))
    gates = {
        "feels_matrix": {"value": 2.31, "threshold": 2.0, "control": 0.4, "passed": True, "gated": True, "unit": "nats"},
        "implicit_scenarios": {"value": 0.61, "threshold": 0.8, "control": 0.19, "passed": False, "gated": True},
        "geometry": {"value": None, "threshold": None, "control": None, "passed": False, "gated": False,
                     "skipped": "needs directions for all 24 concepts"},
        "preferences": {"value": 0.1, "threshold": 0.0, "control": 0.02, "passed": False, "gated": False},
    }
    run.write_json("validation/summary.json", {"source": "stories", "layer": 13, "gates": gates, "passed": 1, "total": 2,
                                               "quick": True, "steering": {"from": "sweep"}})
    v = headlines(run)["validation"]
    assert v["passed"] == 1 and v["total"] == 2 and v["quick"] is True and v["steering"] == "sweep"
    lines = [x for x in headline_lines(headlines(run)) if "validation" in x or x.startswith("  ")]
    assert lines[0] == ("validation (stories directions, quick: fewer stories, contexts and prompts; steering gates with "
                        "the sweep's picked vectors): 1/2 gates passed")
    assert "feels_matrix       2.31 nats vs control 0.40 (threshold 2.00) → passed" in lines[1]
    assert "implicit_scenarios 0.61 vs control 0.19 (threshold 0.80) → not passed" in lines[2]
    assert "geometry           skipped: needs directions" in lines[3]
    assert "→ reported, not gated" in lines[4]
    # the demo runs it after steering (its gates steer with the sweep's vectors) and before the comparison
    # (which reuses its directions), with the quick suite on story directions
    assert DEMO_STEPS[-2:] == ("validation", "compare") and DEMO_STEPS.index("steering") < DEMO_STEPS.index("validation")
    cfg = demo_validation_config()
    assert cfg.quick is True and cfg.source == "stories" and cfg.every_layer is False and cfg.n_contexts == 8


def test_compare_steering_line_shows_read_back_when_the_section_ran_it():
    from psylens.demo import _compare_lines

    h = {"base_gap": 0.64, "tuned_gap": 0.6, "control_gap_base": 0.8, "control_gap_tuned": 0.8,
         "own_shift_difference": -0.03, "own_shift_difference_ci95": [-0.09, 0.02]}
    rb = {"read_back_base": 0.44, "read_back_tuned": 0.58, "read_back_control_base": 0.4, "read_back_control_tuned": 0.5,
          "read_back_difference": 0.15, "read_back_difference_ci95": [0.04, 0.25]}
    with_rb = _compare_lines({"tuned": "t", "sections": {"steering": {"status": "done", "headline": {**h, **rb}}}})[1]
    assert "read-back base 0.44 vs tuned 0.58" in with_rb and "tuned − base 0.15 [0.04, 0.25]" in with_rb
    without = _compare_lines({"tuned": "t", "sections": {"steering": {"status": "done", "headline": h}}})[1]
    assert "feels gap base 0.64" in without and "read-back" not in without  # an older run without read-back
