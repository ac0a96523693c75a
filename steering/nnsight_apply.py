"""The same steering inside an nnsight trace (local, or ``remote=True`` on NDIF for large models).

Two entry points:

- :func:`nnsight_generate` — generate with a vector applied at every step; returns token ids. The
  trace is built here, so callers need no ``with`` block of their own.
- :func:`steer_trace` — call inside your own ``with lm.generate(...) as tracer:`` block, in an
  ``invoke`` of its own (or last in one): it loops over every generation step, and statements after an
  open ``tracer.all()`` loop in the same invoke do not run (nnsight's rule).

Positions follow the hook path: step 0 is the prompt forward, later steps are generated tokens;
padded prompt positions (``attention_mask == 0``) are left alone.

This module imports ``nnsight`` (which patches builtins on import) only when called.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor, nn

from psylens.models import prompt_special_tokens
from psylens.modules import decoder_layers, unwrap_hf_model
from psylens.interventions import edit_function
from psylens.steering.apply import check_compatible, interventions_for
from psylens.steering.vector import SteeringVector

__all__ = ["nnsight_generate", "steer_trace", "wrap", "layers_envoy"]


def wrap(model: Any, tokenizer: Any = None) -> Any:
    """An nnsight ``TransformersModel`` over ``model`` (a transformers model or psylens ``Model``); no copy.

    ``tokenizer``: needed for a bare transformers model (a psylens ``Model`` brings its own).
    An nnsight model passed in is returned as is.
    """
    from nnsight.intervention.envoy import Envoy

    if isinstance(model, Envoy):
        return model
    from nnsight import TransformersModel

    hf = unwrap_hf_model(model)
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("wrapping a bare transformers model for nnsight needs its tokenizer: wrap(model, tokenizer=tok)")
    return TransformersModel(hf, tokenizer=tok)


def _root(model: Any) -> nn.Module:
    """The transformers module under an nnsight model, a psylens ``Model`` or a bare model."""
    inner = getattr(model, "_module", None)
    return inner if isinstance(inner, nn.Module) else unwrap_hf_model(model)


def _module_path(root: nn.Module, target: nn.Module) -> str:
    for name, mod in root.named_modules():
        if mod is target:
            return name
    raise ValueError(f"cannot find {type(target).__name__} inside {type(root).__name__}")


def layers_envoy(lm: Any) -> Any:
    """The nnsight envoy of the decoder-layer list (``lm.model.layers`` for Llama, Qwen2, Gemma)."""
    root = _root(lm)
    path = _module_path(root, decoder_layers(root))
    env = lm
    for part in path.split("."):
        env = getattr(env, part)
    return env


def steer_trace(
    lm: Any,
    tracer: Any,
    sv: SteeringVector,
    *,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    n_steps: int | None = None,
) -> None:
    """Apply ``sv`` at every step of the enclosing ``lm.generate`` trace (see the module doc for where to call it).

    Args:
        lm: the nnsight model the trace runs on.
        tracer: the ``tracer`` of ``with lm.generate(...) as tracer``.
        sv: the vector (``resid_post`` site).
        attention_mask: the prompt's 2-D mask, so padded prompt positions stay untouched.
        n_steps: how many forwards to steer (default: every one; ``max_new_tokens`` is exact).
    """
    if sv.site != "resid_post":
        raise ValueError(f"steer_trace supports site 'resid_post' only, got {sv.site!r}; use sv.apply(model) for others")
    root = _root(lm)
    check_compatible(sv, root)
    # the same edit functions the hooks use (psylens.interventions), applied to each step's output
    ops = {iv.layer: edit_function(iv) for iv in interventions_for(sv)}
    env = layers_envoy(lm)
    real = None if attention_mask is None else attention_mask != 0
    steps = tracer.all() if n_steps is None else tracer.iter[:n_steps]
    for step in steps:
        prompt_step = step == 0
        if (sv.positions == "prompt" and not prompt_step) or (sv.positions == "generated" and prompt_step):
            continue
        for layer, op in ops.items():
            out = env[layer].output
            h = out[0] if isinstance(out, tuple) else out
            new = op(h, 0)
            if prompt_step and real is not None:
                new = torch.where(real.to(h.device).unsqueeze(-1), new, h)
            env[layer].output = (new, *out[1:]) if isinstance(out, tuple) else new


def nnsight_generate(
    model: Any,
    sv: SteeringVector | None,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 32,
    format: str | None = "auto",
    system_prompt: str | None = None,
    **generate_kwargs: Any,
) -> Int[Tensor, "batch total"]:
    """Generate from ``prompts`` through nnsight with ``sv`` applied at every step; returns prompt + new ids.

    ``model``: a psylens ``Model`` (prompts are chat-formatted as :meth:`Model.generate` does unless
    ``format=None``), or an nnsight ``TransformersModel`` / transformers model with a tokenizer (prompts
    used as given). Prompts are left-padded. ``generate_kwargs`` go to ``transformers``' ``generate``
    (``do_sample``, ``min_new_tokens``, ...). ``sv=None`` generates unsteered through the same path.
    """
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    if not items:
        raise ValueError("no prompts given; pass one prompt or a list of them")
    lm = wrap(model)
    tok = getattr(model, "tokenizer", None) or getattr(lm, "tokenizer", None)
    if tok is None:
        raise ValueError("nnsight_generate needs a tokenizer: pass a psylens Model or an nnsight model that has one")
    if format is not None and hasattr(model, "format_prompt"):
        items = [model.format_prompt(p, format=format, system_prompt=system_prompt) for p in items]
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        special = format is not None and prompt_special_tokens(model, format)
        enc = tok(items, return_tensors="pt", padding=True, add_special_tokens=special)
    finally:
        tok.padding_side = old_side
    if tok.pad_token_id is None:
        raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token = tokenizer.eos_token")
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id, "do_sample": False}
    kwargs.update(generate_kwargs)
    if not kwargs["do_sample"]:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    device = next(_root(lm).parameters()).device
    inputs = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
    with warnings.catch_warnings():
        # an early EOS leaves the step loop waiting for a step that never comes; nnsight warns, we don't care
        warnings.filterwarnings("ignore", message=".*was never reached.*")
        with lm.generate(**kwargs) as tracer:
            with tracer.invoke(inputs):
                if sv is not None:
                    steer_trace(lm, tracer, sv, attention_mask=inputs["attention_mask"], n_steps=max_new_tokens)
            with tracer.invoke():
                ids = tracer.result.save()
    return ids.detach().cpu()
