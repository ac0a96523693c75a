"""The emotion signal a circuit is a circuit *for*, and the edits (ablation, enhancement) that move it.

For emotion ``e`` with unit direction ``v`` at read-out layer ``L``, each stimulus ``i`` has a
projection ``p_i`` = mean over the stimulus' own text tokens of ``resid_post[L] · v`` (``prepare(...,
readout="last")``: at its last text token only, as probes read with ``--positions last``). The signal is
group-centred like the directions are: per scenario ``g``, ``p(e, g)`` minus the mean of ``p`` over the
other emotions' stimuli of ``g``, averaged over scenarios. It is linear in the projections,
``S = Σ_i w_i p_i`` with the weights of :func:`contrast_weights`, so it can be accumulated batch by
batch and differentiated in one backward pass. An edit's **drop** is ``1 − S_after / S_before``.

Every read and edit goes through :mod:`psylens.interventions`: :func:`projections` taps
``resid_post`` at ``L`` and stops the forward there (layers above ``L`` cannot change the signal),
and edits are :class:`~psylens.interventions.Intervention` s on ``head_out`` / ``mlp_post`` units at
the stimuli's text positions only (the chat-template tokens around a text are the same for every
stimulus, carry no contrast, and hold attention-sink activations that a mean would wreck).

Footgun: the tokens edited are the text's own tokens (``positions`` per row); a baseline mean is
taken over the neutral stimuli's text tokens, so a "mean ablation" writes a text-token mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from psylens.interventions import Intervention, StopForward, intervene, tap
from psylens.precision import wide

__all__ = [
    "Batch",
    "Prepared",
    "READOUTS",
    "prepare",
    "contrast_weights",
    "is_grouped",
    "Units",
    "Baseline",
    "Edit",
    "projections",
    "signal",
    "drop",
    "edit_interventions",
    "masked",
    "unit_baseline",
    "scenario_baseline",
    "unit_contrast",
    "unit_means",
    "unit_widths",
]

Unit = tuple[str, int, int]  # (site "head_out" | "mlp_post", layer, index)
EDIT_OPS = ("zero", "mean", "scale")
READOUTS = ("mean", "last")  # where a stimulus' projection is read: every text token, or the last


@dataclass(frozen=True, eq=False)
class Batch:
    """Right-padded token ids of some stimuli; ``text_mask`` marks each row's own text tokens (what edits
    touch), ``read_mask`` the tokens the read-out averages (``None``: the text tokens)."""

    rows: tuple[int, ...]  # indices into the Prepared set
    input_ids: Tensor  # [b, t] long
    attention_mask: Tensor  # [b, t] long
    text_mask: Tensor  # [b, t] bool
    read_mask: Tensor | None = None  # [b, t] bool

    @property
    def readout_mask(self) -> Tensor:
        """``[b, t]`` bool: where the projection is read (:data:`READOUTS`: every text token, or the last)."""
        return self.text_mask if self.read_mask is None else self.read_mask

    @property
    def positions(self) -> tuple[tuple[int, ...], ...]:
        """Per row, the absolute positions of the text's tokens (what edits touch)."""
        return tuple(tuple(int(p) for p in torch.nonzero(r).flatten().tolist()) for r in self.text_mask)


@dataclass(frozen=True, eq=False)
class Prepared:
    """Stimuli tokenized once: texts, labels, groups, ids and their batches."""

    texts: tuple[str, ...]
    labels: tuple[str | None, ...]
    groups: tuple[str | None, ...]
    ids: tuple[str, ...]
    batches: tuple[Batch, ...]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def readout(self) -> str:
        """``"mean"`` or ``"last"`` (:data:`READOUTS`): where each stimulus' projection is read."""
        return str(getattr(self, "_readout", "mean"))

    def subset(self, keep: Sequence[int], model: Any, batch_size: int = 16) -> Prepared:
        """The stimuli at ``keep`` (re-batched)."""
        return prepare(model, [self.texts[i] for i in keep], labels=[self.labels[i] for i in keep],
                       groups=[self.groups[i] for i in keep], ids=[self.ids[i] for i in keep], batch_size=batch_size,
                       format=getattr(self, "_format", "auto"), readout=self.readout)


