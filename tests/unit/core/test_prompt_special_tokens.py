"""A raw prompt (a base model: no chat template) must reach the model with the tokenizer's special tokens — Gemma-3
without its ``<bos>`` degenerates into " of of of …". Every path that tokenizes a formatted prompt asks
``Model.prompt_special_tokens``; a tokenizer that prepends a BOS makes the check able to fail."""

from __future__ import annotations

import copy

import pytest
import torch
from tokenizers.processors import TemplateProcessing

from psylens.models import Model

BOS = 0  # "<|endoftext|>" in the SmolLM2 vocabulary


@pytest.fixture(scope="module")
def raw_bos_model(smollm_tokenizer, tiny_model):
    """The tiny Llama with a tokenizer that prepends BOS by default and has no chat template (format "raw")."""
    tok = copy.deepcopy(smollm_tokenizer)
    tok.chat_template = None
    name = tok.convert_ids_to_tokens(BOS)
    tok._tokenizer.post_processor = TemplateProcessing(single=f"{name} $A", pair=f"{name} $A $B",
                                                       special_tokens=[(name, BOS)])
    assert tok("hello")["input_ids"][0] == BOS and tok("hello", add_special_tokens=False)["input_ids"][0] != BOS
    return Model(tiny_model("llama").hf_model, tok, spec="tiny-raw-bos")


def _first_ids(model, fn):
    """Run ``fn()``; the first real (non-pad) token of every row of every forward that starts a sequence."""
    seen: list[int] = []

    def pre(mod, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None or (mask is not None and mask.shape[1] != ids.shape[1]):
            return  # a cached generation step, not the start of a sequence
        for r in range(ids.shape[0]):
            real = ids[r][mask[r].bool()] if mask is not None else ids[r]
            seen.append(int(real[0]))

    h = model.hf_model.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        fn()
    finally:
        h.remove()
    return seen


def test_raw_prompts_carry_bos_on_every_generation_path(raw_bos_model, tiny_model):
    from psylens.circuits.modulation import _generate
    from psylens.steering.sweep import generate_rows, residual_norms
    from psylens.validation.gates import _generate_ids, _reread

    m = raw_bos_model
    assert m.prompt_special_tokens() and m.resolve_format() == "raw"
    fmt = [m.format_prompt(p) for p in ("Tell me about your day.", "Describe a tree.")]
    d = int(m.d_model)
    paths = {
        "Model.generate": lambda: m.generate(["Tell me about your day.", "Describe a tree."], max_new_tokens=2),
        "sweep.generate_rows": lambda: generate_rows(m, fmt, {1: torch.zeros(2, d)}, max_new_tokens=2),
        "sweep.residual_norms": lambda: residual_norms(m, fmt, [1]),
        "gates._generate_ids": lambda: _generate_ids(m, fmt, [None, None], 1, 2, 2),
        "gates._reread": lambda: _reread(m, fmt, [[5, 6], [7]], 1, 2),
        "modulation._generate": lambda: _generate(m, fmt, [], 2, 2),
    }
    for name, fn in paths.items():
        firsts = _first_ids(m, fn)
        assert firsts and all(f == BOS for f in firsts), (name, firsts)
    # control: a chat-format model's template writes its own special tokens — nothing is added to it
    chat = tiny_model("llama")
    assert not chat.prompt_special_tokens() and chat.prompt_special_tokens("raw")
    cf = [chat.format_prompt("Tell me about your day.")]
    firsts = _first_ids(chat, lambda: generate_rows(chat, cf, {1: torch.zeros(1, d)}, max_new_tokens=1))
    assert firsts == [chat.tokenizer(cf[0], add_special_tokens=False)["input_ids"][0]]
