"""token_nll with a shared prompt cache equals one plain forward, and uses no deprecated transformers API."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from psylens.steering.metrics import token_nll


def _plain_nll(model, prompt: str, text: str) -> float:
    """Summed NLL of ``text`` after the formatted ``prompt``: one forward over both, no KV cache."""
    ids_p = model.tokenizer(model.format_prompt(prompt), add_special_tokens=False)["input_ids"]
    ids_t = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model.hf_model(input_ids=torch.tensor([ids_p + ids_t]), use_cache=False).logits
    logp = torch.log_softmax(logits[0].double(), dim=-1)
    return -sum(float(logp[len(ids_p) + j - 1, t]) for j, t in enumerate(ids_t))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_token_nll_matches_plain_forward_without_deprecations(tiny_model) -> None:
    model = tiny_model("llama")
    prompt = "Tell me about the weather."
    texts = ["It is sunny and warm today, with a light breeze from the west.", "Rain."]
    lengths = [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert lengths[0] > lengths[1] > 0  # one batch, right padding on the shorter text

    # transformers logs some deprecations once per process (Logger.warning_once): forget earlier ones
    clear = getattr(getattr(logging.Logger, "warning_once", None), "cache_clear", None)
    if clear is not None:
        clear()
    handler = _Records()
    tf_log = logging.getLogger("transformers")
    old_level = tf_log.level
    tf_log.setLevel(logging.WARNING)  # other libraries may have silenced transformers below ERROR
    tf_log.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nll, n = token_nll(model, [prompt, prompt], texts)
    finally:
        tf_log.removeHandler(handler)
        tf_log.setLevel(old_level)

    deprecations = [
        f"{w.category.__name__}: {w.message}" for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))
    ]
    assert not deprecations, deprecations
    assert not [m for m in handler.messages if "deprecat" in m.lower()], handler.messages

    assert n.tolist() == lengths
    for i, text in enumerate(texts):
        assert abs(float(nll[i]) - _plain_nll(model, prompt, text)) < 1e-4
    # the progress bar only reports: the numbers are the same
    again, _ = token_nll(model, [prompt, prompt], texts, progress=True, desc="test")
    assert torch.equal(again, nll)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_token_nll_batches_texts_with_their_own_prompts(tiny_model, arch) -> None:
    """One text per prompt (a trace set): left-padded whole sequences, batched — the same numbers as a
    plain forward over each prompt + text, whatever the batch size; mixed with a shared prompt too."""
    model = tiny_model(arch)
    prompts = ["Hi", "Tell me a long story about a dragon and a knight.", "Why?", "Tell me about the weather."]
    texts = ["Fine, thanks, and you?", "Once upon a time.", "Because the sky scatters blue light more than red.", "Sunny."]
    nll, n = token_nll(model, prompts, texts, batch_size=3)
    assert n.tolist() == [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    for i in range(len(texts)):
        assert abs(float(nll[i]) - _plain_nll(model, prompts[i], texts[i])) < 1e-3 * max(1.0, abs(float(nll[i])))
    one_at_a_time, _ = token_nll(model, prompts, texts, batch_size=1)
    torch.testing.assert_close(one_at_a_time, nll, atol=1e-3, rtol=1e-4)
    # a shared prompt beside single ones: each text keeps its own number
    mixed, _ = token_nll(model, prompts + [prompts[0]], texts + ["Not bad."], batch_size=2)
    torch.testing.assert_close(mixed[:4], nll, atol=1e-3, rtol=1e-4)
    assert abs(float(mixed[4]) - _plain_nll(model, prompts[0], "Not bad.")) < 1e-3 * max(1.0, abs(float(mixed[4])))
    # control: a text scored after another prompt is not the same number
    swapped, _ = token_nll(model, prompts[::-1], texts, batch_size=3)
    assert not torch.allclose(swapped, nll, atol=1e-3)
