"""Token-level trace activations and the loss recovered when an SAE's reconstruction is spliced in.

>>> tok = token_activations(model, traces, site="resid_post", layer=12)         # doctest: +SKIP
>>> ce_loss_recovered(model, sae, held_traces, site="resid_post", layer=12)    # doctest: +SKIP
{'ce_clean': 1.91, 'ce_sae': 2.07, 'ce_zero': 6.3, 'ce_loss_recovered': 0.96, ...}

Each trace is read as ``psylens traces`` wrote it (:func:`psylens.saes.traces.format_trace_prompt`
then the reasoning); only the reasoning's tokens are kept (``StepSet`` rows with ``steps`` = the
token's position in the sequence). The splice is a :mod:`psylens.interventions` ``replace``
intervention on the reasoning's positions, so the prompt is read as usual:

    ce_loss_recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean)

over next-token predictions of the reasoning tokens, with ``CE_zero`` the loss when the site is
zeroed at those positions. 1 is a perfect reconstruction, 0 no better than zeroing.

Footgun: re-tokenizing the decoded reasoning can differ from the sampled ids by a token at a merge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from psylens.saes.data import StepSet

__all__ = ["encode_trace", "token_activations", "ce_loss_recovered"]


def encode_trace(model: Any, trace: Mapping[str, Any], format: str = "auto") -> tuple[list[int], int]:
    """Token ids of the formatted prompt + reasoning, and the position of the reasoning's first token."""
    from psylens.saes.traces import format_trace_prompt

    if not isinstance(trace, Mapping) or not isinstance(trace.get("prompt"), str):
        raise ValueError("a trace needs a string 'prompt' and 'text' (a record of psylens traces)")
    text = trace.get("text")
    if not isinstance(text, str):
        steps = trace.get("steps")
        if not isinstance(steps, list):
            raise ValueError("a trace needs a string 'text' or a list 'steps'")
        text = " ".join(steps)
    fmt = model.resolve_format(format)
    head = format_trace_prompt(model, trace["prompt"], fmt)
    enc = model.tokenizer(head + text, add_special_tokens=fmt == "raw", return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    first = next((i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > len(head) and e > s), len(ids))
    return ids, first


def token_activations(
    model: Any,
    traces: Sequence[Mapping[str, Any]],
    *,
    site: str = "resid_post",
    layer: int,
    trace_ids: Sequence[str] | None = None,
    max_tokens: int | None = None,
    progress: bool = True,
) -> StepSet:
    """Activations of every reasoning token at ``site``/``layer`` (one trace a forward, stopped after ``layer``).

    ``max_tokens``: keep at most this many tokens per trace (the first ones).
    """
    from tqdm.auto import tqdm

    from psylens.interventions import StopForward, record, tap

    ids_all = [str(i) for i in range(len(traces))] if trace_ids is None else [str(t) for t in trace_ids]
    rows, tids, pos = [], [], []

    def stop(_s: str, _l: int, _x: Tensor) -> None:
        raise StopForward

    for t, tr in tqdm(list(zip(ids_all, traces)), desc="token activations", disable=not progress, leave=False):
        ids, first = encode_trace(model, tr)
        if first >= len(ids):
            continue
        with torch.no_grad(), record(model, [site], [layer]) as rec, tap(model, [(site, layer)], stop):
            try:
                model.hf_model(input_ids=torch.tensor([ids], device=model.device), use_cache=False)
            except StopForward:
                pass
        a = rec[site, layer][0].flatten(1).float().cpu()[first:]  # [n_reasoning_tokens, d]
        if max_tokens is not None:
            a = a[:max_tokens]
        rows.append(a)
        tids.extend([t] * a.shape[0])
        pos.extend(range(first, first + a.shape[0]))
    if not rows:
        raise ValueError("no reasoning tokens in these traces; are their texts empty?")
    return StepSet(torch.cat(rows), tuple(tids), tuple(pos))


@torch.no_grad()
def ce_loss_recovered(
    model: Any,
    sae: Any,
    traces: Sequence[Mapping[str, Any]],
    *,
    site: str = "resid_post",
    layer: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Cross-entropy on the reasoning tokens: clean, with the SAE's reconstruction spliced in, and zeroed.

    Returns ``ce_clean``, ``ce_sae``, ``ce_zero``, ``ce_loss_recovered`` and ``n_tokens``.
    """
    from tqdm.auto import tqdm

    from psylens.interventions import Intervention, intervene

    sae.eval()

    def reconstruct(x: Tensor) -> Tensor:
        flat = x.reshape(-1, x.shape[-1]).to(sae.W_dec.dtype)
        return sae.decode(sae.encode(flat)).reshape(x.shape).to(x.dtype)

    tot = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    n = 0
    for tr in tqdm(list(traces), desc="CE loss recovered", disable=not progress, leave=False):
        ids, first = encode_trace(model, tr)
        if first >= len(ids) or first < 1:
            continue
        inp = torch.tensor([ids], device=model.device)
        target = inp[0, first:]  # predicted from positions first-1 .. len-2
        positions = (tuple(range(first, len(ids))),)
        variants = {
            "clean": [],
            "sae": [Intervention(site, layer, "replace", value=reconstruct, positions=positions)],
            "zero": [Intervention(site, layer, "zero", positions=positions)],
        }
        for key, ivs in variants.items():
            with intervene(model, ivs):
                logits = model.hf_model(input_ids=inp, use_cache=False).logits[0, first - 1 : -1].float()
            tot[key] += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
        n += int(target.numel())
    if n == 0:
        raise ValueError("no reasoning tokens to score; the traces are empty")
    ce = {k: v / n for k, v in tot.items()}
    denom = ce["zero"] - ce["clean"]
    return {
        "ce_clean": ce["clean"],
        "ce_sae": ce["sae"],
        "ce_zero": ce["zero"],
        "ce_loss_recovered": (ce["zero"] - ce["sae"]) / denom if abs(denom) > 1e-12 else None,
        "n_tokens": n,
    }
