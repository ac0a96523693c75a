"""Traces → steps → step activations → labels on the embedded SmolLM2 (a few short traces)."""

from __future__ import annotations

import re

import pytest
import torch

from psylens import tasks as T
from psylens.saes import LABELS, label_step, label_steps, read_traces, segment, step_activations
from psylens.saes.steps import _encode, trace_steps
from psylens.saes.traces import generate_traces

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYER = 6


@pytest.fixture(scope="module")
def traces(smollm, tmp_path_factory):
    out = tmp_path_factory.mktemp("traces") / "run"
    items = T.load("psych", split="train")[:1]
    summary = generate_traces(smollm, items, out, samples=2, max_new_tokens=48, temperature=0.7, seed=0,
                              batch_size=2, progress=False)
    assert summary["n"] == 2 and summary["tokens_per_second"] > 0
    return read_traces(out)


def test_traces_are_sampled_reasoning_in_context(traces):
    a, b = traces
    assert a["task_id"] == b["task_id"] and a["seed"] != b["seed"]
    assert a["text"] != b["text"]  # two samples, two traces
    assert all(len(r["text"].split()) >= 10 for r in traces)  # real text, not empty
    assert all(segment(r["text"]) for r in traces)


def test_step_vectors_are_the_hidden_states_at_the_step_ends(smollm, traces):
    acts, index = step_activations(smollm, traces, layer=LAYER, pooling="delimiter", progress=False)
    mean, _ = step_activations(smollm, traces, layer=LAYER, pooling="mean", progress=False)
    assert acts.shape == (len(index), smollm.d_model) and mean.shape == acts.shape
    for t, trace in enumerate(traces):
        ids, ranges = _encode(smollm, trace_steps(trace), "auto")
        with torch.no_grad():
            hidden = smollm.hf_model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[LAYER + 1][0]
        rows, mrows = acts[index[:, 0] == t], mean[index[:, 0] == t]
        assert len(rows) == len(ranges) == len(segment(trace["text"]))
        for s, (first, last) in enumerate(ranges):
            torch.testing.assert_close(rows[s], hidden[last], atol=1e-3, rtol=1e-3)
            torch.testing.assert_close(mrows[s], hidden[first : last + 1].mean(0), atol=1e-3, rtol=1e-3)
            assert (rows[s] - hidden[last - 1]).norm() > 0.05 * hidden[last].norm()  # off by one differs


# steps the rules must label (saes/labels.py: an emotion word with "feels"; "let me check … again"; "wait";
# "Answer: X"), and one with no cue at all that they must leave unlabelled (the control)
PLANTED = {
    "She feels sad because her dog died.": "emotion_attribution",
    "Let me check that again.": "reflection",
    "Wait, that is wrong.": "backtracking",
    "Answer: B": "conclusion",
    "The ball is in the box.": None,
}


def test_labels_on_generated_steps(traces):
    """Labels of real generated steps are documented names (in LABELS order, no repeats); steps planted after
    a real trace keep their own labels and leave the real steps' labels as they were; a story sentence of the
    trace's own prompt is a restatement only when the prompt is given as context."""
    for r in traces:
        steps = [s.text for s in segment(r["text"])]
        labels = label_steps(steps, context=r["prompt"])
        assert len(labels) == len(steps) > 0
        for step, labs in zip(steps, labels):
            assert labs == [lab for lab in LABELS if lab in labs], (step, labs)
            if re.search(r"\bAnswer:\s*\(?[A-D]\b", step):  # the traces' own answer line
                assert "conclusion" in labs, (step, labs)
        # planted steps after the real ones, each in its own paragraph (a blank line always ends a step)
        text = r["text"] + "".join(f"\n\n{p}" for p in PLANTED)
        steps2 = [s.text for s in segment(text)]
        labels2 = label_steps(steps2, context=r["prompt"])
        assert steps2[: len(steps)] == steps and labels2[: len(steps)] == labels
        assert steps2[len(steps):] == list(PLANTED)
        for step, labs in zip(PLANTED, labels2[len(steps):]):
            want = PLANTED[step]
            assert (want in labs) if want else labs == [], (step, labs)
        story = segment(r["prompt"])[0].text  # the task's first sentence, copied into the reasoning
        assert "restatement" in label_step(story, r["prompt"]) and "restatement" not in label_step(story)
