"""step_activations on a tiny random model: known answers from a direct forward, with off-by-one controls."""

from __future__ import annotations

import pytest
import torch

from psylens.saes import segment, step_activations
from psylens.saes.steps import _encode, trace_steps
from psylens.saes.traces import format_trace_prompt

PROMPT = "Mia lost her keys.\n\nQuestion: How does Mia feel?\nA. happy\nB. upset\nC. bored\nD. proud"
TRACES = [
    {"prompt": PROMPT, "text": "\n\nMia wanted her keys. She cannot find them, so she feels upset.\n\nAnswer: B"},
    {"prompt": "Tom won the race.\n\nQuestion: How does Tom feel?",
     "text": "Tom trained hard. Winning makes him proud. Wait, maybe he is tired? No, he is happy.\n\nAnswer: A"},
    {"prompt": "Short one.", "steps": ["Ana smiled at the gift.", "So she is pleased."]},
]
LAYER = 1


def _direct_hidden(model, trace) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    ids, ranges = _encode(model, trace_steps(trace), "auto")
    with torch.no_grad():
        hs = model.hf_model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    return hs[LAYER + 1][0], ranges  # resid_post of layer L is hidden_states[L + 1]


def test_delimiter_equals_direct_forward_at_the_step_end(tiny_model):
    model = tiny_model("llama")
    acts, index = step_activations(model, TRACES, layer=LAYER, pooling="delimiter", batch_size=2, progress=False)
    assert acts.shape[1] == model.d_model
    n_steps = [len(trace_steps(t).spans) for t in TRACES]
    assert acts.shape[0] == sum(n_steps) == index.shape[0]
    assert index.tolist() == [[t, s] for t, n in enumerate(n_steps) for s in range(n)]
    for t, trace in enumerate(TRACES):
        hidden, ranges = _direct_hidden(model, trace)
        rows = acts[index[:, 0] == t]
        for s, (first, last) in enumerate(ranges):
            torch.testing.assert_close(rows[s], hidden[last], atol=1e-5, rtol=1e-4)
            # control: one token earlier is a different vector
            assert not torch.allclose(rows[s], hidden[last - 1], atol=1e-3)


def test_the_last_token_is_the_end_of_the_step_text(tiny_model):
    model = tiny_model("llama")
    tok = model.tokenizer
    trace = TRACES[1]
    ts = trace_steps(trace)
    ids, ranges = _encode(model, ts, "auto")
    for (first, last), step in zip(ranges, ts.steps):
        decoded = tok.decode(ids[first : last + 1])
        assert decoded.strip() == step.strip()
        assert not tok.decode(ids[first : last]).strip() == step.strip()  # one token short is not the step
    # the formatted prompt is exactly what psylens traces continues
    head = format_trace_prompt(model, trace["prompt"])
    assert tok.decode(ids[: ranges[0][0]]).startswith(head[:20])
    assert head.endswith("Let's think step by step.")


def test_mean_pooling_equals_the_manual_mean(tiny_model):
    model = tiny_model("llama")
    acts, index = step_activations(model, TRACES[:2], layer=LAYER, pooling="mean", progress=False)
    delim, _ = step_activations(model, TRACES[:2], layer=LAYER, pooling="delimiter", progress=False)
    for t, trace in enumerate(TRACES[:2]):
        hidden, ranges = _direct_hidden(model, trace)
        rows = acts[index[:, 0] == t]
        for s, (first, last) in enumerate(ranges):
            torch.testing.assert_close(rows[s], hidden[first : last + 1].mean(0), atol=1e-5, rtol=1e-4)
            if last > first:  # control: dropping the first token changes the mean
                assert not torch.allclose(rows[s], hidden[first + 1 : last + 1].mean(0), atol=1e-4)
    assert not torch.allclose(acts, delim)


def test_batching_and_padding_do_not_change_the_vectors(tiny_model):
    model = tiny_model("llama")
    one, _ = step_activations(model, TRACES, layer=LAYER, batch_size=1, progress=False)
    three, _ = step_activations(model, TRACES, layer=LAYER, batch_size=3, progress=False)
    torch.testing.assert_close(one, three, atol=1e-5, rtol=1e-4)


def test_paragraph_mode_and_other_sites(tiny_model):
    model = tiny_model("llama")
    acts, index = step_activations(model, TRACES[:1], layer=0, mode="paragraph", progress=False)
    assert acts.shape[0] == len(segment(TRACES[0]["text"], "paragraph")) == 2
    mid, _ = step_activations(model, TRACES[:1], layer=0, site="mlp_out", mode="paragraph", progress=False)
    assert mid.shape == acts.shape and not torch.allclose(mid, acts)


def test_bad_arguments_say_what_to_do(tiny_model):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="out of range"):
        step_activations(model, TRACES, layer=model.n_layers, progress=False)
    with pytest.raises(ValueError, match="pooling"):
        step_activations(model, TRACES, layer=0, pooling="max", progress=False)
    with pytest.raises(ValueError, match="prompt"):
        step_activations(model, [{"text": "x"}], layer=0, progress=False)
    with pytest.raises(ValueError, match="unknown site|site"):
        step_activations(model, TRACES, layer=0, site="resid_middle", progress=False)
