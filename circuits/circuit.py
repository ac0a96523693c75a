"""The :class:`Circuit` value: the heads and neurons that write one emotion, with their scores.

Selection (:class:`Selection`, :func:`select`) ranks units by a signed score (``atp`` by default:
positive units raise the signal) and keeps, per kind (heads, neurons), either the top ``k`` or the
fewest units whose cumulative positive score reaches ``threshold`` × the kind's total positive score
(capped by ``max_heads`` / ``max_neurons``). Mode ``drop`` starts from the threshold candidates and keeps
the fewest of them, heads and neurons merged by score, whose mean ablation removes at least ``drop`` of
the signal on the discovery stimuli — it needs the model, so :func:`select` returns the candidates and
:func:`psylens.circuits.ablation.smallest_prefix` cuts them (the pipeline does both). Saved as ``<emotion>.json`` (everything) plus
``<emotion>.safetensors`` (the unit scores) — no pickle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from psylens.circuits.signal import Units

__all__ = ["Circuit", "Selection", "select"]

MODES = ("threshold", "top_k", "drop")


@dataclass(frozen=True)
class Selection:
    """How units enter a circuit. ``mode``: ``threshold`` (cumulative positive score ≥ ``threshold`` of the
    total), ``top_k`` (``k_heads`` heads and ``k_neurons`` neurons) or ``drop`` (the fewest of the
    threshold candidates whose mean ablation removes ≥ ``drop`` of the *discovery* signal, found by
    bisection on the prefix size; with ``confidence``, e.g. 0.95, the lower end of the drop's two-sided
    scenario-bootstrap interval at that level must reach ``drop``); ``by``: the score ranked."""

    mode: str = "threshold"
    threshold: float = 0.5
    k_heads: int = 10
    k_neurons: int = 100
    max_heads: int = 60
    max_neurons: int = 2000
    by: str = "atp"
    drop: float = 0.5
    confidence: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"selection mode {self.mode!r} is not one of {MODES}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1] (a share of the total positive score), got {self.threshold}")
        if not 0 < self.drop < 1:
            raise ValueError(f"drop must be in (0, 1) (the share of the discovery signal the circuit's ablation "
                             f"must remove), got {self.drop}")
        if self.confidence is not None and not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1) (the level of the discovery drop's interval whose lower "
                             f"end must reach `drop`, e.g. 0.95) or None for the point drop, got {self.confidence}")
        if self.by not in ("atp", "direct", "patching"):
            raise ValueError(f"by {self.by!r} is not one of atp, direct, patching")
        for name in ("k_heads", "k_neurons", "max_heads", "max_neurons"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Selection:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown selection settings {unknown}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**dict(d))


def _pick(scores: Tensor, sel: Selection, kind: str) -> list[tuple[int, int, float]]:
    flat = torch.nan_to_num(scores.double(), nan=0.0).flatten()
    order = torch.argsort(flat, descending=True)
    pos = flat[order]
    n_pos = int((pos > 0).sum())
    cap = sel.max_heads if kind == "heads" else sel.max_neurons
    if sel.mode == "top_k":
        n = min(sel.k_heads if kind == "heads" else sel.k_neurons, flat.numel())
    else:
        total = float(pos[:n_pos].sum())
        if total <= 0:
            n = 0
        else:
            cum = torch.cumsum(pos[:n_pos], 0)
            n = int(torch.searchsorted(cum, torch.tensor(sel.threshold * total, dtype=cum.dtype)).item()) + 1
            n = min(n, n_pos)
    n = min(n, cap)
    width = scores.shape[1]
    return [(int(i) // width, int(i) % width, float(flat[i])) for i in order[:n].tolist()]


@dataclass(frozen=True)
class Circuit:
    """One emotion's circuit: ``heads`` ``((layer, head), …)`` and ``neurons`` ``((layer, neuron), …)`` in
    rank order with their scores (``head_scores``, ``neuron_scores``: the ``selection.by`` score)."""

    emotion: str
    source: str
    readout_layer: int
    heads: tuple[tuple[int, int], ...]
    neurons: tuple[tuple[int, int], ...]
    head_scores: tuple[float, ...] = ()
    neuron_scores: tuple[float, ...] = ()
    selection: Selection = field(default_factory=Selection)
    model: str | None = None
    signal: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "heads", tuple((int(a), int(b)) for a, b in self.heads))
        object.__setattr__(self, "neurons", tuple((int(a), int(b)) for a, b in self.neurons))
        object.__setattr__(self, "head_scores", tuple(float(x) for x in self.head_scores))
        object.__setattr__(self, "neuron_scores", tuple(float(x) for x in self.neuron_scores))
        if not self.emotion or "/" in self.emotion:
            raise ValueError(f"emotion must be a plain name, got {self.emotion!r}")
        if self.readout_layer < 0:
            raise ValueError(f"readout_layer must be non-negative, got {self.readout_layer}")
        if self.head_scores and len(self.head_scores) != len(self.heads):
            raise ValueError(f"{len(self.head_scores)} head scores for {len(self.heads)} heads")
        if self.neuron_scores and len(self.neuron_scores) != len(self.neurons):
            raise ValueError(f"{len(self.neuron_scores)} neuron scores for {len(self.neurons)} neurons")
        for name in ("heads", "neurons"):
            v = getattr(self, name)
            if len(set(v)) != len(v):
                raise ValueError(f"{name} has duplicates")
            if any(a < 0 or b < 0 for a, b in v):
                raise ValueError(f"{name} holds negative indices")
        if not isinstance(self.selection, Selection):
            object.__setattr__(self, "selection", Selection.from_dict(self.selection))

    @property
    def units(self) -> Units:
        return Units(self.heads, self.neurons)

    def top(self, n: int) -> Units:
        """The ``n`` best units, heads and neurons merged by score."""
        both = [(s, "h", u) for s, u in zip(self.head_scores or [0.0] * len(self.heads), self.heads)]
        both += [(s, "n", u) for s, u in zip(self.neuron_scores or [0.0] * len(self.neurons), self.neurons)]
        both.sort(key=lambda t: -t[0])
        keep = both[:n]
        return Units(tuple(u for _, k, u in keep if k == "h"), tuple(u for _, k, u in keep if k == "n"))

    def prefix(self, n: int) -> Circuit:
        """The same circuit cut to its ``n`` best units (heads and neurons merged by score, as :meth:`top`)."""
        if not 0 <= n <= len(self.heads) + len(self.neurons):
            raise ValueError(f"n must be in [0, {len(self.heads) + len(self.neurons)}] (the circuit's units), got {n}")
        keep = self.top(n)
        hs, ns = set(keep.heads), set(keep.neurons)
        h = [(u, s) for u, s in zip(self.heads, self.head_scores or [None] * len(self.heads)) if u in hs]
        m = [(u, s) for u, s in zip(self.neurons, self.neuron_scores or [None] * len(self.neurons)) if u in ns]
        return replace(self, heads=tuple(u for u, _ in h), neurons=tuple(u for u, _ in m),
                       head_scores=tuple(s for _, s in h) if self.head_scores else (),
                       neuron_scores=tuple(s for _, s in m) if self.neuron_scores else ())

    def to_dict(self) -> dict[str, Any]:
        return {
            "emotion": self.emotion, "source": self.source, "readout_layer": int(self.readout_layer),
            "heads": [list(u) for u in self.heads], "neurons": [list(u) for u in self.neurons],
            "n_heads": len(self.heads), "n_neurons": len(self.neurons),
            "head_scores": list(self.head_scores), "neuron_scores": list(self.neuron_scores),
            "selection": self.selection.to_dict(), "model": self.model, "signal": self.signal,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Circuit:
        keys = ("emotion", "source", "readout_layer", "heads", "neurons", "head_scores", "neuron_scores",
                "selection", "model", "signal")
        missing = [k for k in ("emotion", "source", "readout_layer", "heads", "neurons") if k not in d]
        if missing:
            raise ValueError(f"a circuit needs {missing}; got keys {sorted(d)}")
        kw = {k: d[k] for k in keys if k in d}
        if "selection" in kw:
            kw["selection"] = Selection.from_dict(kw["selection"])
        return cls(**kw)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """``path`` (``.json``) plus the scores as ``.safetensors`` beside it."""
        from safetensors.torch import save_file

        from psylens.io import write_json

        p = Path(path)
        write_json(p, self.to_dict())
        save_file({"head_scores": torch.tensor(self.head_scores, dtype=torch.float32).reshape(-1),
                   "neuron_scores": torch.tensor(self.neuron_scores, dtype=torch.float32).reshape(-1),
                   "heads": torch.tensor(self.heads, dtype=torch.int64).reshape(-1, 2),
                   "neurons": torch.tensor(self.neurons, dtype=torch.int64).reshape(-1, 2)},
                  str(p.with_suffix(".safetensors")), metadata={"emotion": self.emotion})
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Circuit:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"no circuit file at {str(p)!r}; psylens circuits writes RUN/circuits/<emotion>.json")
        return cls.from_dict(json.loads(p.read_text()))


def select(emotion: str, source: str, scores: Any, selection: Selection | None = None, *,
           model: str | None = None) -> Circuit:
    """The circuit of ``emotion`` from a :class:`~psylens.circuits.scores.UnitScores` (units above the
    read-out layer never enter)."""
    sel = selection or Selection()
    L = scores.readout_layer
    h = _pick(scores.get(sel.by, "heads")[: L + 1], sel, "heads")
    n = _pick(scores.get(sel.by, "neurons")[: L + 1], sel, "neurons")
    return Circuit(emotion, source, L, tuple((a, b) for a, b, _ in h), tuple((a, b) for a, b, _ in n),
                   tuple(s for *_, s in h), tuple(s for *_, s in n), sel, model=model, signal=float(scores.signal))
