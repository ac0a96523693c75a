"""Step activations as SAE training data: :class:`StepSet`, :func:`split_by_trace`, :class:`StepDataProvider`.

>>> acts, index = step_activations(model, traces, layer=12)                      # doctest: +SKIP
>>> steps = StepSet.from_index(acts, index, trace_ids=[t["id"] for t in traces])  # doctest: +SKIP
>>> train_ids, held_ids = split_by_trace(steps.trace_ids, held_out=0.2)          # doctest: +SKIP
>>> provider = StepDataProvider(steps.only(train_ids), batch_size=256)           # doctest: +SKIP
>>> next(provider).shape                                                         # [256, d_model]

SAELens' ``SAETrainer`` takes any iterator of activation batches (its ``DataProvider``);
:class:`StepDataProvider` is that iterator over step vectors: full batches, reshuffled every
epoch, seeded, forever.

.. warning:: Held-out steps must come from held-out *traces*: the steps of one trace share its
   prompt and wording, so splitting steps at random leaks a trace into both halves and inflates
   every held-out number. :func:`split_by_trace` splits by trace id, and
   :class:`StepDataProvider` refuses rows of traces it was told to keep out.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["StepSet", "split_by_trace", "StepDataProvider", "relative_positions"]

_FORMAT_KEY = "psylens_step_set"


def _pairs(index: Any) -> list[tuple[Any, int]]:
    """``(trace, step)`` pairs from a list of pairs, a list of dicts, or a table with those columns."""
    if hasattr(index, "to_dict") and hasattr(index, "columns"):  # a pandas DataFrame
        cols = list(index.columns)
        if "trace" not in cols or "step" not in cols:
            raise ValueError(f"the step index table has columns {cols}; it needs 'trace' and 'step'")
        return [(t, int(s)) for t, s in zip(index["trace"].tolist(), index["step"].tolist())]
    if isinstance(index, Tensor):
        index = index.tolist()
    out: list[tuple[Any, int]] = []
    for i, row in enumerate(index):
        if isinstance(row, dict):
            if "trace" not in row or "step" not in row:
                raise ValueError(f"step index row {i} is {row!r}; give (trace, step) pairs or dicts with 'trace' and 'step'")
            out.append((row["trace"], int(row["step"])))
        else:
            try:
                t, s = row
            except (TypeError, ValueError):
                raise ValueError(f"step index row {i} is {row!r}; give (trace, step) pairs") from None
            out.append((t, int(s)))
    return out


@dataclass(frozen=True, eq=False)
class StepSet:
    """Step vectors with the trace and step each came from.

    Attributes:
        acts: ``[n_steps, d]`` float32.
        trace_ids: trace id of each row (strings; a trace's ``id`` or its position in the traces list).
        steps: step index of each row within its trace (0-based).
    """

    acts: Float[Tensor, "n d"]
    trace_ids: tuple[str, ...]
    steps: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.acts, Tensor) or self.acts.ndim != 2:
            shape = list(self.acts.shape) if isinstance(self.acts, Tensor) else type(self.acts).__name__
            raise ValueError(f"acts must be a [n_steps, d] tensor, got {shape}")
        n = self.acts.shape[0]
        if len(self.trace_ids) != n or len(self.steps) != n:
            raise ValueError(
                f"acts has {n} rows but there are {len(self.trace_ids)} trace ids and {len(self.steps)} step "
                "indices; give one (trace, step) per row"
            )
        acts = self.acts.detach().to("cpu", torch.float32).contiguous()
        if not bool(torch.isfinite(acts).all()):
            raise ValueError("step activations contain NaN or inf; check the model run that produced them")
        object.__setattr__(self, "acts", acts)
        object.__setattr__(self, "trace_ids", tuple(str(t) for t in self.trace_ids))
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))

    @classmethod
    def from_index(
        cls, acts: Float[Tensor, "n d"], index: Any, trace_ids: Sequence[Any] | None = None
    ) -> StepSet:
        """From ``step_activations``' output: ``index`` holds ``(trace, step)`` per row.

        ``trace`` in the index is a position in the traces list when ``trace_ids`` is given (it is
        mapped to ``trace_ids[trace]``), else used as the id itself.
        """
        pairs = _pairs(index)
        if trace_ids is not None:
            ids = list(trace_ids)
            try:
                tids = [ids[int(t)] for t, _ in pairs]
            except (IndexError, ValueError, TypeError):
                raise ValueError(
                    f"the step index refers to traces outside the {len(ids)} trace ids given; "
                    "pass the same traces that made the activations"
                ) from None
        else:
            tids = [t for t, _ in pairs]
        return cls(acts=acts, trace_ids=tuple(tids), steps=tuple(s for _, s in pairs))

    def __len__(self) -> int:
        return int(self.acts.shape[0])

    @property
    def d(self) -> int:
        return int(self.acts.shape[1])

    def unique_traces(self) -> list[str]:
        return sorted(set(self.trace_ids))

    def mask(self, traces: Iterable[str]) -> Tensor:
        """Boolean ``[n_steps]``: rows whose trace is in ``traces``."""
        keep = {str(t) for t in traces}
        return torch.tensor([t in keep for t in self.trace_ids], dtype=torch.bool)

    def select(self, rows: Tensor | Sequence[int]) -> StepSet:
        """The rows ``rows`` (a boolean mask or indices), in order."""
        rows_t = torch.as_tensor(rows)
        idx = torch.nonzero(rows_t).flatten() if rows_t.dtype == torch.bool else rows_t.long()
        ids = idx.tolist()
        return StepSet(self.acts[idx], tuple(self.trace_ids[i] for i in ids), tuple(self.steps[i] for i in ids))

    def only(self, traces: Iterable[str]) -> StepSet:
        """The steps of ``traces``."""
        return self.select(self.mask(traces))

    def positions(self) -> Tensor:
        """Relative position of each step in its trace, in [0, 1] (first step 0, last 1)."""
        return relative_positions(self.trace_ids, self.steps)

    # -- storage ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> Path:
        """One safetensors file: tensor ``acts`` and the index (+ ``meta``) as JSON in its metadata."""
        from psylens.io import write_tensors

        desc = {"format": 1, "trace_ids": list(self.trace_ids), "steps": list(self.steps), "meta": dict(meta or {})}
        return write_tensors(Path(path), {"acts": self.acts}, metadata={_FORMAT_KEY: json.dumps(desc)})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[StepSet, dict[str, Any]]:
        """Read a file written by :meth:`save`: ``(steps, meta)``."""
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise ValueError(f"no step activations at {str(p)!r}")
        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                md = f.metadata() or {}
                acts = f.get_tensor("acts")
        except Exception as e:
            raise ValueError(f"{str(p)!r} is not a readable step-activation file ({e})") from None
        if _FORMAT_KEY not in md:
            raise ValueError(f"{str(p)!r} is not a step-activation file written by StepSet.save")
        desc = json.loads(md[_FORMAT_KEY])
        return cls(acts, tuple(desc["trace_ids"]), tuple(desc["steps"])), dict(desc.get("meta") or {})


def relative_positions(trace_ids: Sequence[str], steps: Sequence[int]) -> Float[Tensor, " n"]:
    """``step / (n_steps_of_its_trace - 1)`` for each row (0 for one-step traces)."""
    last: dict[str, int] = {}
    for t, s in zip(trace_ids, steps):
        last[t] = max(last.get(t, 0), int(s))
    return torch.tensor([int(s) / last[t] if last[t] > 0 else 0.0 for t, s in zip(trace_ids, steps)])


def split_by_trace(trace_ids: Iterable[Any], held_out: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train, held_out)`` trace ids: each trace goes wholly to one side.

    A trace is held out when a hash of ``(seed, id)``, read as a number in [0, 1), is below
    ``held_out``: the share is ``held_out`` on average (not exactly), and appending traces (a
    resumed ``psylens traces``) never moves an old trace across the split. At least one trace is
    held out and one kept for training (the only exception to stability, on tiny runs).
    """
    if not 0.0 < float(held_out) < 1.0:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out!r}; e.g. 0.2 keeps a fifth of traces out")
    ids = sorted({str(t) for t in trace_ids})
    if len(ids) < 2:
        raise ValueError(f"splitting by trace needs at least 2 traces, got {len(ids)}; generate more traces")

    def u(t: str) -> float:
        h = hashlib.sha256(f"{seed}:{t}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    scores = {t: u(t) for t in ids}
    held = [t for t in ids if scores[t] < held_out]
    train = [t for t in ids if scores[t] >= held_out]
    if not held:  # tiny runs: keep one trace out anyway
        held = [min(ids, key=scores.__getitem__)]
        train = [t for t in ids if t != held[0]]
    elif not train:
        train = [max(ids, key=scores.__getitem__)]
        held = [t for t in ids if t != train[0]]
    return sorted(train), sorted(held)


class StepDataProvider(Iterator[Tensor]):
    """SAELens ``DataProvider`` over step vectors: ``next()`` gives a full ``[batch_size, d]`` batch, forever.

    Rows are reshuffled every epoch (seeded); the trailing partial batch of an epoch is carried into
    the next one, so every row is seen equally often and SAELens' sample counts stay exact.

    Args:
        steps: a :class:`StepSet` (or a bare ``[n, d]`` tensor).
        batch_size: rows per batch (at most the number of rows).
        exclude_traces: trace ids that must not be trained on (the held-out traces); a
            ``ValueError`` if any row belongs to one — the split went wrong upstream.
        seed: shuffling seed.
        device: where batches go (SAELens moves them to the SAE's device anyway).
    """

    def __init__(
        self,
        steps: StepSet | Tensor,
        batch_size: int,
        *,
        exclude_traces: Iterable[str] = (),
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(steps, StepSet):
            bad = set(steps.trace_ids) & {str(t) for t in exclude_traces}
            if bad:
                raise ValueError(
                    f"{len(bad)} held-out traces (e.g. {sorted(bad)[:3]}) are in the training steps; "
                    "pass steps.only(train_ids) from split_by_trace"
                )
            acts = steps.acts
        elif isinstance(steps, Tensor) and steps.ndim == 2:
            acts = steps.detach().float()
        else:
            raise ValueError(f"steps must be a StepSet or an [n, d] tensor, got {type(steps).__name__}")
        n = int(acts.shape[0])
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if n < batch_size:
            raise ValueError(f"only {n} training steps for batch_size {batch_size}; lower --batch-size or add traces")
        self.acts = acts.to(device).contiguous()
        self.batch_size = batch_size
        self._gen = torch.Generator().manual_seed(int(seed))
        self._order = torch.randperm(n, generator=self._gen)
        self._pos = 0
        self.epochs = 0

    def __len__(self) -> int:
        return int(self.acts.shape[0])

    def __iter__(self) -> StepDataProvider:
        return self

    def __next__(self) -> Float[Tensor, "batch d"]:
        n, b = len(self), self.batch_size
        if self._pos + b <= n:
            idx = self._order[self._pos : self._pos + b]
            self._pos += b
        else:
            head = self._order[self._pos :]
            self._order = torch.randperm(n, generator=self._gen)
            self.epochs += 1
            take = b - head.numel()
            idx = torch.cat([head, self._order[:take]])
            self._pos = take
        return self.acts[idx.to(self.acts.device)]
