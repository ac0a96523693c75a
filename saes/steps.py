"""One activation vector per reasoning step, read in the context of its whole trace.

>>> from psylens.saes import read_traces, step_activations
>>> acts, index = step_activations(model, read_traces("runs/traces"), layer=12)   # doctest: +SKIP
>>> acts.shape, index[:2]                         # [n_steps, d_model], (trace position, step number)

Each trace runs through the model once, as it was generated: the prompt formatted by
:func:`psylens.saes.traces.format_trace_prompt` (chat template + ``Let's think step by step.``),
then the reasoning as the assistant's text. A step is the character span that
:func:`psylens.saes.segment` gives (or one entry of a dict trace's ``"steps"``); its tokens are
the tokens whose characters overlap the span. ``pooling="delimiter"`` reads the step's last token
(the first position that has seen the whole step — RISE reads the delimiter there);
``pooling="mean"`` averages the step's tokens.

Activations are read through :func:`psylens.interventions.record` at one site and layer; the
forward stops after that layer (:class:`~psylens.interventions.StopForward`), so deeper layers
cost nothing.

Footguns: a token straddling two steps (BPE merges across a boundary, e.g. ``".\\n\\n"``) belongs
to both steps' spans — it is the last token of the first; re-tokenizing the decoded text may
differ from the generated token ids by a token or two at a merge; traces longer than the model's
context raise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from psylens.models import Model

__all__ = ["POOLINGS", "TraceSteps", "trace_steps", "step_activations"]

POOLINGS: tuple[str, ...] = ("delimiter", "mean")


@dataclass(frozen=True)
class TraceSteps:
    """One trace ready to run: the user ``prompt``, the assistant ``text`` and the steps' spans in ``text``."""

    prompt: str
    text: str
    spans: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        for a, b in self.spans:
            if not 0 <= a < b <= len(self.text):
                raise ValueError(f"step span [{a}, {b}) is not a non-empty span of a {len(self.text)}-character text")

    @property
    def steps(self) -> list[str]:
        return [self.text[a:b] for a, b in self.spans]


def trace_steps(trace: Mapping[str, Any], mode: str = "sentence", joiner: str = " ") -> TraceSteps:
    """A trace record (``prompt`` + ``text``, segmented with ``mode``) or a dict ``{"prompt", "steps"}``.

    A dict's steps become the assistant text joined by ``joiner`` (a single space by default; use
    ``"\\n\\n"`` for RISE-style paragraphs).
    """
    from psylens.saes.segment import segment

    if not isinstance(trace, Mapping) or "prompt" not in trace:
        raise ValueError(
            f"a trace must be a record of psylens traces (with 'prompt' and 'text') or a dict "
            f"{{'prompt': str, 'steps': [str, ...]}}; got {type(trace).__name__} "
            f"with keys {sorted(trace) if isinstance(trace, Mapping) else '-'}"
        )
    prompt = trace["prompt"]
    if not isinstance(prompt, str):
        raise ValueError(f"trace 'prompt' must be a string, got {type(prompt).__name__}")
    if "steps" in trace and trace["steps"] is not None:
        steps = list(trace["steps"])
        if not all(isinstance(s, str) and s.strip() for s in steps):
            raise ValueError("every entry of a trace's 'steps' must be a non-empty string")
        spans, pos, parts = [], 0, []
        for i, s in enumerate(steps):
            if i:
                parts.append(joiner)
                pos += len(joiner)
            spans.append((pos, pos + len(s)))
            parts.append(s)
            pos += len(s)
        return TraceSteps(prompt, "".join(parts), tuple(spans))
    if "text" not in trace or not isinstance(trace["text"], str):
        raise ValueError("a trace record needs a string 'text' (the reasoning) or a list 'steps'")
    text = trace["text"]
    return TraceSteps(prompt, text, tuple((s.start, s.end) for s in segment(text, mode)))