def prepare(
    model: Any,
    texts: Sequence[str],
    *,
    labels: Sequence[str | None] | None = None,
    groups: Sequence[str | None] | None = None,
    ids: Sequence[str] | None = None,
    batch_size: int = 16,
    format: str = "auto",
    readout: str = "mean",
) -> Prepared:
    """Tokenize ``texts`` as the model sees them (:func:`psylens.harvest.encode`: the chat template for
    an instruct model, cut after the text) into right-padded batches sorted by length. ``readout``
    (:data:`READOUTS`): each stimulus' projection is the mean over its text tokens (``"mean"``) or its
    last text token's (``"last"``), as ``psylens probe --positions`` reads; edits touch every text token."""
    from psylens.harvest import encode

    if readout not in READOUTS:
        raise ValueError(f"readout {readout!r} is not one of {READOUTS}: mean (over each text's tokens) or last "
                         "(its last token), as the probes' --positions")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    texts = list(texts)
    if not texts:
        raise ValueError("no stimuli given; pass one or more texts")
    n = len(texts)
    labels = list(labels) if labels is not None else [None] * n
    groups = list(groups) if groups is not None else [None] * n
    ids = list(ids) if ids is not None else [f"s{i}" for i in range(n)]
    if not len(labels) == len(groups) == len(ids) == n:
        raise ValueError(f"labels ({len(labels)}), groups ({len(groups)}) and ids ({len(ids)}) must match the {n} texts")
    encs = [encode(model, t, format=format) for t in texts]
    pad = model.tokenizer.pad_token_id
    pad = 0 if pad is None else int(pad)
    order = sorted(range(n), key=lambda i: len(encs[i].ids))
    batches = []
    for s in range(0, n, batch_size):
        idx = order[s : s + batch_size]
        t = max(len(encs[i].ids) for i in idx)
        ids_t = torch.full((len(idx), t), pad, dtype=torch.long)
        att = torch.zeros((len(idx), t), dtype=torch.long)
        txt = torch.zeros((len(idx), t), dtype=torch.bool)
        for r, i in enumerate(idx):
            e = encs[i]
            ids_t[r, : len(e.ids)] = torch.tensor(e.ids)
            att[r, : len(e.ids)] = 1
            txt[r, e.text_start : len(e.ids)] = True
        read = None
        if readout == "last":
            read = torch.zeros_like(txt)
            for r, i in enumerate(idx):
                read[r, len(encs[i].ids) - 1] = True
        batches.append(Batch(tuple(idx), ids_t, att, txt, read))
    out = Prepared(tuple(texts), tuple(labels), tuple(groups), tuple(ids), tuple(batches))
    object.__setattr__(out, "_format", format)
    object.__setattr__(out, "_readout", readout)
    return out


def contrast_weights(
    labels: Sequence[str | None],
    groups: Sequence[str | None],
    emotion: str,
    emotions: Sequence[str],
    *,
    pooled: bool = False,
) -> np.ndarray:
    """Weights ``w`` with ``S = Σ_i w_i p_i`` = mean over scenarios of ``p(emotion)`` minus the mean ``p`` of
    the other ``emotions`` in that scenario. Stimuli of other labels (e.g. ``neutral``) and scenarios
    lacking the emotion or every other emotion get weight 0. ``ValueError`` when no scenario qualifies,
    unless ``pooled``: then the whole set is one group (mean of ``emotion``'s stimuli minus the mean of the
    others' — for files whose texts share no scenario, e.g. one group per text; not centred on scenarios)."""
    if emotion not in emotions:
        raise ValueError(f"emotion {emotion!r} is not among the contrasted emotions {list(emotions)}")
    labels, groups = list(labels), list(groups)
    by_group: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g if g is not None else f"__row{i}", []).append(i)
    w = np.zeros(len(labels))
    usable = []
    for rows in by_group.values():
        own = [i for i in rows if labels[i] == emotion]
        other = [i for i in rows if labels[i] in emotions and labels[i] != emotion]
        if own and other:
            usable.append((own, other))
    if not usable and pooled:
        own = [i for i, lab in enumerate(labels) if lab == emotion]
        other = [i for i, lab in enumerate(labels) if lab in emotions and lab != emotion]
        if own and other:
            usable = [(own, other)]
    if not usable:
        raise ValueError(
            f"no scenario (group) holds both {emotion!r} and another of {list(emotions)}; the signal needs "
            "stimuli of several emotions per scenario (the built-in 'emotions' set has all six), or pooled=True"
        )
    g_n = len(usable)
    for own, other in usable:
        w[own] += 1.0 / (g_n * len(own))
        w[other] -= 1.0 / (g_n * len(other))
    return w


