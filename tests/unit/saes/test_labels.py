"""Behaviour labeller: cue rules on planted steps, accuracy on the hand-labelled sample with controls, the judge hook."""

from __future__ import annotations

import random

import pytest

from psylens.saes import LABELS, label_step, label_steps, labeller_accuracy
from psylens.saes.labels import load_gold, make_llm_judge


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She feels embarrassed about the mistake.", {"emotion_attribution"}),
        ("Tom is probably very nervous before the exam.", {"emotion_attribution"}),
        ("Sally doesn't know the marble was moved.", {"perspective_taking"}),
        ("From Anne's point of view, the box is empty.", {"perspective_taking"}),
        ("Let me double-check the story.", {"reflection"}),
        ("Does that make sense here?", {"reflection"}),
        ("Wait, I made a mistake earlier.", {"backtracking"}),
        ("Hold on, that is wrong.", {"backtracking"}),
        ("Answer: C", {"conclusion"}),
        ("Therefore the best answer is B.", {"conclusion"}),
        ("The question asks where Max will look.", {"restatement"}),
        ("The options are happy, sad, bored and proud.", {"restatement"}),
        ("B. scared - this means someone is afraid.", {"restatement"}),
        ("The bus arrived at noon.", set()),
    ],
)
def test_cue_rules(text, expected):
    assert set(label_step(text)) == expected


def test_controls_that_must_not_fire():
    # the reasoner's own "I think"/"we know" is not perspective-taking
    assert "perspective_taking" not in label_step("I think the story is short.")
    assert "perspective_taking" not in label_step("We know the bus was late.")
    # an emotion word in a list of choices is not an attribution
    assert "emotion_attribution" not in label_step("The options are happy, sad, bored and proud.")
    # "actually" inside a statement is not a correction
    assert "backtracking" not in label_step("He is actually annoyed.")
    # a question quoted from the task is not a self-question
    assert "reflection" not in label_step('The question is "How does Sam feel?"')


def test_multi_label_and_order():
    got = label_step("Wait, Sally never saw it move, so she still thinks it is in the basket. Answer: A")
    assert got == ["perspective_taking", "backtracking", "conclusion"]
    assert all(g in LABELS for g in got)


def test_restatement_by_overlap_needs_the_context():
    story = "Luca searched for his passport for three days and finally found it inside an old cookbook."
    step = "Luca finally found his passport inside the old cookbook."
    assert "restatement" in label_step(step, context=story)
    assert "restatement" not in label_step(step)  # no context, no overlap rule
    assert "restatement" not in label_step(step, context="Mia baked a cake for her brother's birthday party.")
    assert "restatement" not in label_step("He is relieved.", context=story)  # too few content words


def test_gold_sample_is_big_enough_and_valid():
    gold = load_gold()
    assert len(gold) >= 120
    for lab in LABELS:
        assert sum(lab in r["labels"] for r in gold) >= 10, lab


def test_accuracy_on_gold_beats_shuffled_labels():
    gold = load_gold()
    res = labeller_accuracy(gold)
    assert res["n"] == len(gold)
    assert res["micro"]["f1"] >= 0.7  # measured 0.78 (docs/saes.md)
    lo, hi = res["exact_match_ci"]
    assert lo <= res["exact_match"] <= hi
    # control: the same labeller against labels shuffled among the steps
    rng = random.Random(0)
    labels = [r["labels"] for r in gold]
    rng.shuffle(labels)
    shuffled = [{**r, "labels": lab} for r, lab in zip(gold, labels)]
    ctrl = labeller_accuracy(shuffled)
    assert ctrl["micro"]["f1"] < res["micro"]["f1"] - 0.3


def test_accuracy_known_answers():
    gold = [{"text": "a", "labels": ["conclusion"]}, {"text": "b", "labels": []},
            {"text": "c", "labels": ["reflection", "conclusion"]}]
    oracle = {r["text"]: r["labels"] for r in gold}
    perfect = labeller_accuracy(gold, lambda t: oracle[t])
    assert perfect["exact_match"] == 1.0 and perfect["micro"]["precision"] == 1.0 and perfect["micro"]["recall"] == 1.0
    assert perfect["per_label"]["conclusion"]["support"] == 2
    nothing = labeller_accuracy(gold, lambda t: [])
    assert nothing["micro"]["recall"] == 0.0 and nothing["micro"]["precision"] is None
    assert nothing["exact_match"] == pytest.approx(1 / 3)
    always = labeller_accuracy(gold, lambda t: ["conclusion"])
    assert always["per_label"]["conclusion"]["precision"] == pytest.approx(2 / 3)
    assert always["per_label"]["conclusion"]["recall"] == 1.0


def test_judge_hook_and_llm_judge_parsing():
    calls = []

    def judge(step, context):
        calls.append((step, context))
        return ["conclusion"] if "answer" in step else []

    assert label_steps(["the answer is B", "hm"], "ctx", judge=judge) == [["conclusion"], []]
    assert calls[0] == ("the answer is B", "ctx")
    with pytest.raises(ValueError, match="unknown labels"):
        label_steps(["x"], judge=lambda s, c: ["happiness"])
    with pytest.raises(ValueError, match="list of steps"):
        label_steps("one step")  # type: ignore[arg-type]

    class Stub:
        def __init__(self, reply):
            self.reply, self.prompts = reply, []

        def generate(self, prompt, **kw):
            self.prompts.append(prompt)
            return [self.reply]

    stub = Stub("Emotion_attribution, backtracking")
    got = make_llm_judge(stub)("Wait, she is sad.", "story")
    assert got == ["emotion_attribution", "backtracking"]
    assert "Step: Wait, she is sad." in stub.prompts[0] and "Story: story" in stub.prompts[0]
    assert make_llm_judge(Stub("none"))("x") == []
