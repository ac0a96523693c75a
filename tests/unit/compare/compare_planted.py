"""Tiny base/tuned model directories with planted changes (built once per module, in tmp dirs)."""

from __future__ import annotations

import pytest
import torch

from conftest import build_tiny_hf  # type: ignore[import-not-found]  # tests/conftest.py

PLANT_LAYER = 1
PLANT_MODULE = "mlp.down_proj"


def save(model, tok, path):
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


_BUILT: dict = {}  # one build per session, shared by every test module that imports the fixture


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory, smollm_tokenizer):
    """``{"base", "rank1", "bias_base", "bias"}`` model directories and what was planted."""
    if not _BUILT:
        _BUILT.update(_build(tmp_path_factory, smollm_tokenizer))
    return _BUILT


def _build(tmp_path_factory, smollm_tokenizer) -> dict:
    from transformers import AutoModelForCausalLM, LlamaConfig

    root = tmp_path_factory.mktemp("compare_models")
    base = build_tiny_hf("llama")
    out = {"base": save(base, smollm_tokenizer, root / "base")}

    # a rank-1 change u·vᵀ in one module of one layer
    g = torch.Generator().manual_seed(1)
    tuned = build_tiny_hf("llama")
    w = tuned.model.layers[PLANT_LAYER].mlp.down_proj.weight
    u = torch.randn(w.shape[0], generator=g)
    v = torch.randn(w.shape[1], generator=g)
    u, v = u / u.norm(), v / v.norm()
    with torch.no_grad():
        w += 2.0 * torch.outer(u, v)
    out["rank1"] = save(tuned, smollm_tokenizer, root / "rank1")
    out["u"] = u

    # a bias added to one layer's residual (through the MLP's down-projection bias), along a token's unembedding
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, mlp_bias=True)
    bias_base = AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():
        for layer in bias_base.model.layers:
            layer.mlp.down_proj.bias.zero_()
    out["bias_base"] = save(bias_base, smollm_tokenizer, root / "bias_base")
    w_u = bias_base.lm_head.weight.detach()
    token = int(w_u.norm(dim=-1).argmax())  # the token whose unembedding row is longest
    direction = w_u[token] / w_u[token].norm()
    with torch.no_grad():
        bias_base.model.layers[PLANT_LAYER].mlp.down_proj.bias += 4.0 * direction
    out["bias"] = save(bias_base, smollm_tokenizer, root / "bias")
    # the tokens this bias promotes through the (identity-weight) final norm and the unembedding
    out["bias_tokens"] = (w_u @ direction).topk(3).indices.tolist()
    return out