def is_grouped(labels: Sequence[str | None], groups: Sequence[str | None], emotions: Sequence[str]) -> bool:
    """Whether some scenario (group) holds stimuli of two or more of ``emotions`` (else the signal is pooled)."""
    seen: dict[Any, set[str]] = {}
    for lab, g in zip(labels, groups):
        if g is not None and lab in emotions:
            seen.setdefault(g, set()).add(str(lab))
    return any(len(v) >= 2 for v in seen.values())


@dataclass(frozen=True)
class Units:
    """A set of units: heads ``(layer, head)`` and neurons ``(layer, neuron)``."""

    heads: tuple[tuple[int, int], ...] = ()
    neurons: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple((int(a), int(b)) for a, b in self.heads))
        object.__setattr__(self, "neurons", tuple((int(a), int(b)) for a, b in self.neurons))
        for name in ("heads", "neurons"):
            v = getattr(self, name)
            if len(set(v)) != len(v):
                raise ValueError(f"{name} has duplicates")

    def __len__(self) -> int:
        return len(self.heads) + len(self.neurons)

    def units(self) -> list[Unit]:
        return [("head_out", layer, h) for layer, h in self.heads] + [("mlp_post", layer, n) for layer, n in self.neurons]

    def by_site(self) -> dict[tuple[str, int], list[int]]:
        out: dict[tuple[str, int], list[int]] = {}
        for site, layer, i in self.units():
            out.setdefault((site, layer), []).append(i)
        return out

    @classmethod
    def from_units(cls, units: Sequence[Unit]) -> Units:
        return cls(heads=tuple((layer, i) for s, layer, i in units if s == "head_out"),
                   neurons=tuple((layer, i) for s, layer, i in units if s == "mlp_post"))


