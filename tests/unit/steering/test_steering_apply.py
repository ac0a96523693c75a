"""Known answers for steering hooks on tiny random models (d_model 32, 3 layers)."""

from __future__ import annotations

import pytest
import torch

from psylens.steering import SteeringVector, attach_rows

LAYER = 1


_PLAIN: dict[str, torch.nn.Module] = {}


def _plain(arch: str) -> torch.nn.Module:
    """A random-weight transformers model that no bridge has wrapped."""
    from conftest import build_tiny_hf  # tests/ is on sys.path under pytest's default import mode

    if arch not in _PLAIN:
        _PLAIN[arch] = build_tiny_hf(arch)
    return _PLAIN[arch]


def hook_count(*roots) -> int:
    """psylens steering hooks left on any module under ``roots`` (transformers installs its own lazily)."""
    return sum(
        getattr(h, "__module__", "").startswith(("psylens.steering", "psylens.interventions"))
        for r in roots for m in r.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
    )


def hidden(hf, ids, attn=None):
    with torch.no_grad():
        out = hf(input_ids=ids, attention_mask=attn, output_hidden_states=True)
    return [h.clone() for h in out.hidden_states], out.logits.clone()


@pytest.fixture
def ids():
    g = torch.Generator().manual_seed(1)
    return torch.randint(10, 1000, (2, 7), generator=g)


@pytest.fixture
def unit():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(32, generator=g)
    return v / v.norm()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3", "llama-bridged", "qwen2-bridged"])
def test_add_shifts_hooked_layer_by_alpha_v_only(tiny_model, arch, ids, unit):
    """Plain transformers models and bridge-wrapped ones (layers are BlockBridges) alike."""
    # a bridge runs twin modules (BlockBridge layers) over the model's weights: steer it and run it
    model = tiny_model(arch.split("-")[0]).bridge if arch.endswith("bridged") else _plain(arch)
    hf = getattr(model, "original_model", model)
    base, _ = hidden(hf, ids)
    sv = SteeringVector.from_tensor(unit, layers=[LAYER], alpha=3.0)
    with sv.apply(model):
        steered, _ = hidden(hf, ids)
    # hidden_states[l + 1] is the output of layer l
    for i in range(LAYER + 1):
        assert torch.equal(steered[i], base[i]), f"hidden state {i} (before the hooked layer) changed"
    assert torch.equal(steered[LAYER + 1], base[LAYER + 1] + 3.0 * unit)
    assert not torch.allclose(steered[-1], base[-1])


def test_ablate_leaves_zero_projection(tiny_model, ids, unit):
    model = tiny_model("llama")
    base, _ = hidden(model.hf_model, ids)
    assert base[LAYER + 1] @ unit is not None and (base[LAYER + 1] @ unit).abs().max() > 1e-2
    sv = SteeringVector.from_tensor(5.0 * unit, layers=[LAYER], mode="ablate")
    with sv.apply(model):
        steered, _ = hidden(model.hf_model, ids)
    h = steered[LAYER + 1]
    assert (h @ unit).abs().max() < 1e-5
    # only the component along the direction changed
    b = base[LAYER + 1]
    expected = b - (b @ unit).unsqueeze(-1) * unit
    torch.testing.assert_close(h, expected)


def test_clamp_leaves_the_set_value(tiny_model, ids, unit):
    model = tiny_model("qwen2")
    sv = SteeringVector.from_tensor(unit, layers=[LAYER], alpha=-2.5, mode="clamp")
    with sv.apply(model):
        steered, _ = hidden(model.hf_model, ids)
    torch.testing.assert_close(steered[LAYER + 1] @ unit, torch.full((2, 7), -2.5), atol=1e-5, rtol=0)


def test_resid_pre_steers_the_layer_input(tiny_model, ids, unit):
    model = tiny_model("llama")
    base, _ = hidden(model.hf_model, ids)
    sv_pre = SteeringVector.from_tensor(unit, layers=[LAYER + 1], alpha=2.0, site="resid_pre")
    sv_post = SteeringVector.from_tensor(unit, layers=[LAYER], alpha=2.0)
    with sv_pre.apply(model):
        pre, logits_pre = hidden(model.hf_model, ids)
    with sv_post.apply(model):
        post, logits_post = hidden(model.hf_model, ids)
    # resid_pre of l+1 is resid_post of l, so the logits agree (hidden_states record the layer outputs)
    assert torch.equal(logits_pre, logits_post)
    assert torch.equal(pre[LAYER + 1], base[LAYER + 1])


