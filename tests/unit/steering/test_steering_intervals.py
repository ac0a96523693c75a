"""Sweep summaries carry intervals, and "beats X" comes only from the paired interval over the same prompts.

Known answer: generations are planted per condition (the sweep's ``_generate`` is replaced) and a stand-in
judge reads a marker word, so every success rate is known exactly. A planted large effect beats random;
1 steered success in 8 prompts against 0 (what the steering page used to tick) does not.
"""

from __future__ import annotations

import pytest
import torch

from psylens.runs import create_run
from psylens.steering import sweep as sweep_mod
from psylens.steering.judges import EMOTIONS
from psylens.steering.sweep import SweepConfig, run_sweep

PROMPTS = [f"Tell me about item number {i}." for i in range(24)]


class MarkerJudge:
    """Calls a text ``emotion`` when it contains ``MARK_<emotion>``; otherwise no emotion."""

    name = "marker"

    def score(self, texts):
        out = torch.zeros(len(texts), len(EMOTIONS))
        for i, t in enumerate(texts):
            for k, e in enumerate(EMOTIONS):
                if f"MARK_{e}" in t:
                    out[i, k] = 1.0
        return out


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


def _planted(hits: dict[str, int]):
    """A `_generate` stand-in: test steer rows of emotion e carry its marker on the first hits[e] test prompts."""

    def fake_generate(model, rows, cfg, seed, progress, desc, *, do_sample=False):
        test_order: dict[str, list[int]] = {}
        for r in rows:
            r.text = "a plain reply about the weather"
            if r.split == "test" and r.condition == "steer":
                seen = test_order.setdefault(r.emotion, [])
                if len(seen) < hits.get(r.emotion, 0):
                    r.text = f"MARK_{r.emotion} reply"
                seen.append(r.prompt_index)

    return fake_generate


@pytest.fixture
def planted_sweep(tiny_model, tmp_path, monkeypatch):
    model = tiny_model("llama")

    def go(hits: dict[str, int], n_test: int, **changes) -> dict:
        monkeypatch.setattr(sweep_mod, "_generate", _planted(hits))
        cfg = SweepConfig(emotions=tuple(hits), layers=(1,), scales=(0.5,), n_dev=1, n_test=n_test, max_new_tokens=2,
                          **changes)
        run = create_run(tmp_path / f"run{len(list(tmp_path.iterdir()))}", command="test", model=model.describe())
        return run_sweep(model, run, directions=StandInDirections(), prompts=PROMPTS[: 1 + n_test], config=cfg,
                         judge=MarkerJudge(), progress=False)

    return go


def test_one_in_eight_against_zero_is_not_a_beat_but_a_planted_effect_is(planted_sweep):
    s = planted_sweep({"anger": 1, "joy": 7}, n_test=8)
    anger, joy = s["emotions"]["anger"], s["emotions"]["joy"]
    assert anger["success"] == pytest.approx(1 / 8) and anger["baselines"]["random"] == 0.0
    # the old verdict (success > random) would tick this; the paired interval includes zero
    assert anger["beats_random"] is False and anger["vs"]["random"]["ci95"][0] <= 0.0
    assert anger["vs"]["random"]["diff"] == pytest.approx(1 / 8) and anger["vs"]["random"]["n"] == 8
    # planted: 7 of 8 against 0 of 8 on the same prompts
    assert joy["success"] == pytest.approx(7 / 8)
    assert joy["beats_random"] is True and joy["beats_prompting"] is True and joy["beats_none"] is True
    assert joy["vs"]["random"]["ci95"][0] > 0
    # every rate has an interval containing it; a 0 of 8 rate is not certain (Wilson, not a zero-width bootstrap)
    for e in ("anger", "joy"):
        v = s["emotions"][e]
        lo, hi = v["ci95"]
        assert lo <= v["success"] <= hi
        for c in ("prompting", "random", "none"):
            blo, bhi = v["baselines_ci95"][c]
            assert blo <= v["baselines"][c] <= bhi
    assert anger["baselines_ci95"]["random"][1] > 0.2
    # the mean over emotions: interval over prompts and paired verdicts
    assert s["mean_success"] == pytest.approx(0.5)
    lo, hi = s["mean_success_ci95"]
    assert lo <= 0.5 <= hi and hi - lo > 0
    assert s["mean_vs"]["random"]["beats"] is True
    assert set(s["mean_baselines_ci95"]) == {"prompting", "random", "none"}
    assert s["intervals"]["over"] == "test prompts" and s["intervals"]["n_boot"] == 2000
    # the judge's ceiling is a plain rate: Wilson interval
    jv = s["judge_validation"]
    assert jv["ci95"][0] <= jv["accuracy"] <= jv["ci95"][1]
    # dev cells carry intervals too
    assert "dev_success_ci95" in joy


def test_meets_target_needs_the_paired_interval(planted_sweep):
    loose = dict(target_success=0.1, max_perplexity_ratio=1e9, fluency="absolute")  # the old cap, switched off
    # 1 of 8 clears a 0.1 target and is above random's 0 of 8, but the paired interval includes zero
    s = planted_sweep({"joy": 1}, n_test=8, **loose)
    assert s["mean_success"] >= 0.1 and s["emotions"]["joy"]["meets_fluency"]
    assert s["emotions"]["joy"]["beats_random"] is False and s["meets_target"] is False
    # control: 8 of 8 meets it
    s = planted_sweep({"joy": 8}, n_test=8, **loose)
    assert s["meets_target"] is True


def test_the_quick_sweep_has_enough_test_prompts_for_an_interval():
    from psylens import stimuli
    from psylens.steering.expression import EXTRACTION_PROMPTS

    cfg = SweepConfig.quick()
    prompts = stimuli.load("steering_prompts").texts
    assert cfg.n_test >= 20 and cfg.n_dev + cfg.n_test <= len(prompts)  # every test prompt is a distinct prompt
    assert not set(prompts) & set(EXTRACTION_PROMPTS)
    assert SweepConfig.quick(n_test=8).n_test == 8  # still overridable
