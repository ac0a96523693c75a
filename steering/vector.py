"""``SteeringVector``: an immutable value — per-layer vectors, a scale, a mode and the positions it touches.

>>> dirs = Directions.load("runs/demo/probes/directions.safetensors")            # doctest: +SKIP
>>> sv = SteeringVector.from_directions(dirs, "joy", layers=[12], alpha=4.0)      # doctest: +SKIP
>>> with sv.apply(model):                                                         # doctest: +SKIP
...     text = model.generate("Describe your morning.")
>>> (2.5 * sv - other).save("joy-minus-sadness.safetensors")                      # doctest: +SKIP

What a vector does to the hidden state ``h`` (one token, ``[d_model]``) at each of its layers,
with ``v`` the layer's vector and ``u = v / |v|``:

=========  =============================================  =============================================
mode       update                                         afterwards
=========  =============================================  =============================================
``add``    ``h + alpha * v``                              (contrastive activation addition)
``ablate`` ``h - (h·u) u``                                ``h·u == 0``  (``alpha`` is ignored)
``clamp``  ``h - (h·u) u + alpha * |v| * u``              ``h·u == alpha * |v|``  (``alpha`` for unit ``v``)
=========  =============================================  =============================================

``positions``: ``"all"`` tokens, the ``"prompt"`` tokens only, or only the ``"generated"`` ones
(tokens fed after the prompt while generating with a KV cache). Padded positions are never touched.

``site``: ``"resid_post"`` (the output of decoder layer ``l``, = HF ``hidden_states[l+1]``, default) or
``"resid_pre"`` (its input).

The value is immutable: ``alpha * sv``, ``sv + other``, ``-sv``, :meth:`replace` and :meth:`to` return new
vectors; the tensors are copied on construction so changing the caller's tensor later changes nothing.
On disk a vector is one safetensors file: tensor ``vectors [k, d_model]`` plus a JSON description in
the file's metadata, readable without the model (:meth:`load`, :func:`read_description`).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from psylens.io import write_tensors
from psylens.precision import wide

if TYPE_CHECKING:
    from psylens.steering.apply import SteeringHandle

__all__ = [
    "SteeringVector",
    "MODES",
    "POSITIONS",
    "STEERING_SITES",
    "FORMAT_KEY",
    "read_description",
    "is_steering_vector_file",
    "load_directions",
]

MODES = ("add", "ablate", "clamp")
POSITIONS = ("all", "prompt", "generated")
STEERING_SITES = ("resid_post", "resid_pre")
FORMAT_KEY = "psylens_steering_vector"
_FORMAT = 1


def _check_choice(name: str, value: object, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(map(repr, valid))}")


def _is_scalar(x: object) -> bool:
    """A real number: int, float, numpy scalars (``np.float32(2)``) or a 0-d real tensor; not bool."""
    if isinstance(x, (bool, np.bool_)):
        return False
    if isinstance(x, Tensor):
        return x.ndim == 0 and not x.is_complex() and x.dtype != torch.bool and x.device.type != "meta"
    return isinstance(x, numbers.Real)


def _is_index(x: object) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


# |alpha * v| beyond this overflows float32 once squared (RMSNorm / LayerNorm): NaN logits.
_MAX_SCALE = 1e18


@dataclass(frozen=True, eq=False)
class SteeringVector:
    """Per-layer steering vectors with a scale, a mode, the positions they touch and a site.

    Attributes:
        layers: decoder-layer indices, ascending (``vectors[i]`` belongs to ``layers[i]``).
        vectors: ``[len(layers), d_model]``; not necessarily unit (``from_directions`` gives unit rows).
        alpha: the scale (``add``: added ``alpha * v``; ``clamp``: the projection set to ``alpha * |v|``).
        mode: ``"add"``, ``"ablate"`` or ``"clamp"``.
        positions: ``"all"``, ``"prompt"`` or ``"generated"``.
        site: ``"resid_post"`` (default) or ``"resid_pre"``.
        label: a name, e.g. the emotion (``"joy"``).
        meta: JSON-serialisable notes (where the vector came from, sweep scores, ...).

    Equality is identity (tensors do not compare to a bool); compare with :meth:`equal`.
    """

    layers: tuple[int, ...]
    vectors: Float[Tensor, "k d_model"]
    alpha: float = 1.0
    mode: str = "add"
    positions: str = "all"
    site: str = "resid_post"
    label: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if _is_index(self.layers) or isinstance(self.layers, str) or not isinstance(self.layers, Sequence):
            raise ValueError(f"layers must be a sequence of layer indices such as [12], got {self.layers!r}")
        layers = list(self.layers)
        for layer in layers:
            if not _is_index(layer) or layer < 0:
                raise ValueError(f"layer {layer!r} is not a non-negative integer; give decoder-layer indices like [12]")
        layers = [int(layer) for layer in layers]
        if not layers:
            raise ValueError("a steering vector needs at least one layer; give layers=[12] (for example)")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers has duplicates: {layers}; give each layer once")
        if not isinstance(self.vectors, Tensor):
            raise ValueError(f"vectors must be a torch.Tensor [k, d_model], got {type(self.vectors).__name__}")
        vecs = self.vectors.detach()
        if vecs.device.type == "meta":
            raise ValueError("vectors are on the meta device (shapes without data); materialise them first, "
                             "e.g. build the vector from a loaded model's activations or torch.zeros(k, d_model)")
        if vecs.is_complex():
            raise ValueError(f"vectors are complex ({vecs.dtype}); steering adds real vectors to the residual "
                             "stream: pass vec.real (or a real tensor)")
        if vecs.ndim != 2 or vecs.shape[0] != len(layers) or vecs.shape[1] == 0:
            raise ValueError(
                f"vectors has shape {list(vecs.shape)} but there are {len(layers)} layers; "
                f"give vectors [{len(layers)}, d_model] (one row per layer)"
            )
        if not vecs.is_floating_point():
            vecs = vecs.float()
        if not bool(torch.isfinite(vecs).all()):
            raise ValueError("vectors contain NaN or inf; build the vector from finite directions")
        if not _is_scalar(self.alpha) or not math.isfinite(float(self.alpha)):
            raise ValueError(f"alpha must be a finite number (int, float or a numpy scalar), got {self.alpha!r}")
        scale = abs(float(self.alpha)) * float(wide(vecs).norm(dim=-1).max())
        if not math.isfinite(scale) or scale > _MAX_SCALE:
            raise ValueError(
                f"|alpha * v| = {scale:.3g} is too large to steer with: the model's norm layers square the "
                "residual stream and would overflow to inf/NaN. Residual norms are typically 1–1000; use "
                "unit directions with alpha of that order (e.g. 0.5x the residual norm at the layer)"
            )
        _check_choice("mode", self.mode, MODES)
        _check_choice("positions", self.positions, POSITIONS)
        if self.site not in STEERING_SITES:
            raise ValueError(
                f"site {self.site!r} cannot be steered: steering supports {', '.join(STEERING_SITES)} "
                "(the residual stream leaving / entering a decoder layer); "
                "fit directions at site='resid_post' to steer with them"
            )
        if self.mode != "add":
            zero = vecs.float().norm(dim=-1) == 0
            if bool(zero.any()):
                bad = [layers[i] for i in torch.nonzero(zero).flatten().tolist()]
                raise ValueError(f"mode {self.mode!r} needs a non-zero direction, but the vector is zero at layers {bad}")
        if self.label is not None and not isinstance(self.label, str):
            raise ValueError(f"label must be a string or None, got {self.label!r}")
        order = sorted(range(len(layers)), key=layers.__getitem__)
        object.__setattr__(self, "layers", tuple(layers[i] for i in order))
        object.__setattr__(self, "vectors", vecs[order].clone())
        object.__setattr__(self, "alpha", float(self.alpha))  # np.float32(2) -> 2.0
        object.__setattr__(self, "meta", dict(self.meta))

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_tensor(
        cls,
        vec: Float[Tensor, "d_model"] | Float[Tensor, "k d_model"],
        layers: int | Sequence[int],
        alpha: float = 1.0,
        **kwargs: Any,
    ) -> SteeringVector:
        """A vector from a tensor: ``[d_model]`` (the same at every layer) or ``[len(layers), d_model]``.

        ``kwargs``: ``mode``, ``positions``, ``site``, ``label``, ``meta``.
        """
        layers = _layer_list(layers)
        if not isinstance(vec, Tensor):
            raise ValueError(f"vec must be a torch.Tensor [d_model] or [k, d_model], got {type(vec).__name__}")
        if vec.ndim == 1:
            vec = vec.unsqueeze(0).expand(len(layers), -1)
        elif vec.ndim != 2:
            raise ValueError(f"vec must be [d_model] or [len(layers), d_model], got shape {list(vec.shape)}")
        return cls(layers=tuple(layers), vectors=vec, alpha=alpha, **kwargs)

    @classmethod
    def from_directions(
        cls,
        dirs: Any,
        emotion: str,
        layers: int | Sequence[int] | None = None,
        alpha: float = 1.0,
        **kwargs: Any,
    ) -> SteeringVector:
        """The unit directions of ``emotion`` at ``layers`` from a ``psylens.probes.Directions``.

        Args:
            dirs: a ``Directions`` (``dirs[emotion, layer]`` → unit ``[d_model]``), or the path of a
                directions file (``RUN/probes/directions.safetensors``).
            emotion: one of ``dirs.emotions``.
            layers: layer indices (``None``: every layer the directions have).
            alpha: the scale, in activation units (a unit direction times ``alpha``).
            kwargs: ``mode``, ``positions``, ``label`` (default: the emotion), ``meta``.

        The site is the directions' site. Unknown emotions and layers are a ``ValueError`` listing
        the valid ones.
        """
        if isinstance(dirs, (str, os.PathLike)):
            dirs = load_directions(dirs)
        emotions = list(getattr(dirs, "emotions", []))
        available = list(getattr(dirs, "layers", []))
        if emotion not in emotions:
            raise ValueError(f"unknown emotion {emotion!r}: these directions have {emotions}")
        if layers is None:
            layers = available
        layers = _layer_list(layers)
        missing = [layer for layer in layers if layer not in available]
        if missing:
            raise ValueError(
                f"layers {missing} have no {emotion!r} direction; the directions cover layers "
                f"{_span(available)} (harvest those layers, or pick from them)"
            )
        vecs = torch.stack([torch.as_tensor(dirs[emotion, layer]).detach().float() for layer in layers])
        meta = dict(kwargs.pop("meta", {}) or {})
        meta.setdefault("source", "directions")
        for key in ("method", "model"):
            value = getattr(dirs, key, None)
            if isinstance(value, (str, int, float)) and key not in meta:
                meta[key] = value
        kwargs.setdefault("label", emotion)
        kwargs.setdefault("site", str(getattr(dirs, "site", "resid_post")))
        return cls(layers=tuple(layers), vectors=vecs, alpha=alpha, meta=meta, **kwargs)

    @classmethod
    def from_sae(
        cls,
        sae_dir: str | os.PathLike[str],
        feature: int,
        layers: int | Sequence[int] | None = None,
        alpha: float = 1.0,
        **kwargs: Any,
    ) -> SteeringVector:
        """Steer along an SAE latent's decoder column: ``h + alpha * W_dec[feature]``.

        Args:
            sae_dir: an SAE folder written by ``psylens sae train`` (``RUN/saes/<name>/``: SAELens'
                ``sae_weights.safetensors`` and ``step_sae.json``).
            feature: the latent's index (``0 ≤ feature < d_sae``).
            layers: ``None`` (default): the layer the SAE was trained on (``step_sae.json``); other
                layers reuse the same column (it was fitted to that layer's stream only).
            alpha: the scale in units of the decoder column (its norm is not 1 for every
                architecture; ``alpha < 0`` suppresses the feature's direction).
            kwargs: ``mode``, ``positions``, ``label`` (default ``"sae:<folder>/<feature>"``), ``meta``.

        The site is the SAE's site (only ``resid_post``/``resid_pre`` SAEs can steer). Reads the
        files directly: no SAELens import.
        """
        from safetensors import safe_open

        from psylens.saes.artifacts import read_step_info

        d = Path(sae_dir)
        info = read_step_info(d)
        weights = d / "sae_weights.safetensors"
        if not weights.is_file():
            raise ValueError(f"{str(d)!r} is not an SAE folder written by `psylens sae train`: {weights.name} is missing")
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            if "W_dec" not in f.keys():
                raise ValueError(f"{str(weights)!r} has no 'W_dec' tensor; it is not a SAELens SAE")
            w_dec = f.get_tensor("W_dec")  # [d_sae, d_in]
        if not _is_index(feature) or not 0 <= int(feature) < w_dec.shape[0]:
            raise ValueError(f"feature {feature!r} is out of range: the SAE has {w_dec.shape[0]} latents (0–{w_dec.shape[0] - 1})")
        layers = [int(info["layer"])] if layers is None else _layer_list(layers)
        vec = w_dec[int(feature)].detach().float()
        meta = dict(kwargs.pop("meta", {}) or {})
        meta.setdefault("source", "sae")
        meta.setdefault("sae", str(d))
        meta.setdefault("feature", int(feature))
        meta.setdefault("sae_layer", int(info["layer"]))
        if isinstance(info.get("model"), str):
            meta.setdefault("model", info["model"])
        kwargs.setdefault("label", f"sae:{d.name}/{int(feature)}")
        kwargs.setdefault("site", str(info.get("site", "resid_post")))
        return cls(layers=tuple(layers), vectors=vec.unsqueeze(0).expand(len(layers), -1), alpha=alpha, meta=meta, **kwargs)

    # -- access -----------------------------------------------------------------------------
    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[1])

    def vector(self, layer: int) -> Float[Tensor, " d_model"]:
        """The (unscaled) vector at ``layer`` (a copy)."""
        if layer not in self.layers:
            raise ValueError(f"layer {layer} is not steered by this vector; its layers are {list(self.layers)}")
        return self.vectors[self.layers.index(layer)].clone()

    def deltas(self) -> dict[int, Float[Tensor, " d_model"]]:
        """``{layer: alpha * v}`` — what ``add`` mode adds at each layer."""
        return {layer: self.alpha * self.vectors[i] for i, layer in enumerate(self.layers)}

    def norms(self) -> Float[Tensor, " k"]:
        """Norm of each layer's (unscaled) vector."""
        return self.vectors.float().norm(dim=-1)

    def equal(self, other: object) -> bool:
        """Same layers, bit-identical vectors (and dtype), same alpha, mode, positions, site, label, meta."""
        return (
            isinstance(other, SteeringVector)
            and self.layers == other.layers
            and self.vectors.dtype == other.vectors.dtype
            and torch.equal(self.vectors.cpu(), other.vectors.cpu())
            and self.alpha == other.alpha
            and (self.mode, self.positions, self.site, self.label) == (other.mode, other.positions, other.site, other.label)
            and dict(self.meta) == dict(other.meta)
        )

    # -- new values -------------------------------------------------------------------------
    def replace(self, **changes: Any) -> SteeringVector:
        """A copy with some fields changed, e.g. ``sv.replace(alpha=8.0, positions="generated")``."""
        return replace(self, **changes)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> SteeringVector:
        """A new vector with its tensors on ``device`` / in ``dtype`` (this one is unchanged)."""
        return replace(self, vectors=self.vectors.to(device=device, dtype=dtype))

    def normalized(self) -> SteeringVector:
        """Unit rows; ``alpha`` is unchanged."""
        n = self.norms().clamp_min(1e-30).unsqueeze(-1)
        return replace(self, vectors=(self.vectors.float() / n).to(self.vectors.dtype))

    def random_like(self, seed: int = 0) -> SteeringVector:
        """A control: random directions (Gaussian, seeded) with the same per-layer norms, alpha and settings."""
        gen = torch.Generator().manual_seed(seed)
        r = torch.randn(self.vectors.shape, generator=gen, dtype=torch.float32)
        r = r / r.norm(dim=-1, keepdim=True) * self.norms().unsqueeze(-1)
        label = f"random({self.label})" if self.label else "random"
        meta = {**self.meta, "source": "random", "seed": seed}
        return replace(self, vectors=r.to(self.vectors.dtype), label=label, meta=meta)

    # -- arithmetic (repeng-style): a + b, a - b, -a, k * a, a / k ----------------------------
    def _combine(self, other: SteeringVector, sign: float) -> SteeringVector:
        if self.mode != "add" or other.mode != "add":
            raise ValueError(
                f"only add-mode vectors can be summed (got {self.mode!r} and {other.mode!r}); "
                "scale ablate/clamp vectors with k * sv instead"
            )
        for name in ("positions", "site"):
            a, b = getattr(self, name), getattr(other, name)
            if a != b:
                raise ValueError(f"cannot combine vectors with different {name}: {a!r} vs {b!r}; make them equal first")
        if self.d_model != other.d_model:
            raise ValueError(f"cannot combine vectors of d_model {self.d_model} and {other.d_model}")
        layers = sorted(set(self.layers) | set(other.layers))
        dtype = torch.promote_types(self.vectors.dtype, other.vectors.dtype)
        out = torch.zeros(len(layers), self.d_model, dtype=dtype, device=self.vectors.device)
        for sv, s in ((self, 1.0), (other, sign)):
            for i, layer in enumerate(sv.layers):
                out[layers.index(layer)] += s * sv.alpha * sv.vectors[i].to(device=out.device, dtype=dtype)
        labels = [x.label for x in (self, other) if x.label]
        label = f"({self.label} {'+' if sign > 0 else '-'} {other.label})" if len(labels) == 2 else None
        return SteeringVector(
            layers=tuple(layers), vectors=out, alpha=1.0, mode="add", positions=self.positions,
            site=self.site, label=label, meta={"source": "arithmetic"},
        )

    def __add__(self, other: object) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return self._combine(other, 1.0)

    def __sub__(self, other: object) -> SteeringVector:
        if not isinstance(other, SteeringVector):
            return NotImplemented
        return self._combine(other, -1.0)

    def __neg__(self) -> SteeringVector:
        return replace(self, alpha=-self.alpha)

    def __mul__(self, k: object) -> SteeringVector:
        if not _is_scalar(k):
            return NotImplemented
        return replace(self, alpha=self.alpha * float(k))  # type: ignore[arg-type]

    __rmul__ = __mul__

    def __truediv__(self, k: object) -> SteeringVector:
        if not _is_scalar(k):
            return NotImplemented
        if k == 0:
            raise ZeroDivisionError("cannot divide a steering vector by zero")
        return replace(self, alpha=self.alpha / float(k))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (
            f"SteeringVector(label={self.label!r}, layers={_span(self.layers)}, d_model={self.d_model}, "
            f"alpha={self.alpha:g}, mode={self.mode!r}, positions={self.positions!r}, site={self.site!r})"
        )

    # -- applying (see psylens.steering.apply) ----------------------------------------------
    def apply(self, model: Any) -> Any:
        """Context manager: steer ``model`` inside the block, restore it on exit (also on an exception).

        ``model``: a ``transformers`` causal LM, a psylens ``Model``, a PEFT model or a TransformerBridge.

        .. warning:: Hooks are global state of the model: while the block runs, *every* forward
           through ``model`` (from any code) is steered.
        """
        from psylens.steering.apply import apply

        return apply(self, model)

    def attach(self, model: Any) -> SteeringHandle:
        """Steer ``model`` until ``handle.remove()`` (for long-lived patches; prefer :meth:`apply`)."""
        from psylens.steering.apply import attach

        return attach(self, model)

    # -- storage ----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The JSON description stored in the file's metadata."""
        return {
            "format": _FORMAT,
            "kind": "psylens.steering.SteeringVector",
            "layers": list(self.layers),
            "d_model": self.d_model,
            "alpha": self.alpha,
            "mode": self.mode,
            "positions": self.positions,
            "site": self.site,
            "label": self.label,
            "meta": dict(self.meta),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write one ``.safetensors`` file (tensor ``vectors`` + JSON description in its metadata), atomically."""
        p = Path(path)
        if p.suffix != ".safetensors":
            raise ValueError(f"save steering vectors to a .safetensors file, got {str(path)!r}")
        try:
            desc = json.dumps(self.describe(), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"meta must be JSON-serialisable (no NaN) to save the vector: {e}") from None
        return write_tensors(p, {"vectors": self.vectors}, metadata={FORMAT_KEY: desc})

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> SteeringVector:
        """Read a vector written by :meth:`save` (no model needed)."""
        from safetensors import safe_open

        desc = read_description(path)
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                vectors = f.get_tensor("vectors")
        except Exception as e:  # SafetensorError for a truncated tensor, bad device, ...
            raise ValueError(f"{str(path)!r}: cannot read its tensor 'vectors' ({e})") from None
        meta = desc.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise ValueError(f"{str(path)!r}: 'meta' in its description should be an object, got {type(meta).__name__}")
        try:
            return cls(
                layers=tuple(desc["layers"]),
                vectors=vectors,
                alpha=desc["alpha"],
                mode=desc["mode"],
                positions=desc["positions"],
                site=desc["site"],
                label=desc.get("label"),
                meta=meta or {},
            )
        except ValueError as e:
            raise ValueError(f"{str(path)!r} holds an invalid steering vector: {e}") from None


def load_directions(path: str | os.PathLike[str]) -> Any:
    """``psylens.probes.Directions.load(path)`` (``RUN/probes/directions.safetensors``)."""
    try:
        from psylens.probes import Directions
    except ImportError:
        try:
            from psylens.probes.directions import Directions
        except ImportError:
            raise ValueError("reading a directions file needs psylens.probes.Directions, which is not installed") from None
    return Directions.load(path)


def read_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON description of a saved steering vector, without reading its tensors."""
    from safetensors import safe_open

    from psylens.tensorfile import explain, parse_json_metadata

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no steering vector at {str(path)!r}: the file does not exist")
    why = explain(p)
    if why is not None:
        raise ValueError(why)
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
    except Exception as e:  # safetensors raises its own error types for non-safetensors files
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({e})") from None
    if FORMAT_KEY not in meta or "vectors" not in names:
        hint = (
            " It looks like a directions file: use SteeringVector.from_directions(path, emotion, layers=[...], alpha=...)."
            if "norms" in names
            else ""
        )
        raise ValueError(f"{str(path)!r} is not a steering vector written by SteeringVector.save.{hint}")
    desc = parse_json_metadata(meta[FORMAT_KEY], repr(str(path)), "steering-vector description")
    fmt = desc.get("format", 0)
    if not _is_index(fmt):
        raise ValueError(f"{str(path)!r}: 'format' in its description should be an integer, got {fmt!r}")
    if fmt > _FORMAT:
        raise ValueError(f"{str(path)!r} was written by a newer psylens (format {desc['format']}); upgrade psylens")
    kinds = {"layers": (list,), "alpha": (int, float), "mode": (str,), "positions": (str,), "site": (str,)}
    for key, types in kinds.items():
        if key not in desc:
            raise ValueError(f"{str(path)!r}: its description lacks {key!r}; the file is corrupt or not written by "
                             "SteeringVector.save")
        if not isinstance(desc[key], types) or isinstance(desc[key], bool):
            raise ValueError(f"{str(path)!r}: {key!r} in its description has the wrong type "
                             f"({type(desc[key]).__name__}); the file is corrupt")
    if desc.get("label") is not None and not isinstance(desc["label"], str):
        raise ValueError(f"{str(path)!r}: 'label' in its description should be a string, got {desc['label']!r}")
    return desc


def is_steering_vector_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a saved ``SteeringVector`` (rather than, say, a directions file)."""
    try:
        read_description(path)
    except ValueError:
        return False
    return True


def _layer_list(layers: object) -> list[int]:
    """``12`` or ``[12, 13]`` as a list; anything else a ``ValueError`` that says what was given."""
    if _is_index(layers):
        return [int(layers)]  # type: ignore[call-overload]
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (Sequence, range, np.ndarray, Tensor)):
        raise ValueError(f"layers must be a layer index or a list of them such as [12], got {layers!r}")
    out = list(layers)  # type: ignore[arg-type]
    for layer in out:
        if isinstance(layer, (np.ndarray, Tensor)) and layer.ndim == 0:
            layer = layer.item()
        if not _is_index(layer):
            raise ValueError(f"layer {layer!r} is not an integer; give decoder-layer indices like [12]")
    return [int(x) for x in out]


def _span(layers: Sequence[int]) -> str:
    layers = list(layers)
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}"
    return str(layers)