def test_removal_restores_bit_identical_outputs(tiny_model, ids, unit):
    model = tiny_model("llama")
    _, before = hidden(model.hf_model, ids)
    sv = SteeringVector.from_tensor(unit, layers=[0, 2], alpha=4.0)
    with sv.apply(model) as handle:
        _, during = hidden(model.hf_model, ids)
        assert handle.active
    assert not handle.active
    _, after = hidden(model.hf_model, ids)
    assert not torch.equal(during, before)
    assert torch.equal(after, before)
    handle.remove()  # idempotent


def test_removal_after_exception_inside_block(tiny_model, ids, unit):
    model = tiny_model("llama")
    _, before = hidden(model.hf_model, ids)
    sv = SteeringVector.from_tensor(unit, layers=[LAYER], alpha=4.0)
    with pytest.raises(RuntimeError, match="boom"):
        with sv.apply(model):
            hidden(model.hf_model, ids)
            assert hook_count(model.hf_model, model.bridge) > 0  # the check below can see our hooks
            raise RuntimeError("boom")
    _, after = hidden(model.hf_model, ids)
    assert torch.equal(after, before)
    assert hook_count(model.hf_model, model.bridge) == 0


def test_attach_handle(tiny_model, ids, unit):
    model = tiny_model("llama")
    _, before = hidden(model.hf_model, ids)
    handle = SteeringVector.from_tensor(unit, layers=[LAYER], alpha=4.0).attach(model)
    try:
        _, during = hidden(model.hf_model, ids)
    finally:
        handle.remove()
    assert not torch.equal(during, before)
    assert torch.equal(hidden(model.hf_model, ids)[1], before)
    assert "removed" in repr(handle)


def test_plain_transformers_model_matches_bridge_wrapped(tiny_model, ids, unit):
    plain = _plain("llama")
    wrapped = tiny_model("llama")
    assert type(plain.model.layers[0]).__name__ == "LlamaDecoderLayer"
    sv = SteeringVector.from_tensor(unit, layers=[LAYER], alpha=3.0)
    with sv.apply(plain):
        _, a = hidden(plain, ids)
    with sv.apply(wrapped.bridge):  # a TransformerBridge is accepted too
        b = wrapped.bridge(ids, return_type="logits")
    torch.testing.assert_close(a, b)
    with sv.apply(wrapped):  # a psylens Model: its hf_model and its booted bridge are both steered
        _, c = hidden(wrapped.hf_model, ids)
        d = wrapped.bridge(ids, return_type="logits")
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, d)


def test_left_padded_batch_equals_one_by_one(tiny_model, unit):
    model = tiny_model("llama")
    tok = model.tokenizer
    prompts = ["Hello there, how are you today my friend?", "Hi"]
    sv = SteeringVector.from_tensor(unit, layers=[LAYER], alpha=3.0)
    old = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(prompts, return_tensors="pt", padding=True)
        assert (enc["attention_mask"] == 0).any()
        base_pad, _ = hidden(model.hf_model, enc["input_ids"], enc["attention_mask"])
        with sv.apply(model):
            hs, _ = hidden(model.hf_model, enc["input_ids"], enc["attention_mask"])
            gen = model.hf_model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
            singles = []
            for p in prompts:
                e = tok([p], return_tensors="pt")
                singles.append(model.hf_model.generate(**e, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id))
    finally:
        tok.padding_side = old
    pad = enc["attention_mask"] == 0
    # padded positions untouched, real ones shifted by alpha * v
    assert torch.equal(hs[LAYER + 1][pad], base_pad[LAYER + 1][pad])
    torch.testing.assert_close(hs[LAYER + 1][~pad], base_pad[LAYER + 1][~pad] + 3.0 * unit)
    for row, single in enumerate(singles):
        assert gen[row, -4:].tolist() == single[0, -4:].tolist()


def test_generated_leaves_the_prompt_forward_untouched(tiny_model, unit):
    model = tiny_model("llama")
    hf = model.hf_model
    ids = torch.randint(10, 1000, (1, 6), generator=torch.Generator().manual_seed(3))
    seen: list[torch.Tensor] = []
    rec = model.layers()[LAYER + 1].register_forward_hook(lambda m, a, o: seen.append(o.clone()))
    try:
        base = hf.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
        n_base = len(seen)
        with SteeringVector.from_tensor(unit, layers=[LAYER], alpha=50.0, positions="generated").apply(model):
            steered = hf.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    finally:
        rec.remove()
    base_seen, steered_seen = seen[:n_base], seen[n_base:]
    assert base_seen[0].shape[1] == 6 and steered_seen[1].shape[1] == 1  # prompt forward, then one token a step
    assert torch.equal(steered_seen[0], base_seen[0])  # the prompt forward is untouched
    assert steered[0, 6] == base[0, 6]  # so the first new token is the unsteered one
    assert not torch.equal(steered_seen[1], base_seen[1])


