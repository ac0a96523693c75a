"""Emotion directions: one unit vector per (emotion, layer) at one site, raw norm kept.

>>> dirs = emotion_directions(acts)                    # doctest: +SKIP  mean_diff, centred by scenario
>>> dirs["joy", 12].shape                              # doctest: +SKIP
torch.Size([576])
>>> dirs.save("runs/demo/probes/directions.safetensors")   # doctest: +SKIP
>>> Directions.load("runs/demo/probes/directions.safetensors")["joy", 12]   # doctest: +SKIP

Methods (``method=``):

- ``mean_diff``: class mean minus the mean of the other classes' means. With ``center_by="group"``
  each group's (scenario's) mean over its texts is removed first, so what is shared by a scenario
  (its setting, its wording) cancels and the direction carries the emotion, not the context.
  When every scenario holds every label once (the built-in set), the centring cancels in the
  class-mean differences anyway; it matters for unbalanced sets and for ``pca``/``probe``.
  Raw norm: activation units.
- ``probe``: the class's weight vector of a multinomial logistic probe fitted on all texts
  (mapped back from standardised to activation space, ``w / scale``). Raw norm: inverse activation
  units (a sharper probe has a larger norm); compare norms only within one method.
- ``pca``: first (uncentred) principal component of paired differences, as RepE/repeng do: per
  group, the class's activation minus the mean of the group's other texts (with ``center_by=None``
  or without groups: minus the mean of all other texts). Oriented so the class projects higher.
  Raw norm: mean projection of the differences on the component (activation units).

On disk a ``Directions`` is one safetensors file (``vectors [E, L, d]``, ``norms [E, L]``) whose
metadata also holds the JSON description, plus a readable ``.json`` sidecar beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from psylens.activations import Activations
from psylens.io import read_json, write_json, write_tensors

__all__ = ["Directions", "emotion_directions", "METHODS", "FILE_NAME", "class_matrix", "pick_site"]

METHODS = ("mean_diff", "probe", "pca")
CENTER_BY = ("group", None)
FILE_NAME = "directions.safetensors"
_META_KEY = "psylens_directions"
_FORMAT = 1


@dataclass(frozen=True, eq=False)
class Directions:
    """Unit directions ``vectors [emotion, layer, d]`` of one ``site`` with their raw ``norms [emotion, layer]``.

    ``dirs["joy", 12]`` is the unit ``[d]`` vector (a copy: changing it leaves ``dirs`` intact);
    ``dirs.raw("joy", 12)`` is that vector times its raw norm; ``dirs.at_layer(12)`` stacks all
    emotions ``[E, d]``. ``model`` is the spec of the model the activations came from.
    Unknown emotions or layers raise ``ValueError`` listing the valid ones.
    """

    vectors: Float[Tensor, "emotion layer d"]
    norms: Float[Tensor, "emotion layer"]
    emotions: tuple[str, ...]
    layers: tuple[int, ...]
    site: str = "resid_post"
    method: str = "mean_diff"
    center_by: str | None = "group"
    model: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "emotions", tuple(str(e) for e in self.emotions))
        object.__setattr__(self, "layers", tuple(int(v) for v in self.layers))
        if not isinstance(self.vectors, Tensor) or self.vectors.ndim != 3:
            raise ValueError(
                f"vectors must be a tensor [emotion, layer, d], got "
                f"{list(self.vectors.shape) if isinstance(self.vectors, Tensor) else type(self.vectors).__name__}"
            )
        e, n_l, _ = self.vectors.shape
        if (e, n_l) != (len(self.emotions), len(self.layers)):
            raise ValueError(
                f"vectors have shape {list(self.vectors.shape)} but there are {len(self.emotions)} emotions "
                f"and {len(self.layers)} layers; give vectors [len(emotions), len(layers), d]"
            )
        if tuple(self.norms.shape) != (e, n_l):
            raise ValueError(f"norms have shape {list(self.norms.shape)}; expected [{e}, {n_l}] (emotion, layer)")
        for name, seq in (("emotions", self.emotions), ("layers", self.layers)):
            if len(set(seq)) != len(seq):
                raise ValueError(f"{name} has duplicates: {list(seq)}")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {METHODS}")
        lengths = self.vectors.float().norm(dim=-1)
        # a unit vector rounded to 16 bits is off by up to ~2e-3 (bfloat16 keeps 8 significant bits)
        tol = 1e-3 if self.vectors.dtype in (torch.float32, torch.float64) else 1e-2
        bad = ((lengths - 1).abs() > tol) & (lengths > 0)
        if bool(bad.any()):
            raise ValueError(
                "vectors must be unit-norm (or zero); build Directions with Directions.from_raw(raw, ...) "
                "to normalise raw vectors and keep their norms"
            )

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_raw(
        cls,
        raw: Float[Tensor, "emotion layer d"],
        emotions: Sequence[str],
        layers: Sequence[int],
        **kwargs: Any,
    ) -> Directions:
        """Normalise raw vectors to unit length, keeping the norms (zero vectors stay zero)."""
        norms = raw.norm(dim=-1)
        unit = raw / norms.clamp_min(1e-30).unsqueeze(-1)
        unit = torch.where((norms > 0).unsqueeze(-1), unit, torch.zeros_like(unit))
        return cls(vectors=unit, norms=norms, emotions=tuple(emotions), layers=tuple(layers), **kwargs)

    # -- access -----------------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        """Width of each vector (d_model for residual sites; d_mlp or n_heads·d_head for others)."""
        return int(self.vectors.shape[-1])

    def emotion_index(self, emotion: str) -> int:
        try:
            return self.emotions.index(emotion)
        except ValueError:
            raise ValueError(f"unknown emotion {emotion!r}; these directions have {list(self.emotions)}") from None

    def layer_index(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise ValueError(f"layer must be an int, got {layer!r}; valid layers: {_span(self.layers)}")
        try:
            return self.layers.index(int(layer))
        except ValueError:
            raise ValueError(f"layer {layer} has no direction; valid layers: {_span(self.layers)}") from None

    def __getitem__(self, key: tuple[str, int] | str) -> Tensor:
        """``dirs["joy", 12]`` → unit ``[d]``; ``dirs["joy"]`` → ``[L, d]`` over all layers. Copies."""
        if isinstance(key, str):
            return self.vectors[self.emotion_index(key)].clone()
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"index directions as dirs[emotion, layer] (e.g. dirs['joy', 12]), got {key!r}")
        emotion, layer = key
        return self.vectors[self.emotion_index(emotion), self.layer_index(layer)].clone()

    def norm(self, emotion: str, layer: int) -> float:
        """Raw norm of the direction before normalisation (units depend on ``method``)."""
        return float(self.norms[self.emotion_index(emotion), self.layer_index(layer)])

    def raw(self, emotion: str, layer: int) -> Float[Tensor, " d"]:
        """The direction at its raw length (``dirs[e, l] * dirs.norm(e, l)``)."""
        return self[emotion, layer] * self.norm(emotion, layer)

    def at_layer(self, layer: int) -> Float[Tensor, "emotion d"]:
        """All emotions' unit directions at ``layer`` (a copy)."""
        return self.vectors[:, self.layer_index(layer)].clone()

    def cosine(self, layer: int) -> Float[Tensor, "emotion emotion"]:
        """Cosine similarity between the emotions' directions at ``layer``."""
        v = self.vectors[:, self.layer_index(layer)].float()
        return v @ v.T

    def project(self, x: Float[Tensor, "n d"], layer: int) -> Float[Tensor, "n emotion"]:
        """Projection of activations ``x`` (taken at ``layer``) on each emotion's unit direction."""
        if x.ndim != 2 or x.shape[1] != self.d_model:
            raise ValueError(f"expected activations [n, {self.d_model}] at layer {layer}, got {list(x.shape)}")
        return x.float() @ self.vectors[:, self.layer_index(layer)].float().T

    def select(self, emotions: Sequence[str] | None = None, layers: Sequence[int] | None = None) -> Directions:
        """A new ``Directions`` with only these emotions and/or layers (in the given order)."""
        ei = [self.emotion_index(e) for e in emotions] if emotions is not None else list(range(len(self.emotions)))
        li = [self.layer_index(v) for v in layers] if layers is not None else list(range(len(self.layers)))
        return replace(
            self,
            vectors=self.vectors[ei][:, li].clone(),
            norms=self.norms[ei][:, li].clone(),
            emotions=tuple(self.emotions[i] for i in ei),
            layers=tuple(self.layers[i] for i in li),
        )

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Directions:
        """A new ``Directions`` on ``device`` / in ``dtype`` (this one is unchanged).

        A change of dtype re-normalises the rows in the new dtype, so that bfloat16 directions cast back to float32
        are unit vectors again (rounding to 16 bits moves a unit vector's length by up to ~2e-3).
        """
        from psylens.precision import wide

        v = self.vectors.to(device=device)
        if dtype is not None and dtype != v.dtype:
            w = wide(v)
            n = w.norm(dim=-1, keepdim=True)
            v = torch.where(n > 0, w / n.clamp_min(1e-30), w).to(dtype)
        return replace(self, vectors=v, norms=self.norms.to(device=device))

    def __len__(self) -> int:
        return len(self.emotions)

    def __repr__(self) -> str:
        return (
            f"Directions(method={self.method!r}, site={self.site!r}, emotions={list(self.emotions)}, "
            f"layers={_span(self.layers)}, d_model={self.d_model}, model={self.model!r})"
        )

    # -- storage ----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The JSON description saved beside the tensors."""
        return {
            "format": _FORMAT,
            "kind": "psylens.probes.Directions",
            "emotions": list(self.emotions),
            "layers": list(self.layers),
            "site": self.site,
            "method": self.method,
            "center_by": self.center_by,
            "model": self.model,
            "d_model": self.d_model,
            "meta": dict(self.meta),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (``.safetensors``; a directory gets ``directions.safetensors``) and its ``.json`` sidecar."""
        p = Path(path)
        if p.is_dir() or p.suffix == "":
            p = p / FILE_NAME
        if p.suffix != ".safetensors":
            raise ValueError(f"save directions to a .safetensors file (or a directory), got {str(path)!r}")
        desc = self.describe()
        write_tensors(
            p,
            {"vectors": self.vectors.float(), "norms": self.norms.float()},
            metadata={_META_KEY: json.dumps(desc, default=str)},
        )
        write_json(p.with_suffix(".json"), desc)
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Directions:
        """Read directions written by :meth:`save` (a ``.safetensors`` file, or a directory holding one)."""
        from safetensors import safe_open

        p = Path(path)
        if p.is_dir():
            p = p / FILE_NAME
        if not p.is_file():
            raise ValueError(
                f"no directions at {str(path)!r}; give the directions.safetensors a probe run wrote "
                "(RUN/probes/directions.safetensors) or a directory that holds one"
            )
        from psylens.tensorfile import explain, parse_json_metadata

        why = explain(p)  # truncated, pickle, torch.save, garbage: say what the file is
        if why is not None:
            raise ValueError(why)
        try:
            with safe_open(str(p), framework="pt", device=str(device)) as f:
                meta = f.metadata() or {}
                names = set(f.keys())
                if not {"vectors", "norms"} <= names:
                    raise ValueError(f"{str(p)!r} is not a directions file: it holds {sorted(names)}, not vectors and norms")
                vectors, norms = f.get_tensor("vectors"), f.get_tensor("norms")
        except ValueError:
            raise
        except Exception as e:  # SafetensorError, a bad device
            raise ValueError(f"{str(p)!r}: cannot read it as a directions file ({e})") from None
        if _META_KEY in meta:
            desc = parse_json_metadata(meta[_META_KEY], repr(str(p)), "directions description")
        elif p.with_suffix(".json").is_file():
            try:
                desc = read_json(p.with_suffix(".json"))
            except RecursionError:
                raise ValueError(f"{str(p.with_suffix('.json'))!r} is JSON nested too deeply to read") from None
            if not isinstance(desc, dict):
                raise ValueError(f"{str(p.with_suffix('.json'))!r} should hold a JSON object, got {type(desc).__name__}")
        else:
            raise ValueError(f"{str(p)!r} has no description (metadata or .json sidecar); it was not written by Directions.save")
        for key in ("emotions", "layers"):
            if not isinstance(desc.get(key), list):
                raise ValueError(f"{str(p)!r}: its description needs a list {key!r}, got {desc.get(key)!r}; "
                                 "the file is corrupt or not written by Directions.save")
        for key in ("site", "method", "center_by", "model"):
            if desc.get(key) is not None and not isinstance(desc[key], str):
                raise ValueError(f"{str(p)!r}: {key!r} in its description should be a string, got {desc[key]!r}")
        if not isinstance(desc.get("meta", {}), dict):
            raise ValueError(f"{str(p)!r}: 'meta' in its description should be an object")
        try:
            return cls(
                vectors=vectors,
                norms=norms,
                emotions=tuple(desc["emotions"]),
                layers=tuple(desc["layers"]),
                site=desc.get("site", "resid_post"),
                method=desc.get("method", "mean_diff"),
                center_by=desc.get("center_by"),
                model=desc.get("model"),
                meta=desc.get("meta", {}),
            )
        except (ValueError, TypeError) as e:
            raise ValueError(f"{str(p)!r} holds invalid directions: {e}") from None


# --------------------------------------------------------------------------------------------
# building directions
# --------------------------------------------------------------------------------------------
def _span(layers: Sequence[int]) -> str:
    ls = list(layers)
    if len(ls) > 3 and ls == list(range(ls[0], ls[-1] + 1)):
        return f"{ls[0]}–{ls[-1]}"
    return str(ls)


def pick_site(acts: Activations, site: str | None) -> str:
    """``site`` checked against ``acts``; ``None`` means the only site harvested."""
    if site is None:
        if len(acts.sites) != 1:
            raise ValueError(f"these activations have several sites {acts.sites}; pass site= one of them")
        return acts.sites[0]
    if site not in acts.tensors:
        raise ValueError(f"site {site!r} was not harvested; these activations have {acts.sites}")
    return site


def class_matrix(
    acts: Activations, site: str | None = None, labels: Sequence[str] | None = None, *, what: str = "directions"
) -> tuple[str, Float[Tensor, "n layer d"], np.ndarray, list[str], list[int]]:
    """``(site, X [n, L, d], y [n], classes, rows)`` for the labelled stimuli (restricted to ``labels``).

    Rows without a label (or, with ``labels``, with another label) are left out; ``rows`` are their
    indices in ``acts``. Raises ``ValueError`` for per-token activations or fewer than two classes.
    """
    site = pick_site(acts, site)
    if acts.positions == "all":
        raise ValueError(
            f"{what} need one activation per text, but these were harvested with positions='all'; "
            "harvest with positions='last' (or 'mean')"
        )
    present = sorted({lab for lab in acts.labels if lab is not None})
    if not present:
        raise ValueError(f"{what} need labelled texts, but none of the {len(acts)} stimuli has a label")
    if labels is not None:
        labels = list(dict.fromkeys(labels))
        unknown = [lab for lab in labels if lab not in present]
        if unknown:
            raise ValueError(f"labels {unknown} do not occur in these activations; present labels: {present}")
        classes = labels
    else:
        classes = present
    if len(classes) < 2:
        raise ValueError(
            f"{what} need at least two labels to contrast, but only {classes} is present "
            f"({sum(lab == classes[0] for lab in acts.labels)} texts); add texts of other labels"
        )
    index = {c: i for i, c in enumerate(classes)}
    rows = [i for i, lab in enumerate(acts.labels) if lab in index]
    x = acts[site][rows]
    if x.ndim == 4:  # head_out [n, L, heads, d_head] -> concatenated heads
        x = x.flatten(2)
    y = np.array([index[acts.labels[i]] for i in rows], dtype=np.int64)
    return site, x.float(), y, classes, rows


def group_ids(acts: Activations, rows: Sequence[int], *, what: str) -> np.ndarray:
    """Integer group of each row; ``ValueError`` naming how many rows lack a group."""
    groups = [acts.groups[i] for i in rows]
    missing = [acts.ids[r] for r, g in zip(rows, groups) if g is None]
    if missing:
        raise ValueError(
            f"{what} needs a group (scenario) for every text, but {len(missing)} of {len(rows)} have none "
            f"(first: {missing[0]!r}); give each JSONL line a 'group', or pass center_by=None / cv='text'"
        )
    _, inverse = np.unique(np.array(groups, dtype=object).astype(str), return_inverse=True)
    return inverse.astype(np.int64)


def center_groups(x: Float[Tensor, "n layer d"], groups: np.ndarray) -> Float[Tensor, "n layer d"]:
    """Subtract each group's mean (over its rows) from its rows."""
    g = torch.from_numpy(groups)
    n_groups = int(g.max()) + 1
    sums = torch.zeros((n_groups, *x.shape[1:]), dtype=x.dtype).index_add_(0, g, x)
    counts = torch.bincount(g, minlength=n_groups).to(x.dtype)
    means = sums / counts.view(-1, *([1] * (x.ndim - 1)))
    return x - means[g]


def _model_spec(meta: Mapping[str, Any]) -> str | None:
    m = meta.get("model")
    if isinstance(m, Mapping):
        return str(m.get("spec") or m.get("name") or "") or None
    return str(m) if m else None


def emotion_directions(
    acts: Activations,
    *,
    method: str = "mean_diff",
    center_by: str | None = "group",
    site: str | None = None,
    labels: Sequence[str] | None = None,
    seed: int = 0,
) -> Directions:
    """One unit direction per label and layer from labelled activations (see the module doc for methods).

    Args:
        acts: per-text activations (``positions="last"`` or ``"mean"``), labelled; unlabelled rows are ignored.
        method: ``"mean_diff"`` (default), ``"probe"`` or ``"pca"``.
        center_by: ``"group"`` removes each scenario's mean first (needs a group on every text); ``None`` does not.
        site: which harvested site (``None``: the only one).
        labels: restrict to these labels (default: every label present, e.g. the six emotions and neutral).
        seed: for ``method="probe"``.

    Returns:
        :class:`Directions` over ``labels`` × ``acts.layers``.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}; the default is 'mean_diff'")
    if center_by not in CENTER_BY:
        raise ValueError(f"center_by {center_by!r} is not one of {CENTER_BY}; use 'group' (default) or None")
    site, x, y, classes, rows = class_matrix(acts, site, labels, what="emotion directions")
    groups = group_ids(acts, rows, what="center_by='group'") if center_by == "group" else None
    if groups is not None:
        x = center_groups(x, groups)
    if method == "mean_diff":
        raw = _mean_diff(x, y, len(classes))
    elif method == "probe":
        raw = _probe_weights(x, y, classes, seed)
    else:
        raw = _pca_diff(x, y, len(classes), groups)
    counts = np.bincount(y, minlength=len(classes))
    meta = {
        "n": int(len(y)),
        "n_per_label": {c: int(n) for c, n in zip(classes, counts)},
        "positions": acts.positions,
        "stimuli": acts.meta.get("stimuli") if isinstance(acts.meta.get("stimuli"), (str, type(None))) else None,
    }
    return Directions.from_raw(
        raw,
        classes,
        acts.layers,
        site=site,
        method=method,
        center_by=center_by,
        model=_model_spec(acts.meta),
        meta=meta,
    )


def _class_means(x: Tensor, y: np.ndarray, k: int) -> Tensor:
    yt = torch.from_numpy(y)
    sums = torch.zeros((k, *x.shape[1:]), dtype=torch.float64).index_add_(0, yt, x.double())
    counts = torch.bincount(yt, minlength=k).double()
    return sums / counts.view(-1, 1, 1)  # [K, L, d]


def _mean_diff(x: Tensor, y: np.ndarray, k: int) -> Tensor:
    means = _class_means(x, y, k)
    others = (means.sum(0, keepdim=True) - means) / (k - 1)
    return (means - others).float()


def _probe_weights(x: Tensor, y: np.ndarray, classes: list[str], seed: int) -> Tensor:
    from psylens.probes.classifiers import train_logistic_many

    k, n_layers = len(classes), x.shape[1]
    layers = [x[:, li].contiguous() for li in range(n_layers)]
    probes = train_logistic_many(layers, [y] * n_layers, classes)
    raw = torch.zeros(k, n_layers, x.shape[2])
    for li, probe in enumerate(probes):
        w = probe.params["weight"] / probe.scale  # standardised → activation space
        raw[:, li] = w - w.mean(0, keepdim=True)  # multinomial weights are defined up to a shared shift
    return raw


def _pca_diff(x: Tensor, y: np.ndarray, k: int, groups: np.ndarray | None) -> Tensor:
    xd = x.double()
    n_layers, d = x.shape[1], x.shape[2]
    raw = torch.zeros(k, n_layers, d)
    for c in range(k):
        diffs: list[Tensor] = []
        if groups is not None:
            for g in np.unique(groups[y == c]):
                in_g = groups == g
                pos, neg = in_g & (y == c), in_g & (y != c)
                if neg.any():
                    diffs.append(xd[torch.from_numpy(pos)].mean(0) - xd[torch.from_numpy(neg)].mean(0))
        if not diffs:  # no groups (or no group with other labels): pair with the mean of all other texts
            neg_mean = xd[torch.from_numpy(y != c)].mean(0)
            diffs = [row - neg_mean for row in xd[torch.from_numpy(y == c)]]
        dmat = torch.stack(diffs)  # [m, L, d]
        for li in range(n_layers):
            m = dmat[:, li]
            _, _, vh = torch.linalg.svd(m, full_matrices=False)
            v = vh[0]
            proj = m @ v
            if proj.mean() < 0:
                v, proj = -v, -proj
            raw[c, li] = (v * proj.mean()).float()
    return raw