@dataclass(frozen=True, eq=False)
class Baseline:
    """Per-unit baseline activations: ``heads [n_layers, n_heads, d_head]``, ``neurons [n_layers, d_mlp]``.

    Optionally one baseline per stimulus of one :class:`Prepared` set, e.g. each stimulus' own scenario's
    neutral event (:func:`scenario_baseline`): ``table_heads [n_tables, n_layers, n_heads, d_head]``,
    ``table_neurons [n_tables, n_layers, d_mlp]``, ``row_table`` (per stimulus, its table) and ``row_ids``
    (the set's stimulus ids); ``heads`` / ``neurons`` then hold the pooled mean. :meth:`heads_at` /
    :meth:`neurons_at` give what a batch subtracts or writes; :meth:`check` refuses a per-stimulus
    baseline on another set.
    """

    heads: Float[Tensor, "layer head d_head"]
    neurons: Float[Tensor, "layer d_mlp"]
    table_heads: Float[Tensor, "table layer head d_head"] | None = None
    table_neurons: Float[Tensor, "table layer d_mlp"] | None = None
    row_table: tuple[int, ...] | None = None
    row_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        per = [x is not None for x in (self.table_heads, self.table_neurons, self.row_table, self.row_ids)]
        if any(per) and not all(per):
            raise ValueError("a per-stimulus Baseline needs table_heads, table_neurons, row_table and row_ids together")
        if all(per):
            n_t = self.table_heads.shape[0]
            if self.table_neurons.shape[0] != n_t or len(self.row_table) != len(self.row_ids):
                raise ValueError(f"table_heads ({n_t}) and table_neurons ({self.table_neurons.shape[0]}) need one entry "
                                 f"per table, row_table ({len(self.row_table)}) and row_ids ({len(self.row_ids)}) one "
                                 "per stimulus")
            if any(not 0 <= t < n_t for t in self.row_table):
                raise ValueError(f"row_table holds tables outside 0–{n_t - 1}")

    @property
    def per_stimulus(self) -> bool:
        return self.row_ids is not None

    def check(self, data: Prepared) -> None:
        """Raise unless this baseline can be used on ``data`` (a per-stimulus one only on its own set)."""
        if self.row_ids is not None and tuple(data.ids) != self.row_ids:
            raise ValueError(f"this per-stimulus baseline was built for {len(self.row_ids)} other stimuli "
                             f"(ids {list(self.row_ids[:3])}…), not these {len(data)} ({list(data.ids[:3])}…); "
                             "build it on the same Prepared set, or use the pooled unit_baseline")

    def heads_at(self, layer: int, rows: Sequence[int] | None = None) -> Tensor:
        """``[n_heads, d_head]`` (pooled), or ``[b, 1, n_heads, d_head]`` for the stimuli ``rows`` (per stimulus)."""
        if self.table_heads is None or self.row_table is None or rows is None:
            return self.heads[layer]
        return self.table_heads[[self.row_table[r] for r in rows], layer].unsqueeze(1)

    def neurons_at(self, layer: int, rows: Sequence[int] | None = None) -> Tensor:
        """``[d_mlp]`` (pooled), or ``[b, 1, d_mlp]`` for the stimuli ``rows`` (per stimulus)."""
        if self.table_neurons is None or self.row_table is None or rows is None:
            return self.neurons[layer]
        return self.table_neurons[[self.row_table[r] for r in rows], layer].unsqueeze(1)


@dataclass(frozen=True)
class Edit:
    """Change ``units``: ``zero``, ``mean`` (write the baseline) or ``scale`` (multiply by ``factor``)."""

    units: Units
    op: str = "mean"
    factor: float = 1.0

    def __post_init__(self) -> None:
        if self.op not in EDIT_OPS:
            raise ValueError(f"edit op {self.op!r} is not one of {EDIT_OPS}")
        if not np.isfinite(self.factor):
            raise ValueError(f"factor must be finite, got {self.factor}")


def masked(fn: Callable[[Tensor], Tensor], mask: Tensor) -> Callable[[Tensor], Tensor]:
    """An ``op="replace"`` function applying ``fn`` only at the ``[batch, pos]`` positions of ``mask``.

    Explicit per-row ``positions`` cost a Python loop per call in :mod:`psylens.interventions`; a
    mask tensor does the same selection vectorised (the batch's text tokens, built once per batch).
    """
    cache: dict[torch.device, Tensor] = {}

    def f(x: Tensor) -> Tensor:
        m = cache.get(x.device)
        if m is None:
            m = cache[x.device] = mask.to(x.device)
        if m.shape != x.shape[:2]:
            raise ValueError(f"text mask {list(m.shape)} does not match the activation {list(x.shape[:2])}; "
                             "edits built for one batch were used on another")
        new = fn(x)
        return torch.where(m.reshape(*m.shape, *([1] * (x.ndim - 2))), new.to(x.dtype), x)

    return f


