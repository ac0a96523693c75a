"""The nnsight helper steers exactly like the torch-hook path (tiny random Llama, left-padded batch)."""

from __future__ import annotations

import pytest
import torch

from psylens.steering import SteeringVector

pytest.importorskip("nnsight")

PROMPTS = ["Tell me about the weather where you live today.", "Hi"]


@pytest.fixture(scope="module")
def plain(smollm_tokenizer):
    from conftest import build_tiny_hf

    return build_tiny_hf("llama"), smollm_tokenizer


def hook_generate(hf, tok, sv, n):
    old = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(PROMPTS, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = old
    kw = dict(max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
    if sv is None:
        return hf.generate(**enc, **kw)
    with sv.apply(hf):
        return hf.generate(**enc, **kw)


@pytest.mark.parametrize("positions", ["all", "generated"])
def test_nnsight_generate_equals_hook_path(plain, positions):
    from psylens.steering.nnsight_apply import nnsight_generate, wrap

    hf, tok = plain
    g = torch.Generator().manual_seed(5)
    v = torch.randn(32, generator=g)
    sv = SteeringVector.from_tensor(v / v.norm(), layers=[1], alpha=30.0, positions=positions)
    lm = wrap(hf, tokenizer=tok)
    n = 5
    via_hooks = hook_generate(hf, tok, sv, n)
    via_nnsight = nnsight_generate(lm, sv, PROMPTS, max_new_tokens=n, format=None)
    unsteered = hook_generate(hf, tok, None, n)
    assert via_nnsight.shape == via_hooks.shape
    assert torch.equal(via_nnsight, via_hooks)
    assert not torch.equal(via_hooks, unsteered)
    # the plain model is left without our hooks
    assert not [h for m in hf.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
                if getattr(h, "__module__", "").startswith(("psylens.steering", "psylens.interventions"))]