def _encode(model: Model, tr: TraceSteps, format: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the formatted prompt + text, and each step's token range [first, last]."""
    from psylens.saes.traces import format_trace_prompt

    fmt = model.resolve_format(format)
    head = format_trace_prompt(model, tr.prompt, fmt)
    full = head + tr.text
    enc = model.tokenizer(full, add_special_tokens=fmt == "raw", return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    ranges: list[tuple[int, int]] = []
    for a, b in tr.spans:
        lo, hi = len(head) + a, len(head) + b
        toks = [i for i, (s, e) in enumerate(offsets) if s < hi and e > lo and e > s]
        if not toks:
            raise ValueError(f"step [{a}, {b}) of a trace maps to no token; is the tokenizer a fast one with offsets?")
        ranges.append((toks[0], toks[-1]))
    return ids, ranges


def step_activations(
    model: Model,
    traces: Sequence[Mapping[str, Any]] | Iterable[Mapping[str, Any]],
    *,
    site: str = "resid_post",
    layer: int,
    pooling: str = "delimiter",
    mode: str = "sentence",
    format: str = "auto",
    batch_size: int = 8,
    progress: bool = True,
) -> tuple[Float[Tensor, "n_steps d"], Int[Tensor, "n_steps 2"]]:
    """``[n_steps, d]`` step vectors (float32, CPU) and their index: row ``i`` is step ``index[i, 1]`` of trace ``index[i, 0]``.

    ``traces``: records of ``psylens traces`` (segmented with ``mode``: ``"sentence"`` or
    ``"paragraph"``) or dicts ``{"prompt": str, "steps": [str, ...]}``. ``trace`` in the index is
    the position in ``traces``; traces without steps contribute no rows. ``site`` is any residual
    or sublayer-output site of :mod:`psylens.sites` (``[.., d]`` shaped; head and neuron sites are
    flattened). Traces are batched by length (right padding; the padding never reaches a step).
    """
    from tqdm.auto import tqdm

    from psylens.interventions import StopForward, record, tap
    from psylens.sites import validate_sites

    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    validate_sites([site])
    n_layers = model.n_layers if hasattr(model, "n_layers") else None
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"layer must be an integer, got {layer!r}")
    if n_layers is not None and not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {n_layers} layers (0–{n_layers - 1})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    items = [trace_steps(t, mode) for t in traces]
    encoded = [_encode(model, tr, format) for tr in items]
    max_len = getattr(model.hf_model.config, "max_position_embeddings", None)
    for i, (ids, _) in enumerate(encoded):
        if max_len is not None and len(ids) > max_len:
            raise ValueError(f"trace {i} has {len(ids)} tokens; the model's context is {max_len}. Shorten it")
    order = sorted((i for i in range(len(items)) if encoded[i][1]), key=lambda i: -len(encoded[i][0]))
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    out: dict[int, Tensor] = {}

    def stop(_site: str, _layer: int, _x: Tensor) -> None:
        raise StopForward

    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="step activations", disable=not progress, leave=False):
        width = max(len(encoded[i][0]) for i in batch)
        ids_BT = torch.full((len(batch), width), pad, dtype=torch.long)
        attn_BT = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):  # right padding: positions are 0.. for every row
            ids = encoded[i][0]
            ids_BT[r, : len(ids)] = torch.tensor(ids)
            attn_BT[r, : len(ids)] = 1
        with torch.no_grad(), record(model, [site], [layer]) as rec, tap(model, [(site, layer)], stop):
            try:
                model.hf_model(input_ids=ids_BT.to(model.device), attention_mask=attn_BT.to(model.device),
                               use_cache=False)
            except StopForward:
                pass
        acts_BTD = rec[site, layer].flatten(2).float().cpu()  # [batch, pos, d]
        for r, i in enumerate(batch):
            rows = []
            for first, last in encoded[i][1]:
                if pooling == "delimiter":
                    rows.append(acts_BTD[r, last])
                else:
                    rows.append(acts_BTD[r, first : last + 1].mean(0))
            out[i] = torch.stack(rows)
    keep = sorted(out)
    if not keep:
        d = model.d_model if hasattr(model, "d_model") else 0
        return torch.zeros((0, d)), torch.zeros((0, 2), dtype=torch.long)
    acts = torch.cat([out[i] for i in keep])
    index = torch.tensor([(i, s) for i in keep for s in range(len(encoded[i][1]))], dtype=torch.long)
    return acts, index
