"""Find the decoder-layer list of a Hugging Face causal LM, whatever wraps it.

Steering and the fast harvest path hook decoder layers directly, so they work on a plain
``transformers`` model, a PEFT-wrapped one, or a model a ``TransformerBridge`` has wrapped.
"""

from __future__ import annotations

from torch import nn

__all__ = ["decoder_layers", "unwrap_hf_model"]

_LAYER_PATHS = (
    "model.layers",
    "model.language_model.layers",
    "language_model.model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "model.decoder.layers",
    "layers",
)


def unwrap_hf_model(model: object) -> nn.Module:
    """The ``transformers`` model inside a psylens ``Model``, a PEFT model or a bridge."""
    for attr in ("hf_model", "original_model"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module):
            return inner
    if hasattr(model, "get_base_model"):
        return model.get_base_model()  # type: ignore[no-any-return]
    if isinstance(model, nn.Module):
        return model
    raise TypeError(
        f"expected a transformers model, a psylens Model or a TransformerBridge, got {type(model).__name__}"
    )


def decoder_layers(model: object) -> nn.ModuleList:
    """The ``nn.ModuleList`` of decoder layers (``model.model.layers`` for Llama, Qwen2, Gemma)."""
    hf = unwrap_hf_model(model)
    for path in _LAYER_PATHS:
        obj: object = hf
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    raise ValueError(
        f"cannot find the decoder layers of {type(hf).__name__}; looked for {', '.join(_LAYER_PATHS)}. "
        "Pass a standard transformers causal LM (Llama, Qwen2, Gemma, GPT-2, GPT-NeoX families)."
    )
