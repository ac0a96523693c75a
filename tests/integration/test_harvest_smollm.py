"""The embedded model (SmolLM2-135M-Instruct): harvested activations equal HF's hidden states,
and the nnsight backend equals the bridge backend. Few, short texts: the CI machine is slow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psylens.harvest import encode
from psylens.models import DEFAULT_MODEL, REGISTRY, _gguf_cache_path
from psylens.modules import decoder_layers

pytestmark = pytest.mark.integration

TEXTS = ["The kettle clicked off.", "My train was cancelled again", "She opened the letter", "We found a seat"]


def test_model_shape(smollm) -> None:
    assert (smollm.n_layers, smollm.d_model, smollm.n_heads, smollm.d_head) == (30, 576, 9, 64)
    assert smollm.has_chat_template and type(smollm.hf_model).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("fmt", ["chat", "raw"])
def test_resid_post_equals_hf_hidden_states(smollm, fmt: str) -> None:
    text = TEXTS[0] if fmt == "chat" else TEXTS[1]
    acts = smollm.harvest([text], sites=["resid_post"], format=fmt, batch_size=1, progress=False)
    assert acts["resid_post"].shape == (1, 30, 576)
    e = encode(smollm, text, format=fmt)
    assert smollm.tokenizer.decode(e.ids[e.text_start:]).strip() == text
    block_out: list[torch.Tensor] = []
    handle = decoder_layers(smollm.hf_model)[-1].register_forward_hook(
        lambda mod, a, out: block_out.append((out[0] if isinstance(out, tuple) else out).detach())
    )
    try:
        with torch.no_grad():
            hs = smollm.hf_model(input_ids=torch.tensor([e.ids]), output_hidden_states=True).hidden_states
    finally:
        handle.remove()
    r = acts["resid_post"][0]
    for layer in range(smollm.n_layers - 1):
        torch.testing.assert_close(r[layer], hs[layer + 1][0, -1], rtol=0, atol=1e-5)
    torch.testing.assert_close(r[-1], block_out[0][0, -1], rtol=0, atol=1e-5)  # pre-final-norm
    assert not torch.allclose(r[-1], hs[-1][0, -1], atol=1e-2)  # HF's last entry is normed
    assert not torch.allclose(r[5], hs[6][0, -2], atol=1e-3)  # control: another position differs


def test_nnsight_equals_bridge(smollm) -> None:
    # raw texts keep the sequences short (the chat template adds ~30 tokens of system prompt)
    kw = dict(sites=["resid_post", "head_out"], layers=[0, 14, 29], format="raw", batch_size=4, progress=False)
    bridge = smollm.harvest(TEXTS, backend="bridge", **kw)
    nns = smollm.harvest(TEXTS, backend="nnsight", **kw)
    for site in kw["sites"]:
        assert nns[site].shape == bridge[site].shape
        scale = float(bridge[site].abs().max())
        torch.testing.assert_close(nns[site], bridge[site], rtol=1e-5, atol=1e-5 * scale)
    assert not torch.allclose(bridge["resid_post"][:, 0], bridge["resid_post"][:, 1])
    assert all(not hp._forward_hooks for hp in smollm.bridge.hook_dict.values())


def test_default_model_is_cached() -> None:
    src = REGISTRY[DEFAULT_MODEL]
    assert src.is_cached()
    d: Path = _gguf_cache_path(src.locate())
    assert (d / "config.json").is_file() and (d / "model.safetensors").is_file()
    assert (d / "model.safetensors").stat().st_size > 100_000_000
    assert not (d / "config.json").read_text().count("quantization_config")
