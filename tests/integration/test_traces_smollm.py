"""Traces → steps → step activations → labels on the embedded SmolLM2 (a few short traces)."""

from __future__ import annotations

import pytest
import torch

from psylens import tasks as T
from psylens.saes import label_steps, read_traces, segment, step_activations
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


def test_labels_on_generated_steps(traces):
    steps = [s.text for r in traces for s in segment(r["text"])]
    labels = label_steps(steps)
    assert len(labels) == len(steps)