@pytest.mark.parametrize("positions", ["generated", "prompt", "all"])
def test_kv_cache_generation_equals_manual_addition(tiny_model, unit, positions):
    """Known answer: steering with a KV cache equals adding alpha*v by hand on the chosen forwards."""
    model = tiny_model("llama")
    hf = model.hf_model
    ids = torch.randint(10, 1000, (1, 5), generator=torch.Generator().manual_seed(4))
    with SteeringVector.from_tensor(unit, layers=[LAYER], alpha=40.0, positions=positions).apply(model):
        steered = hf.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    calls = {"n": 0}

    def manual(m, a, o):
        calls["n"] += 1
        prompt_call = calls["n"] == 1
        hit = positions == "all" or (positions == "prompt") == prompt_call
        return o + 40.0 * unit if hit else o

    h = model.layers()[LAYER].register_forward_hook(manual)
    try:
        expected = hf.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
        unsteered_calls = calls["n"]
    finally:
        h.remove()
    assert unsteered_calls == 4  # one prompt forward + three cached steps
    assert torch.equal(steered, expected)


def test_bad_inputs_are_clear_errors(tiny_model, unit):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="d_model 16 .* hidden size 32"):
        SteeringVector.from_tensor(torch.ones(16), layers=[0]).attach(model)
    with pytest.raises(ValueError, match=r"layer 7 out of range: the model has 3 layers \(0–2\)"):
        SteeringVector.from_tensor(unit, layers=[7]).attach(model)
    # nothing left behind by a failed attach
    assert hook_count(model.hf_model, model.bridge) == 0


def test_attach_rows_steers_each_row_with_its_vector(tiny_model, ids, unit):
    model = tiny_model("llama")
    base, _ = hidden(model.hf_model, ids)
    deltas = torch.stack([3.0 * unit, torch.zeros(32)])
    with torch.no_grad():
        handle = attach_rows(model, {LAYER: deltas})
        try:
            steered, _ = hidden(model.hf_model, ids)
        finally:
            handle.remove()
    assert torch.equal(steered[LAYER + 1][0], base[LAYER + 1][0] + 3.0 * unit)
    assert torch.equal(steered[-1][1], base[-1][1])  # zero row: exactly unsteered


def test_peft_model_respects_padding(smollm_tokenizer, unit):
    """A PEFT-wrapped model: positions still come from the attention mask."""
    peft = pytest.importorskip("peft")
    from conftest import build_tiny_hf

    model = peft.get_peft_model(build_tiny_hf("llama"), peft.LoraConfig(r=2, target_modules=["q_proj"], lora_dropout=0.0))
    tok = smollm_tokenizer
    old = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(["Hello there, how are you today?", "Hi"], return_tensors="pt", padding=True)
    finally:
        tok.padding_side = old
    pad = enc["attention_mask"] == 0
    base, _ = hidden(model, enc["input_ids"], enc["attention_mask"])
    with SteeringVector.from_tensor(unit, layers=[LAYER], alpha=3.0).apply(model):
        steered, _ = hidden(model, enc["input_ids"], enc["attention_mask"])
    assert torch.equal(steered[LAYER + 1][pad], base[LAYER + 1][pad])
    torch.testing.assert_close(steered[LAYER + 1][~pad], base[LAYER + 1][~pad] + 3.0 * unit)


@pytest.mark.parametrize("positions", ["all", "generated"])
def test_bridge_generate_equals_transformers_generate(tiny_model, unit, positions):
    """The TransformerBridge's own KV-cache generate loop is steered exactly like transformers' generate."""
    model = tiny_model("llama")
    ids = torch.randint(10, 1000, (1, 5), generator=torch.Generator().manual_seed(4))
    sv = SteeringVector.from_tensor(unit, layers=[LAYER], alpha=40.0, positions=positions)
    kw = dict(max_new_tokens=4, stop_at_eos=False, do_sample=False, use_past_kv_cache=True, verbose=False, return_type="tokens")
    base = model.bridge.generate(ids, **kw)
    with sv.apply(model.bridge):
        via_bridge = model.bridge.generate(ids, **kw)
    with sv.apply(model):
        via_hf = model.hf_model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(via_bridge, via_hf)
    assert not torch.equal(via_bridge, base)
