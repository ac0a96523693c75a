"""Known answers for psylens.interventions on tiny random models (Llama, Qwen2, Gemma3)."""

from __future__ import annotations

import pytest
import torch

from psylens.interventions import Intervention, intervene, record, site_module
from psylens.modules import decoder_layers
from psylens.sites import SITES

ARCHS = ["llama", "qwen2", "gemma3"]
LAYER = 1


@pytest.fixture
def ids():
    torch.manual_seed(1)
    return torch.randint(0, 1000, (2, 9))


def _logits(hf, ids, **kw):
    with torch.no_grad():
        return hf(input_ids=ids, **kw).logits


def _hook_counts(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_head_equals_removing_its_slice_of_the_o_proj_input(tiny_model, ids, arch):
    m = tiny_model(arch)
    hf, h, dh = m.hf_model, 2, m.d_head
    o_proj, _ = site_module(decoder_layers(hf)[LAYER], "head_out")

    def manual(mod, args):
        x = args[0].clone()
        x[..., h * dh : (h + 1) * dh] = 0
        return (x,)

    handle = o_proj.register_forward_pre_hook(manual)
    try:
        want = _logits(hf, ids)
    finally:
        handle.remove()
    with intervene(m, [Intervention(site="head_out", layer=LAYER, units=[h], op="zero")]):
        got = _logits(hf, ids)
    assert torch.equal(got, want)
    # control: another head gives another answer, and so does the plain model
    with intervene(m, [Intervention(site="head_out", layer=LAYER, units=[0], op="zero")]):
        other = _logits(hf, ids)
    assert not torch.allclose(other, want, atol=1e-6)
    assert not torch.allclose(_logits(hf, ids), want, atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("site", ["resid_pre", "resid_post", "resid_mid"])
def test_patching_every_position_reproduces_the_source_downstream(tiny_model, arch, site):
    m = tiny_model(arch)
    hf = m.hf_model
    torch.manual_seed(3)
    a, b = torch.randint(0, 1000, (1, 8)), torch.randint(0, 1000, (1, 8))
    with record(m, [site, "resid_post"], [LAYER, 2]) as rec_b:
        want = _logits(hf, b)
    with intervene(m, [Intervention(site=site, layer=LAYER, op="patch", value=rec_b[site, LAYER])]):
        with record(m, ["resid_post"], [2]) as rec_p:
            got = _logits(hf, a)
    atol = 0 if site != "resid_mid" else 1e-5  # resid_mid edits go through the attention contribution
    torch.testing.assert_close(rec_p["resid_post", 2], rec_b["resid_post", 2], atol=atol, rtol=0)
    torch.testing.assert_close(got, want, atol=atol * 10, rtol=0)
    # control: without the patch, A's activations differ from B's
    assert not torch.allclose(_logits(hf, a), want, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_add_shifts_exactly_by_the_value_and_nothing_else(tiny_model, ids, arch):
    m = tiny_model(arch)
    v = torch.randn(m.d_model)
    with record(m, ["resid_post"], [0, LAYER]) as base:
        _logits(m.hf_model, ids)
    with intervene(m, [Intervention(site="resid_post", layer=LAYER, op="add", value=v)]):
        with record(m, ["resid_post"], [0, LAYER]) as rec:
            _logits(m.hf_model, ids)
    assert torch.equal(rec["resid_post", 0], base["resid_post", 0])  # upstream untouched
    assert torch.equal(rec["resid_post", LAYER], base["resid_post", LAYER] + v)


@pytest.mark.parametrize("arch", ARCHS)
def test_unit_ops_touch_only_their_units(tiny_model, ids, arch):
    m = tiny_model(arch)
    with record(m, ["head_out", "mlp_post"], [LAYER]) as base:
        _logits(m.hf_model, ids)
    val = torch.randn(1, m.d_head)
    head = [Intervention(site="head_out", layer=LAYER, units=[1], op="add", value=val)]
    with intervene(m, head), record(m, ["head_out"], [LAYER]) as rec:
        _logits(m.hf_model, ids)
    z0, z1 = base["head_out", LAYER], rec["head_out", LAYER]
    assert z1.shape == (2, 9, m.n_heads, m.d_head)
    assert torch.equal(z1[:, :, 1], z0[:, :, 1] + val[0])
    others = [h for h in range(m.n_heads) if h != 1]
    assert torch.equal(z1[:, :, others], z0[:, :, others])
    neurons = [Intervention(site="mlp_post", layer=LAYER, units=[5, 7], op="scale", value=3.0)]
    with intervene(m, neurons), record(m, ["mlp_post"], [LAYER]) as rec:
        _logits(m.hf_model, ids)
    n0, n1 = base["mlp_post", LAYER], rec["mlp_post", LAYER]
    assert torch.equal(n1[..., [5, 7]], n0[..., [5, 7]] * 3.0)
    keep = [i for i in range(m.d_mlp) if i not in (5, 7)]
    assert torch.equal(n1[..., keep], n0[..., keep])


def test_mean_clamp_project_out_and_replace(tiny_model, ids):
    m = tiny_model("llama")
    d = torch.randn(m.d_model)
    u = d / d.norm()
    cases = {
        "mean": (Intervention(site="resid_post", layer=LAYER, op="mean", value=d), lambda x: torch.equal(x, d.expand_as(x))),
        "project_out": (Intervention(site="resid_post", layer=LAYER, op="project_out", value=d),
                        lambda x: torch.allclose(x @ u, torch.zeros(()), atol=1e-5)),
        "clamp": (Intervention(site="resid_post", layer=LAYER, op="clamp", value=(d, 7.0)),
                  lambda x: torch.allclose(x @ u, torch.full(x.shape[:2], 7.0), atol=1e-4)),
        "replace": (Intervention(site="resid_post", layer=LAYER, op="replace", value=lambda x: -x), None),
    }
    with record(m, ["resid_post"], [LAYER]) as base:
        _logits(m.hf_model, ids)
    for name, (iv, check) in cases.items():
        with intervene(m, [iv]), record(m, ["resid_post"], [LAYER]) as rec:
            _logits(m.hf_model, ids)
        x = rec["resid_post", LAYER]
        if name == "replace":
            assert torch.equal(x, -base["resid_post", LAYER])
        else:
            assert check(x), name
    # project_out leaves the orthogonal part alone
    with intervene(m, [cases["project_out"][0]]), record(m, ["resid_post"], [LAYER]) as rec:
        _logits(m.hf_model, ids)
    x0 = base["resid_post", LAYER]
    torch.testing.assert_close(rec["resid_post", LAYER], x0 - (x0 @ u)[..., None] * u, atol=1e-5, rtol=0)


@pytest.mark.parametrize("site", ["resid_post", "head_out", "mlp_post", "attn_out"])
def test_record_grad_matches_autograd_on_a_manual_hook(tiny_model, ids, site):
    m = tiny_model("llama")
    hf = m.hf_model
    module, where = site_module(decoder_layers(hf)[LAYER], site)
    kept = {}

    def keep(t):
        t.retain_grad()
        kept["x"] = t

    if where == "input":
        h = module.register_forward_pre_hook(lambda mod, args: keep(args[0]))
    else:
        h = module.register_forward_hook(lambda mod, args, out: keep(out[0] if isinstance(out, tuple) else out))
    try:
        hf(input_ids=ids).logits[:, -1, 7].sum().backward()
    finally:
        h.remove()
    want = kept["x"].grad.clone()
    hf.zero_grad(set_to_none=True)
    with record(m, [site], [LAYER], grad=True) as rec:
        hf(input_ids=ids).logits[:, -1, 7].sum().backward()
    got = rec[site, LAYER].grad
    hf.zero_grad(set_to_none=True)
    assert got is not None
    torch.testing.assert_close(got.reshape(want.shape), want, atol=0, rtol=0)
    assert got.abs().sum() > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_outputs_bit_identical_after_the_block_also_when_it_raised(tiny_model, ids, arch):
    m = tiny_model(arch)
    hf = m.hf_model
    before, hooks_before = _logits(hf, ids), _hook_counts(hf)
    ivs = [Intervention(site=s, layer=LAYER, op="scale", value=2.0) for s in SITES]
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(m, ivs):
            assert not torch.equal(_logits(hf, ids), before)
            raise RuntimeError("boom")
    assert _hook_counts(hf) == hooks_before
    assert torch.equal(_logits(hf, ids), before)
    with record(m, list(SITES), [0, LAYER]):
        _logits(hf, ids)
    assert _hook_counts(hf) == hooks_before


@pytest.mark.parametrize("arch", ARCHS)
def test_sites_equal_the_bridge_hooks(tiny_model, ids, arch):
    m = tiny_model(arch)
    with record(m, list(SITES), [LAYER]) as rec:
        _logits(m.hf_model, ids)
    _, cache = m.bridge.run_with_cache(ids)
    for site in SITES:
        want = cache[SITES[site].hook.format(l=LAYER)]
        torch.testing.assert_close(rec[site, LAYER], want, atol=1e-5, rtol=1e-5, msg=site)


def test_a_booted_bridge_is_changed_too(tiny_model, ids):
    m = tiny_model("llama")
    twin = m.bridge.original_model  # boots the bridge
    before = _hook_counts(twin)
    plain = m.bridge(ids, return_type="logits")
    iv = Intervention(site="head_out", layer=LAYER, units=[0], op="zero")
    with intervene(m, [iv]):
        hf_out = _logits(m.hf_model, ids)
        br_out = m.bridge(ids, return_type="logits")
    torch.testing.assert_close(br_out, hf_out, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain, hf_out, atol=1e-5)  # control: the change is real
    assert _hook_counts(twin) == before


def test_positions_explicit_and_padding(tiny_model):
    m = tiny_model("llama")
    ids = torch.randint(0, 1000, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, :2] = 0  # row 1 left-padded
    v = torch.randn(m.d_model)
    with record(m, ["resid_post"], [LAYER]) as base:
        m.hf_model(input_ids=ids, attention_mask=mask)
    iv = Intervention(site="resid_post", layer=LAYER, op="add", value=v, positions=[[4], [0, 5]])
    with intervene(m, [iv]), record(m, ["resid_post"], [LAYER]) as rec:
        m.hf_model(input_ids=ids, attention_mask=mask)
    diff = (rec["resid_post", LAYER] - base["resid_post", LAYER]).abs().sum(-1) > 0
    want = torch.zeros(2, 6, dtype=torch.bool)
    want[0, 4] = True
    want[1, 5] = True  # position 0 of row 1 is padding: never touched
    assert torch.equal(diff, want)
    # one row of positions serves every row of the batch; positions outside the sequence change nothing
    iv = Intervention(site="resid_post", layer=LAYER, op="add", value=v, positions=[[1, 3]])
    with intervene(m, [iv]), record(m, ["resid_post"], [LAYER]) as rec:
        m.hf_model(input_ids=ids, attention_mask=mask)
    diff = (rec["resid_post", LAYER] - base["resid_post", LAYER]).abs().sum(-1) > 0
    want = torch.zeros(2, 6, dtype=torch.bool)
    want[:, 3] = True
    want[0, 1] = True  # row 1's position 1 is padding
    assert torch.equal(diff, want)
    iv = Intervention(site="resid_post", layer=LAYER, op="add", value=v, positions=[[40]])
    with intervene(m, [iv]), record(m, ["resid_post"], [LAYER]) as rec:
        m.hf_model(input_ids=ids, attention_mask=mask)
    assert torch.equal(rec["resid_post", LAYER], base["resid_post", LAYER])


def test_bad_inputs_say_what_and_how(tiny_model):
    m = tiny_model("llama")
    hooks_before = _hook_counts(m.hf_model)  # transformers installs its own capture hooks once asked
    with pytest.raises(ValueError, match="unknown site 'resid'"):
        Intervention(site="resid", layer=0, op="zero")
    with pytest.raises(ValueError, match="unknown op"):
        Intervention(site="resid_post", layer=0, op="ablate")
    with pytest.raises(ValueError, match="units select heads"):
        Intervention(site="resid_post", layer=0, op="zero", units=[1])
    with pytest.raises(ValueError, match="needs a value"):
        Intervention(site="resid_post", layer=0, op="add")
    with pytest.raises(ValueError, match="NaN or inf"):
        Intervention(site="resid_post", layer=0, op="add", value=torch.tensor([float("nan")] * 32))
    with pytest.raises(ValueError, match="complex"):
        Intervention(site="resid_post", layer=0, op="add", value=torch.ones(32, dtype=torch.complex64))
    with pytest.raises(ValueError, match="layer 5 out of range: the model has 3 layers"):
        with intervene(m, [Intervention(site="resid_post", layer=5, op="zero")]):
            pass
    with pytest.raises(ValueError, match="unit 9 out of range: layer 0 has 4 heads"):
        with intervene(m, [Intervention(site="head_out", layer=0, units=[9], op="zero")]):
            pass
    with pytest.raises(ValueError, match=r"has shape \[31\]"):
        with intervene(m, [Intervention(site="resid_post", layer=0, op="add", value=torch.ones(31))]):
            pass
    assert _hook_counts(m.hf_model) == hooks_before  # a refused intervention leaves nothing behind
    # the names used by checks outside this file
    iv = Intervention(site="head_out", layer=10, units=[3], op="zero")
    assert iv.units == (3,) and "head_out" in repr(iv)


def test_values_on_another_dtype_are_moved_and_meta_values_refused(tiny_model, ids):
    m = tiny_model("llama")
    v = torch.randn(m.d_model)
    with intervene(m, [Intervention(site="resid_post", layer=LAYER, op="add", value=v)]):
        want = _logits(m.hf_model, ids)
    with intervene(m, [Intervention(site="resid_post", layer=LAYER, op="add", value=v.double())]):
        got = _logits(m.hf_model, ids)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="meta device"):
        Intervention(site="resid_post", layer=LAYER, op="add", value=torch.empty(m.d_model, device="meta"))