def edit_interventions(edit: Edit | None, baseline: Baseline | None, mask: Tensor,
                       rows: Sequence[int] | None = None) -> list[Intervention]:
    """The :class:`Intervention` s of ``edit`` at the ``[batch, pos]`` positions of ``mask`` (``op="replace"``
    with a masked function per site, units selected by the intervention). ``rows``: the batch's stimuli
    (``Batch.rows``), which a per-stimulus baseline needs to write each row its own value."""
    if edit is None or len(edit.units) == 0:
        return []
    out = []
    for (site, layer), idx in sorted(edit.units.by_site().items()):
        if edit.op == "zero":
            fn: Callable[[Tensor], Tensor] = torch.zeros_like
        elif edit.op == "scale":
            factor = float(edit.factor)

            def fn(x: Tensor, factor: float = factor) -> Tensor:
                return x * factor
        else:
            if baseline is None:
                raise ValueError("a mean ablation needs a Baseline (unit_baseline on neutral stimuli)")
            if baseline.per_stimulus and rows is None:
                raise ValueError("a per-stimulus baseline needs the batch's rows (edit_interventions(..., rows=batch.rows))")
            at = baseline.heads_at if site == "head_out" else baseline.neurons_at
            # pooled: [k, d_head] or [k]; per stimulus: [b, 1, k, d_head] or [b, 1, k]
            table = at(layer, rows)
            vals = (table[..., list(idx), :] if site == "head_out" else table[..., list(idx)]).detach()

            def fn(x: Tensor, vals: Tensor = vals) -> Tensor:
                return vals.to(device=x.device, dtype=x.dtype).expand_as(x)
        out.append(Intervention(site, layer, "replace", units=tuple(idx), value=masked(fn, mask)))
    return out


def _forward(model: Any, batch: Batch) -> None:
    hf = model.hf_model if hasattr(model, "hf_model") else model
    dev = hf.get_input_embeddings().weight.device
    pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    hf(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev), position_ids=pos.to(dev), use_cache=False)


def _batches(data: Prepared, progress: bool, desc: str) -> Iterator[Batch]:
    if not progress:
        yield from data.batches
        return
    from tqdm.auto import tqdm

    yield from tqdm(data.batches, desc=desc, leave=False)


@torch.no_grad()
def projections(
    model: Any,
    data: Prepared,
    direction: Float[Tensor, " d_model"],
    layer: int,
    edit: Edit | None = None,
    baseline: Baseline | None = None,
    *,
    extra: Callable[[Batch], list[Intervention]] | None = None,
    progress: bool = False,
) -> Float[Tensor, " n"]:
    """``p_i``: mean over each stimulus' text tokens of ``resid_post[layer] · direction`` (float32, CPU),
    with ``edit`` (and ``extra(batch)`` interventions) applied at the text positions."""
    if baseline is not None:
        baseline.check(data)
    out = torch.zeros(len(data))
    v = direction.detach().float()
    for b in _batches(data, progress, "projections"):
        got: dict[str, Tensor] = {}

        def keep(site: str, lay: int, x: Tensor) -> None:
            got["x"] = x
            raise StopForward

        ivs = edit_interventions(edit, baseline, b.text_mask, b.rows) + (extra(b) if extra is not None else [])
        with intervene(model, ivs), tap(model, [("resid_post", layer)], keep):
            try:
                _forward(model, b)
            except StopForward:
                pass
        x = got["x"].float()
        m = b.readout_mask.to(x.device).float()
        p = ((x @ v.to(x.device)) * m).sum(1) / m.sum(1)
        out[list(b.rows)] = p.cpu()
    return out


def signal(
    model: Any,
    data: Prepared,
    weights: np.ndarray,
    direction: Tensor,
    layer: int,
    edit: Edit | None = None,
    baseline: Baseline | None = None,
    **kw: Any,
) -> float:
    """``S = Σ_i w_i p_i`` (see the module doc) with ``edit`` applied."""
    p = projections(model, data, direction, layer, edit, baseline, **kw)
    return float(torch.from_numpy(np.asarray(weights, dtype=np.float64)) @ p.double())


def drop(before: float, after: float) -> float:
    """``1 − after / before``; NaN when ``before`` is 0."""
    return float("nan") if before == 0 else 1.0 - after / before


@torch.no_grad()
def unit_baseline(model: Any, data: Prepared, layers: Sequence[int], *, progress: bool = False) -> Baseline:
    """Mean ``head_out`` and ``mlp_post`` over ``data``'s text tokens at ``layers`` (zeros elsewhere).

    The baseline of ``atp``, ``patching`` and mean ablation: the issue's "mean over neutral stimuli".
    """
    return unit_means(model, data, layers, progress=progress)


