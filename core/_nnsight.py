"""nnsight traces used by the ``nnsight`` harvest backend (kept in a file: nnsight 0.8
reads the body of a ``with model.trace(...)`` block from source)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["trace_outputs", "trace_sites", "remote_resid_trace", "strip_added_bos", "wrap"]


def wrap(module: nn.Module) -> Any:
    """A new ``nnsight.NNsight`` over ``module`` (no copy).

    Not cached: a cache keyed weakly on the module would still hold it through the wrapper, so
    every model ever traced would stay in memory. Wrapping is cheap next to a forward pass (~6 ms
    for a 30-layer, 400-module Llama against ~600 ms for its trace) and nnsight patches each
    submodule only once, so re-wrapping does not stack.
    """
    from nnsight import NNsight

    return NNsight(module)


def _envoy(root: Any, path: str) -> Any:
    env = root
    for part in path.split("."):
        env = env[int(part)] if part.isdigit() else getattr(env, part)
    return env


def trace_outputs(module: nn.Module, paths: Sequence[str], **inputs: Tensor) -> list[Tensor]:
    """Run ``module(**inputs)`` in an nnsight trace; return the outputs of the submodules at ``paths``."""
    lm = wrap(module)
    saved: list[Any] = []
    with torch.no_grad(), lm.trace(**inputs):
        for path in paths:
            saved.append(_envoy(lm, path).output.save())
    return [s[0] if isinstance(s, tuple) else s for s in saved]


def trace_sites(module: nn.Module, where: Sequence[tuple[str, str]], **inputs: Tensor) -> list[Tensor]:
    """Run ``module(**inputs)`` in an nnsight trace; return, for each ``(path, "input" | "output")``,
    that submodule's first input or output tensor (sites from :func:`psylens.interventions.site_module`)."""
    lm = wrap(module)
    saved: list[Any] = []
    with torch.no_grad(), lm.trace(**inputs):
        for path, io in where:
            env = _envoy(lm, path)
            saved.append((env.input if io == "input" else env.output).save())
    return [s[0] if isinstance(s, tuple) else s for s in saved]


def strip_added_bos(prompt: str, tokenizer: Any) -> str:
    """``prompt`` without a leading BOS string when the tokenizer adds BOS itself.

    The remote trace sends text, which the server tokenizes with special tokens on; a chat
    template that writes its own BOS (Gemma: ``<bos><start_of_turn>user...``) would otherwise
    start with two.
    """
    bos = getattr(tokenizer, "bos_token", None)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None or not prompt.startswith(bos):
        return prompt
    ids = tokenizer("x")["input_ids"]
    return prompt[len(bos):] if len(ids) and ids[0] == bos_id else prompt


def remote_resid_trace(
    repo_id: str, tokenizer: Any, prompts: Sequence[str], sites: Sequence[str], layers: Sequence[int]
) -> dict[str, Tensor]:
    """Last-token residual activations of ``prompts`` from NDIF's copy of ``repo_id``.

    Returns ``{site: [n, len(layers), d_model]}``. The request goes to NDIF through
    nnsight's ``RemoteBackend`` (``remote=True``); nothing is computed locally.
    """
    import nnsight
    from nnsight import LanguageModel

    prompts = [strip_added_bos(p, tokenizer) for p in prompts]
    lm = LanguageModel(repo_id, tokenizer=tokenizer, dispatch=False)
    saved: dict[tuple[str, int], Any] = {}
    with torch.no_grad(), lm.trace(list(prompts), remote=True, padding_side="left"):
        # Bind and save the container inside the block: NDIF runs the block on a copy of
        # the captured locals and sends back only variables bound and saved there, so
        # filling a dict created outside the block would come back empty.
        saved = nnsight.save({})
        # nnsight serves values in execution order: layer by layer, a block's input before its output
        for layer in sorted(set(layers)):
            block = lm.model.layers[layer]
            for site in ("resid_pre", "resid_post"):
                if site in sites:
                    act = block.input if site == "resid_pre" else block.output
                    saved[(site, layer)] = act.save()
    out: dict[str, Tensor] = {}
    for site in sites:
        per = []
        for layer in layers:
            x = saved[(site, layer)]
            x = x[0] if isinstance(x, tuple) else x
            per.append(x[:, -1].float().cpu())
        out[site] = torch.stack(per, dim=1)
    return out
