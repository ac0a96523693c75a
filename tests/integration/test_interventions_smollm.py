"""psylens.interventions on the embedded model (SmolLM2-135M-Instruct): the known answers of the unit
tests hold on a real checkpoint, and the model is left exactly as it was."""

from __future__ import annotations

import pytest
import torch

from psylens.interventions import Intervention, intervene, record, site_module
from psylens.modules import decoder_layers

pytestmark = pytest.mark.integration

LAYER, HEAD = 10, 3


@pytest.fixture(scope="module")
def enc(smollm):
    prompts = [smollm.format_prompt("The kettle clicked off."), smollm.format_prompt("We found a seat")]
    smollm.tokenizer.padding_side = "left"
    try:
        return smollm.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        smollm.tokenizer.padding_side = "right"


def _logits(m, enc):
    with torch.no_grad():
        return m.hf_model(**enc).logits


def test_zero_head_equals_removing_its_slice(smollm, enc):
    before = _logits(smollm, enc)
    o_proj, _ = site_module(decoder_layers(smollm.hf_model)[LAYER], "head_out")
    d = smollm.d_head

    def manual(mod, args):
        x = args[0].clone()
        x[..., HEAD * d : (HEAD + 1) * d] = 0
        return (x,)

    h = o_proj.register_forward_pre_hook(manual)
    try:
        want = _logits(smollm, enc)
    finally:
        h.remove()
    with intervene(smollm, [Intervention(site="head_out", layer=LAYER, units=[HEAD], op="zero")]):
        got = _logits(smollm, enc)
    assert torch.equal(got, want)
    assert not torch.equal(got, before)
    assert torch.equal(_logits(smollm, enc), before)  # restored bit for bit


def test_add_shifts_exactly_and_patch_reproduces_the_source(smollm, enc):
    v = torch.randn(smollm.d_model)
    with record(smollm, ["resid_post"], [LAYER - 1, LAYER]) as base:
        _logits(smollm, enc)
    with intervene(smollm, [Intervention(site="resid_post", layer=LAYER, op="add", value=v)]):
        with record(smollm, ["resid_post"], [LAYER - 1, LAYER]) as rec:
            _logits(smollm, enc)
    assert torch.equal(rec["resid_post", LAYER - 1], base["resid_post", LAYER - 1])
    real = enc["attention_mask"].bool()
    assert torch.equal(rec["resid_post", LAYER][real], (base["resid_post", LAYER] + v)[real])
    assert torch.equal(rec["resid_post", LAYER][~real], base["resid_post", LAYER][~real])  # padding untouched
    # patch: A is B with one user token changed; patching all of B's positions into A gives B's logits
    b = smollm.tokenizer(smollm.format_prompt("We found a seat"), return_tensors="pt", add_special_tokens=False)["input_ids"]
    a = b.clone()
    a[0, -6] = smollm.tokenizer(" kettle", add_special_tokens=False)["input_ids"][0]
    with torch.no_grad(), record(smollm, ["resid_post"], [LAYER]) as rb:
        want = smollm.hf_model(input_ids=b).logits
    with torch.no_grad(), intervene(smollm, [Intervention(site="resid_post", layer=LAYER, op="patch", value=rb["resid_post", LAYER])]):
        got = smollm.hf_model(input_ids=a).logits
    assert torch.equal(got, want)
    with torch.no_grad():
        assert not torch.allclose(smollm.hf_model(input_ids=a).logits, want, atol=1e-3)  # control