def unit_contrast(model: Any, data: Prepared, weights: np.ndarray, layers: Sequence[int], *,
                  progress: bool = False) -> Baseline:
    """Each unit's own emotion signal: ``Σ_i w_i ā_i``, where ``ā_i`` is the unit's mean ``head_out`` /
    ``mlp_post`` over stimulus ``i``'s text tokens and ``w`` the :func:`contrast_weights` of an emotion.

    With those weights it is, per unit, the mean over scenarios of (the emotion's stimuli minus the other
    emotions' stimuli of the same scenario) — the unit-level analogue of the signal, and the shift that
    ``op="shift"`` circuit modulation adds (:mod:`psylens.circuits.modulation`). Zeros outside ``layers``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(data),) or not np.isfinite(w).all():
        raise ValueError(f"weights must be {len(data)} finite numbers, one per stimulus (contrast_weights gives them); "
                         f"got shape {list(w.shape)}")
    return unit_means(model, data, layers, weights=w, progress=progress)


def unit_widths(model: Any) -> tuple[int, int, int, int]:
    """``(n_layers, n_heads, d_head, d_mlp)`` of a psylens ``Model`` or a Hugging Face causal LM."""
    hf = model.hf_model if hasattr(model, "hf_model") else model
    cfg = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
    n_heads = int(cfg.num_attention_heads)
    d_head = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
    return int(cfg.num_hidden_layers), n_heads, d_head, int(cfg.intermediate_size)


def _unit_reductions(model: Any, data: Prepared, layers: Sequence[int], reduce: Callable[[Batch, Tensor], Tensor],
                     *, progress: bool, desc: str) -> Iterator[tuple[Batch, dict[tuple[str, int], Tensor]]]:
    """Per batch, ``reduce(batch, x)`` of every ``head_out`` / ``mlp_post`` tensor ``x`` (``[b, t, *unit]``) at
    ``layers`` (float64, on the CPU; reduced on the device in float64, float32 on MPS — see
    :mod:`psylens.precision`; the forward stops after the top layer)."""
    n_layers = unit_widths(model)[0]
    layers = sorted(set(int(x) for x in layers))
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise ValueError(f"layers {layers} must be non-empty and within 0–{n_layers - 1}")
    top = max(layers)
    keys = [(s, lay) for lay in layers for s in ("head_out", "mlp_post")]
    for b in _batches(data, progress, desc):
        acc: dict[tuple[str, int], Tensor] = {}

        def keep(site: str, lay: int, x: Tensor, b: Batch = b) -> None:
            acc[(site, lay)] = reduce(b, wide(x)).cpu().double()
            if site == "mlp_post" and lay == top:
                raise StopForward

        with tap(model, keys, keep):
            try:
                _forward(model, b)
            except StopForward:
                pass
        yield b, acc


@torch.no_grad()
def unit_means(model: Any, data: Prepared, layers: Sequence[int], *, weights: np.ndarray | None = None,
               progress: bool = False) -> Baseline:
    """``head_out`` / ``mlp_post`` averaged over ``data``'s text tokens at ``layers`` (zeros elsewhere).

    ``weights`` ``None``: the mean over every text token (:func:`unit_baseline`); else ``Σ_i w_i ā_i`` over
    per-stimulus token means ``ā_i`` (:func:`unit_contrast`).
    """
    n_layers, n_heads, d_head, d_mlp = unit_widths(model)
    heads = torch.zeros(n_layers, n_heads, d_head, dtype=torch.float64)
    neurons = torch.zeros(n_layers, d_mlp, dtype=torch.float64)
    count = 0.0

    def token_weights(b: Batch) -> Tensor:
        """Per row: 1 per token (plain mean) or w_i / n_tokens_i (weighted per-stimulus means)."""
        m = b.text_mask.double()
        if weights is None:
            return m
        wr = torch.as_tensor(weights[list(b.rows)], dtype=torch.float64)
        return m * (wr / m.sum(1).clamp(min=1))[:, None]

    def reduce(b: Batch, x: Tensor) -> Tensor:
        return torch.einsum("bt,bt...->...", token_weights(b).to(x.dtype).to(x.device), x)

    for b, acc in _unit_reductions(model, data, layers, reduce, progress=progress,
                                   desc="baseline" if weights is None else "unit contrast"):
        for (site, lay), a in acc.items():
            (heads if site == "head_out" else neurons)[lay] += a
        count += float(b.text_mask.sum())
    if weights is None:
        heads, neurons = heads / count, neurons / count
    return Baseline(heads=heads.float(), neurons=neurons.float())


@torch.no_grad()
def scenario_baseline(model: Any, data: Prepared, neutral: Prepared, layers: Sequence[int], *,
                      progress: bool = False) -> Baseline:
    """Each stimulus of ``data`` gets its own scenario's neutral event as baseline: the ``head_out`` /
    ``mlp_post`` means over the text tokens of ``neutral``'s stimuli of the same group (several: their
    mean of means). ``heads`` / ``neurons`` hold the pooled mean over all of ``neutral``'s text tokens
    (:func:`unit_baseline`'s), for edits on other sets. Zeros outside ``layers``.

    The issue's option beside "the mean over neutral stimuli": a unit's ``a − baseline`` then compares
    each emotional telling of a scenario with the neutral telling of the *same* scenario, so scenario
    content that every telling shares is not scored as emotion.
    """
    missing = sorted({str(g) for g in data.groups} - {str(g) for g in neutral.groups})
    if any(g is None for g in data.groups) or missing:
        raise ValueError(f"every stimulus needs a scenario (group) with a neutral event; "
                         f"{'some have no group; ' if any(g is None for g in data.groups) else ''}"
                         f"scenarios without one: {missing[:5]}{'…' if len(missing) > 5 else ''}. "
                         "Pass the neutral stimuli of the same scenarios, or use the pooled unit_baseline")
    n_layers, n_heads, d_head, d_mlp = unit_widths(model)
    n = len(neutral)
    row_h = torch.zeros(n, n_layers, n_heads, d_head, dtype=torch.float64)
    row_n = torch.zeros(n, n_layers, d_mlp, dtype=torch.float64)
    tokens = torch.zeros(n, dtype=torch.float64)

    def reduce(b: Batch, x: Tensor) -> Tensor:  # per row: the sum over its text tokens
        return torch.einsum("bt,bt...->b...", b.text_mask.to(x.dtype).to(x.device), x)

    for b, acc in _unit_reductions(model, neutral, layers, reduce, progress=progress, desc="scenario baseline"):
        rows = list(b.rows)
        for (site, lay), a in acc.items():
            (row_h if site == "head_out" else row_n)[rows, lay] = a
        tokens[rows] = b.text_mask.sum(1).double()
    pooled_h = row_h.sum(0) / tokens.sum()
    pooled_n = row_n.sum(0) / tokens.sum()
    mean_h = row_h / tokens.clamp(min=1).view(-1, 1, 1, 1)
    mean_n = row_n / tokens.clamp(min=1).view(-1, 1, 1)
    groups = sorted({str(g) for g in neutral.groups})
    index = {g: k for k, g in enumerate(groups)}
    members = torch.tensor([index[str(g)] for g in neutral.groups])
    size = torch.bincount(members, minlength=len(groups)).double()
    tab_h = torch.zeros(len(groups), *mean_h.shape[1:], dtype=torch.float64).index_add_(0, members, mean_h)
    tab_n = torch.zeros(len(groups), *mean_n.shape[1:], dtype=torch.float64).index_add_(0, members, mean_n)
    tab_h, tab_n = tab_h / size.view(-1, 1, 1, 1), tab_n / size.view(-1, 1, 1)
    return Baseline(heads=pooled_h.float(), neurons=pooled_n.float(), table_heads=tab_h.float(),
                    table_neurons=tab_n.float(), row_table=tuple(index[str(g)] for g in data.groups),
                    row_ids=tuple(data.ids))


def group_labels(data: Prepared) -> Mapping[str, list[int]]:
    """Row indices per label."""
    out: dict[str, list[int]] = {}
    for i, lab in enumerate(data.labels):
        out.setdefault(str(lab), []).append(i)
    return out



