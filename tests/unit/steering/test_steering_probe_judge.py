"""ProbeJudge on a tiny random model: a planted word per emotion is read back; shuffled labels are not."""

from __future__ import annotations

import random

import pytest
import torch

from psylens.stimuli import EMOTIONS, LABELS, Stimuli, Stimulus
from psylens.steering.judges import dominant, judge_accuracy, make_judge
from psylens.steering.probe_judge import ProbeJudge

MARK = {"anger": "hammer", "disgust": "garlic", "fear": "ladder", "joy": "violin", "sadness": "window",
        "surprise": "pencil", "neutral": "table"}
FILL = ["the", "a", "my", "one", "our", "this", "that", "some", "her", "his", "their", "its"]


def planted(shuffle: bool = False, n_groups: int = 12) -> Stimuli:
    rows = []
    for g in range(n_groups):
        for label in LABELS:
            rows.append(Stimulus(text=f"{FILL[g]} {MARK[label]} {FILL[(g + 3) % 12]} {MARK[label]}", label=label,
                                 group=f"g{g}", id=f"g{g}-{label}"))
    if shuffle:
        labels = [r.label for r in rows]
        random.Random(0).shuffle(labels)
        rows = [Stimulus(text=r.text, label=lab, group=r.group, id=r.id) for r, lab in zip(rows, labels)]
    return Stimuli(rows, name="planted")


def test_probe_judge_reads_back_a_planted_word(tiny_model):
    model = tiny_model("llama")
    judge = ProbeJudge.fit(model, planted(), layer=1)
    assert judge.validation["cv_accuracy"] > 0.9 and judge.layer == 1
    texts = [f"then {MARK[e]} again {MARK[e]}" for e in EMOTIONS]
    d = dominant(judge.score(texts))
    assert [EMOTIONS[k] for k in d.tolist()] == list(EMOTIONS)
    scores = judge.score(["so table then table", "   ", ""])
    assert torch.equal(scores, torch.zeros(3, 6))  # neutral and blank texts: no emotion
    assert judge_accuracy(judge, texts, list(EMOTIONS))["accuracy"] == 1.0


def test_probe_judge_control_shuffled_labels(tiny_model):
    model = tiny_model("llama")
    judge = ProbeJudge.fit(model, planted(shuffle=True), layer=1)
    assert judge.validation["cv_accuracy"] < 0.4  # chance is 1/7
    texts = [f"then {MARK[e]} again {MARK[e]}" for e in EMOTIONS]
    assert judge_accuracy(judge, texts, list(EMOTIONS))["accuracy"] < 0.6


def test_probe_judge_errors(tiny_model):
    model = tiny_model("llama")
    judge = ProbeJudge.fit(model, planted(n_groups=4), layer=0)
    with pytest.raises(ValueError, match="layer 9 out of range"):
        ProbeJudge(model, judge.probe, 9)
    with pytest.raises(ValueError, match="needs a model"):
        make_judge("probe")
    no_joy = Stimuli([s for s in planted(n_groups=4) if s.label != "joy"], name="x")
    with pytest.raises(ValueError, match="lacks emotions \\['joy'\\]"):
        ProbeJudge.fit(model, no_joy, layer=0)


def test_sweep_cli_judge_model_needs_a_model_judge(tmp_path):
    from typer.testing import CliRunner

    from psylens.runs import create_run
    from psylens.steering.cli import steer_app

    run = create_run(tmp_path / "run", command="test")
    res = CliRunner().invoke(steer_app, ["sweep", "--run", str(run.path), "--judge-model", "smollm2-135m-instruct"])
    assert res.exit_code != 0 and "nrc judge uses no model" in res.output
