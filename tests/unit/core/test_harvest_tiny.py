"""Harvesting on tiny random-weight models (Llama, Qwen2, Gemma3): shapes, parity with HF,
padding, positions, chat formatting, backends, streaming/resume and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import psylens.harvest as H
from psylens.harvest import encode
from psylens.io import read_json
from psylens.modules import decoder_layers
from psylens.sites import SITES
from psylens.stimuli import from_texts

ARCHS = ["llama", "qwen2", "gemma3"]
TEXTS = [
    "I lost my keys at the station.",
    "Hello",
    "The parcel arrived two days late, soaked through and torn open at one corner.",
    "We ate soup.",
    "My neighbour waved from across the street while walking her dog",
    "Rain again",
]
STIM = from_texts(TEXTS, labels=["a", "b", "a", "b", "a", "b"], groups=["g1", "g1", "g2", "g2", "g3", "g3"], name="tiny")


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal up to float summation order: tolerance relative to the magnitude of ``b``."""
    scale = float(b.abs().max()) or 1.0
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * scale)


def hf_hidden(model, ids: list[int]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model.hf_model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    return tuple(h[0] for h in out.hidden_states)


def _ours(hooks) -> list:
    # transformers installs its own permanent output-capturing hooks once hidden states are asked for
    return [h for h in hooks.values() if "output_capturing" not in getattr(h, "__qualname__", "")]


def no_hooks_left(model) -> bool:
    return all(
        not hp._forward_hooks and not hp._backward_hooks for hp in model.bridge.hook_dict.values()
    ) and all(
        not _ours(mod._forward_hooks) and not _ours(mod._forward_pre_hooks)
        for mod in model.hf_model.modules()
    )


# ---------------------------------------------------------------- shapes and HF parity
@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_every_site(tiny_model, arch: str) -> None:
    m = tiny_model(arch)
    acts = m.harvest(STIM, sites=list(SITES), progress=False)
    n, L = len(TEXTS), m.n_layers
    for site in SITES:
        if site == "head_out":
            want = (n, L, m.n_heads, m.d_head)
        elif site == "mlp_post":
            want = (n, L, m.d_mlp)
        else:
            want = (n, L, m.d_model)
        assert tuple(acts[site].shape) == want, site
        assert acts[site].dtype == torch.float32 and torch.isfinite(acts[site]).all()
    assert acts.ids == STIM.ids and acts.labels == STIM.labels and acts.groups == STIM.groups
    assert acts.texts == TEXTS and acts.layers == list(range(L))
    # the sites are different things (a wiring mix-up would make two of them equal)
    assert not torch.allclose(acts["resid_pre"], acts["resid_post"])
    assert not torch.allclose(acts["attn_out"], acts["mlp_out"])
    # resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out (pre-norm residual blocks;
    # Gemma3 norms the sublayer outputs before adding them, so only check the Llama-style ones)
    if arch != "gemma3":
        close(acts["resid_pre"] + acts["attn_out"], acts["resid_mid"])
        close(acts["resid_mid"] + acts["mlp_out"], acts["resid_post"])
    close(acts["resid_post"][:, :-1], acts["resid_pre"][:, 1:])
    assert no_hooks_left(m)


@pytest.mark.parametrize("arch", ARCHS)
def test_resid_post_equals_hf_hidden_states(tiny_model, arch: str) -> None:
    m = tiny_model(arch)
    acts = m.harvest(STIM[:3], sites=["resid_post"], batch_size=1, progress=False)
    last_layer = decoder_layers(m.hf_model)[-1]
    for i, text in enumerate(TEXTS[:3]):
        e = encode(m, text)
        block_out: list[torch.Tensor] = []
        handle = last_layer.register_forward_hook(
            lambda mod, args, out: block_out.append((out[0] if isinstance(out, tuple) else out).detach())
        )
        try:
            hs = hf_hidden(m, e.ids)
        finally:
            handle.remove()
        r = acts["resid_post"][i]  # [L, d]
        for layer in range(m.n_layers - 1):
            torch.testing.assert_close(r[layer], hs[layer + 1][-1], rtol=0, atol=1e-5)
        # the last block: psylens keeps the block output, HF's last hidden state is after the final norm
        torch.testing.assert_close(r[-1], block_out[0][0, -1], rtol=0, atol=1e-5)
        with torch.no_grad():
            normed = m.hf_model.model.norm(r[-1][None, None])[0, 0]
        torch.testing.assert_close(normed, hs[-1][-1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(r[-1], hs[-1][-1], atol=1e-3)  # control: they do differ
        # and it is the text's last token, not another position
        assert not torch.allclose(r[0], hs[1][-2], atol=1e-3)


# ---------------------------------------------------------------- batching and padding
_ONE_BY_ONE: dict[str, object] = {}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_equals_one_by_one(tiny_model, arch: str, side: str) -> None:
    # positions="all" compares every text token; test_positions_consistent ties "last" and "mean" to it
    m = tiny_model(arch)
    sites = ["resid_post", "head_out", "mlp_post"]
    if arch not in _ONE_BY_ONE:
        _ONE_BY_ONE[arch] = m.harvest(STIM, sites=sites, positions="all", batch_size=1, progress=False)
    one = _ONE_BY_ONE[arch]
    batched = m.harvest(STIM, sites=sites, positions="all", batch_size=4, padding_side=side, progress=False)
    for site in sites:
        close(batched[site], one[site])
    assert torch.equal(batched.token_stimulus, one.token_stimulus)
    assert torch.equal(batched.token_position, one.token_position)
    last = m.harvest(STIM, sites=["resid_post"], batch_size=6, padding_side=side, progress=False)
    rows = [int(torch.nonzero(one.token_stimulus == i).max()) for i in range(len(STIM))]
    close(last["resid_post"], one["resid_post"][rows])


def test_padding_is_masked(tiny_model) -> None:
    # control for the test above: the batch must mask the padding (RoPE is shift-invariant, so
    # position offsets from left padding cannot show in the outputs)
    m = tiny_model("llama")
    encs = [encode(m, t) for t in TEXTS[:2]]
    batch = H._make_batch(encs, [0, 1], m.tokenizer.pad_token_id, "left")
    keys = [("resid_post", 1)]
    masked = H._run_hooks(m, batch, keys, "last")[keys[0]]
    short = 0 if len(encs[0].ids) < len(encs[1].ids) else 1
    alone = H._run_hooks(m, H._make_batch([encs[short]], [0], 0, "left"), keys, "last")[keys[0]][0]
    close(masked[short], alone)
    batch.attention_mask.fill_(1)  # attending to the padding changes it
    unmasked = H._run_hooks(m, batch, keys, "last")[keys[0]]
    assert not torch.allclose(unmasked[short], alone, atol=1e-4)


# ---------------------------------------------------------------- positions
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_positions_consistent(tiny_model, arch: str) -> None:
    m = tiny_model(arch)
    sites = ["resid_post", "head_out"]
    kw = dict(sites=sites, batch_size=3, progress=False)
    last = m.harvest(STIM, positions="last", **kw)
    mean = m.harvest(STIM, positions="mean", **kw)
    every = m.harvest(STIM, positions="all", **kw)
    n_text = [encode(m, t).n_text for t in TEXTS]
    assert every.positions == "all" and len(every) == len(TEXTS)
    assert every["resid_post"].shape[0] == sum(n_text)
    assert every.token_stimulus.tolist() == [i for i, k in enumerate(n_text) for _ in range(k)]
    assert every.token_position.tolist() == [p for k in n_text for p in range(k)]
    for i in range(len(TEXTS)):
        rows = every.token_stimulus == i
        for site in sites:
            close(every[site][rows].mean(0), mean[site][i])
            close(every[site][rows][-1], last[site][i])
    # one per-token harvest read out both ways equals the two harvests
    for site in sites:
        close(every.reduce("mean")[site], mean[site])
        close(every.reduce("last")[site], last[site])
    assert every.reduce("mean").positions == "mean" and every.reduce("last").ids == last.ids
    # control: mean over the text differs from the last token where the text has several tokens
    multi = [i for i, k in enumerate(n_text) if k > 1]
    assert not torch.allclose(mean["resid_post"][multi], last["resid_post"][multi], atol=1e-3)


def test_last_is_the_users_last_word_in_chat(tiny_model) -> None:
    m = tiny_model("llama")
    tok = m.tokenizer
    text = "The parcel arrived two days late"
    prompt = m.format_prompt(text, format="chat")
    full = tok(prompt, add_special_tokens=False)["input_ids"]
    e = encode(m, text, format="chat")
    assert e.ids == full[: len(e.ids)] and len(full) > len(e.ids)  # template tokens follow the text
    assert tok.decode(e.ids[-1]).strip() == "late"
    assert tok.decode(e.ids[e.text_start:]).strip() == text
    assert tok.decode(full[len(e.ids):]).startswith("<|im_end|>")
    assert e.text_start > 0 and "user" in tok.decode(e.ids[: e.text_start])
    acts = m.harvest([text], layers=[0], format="chat", progress=False)
    with torch.no_grad():
        hs = m.hf_model(input_ids=torch.tensor([full]), output_hidden_states=True).hidden_states[1][0]
    torch.testing.assert_close(acts["resid_post"][0, 0], hs[len(e.ids) - 1], rtol=0, atol=1e-5)
    assert not torch.allclose(acts["resid_post"][0, 0], hs[-1], atol=1e-3)  # not the template's last token


def test_format_raw_and_system_prompt(tiny_model) -> None:
    m = tiny_model("llama")
    text = TEXTS[0]
    raw = encode(m, text, format="raw")
    assert raw.ids == m.tokenizer(text)["input_ids"] and raw.text_start == 0
    kw = dict(layers=[1], progress=False)
    a_raw = m.harvest([text], format="raw", **kw)["resid_post"]
    a_chat = m.harvest([text], format="chat", **kw)["resid_post"]
    a_auto = m.harvest([text], **kw)["resid_post"]
    torch.testing.assert_close(a_auto, a_chat, rtol=0, atol=0)  # the tokenizer has a chat template
    torch.testing.assert_close(a_raw[0, 0], hf_hidden(m, raw.ids)[2][-1], rtol=0, atol=1e-5)
    assert not torch.allclose(a_raw, a_chat, atol=1e-3)
    sys_a = m.harvest([text], system_prompt="You are a pirate.", **kw)["resid_post"]
    sys_b = m.harvest([text], system_prompt="You are a pirate.", **kw)["resid_post"]
    assert torch.equal(sys_a, sys_b)
    assert not torch.allclose(sys_a, a_chat, atol=1e-3)
    with_sys = encode(m, text, system_prompt="You are a pirate.")
    assert m.tokenizer.decode(with_sys.ids[with_sys.text_start:]).strip() == text
    raw_sys = m.harvest([text], format="raw", system_prompt="You are a pirate.", **kw)["resid_post"]
    assert not torch.allclose(raw_sys, a_raw, atol=1e-3)


def test_keeps_only_requested_layers(tiny_model) -> None:
    m = tiny_model("qwen2")
    full = m.harvest(STIM, sites=["resid_post", "mlp_out"], progress=False)
    some = m.harvest(STIM, sites=["mlp_out", "resid_post"], layers=[2, 0], progress=False)
    assert some.layers == [0, 2] and some.sites == ["mlp_out", "resid_post"]
    assert some["resid_post"].shape == (len(TEXTS), 2, m.d_model)
    for site in ("resid_post", "mlp_out"):
        close(some[site], full[site][:, [0, 2]])
    neg = m.harvest(STIM, layers=-1, progress=False)
    assert neg.layers == [m.n_layers - 1]
    close(neg["resid_post"][:, 0], full["resid_post"][:, -1])


def test_stops_after_the_deepest_requested_layer(tiny_model) -> None:
    m = tiny_model("llama")
    calls: list[int] = []
    layers = decoder_layers(m.hf_model)
    handles = [layer.register_forward_pre_hook(lambda mod, a, i=i: calls.append(i)) for i, layer in enumerate(layers)]
    try:
        m.harvest(STIM[:2], layers=[0], progress=False)
        early = list(calls)
        calls.clear()
        m.harvest(STIM[:2], layers=[m.n_layers - 1], progress=False)
    finally:
        for h in handles:
            h.remove()
    assert early == [0]  # blocks 1.. never started
    assert calls == list(range(m.n_layers))
    assert no_hooks_left(m)


def test_no_hooks_left_after_an_error(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    m = tiny_model("llama")

    def broken(*a, **k):
        raise RuntimeError("reduction failed (simulated)")

    monkeypatch.setattr(H, "_reduce", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        m.harvest(STIM[:2], progress=False)
    assert no_hooks_left(m)


# ---------------------------------------------------------------- nnsight backend
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_backends_agree(tiny_model, arch) -> None:
    """hooks (psylens.interventions), the bridge's hook points and nnsight read the same values."""
    m = tiny_model(arch)
    sites = list(SITES)
    for positions in ("last", "all"):
        kw = dict(sites=sites, layers=[0, 2], positions=positions, batch_size=3, progress=False)
        hooks = m.harvest(STIM, **kw)
        bridge = m.harvest(STIM, backend="bridge", **kw)
        nns = m.harvest(STIM, backend="nnsight", **kw)
        for site in sites:
            assert nns[site].shape == bridge[site].shape == hooks[site].shape, site
            close(nns[site], bridge[site], rel=1e-5)
            close(hooks[site], bridge[site], rel=1e-5)
    assert no_hooks_left(m)


# ---------------------------------------------------------------- streaming and resume
def test_streamed_equals_in_memory(tiny_model, tmp_path: Path) -> None:
    m = tiny_model("llama")
    mem = m.harvest(STIM, batch_size=1, progress=False)
    out = tmp_path / "acts"
    streamed = m.harvest(STIM, batch_size=1, shard_size=4, out=out, progress=False)
    assert torch.equal(streamed["resid_post"], mem["resid_post"])
    man = read_json(out / "manifest.json")
    assert man["complete"] and [(s["start"], s["stop"]) for s in man["shards"]] == [(0, 4), (4, 6)]
    # the same harvest again is a no-op that returns the stored result
    again = m.harvest(STIM, batch_size=1, shard_size=4, out=out, progress=False)
    assert torch.equal(again["resid_post"], mem["resid_post"]) and again.ids == mem.ids


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, n_ok: int) -> list[str]:
    real = H._write_shard
    written: list[str] = []

    def flaky(out, k, tensors):
        if len(written) >= n_ok:
            raise KeyboardInterrupt("killed (simulated)")
        written.append(real(out, k, tensors))
        return written[-1]

    monkeypatch.setattr(H, "_write_shard", flaky)
    return written


@pytest.mark.parametrize("positions", ["last", "all"])
def test_interrupted_harvest_resumes(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, positions: str) -> None:
    m = tiny_model("llama")
    kw = dict(sites=["resid_post", "head_out"], positions=positions, batch_size=1, progress=False)
    reference = m.harvest(STIM, **kw)
    out = tmp_path / "acts"
    written = _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        m.harvest(STIM, out=out, shard_size=2, **kw)
    monkeypatch.undo()
    assert len(written) == 2
    man = read_json(out / "manifest.json")
    assert not man["complete"] and [(s["start"], s["stop"]) for s in man["shards"]] == [(0, 2), (2, 4)]
    with pytest.raises(ValueError, match="incomplete"):
        H.Activations.load(out)
    # resume: only the missing shard is computed
    calls: list[int] = []
    real_run = H._run_hooks
    monkeypatch.setattr(H, "_run_hooks", lambda model, batch, *a: calls.append(len(batch.index)) or real_run(model, batch, *a))
    resumed = m.harvest(STIM, out=out, shard_size=2, **kw)
    assert sum(calls) == 2
    assert resumed.ids == STIM.ids and len(resumed) == len(STIM)
    for site in kw["sites"]:
        assert resumed[site].shape == reference[site].shape
        assert torch.equal(resumed[site], reference[site])
    if positions == "all":
        assert torch.equal(resumed.token_stimulus, reference.token_stimulus)
        assert torch.equal(resumed.token_position, reference.token_position)
    man = read_json(out / "manifest.json")
    spans = sorted((s["start"], s["stop"]) for s in man["shards"])
    assert man["complete"] and spans == [(0, 2), (2, 4), (4, 6)]
    assert len({s["file"] for s in man["shards"]}) == 3
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_resume_with_another_shard_size(tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = tiny_model("llama")
    kw = dict(batch_size=1, progress=False)
    reference = m.harvest(STIM, **kw)
    out = tmp_path / "acts"
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        m.harvest(STIM, out=out, shard_size=2, **kw)
    monkeypatch.undo()
    resumed = m.harvest(STIM, out=out, shard_size=4, **kw)  # e.g. resumed with a default shard size
    assert resumed.ids == STIM.ids
    assert torch.equal(resumed["resid_post"], reference["resid_post"])
    man = read_json(out / "manifest.json")
    spans = sorted((s["start"], s["stop"]) for s in man["shards"])
    assert spans == [(0, 2), (2, 4), (4, 6)] and len({s["file"] for s in man["shards"]}) == 3


def test_different_harvest_into_same_out(tiny_model, tmp_path: Path) -> None:
    m = tiny_model("llama")
    out = tmp_path / "acts"
    m.harvest(STIM[:2], layers=[0], out=out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for change in (dict(layers=[1]), dict(sites=["mlp_out"]), dict(positions="mean"), dict(format="raw")):
        kw = {"layers": [0], **change}
        with pytest.raises(ValueError, match="different harvest"):
            m.harvest(STIM[:2], out=out, progress=False, **kw)
    with pytest.raises(ValueError, match="different harvest"):
        m.harvest(STIM[1:3], layers=[0], out=out, progress=False)
    edited = from_texts(["Edited text.", TEXTS[1]], labels=STIM.labels[:2], groups=STIM.groups[:2], ids=STIM.ids[:2])
    relabelled = from_texts(TEXTS[:2], labels=["b", "b"], groups=STIM.groups[:2], ids=STIM.ids[:2])
    for other in (edited, relabelled):  # same ids, other rows
        with pytest.raises(ValueError, match="different harvest"):
            m.harvest(other, layers=[0], out=out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched


def test_unwritable_out(tiny_model, tmp_path: Path) -> None:
    m = tiny_model("llama")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        m.harvest(STIM[:2], out=blocker / "acts", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layers=[3]), r"layer 3 out of range.*0–2"),
        (dict(layers=[-4]), "out of range"),
        (dict(sites=["resid"]), "valid sites"),
        (dict(sites=[]), "no sites"),
        (dict(positions="first"), "positions"),
        (dict(backend="tl"), "backend"),
        (dict(remote=True), "nnsight"),
        (dict(batch_size=0), "batch_size"),
        (dict(padding_side="middle"), "padding_side"),
        (dict(format="markdown"), "format"),
        (dict(shard_size=0), "shard_size"),
    ],
)
def test_bad_arguments(tiny_model, tmp_path: Path, kwargs: dict, match: str) -> None:
    m = tiny_model("llama")
    with pytest.raises(ValueError, match=match):
        m.harvest(STIM[:2], progress=False, out=tmp_path / "acts", **kwargs)
    assert not (tmp_path / "acts").exists()


def test_bad_stimuli(tiny_model) -> None:
    m = tiny_model("llama")
    with pytest.raises(ValueError, match="stimuli must be"):
        m.harvest([1, 2], progress=False)  # type: ignore[list-item]
    one = m.harvest("just one text", layers=[0], progress=False)
    assert one["resid_post"].shape == (1, 1, m.d_model)


def test_meta_records_the_config(tiny_model) -> None:
    m = tiny_model("llama")
    acts = m.harvest(STIM[:2], layers=[1], positions="mean", progress=False)
    assert acts.meta["model"] == m.spec and acts.meta["layers"] == [1] and acts.meta["positions"] == "mean"
    assert acts.meta["format"] == "chat" and acts.meta["backend"] == "hooks"
    json.dumps(acts.meta)  # JSON-serialisable


@pytest.mark.parametrize("word", ["assistant", "user", "is", "a", "start", "end", "im"])
def test_text_found_in_the_template_is_read_at_the_users_tokens(tiny_model, word) -> None:
    """Issue 15: a stimulus that also occurs in the chat template's tail must read the user's tokens."""
    from psylens.harvest import encode

    m = tiny_model("llama")
    enc = encode(m, word)
    tok = m.tokenizer
    assert tok.decode(enc.ids[enc.text_start:]).strip() == word
    frame = m.format_prompt("\u2063X\u2063")
    user_prefix = frame[: frame.index("\u2063X\u2063")]
    n_prefix = len(tok(user_prefix, add_special_tokens=False)["input_ids"])
    assert enc.text_start == n_prefix  # right after "<|im_start|>user\n", not in the template's tail
    acts = m.harvest([word], layers=[0, 2], positions="last", progress=False)
    full = tok(m.format_prompt(word), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        hs = m.hf_model(**full, output_hidden_states=True).hidden_states
    last = len(enc.ids) - 1
    close(acts["resid_post"][0, 0], hs[1][0, last])
    # control: the template's own "assistant" token (in the tail) holds another value
    assert not torch.allclose(hs[1][0, -2], hs[1][0, last], atol=1e-4)


def test_a_text_longer_than_the_context_is_refused(tiny_model) -> None:
    from psylens.harvest import encode

    m = tiny_model("llama")
    with pytest.raises(ValueError, match=r"longer than the model's 512-token context.*does not truncate"):
        encode(m, "word " * 600)
