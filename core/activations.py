"""``Activations``: what a harvest keeps — per-site tensors plus the stimuli's labels.

Shapes (n = stimuli, L = layers kept, in ``layers`` order)::

    positions="last" | "mean":  acts[site] -> [n, L, d]            (d = d_model, or d_mlp for mlp_post)
                                acts["head_out"] -> [n, L, n_heads, d_head]
    positions="all":            acts[site] -> [n_tokens, L, d]     one row per text token;
                                ``token_stimulus[r]`` is the stimulus of row r,
                                ``token_position[r]`` its index among that text's tokens.

On disk (a directory, usually ``RUN/activations``)::

    manifest.json            sites, layers, positions, n, shards, config, complete
    rows.json                ids, labels, groups, texts (one entry per stimulus)
    shard-00000.safetensors  tensors "<site>" (+ "token_stimulus", "token_position") for a slice of stimuli
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from psylens.io import read_json, read_tensors, write_json, write_tensors

__all__ = ["Activations", "POSITIONS"]

POSITIONS = ("last", "mean", "all")
MANIFEST = "manifest.json"
ROWS = "rows.json"


@dataclass
class Activations:
    """Activations harvested from a model, with the stimuli they came from.

    ``acts["resid_post"]`` is a ``[n, L, d_model]`` tensor; ``acts.layer("resid_post", 12)``
    is ``[n, d_model]`` at absolute layer 12 (whatever subset of layers was kept).
    """

    tensors: dict[str, Tensor]
    layers: list[int]
    labels: list[str | None]
    groups: list[str | None]
    ids: list[str]
    texts: list[str]
    positions: str = "last"
    token_stimulus: Int[Tensor, " rows"] | None = None
    token_position: Int[Tensor, " rows"] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name, seq in (("labels", self.labels), ("groups", self.groups), ("texts", self.texts)):
            if len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} entries but there are {n} ids; give one per stimulus")
        if self.positions not in POSITIONS:
            raise ValueError(f"positions {self.positions!r} is not one of {POSITIONS}")
        rows = self.n_rows
        for site, t in self.tensors.items():
            if t.shape[0] != rows or t.shape[1] != len(self.layers):
                raise ValueError(
                    f"site {site!r}: tensor shape {tuple(t.shape)} does not match "
                    f"[{rows} rows, {len(self.layers)} layers, ...]"
                )
        if self.positions == "all" and (self.token_stimulus is None or self.token_position is None):
            raise ValueError("positions='all' needs token_stimulus and token_position")

    # -- access -----------------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        return list(self.tensors)

    @property
    def n_rows(self) -> int:
        return len(self.ids) if self.token_stimulus is None else int(self.token_stimulus.shape[0])

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, site: str) -> Tensor:
        try:
            return self.tensors[site]
        except KeyError:
            raise KeyError(f"site {site!r} was not harvested; this object has {self.sites}") from None

    def __contains__(self, site: object) -> bool:
        return site in self.tensors

    def layer_index(self, layer: int) -> int:
        """Position of absolute ``layer`` in ``self.layers``."""
        try:
            return self.layers.index(layer)
        except ValueError:
            raise ValueError(f"layer {layer} was not harvested; harvested layers: {self.layers}") from None

    def layer(self, site: str, layer: int) -> Float[Tensor, "rows ..."]:
        """Activations of ``site`` at absolute ``layer``: ``[rows, d]`` (``[rows, heads, d_head]`` for head_out)."""
        return self[site][:, self.layer_index(layer)]

    @property
    def classes(self) -> list[str]:
        """Sorted distinct labels (``None`` excluded)."""
        return sorted({lab for lab in self.labels if lab is not None})

    def label_ids(self, classes: Sequence[str] | None = None) -> Int[Tensor, " n"]:
        """Integer label per stimulus, indexing ``classes`` (default ``self.classes``)."""
        classes = list(classes) if classes is not None else self.classes
        index = {c: i for i, c in enumerate(classes)}
        missing = sorted({lab for lab in self.labels if lab not in index}, key=str)
        if missing:
            raise ValueError(f"labels {missing} are not in classes {classes}")
        return torch.tensor([index[lab] for lab in self.labels], dtype=torch.long)

    def select(self, index: Sequence[int] | Tensor) -> Activations:
        """A new ``Activations`` with only the stimuli at ``index`` (in that order)."""
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        keep = idx.tolist()
        if self.token_stimulus is None:
            tensors = {k: v[idx] for k, v in self.tensors.items()}
            ts = tp = None
        else:
            remap = torch.full((len(self),), -1, dtype=torch.long)
            remap[idx] = torch.arange(len(keep))
            rows_of = [torch.nonzero(self.token_stimulus == i).flatten() for i in keep]
            rows = torch.cat(rows_of) if rows_of else torch.zeros(0, dtype=torch.long)
            tensors = {k: v[rows] for k, v in self.tensors.items()}
            ts, tp = remap[self.token_stimulus[rows]], self.token_position[rows]  # type: ignore[index]
        return Activations(
            tensors=tensors,
            layers=list(self.layers),
            labels=[self.labels[i] for i in keep],
            groups=[self.groups[i] for i in keep],
            ids=[self.ids[i] for i in keep],
            texts=[self.texts[i] for i in keep],
            positions=self.positions,
            token_stimulus=ts,
            token_position=tp,
            meta=dict(self.meta),
        )

    def reduce(self, positions: str) -> Activations:
        """Per-token activations (``positions="all"``) read out as ``"mean"`` or ``"last"``.

        One ``harvest(..., positions="all")`` then serves several read-outs: ``acts.reduce("mean")``
        equals ``harvest(..., positions="mean")`` and ``acts.reduce("last")`` equals ``positions="last"``
        (within float rounding), at the cost of one forward pass instead of two.
        """
        if self.positions != "all":
            raise ValueError(
                f"reduce needs per-token activations (positions='all'); these are positions={self.positions!r}. "
                "Harvest with positions='all' to read out several ways from one pass."
            )
        if positions not in ("mean", "last"):
            raise ValueError(f"positions {positions!r} is not 'mean' or 'last' (the read-outs of per-token rows)")
        ts, tp = self.token_stimulus, self.token_position
        assert ts is not None and tp is not None  # positions == "all" guarantees both (__post_init__)
        n = len(self)
        counts = torch.bincount(ts, minlength=n)
        if bool((counts == 0).any()):
            empty = torch.nonzero(counts == 0).flatten().tolist()[:5]
            raise ValueError(f"stimuli {empty} have no tokens; cannot read them out as {positions!r}")
        tensors: dict[str, Tensor] = {}
        if positions == "mean":
            for site, t in self.tensors.items():
                sums = torch.zeros((n, *t.shape[1:]), dtype=torch.float32, device=t.device)
                sums.index_add_(0, ts.to(t.device), t.float())
                shape = (n,) + (1,) * (t.dim() - 1)
                tensors[site] = (sums / counts.to(t.device).view(shape)).to(t.dtype)
        else:
            last_pos = torch.full((n,), -1, dtype=tp.dtype).scatter_reduce(0, ts, tp, reduce="amax")
            rows = torch.nonzero(tp == last_pos[ts]).flatten()
            order = ts[rows].argsort()  # one row per stimulus, in stimulus order
            rows = rows[order]
            tensors = {site: t[rows.to(t.device)] for site, t in self.tensors.items()}
        return Activations(
            tensors=tensors, layers=list(self.layers), labels=list(self.labels), groups=list(self.groups),
            ids=list(self.ids), texts=list(self.texts), positions=positions,
            meta={**self.meta, "positions": positions, "reduced_from": "all"},
        )

    def where(self, *, label: str | None = None, group: str | None = None) -> Activations:
        """Stimuli with the given label and/or group."""
        idx = [
            i
            for i in range(len(self))
            if (label is None or self.labels[i] == label) and (group is None or self.groups[i] == group)
        ]
        return self.select(idx)

    def to(self, device: str | torch.device) -> Activations:
        return Activations(
            tensors={k: v.to(device) for k, v in self.tensors.items()},
            layers=list(self.layers), labels=list(self.labels), groups=list(self.groups),
            ids=list(self.ids), texts=list(self.texts), positions=self.positions,
            token_stimulus=self.token_stimulus, token_position=self.token_position, meta=dict(self.meta),
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {list(v.shape)}" for k, v in self.tensors.items())
        return f"Activations(n={len(self)}, positions={self.positions!r}, layers={self.layers}, {shapes})"

    # -- storage ----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to directory ``path`` as one shard (atomic files; safetensors + JSON)."""
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        tensors = dict(self.tensors)
        if self.token_stimulus is not None:
            tensors["token_stimulus"] = self.token_stimulus
            tensors["token_position"] = self.token_position  # type: ignore[assignment]
        write_tensors(p / "shard-00000.safetensors", tensors)
        write_json(p / ROWS, {"ids": self.ids, "labels": self.labels, "groups": self.groups, "texts": self.texts})
        write_json(
            p / MANIFEST,
            {
                "sites": self.sites,
                "layers": self.layers,
                "positions": self.positions,
                "n": len(self),
                "shards": [{"file": "shard-00000.safetensors", "start": 0, "stop": len(self)}],
                "complete": True,
                "meta": self.meta,
            },
        )
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Activations:
        """Load from a directory written by ``save`` or by a (complete) streamed harvest."""
        p = Path(path)
        if not (p / MANIFEST).exists():
            raise ValueError(f"{str(p)!r} holds no activations (no {MANIFEST}); harvest into it first")
        man = read_json(p / MANIFEST)
        if not man.get("complete", False):
            raise ValueError(
                f"the harvest in {str(p)!r} is incomplete — run the same command again to resume "
                f"({_covered(man)} of {man['n']} stimuli done)"
            )
        rows = read_json(p / ROWS)
        parts: dict[str, list[Tensor]] = {}
        ts_parts: list[Tensor] = []
        tp_parts: list[Tensor] = []
        for shard in sorted(man["shards"], key=lambda s: s["start"]):
            f = p / shard["file"]
            if not f.is_file():
                raise ValueError(
                    f"shard {str(f)!r} listed in the manifest is missing; run the same harvest again to re-create it"
                )
            if "bytes" in shard and f.stat().st_size != shard["bytes"]:
                raise ValueError(
                    f"shard {str(f)!r} is {f.stat().st_size} bytes but the manifest recorded {shard['bytes']} "
                    "(truncated or replaced); run the same harvest again to repair it"
                )
            t = read_tensors(f)
            for site in man["sites"]:
                parts.setdefault(site, []).append(t[site])
            if "token_stimulus" in t:
                ts_parts.append(t["token_stimulus"])
                tp_parts.append(t["token_position"])
        tensors = {site: torch.cat(ts) for site, ts in parts.items()}
        return cls(
            tensors=tensors,
            layers=list(man["layers"]),
            labels=rows["labels"],
            groups=rows["groups"],
            ids=rows["ids"],
            texts=rows["texts"],
            positions=man["positions"],
            token_stimulus=torch.cat(ts_parts) if ts_parts else None,
            token_position=torch.cat(tp_parts) if tp_parts else None,
            meta=man.get("meta", {}),
        )


def _covered(manifest: dict[str, Any]) -> int:
    return sum(s["stop"] - s["start"] for s in manifest.get("shards", []))
