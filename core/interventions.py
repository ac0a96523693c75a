"""One primitive for reading and changing activations: :class:`Intervention`, :func:`intervene`, :func:`record`.

Every analysis that reads or edits activations goes through this module: steering vectors,
harvests, circuit ablation and enhancement, activation patching, SAE splicing. It works on a plain
``transformers`` causal LM (no transformer-lens needed), a psylens ``Model`` (its ``hf_model`` and,
when booted, its bridge) and a transformer-lens ``TransformerBridge``.

>>> from psylens.interventions import Intervention, intervene, record
>>> iv = Intervention(site="head_out", layer=10, units=[3], op="zero")        # doctest: +SKIP
>>> with intervene(model, [iv]):                                              # doctest: +SKIP
...     logits = model.hf_model(**enc).logits        # head 3 of layer 10 ablated
>>> with record(model, ["head_out"], [10]) as rec:                            # doctest: +SKIP
...     model.hf_model(**enc)
>>> rec["head_out", 10].shape                        # [batch, pos, n_heads, d_head]

Where each site lives on a Hugging Face decoder layer (the same tensors as the bridge's hooks):

=============  =====================================================================
site           module and tensor
=============  =====================================================================
resid_pre      input of the decoder layer
resid_mid      input of the pre-MLP norm (``post_attention_layernorm``; Gemma's
               ``pre_feedforward_layernorm``); edits go through the attention sublayer's
               contribution (``resid_pre + attn_out``), exact up to float rounding
resid_post     output of the decoder layer
attn_out       output of the attention module (Gemma: of ``post_attention_layernorm``)
mlp_out        output of the MLP (Gemma: of ``post_feedforward_layernorm``)
head_out       input of the attention output projection, ``[.., n_heads, d_head]``
mlp_post       input of the MLP down projection, ``[.., d_mlp]`` (the neurons)
=============  =====================================================================

Positions: ``"all"`` (every real token; left/right padding is never touched), ``"prompt"`` (the
tokens of the first forward of a sequence), ``"generated"`` (tokens fed while a KV cache holds the
prompt), or an explicit set of absolute positions per batch row. A pre-hook on the module that owns
the decoder layers reads each call's ``attention_mask`` and KV-cache length, so the masks stay right
under KV-cache generation and padding.

.. warning:: Hooks are global state of the model: while a block is open, every forward through the
   model — from any code, any thread — is changed. Use the ``with`` forms; they remove every hook on
   exit, also when the block raises.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from psylens.modules import decoder_layers, unwrap_hf_model
from psylens.sites import SITES

__all__ = [
    "Intervention",
    "InterventionHandle",
    "Recording",
    "OPS",
    "POSITIONS",
    "intervene",
    "attach",
    "record",
    "tap",
    "StopForward",
    "edit_function",
    "site_module",
    "hook_roots",
    "layer_count",
]

OPS = ("add", "zero", "mean", "scale", "clamp", "project_out", "patch", "replace")
POSITIONS = ("all", "prompt", "generated")
_UNIT_SITES = ("head_out", "mlp_post")
_NEEDS_VALUE = ("add", "mean", "scale", "clamp", "project_out", "patch", "replace")


class StopForward(Exception):
    """Raise from a :func:`tap` callback to end the forward pass early (caught by the caller)."""


# --------------------------------------------------------------------------------------------
# the value
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Intervention:
    """One change to one site at one layer.

    Args:
        site: a name from ``psylens.SITES``.
        layer: decoder-layer index (0-based; checked against the model in :func:`intervene`).
        op: ``add`` (add ``value``), ``zero``, ``mean`` (replace with ``value``, e.g. a dataset mean),
            ``scale`` (multiply by ``value``; > 1 enhances), ``clamp`` (set the projection on a direction
            to a value: ``value`` is ``(direction, target)``, or a vector ``v`` meaning direction ``v/|v|``
            and target ``|v|``), ``project_out`` (remove the component along ``value``), ``patch``
            (write activations cached from another input: ``value`` is ``[batch, pos, *site]`` or
            ``[pos, *site]``, indexed by absolute position), ``replace`` (``value`` is a function
            ``f(act) -> act`` of the site tensor ``[batch, pos, *site]``, e.g. an SAE reconstruction).
        units: head indices (``head_out``) or neuron indices (``mlp_post``); ``None`` = the whole site.
            With units, a value has one row per unit: ``[len(units), d_head]`` for heads,
            ``[len(units)]`` for neurons.
        value: a tensor, a number, a ``(direction, target)`` pair or a function, by ``op``. Tensors
            broadcast against the site tensor ``[batch, pos, *site]`` from the right, so ``[d_model]``,
            ``[batch, 1, d_model]`` and ``[batch, pos, d_model]`` all work for residual sites.
        positions: ``"all"``, ``"prompt"``, ``"generated"``, or an explicit index set per batch row
            (a sequence of sequences of absolute positions).
    """

    site: str
    layer: int
    op: str
    units: tuple[int, ...] | None = None
    value: Any = None
    positions: str | tuple[tuple[int, ...], ...] = "all"

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"unknown site {self.site!r}; valid sites: {', '.join(SITES)}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, numbers.Integral) or self.layer < 0:
            raise ValueError(f"layer must be a non-negative integer, got {self.layer!r}")
        object.__setattr__(self, "layer", int(self.layer))
        if self.op not in OPS:
            raise ValueError(f"unknown op {self.op!r}; valid ops: {', '.join(OPS)}")
        if self.units is not None:
            if self.site not in _UNIT_SITES:
                raise ValueError(
                    f"units select heads (head_out) or neurons (mlp_post); site {self.site!r} has none. "
                    "Leave units=None to change the whole site"
                )
            units = _as_units(self.units)
            object.__setattr__(self, "units", units)
        if self.op in _NEEDS_VALUE and self.value is None:
            raise ValueError(f"op {self.op!r} needs a value ({_VALUE_DOC[self.op]})")
        if self.op == "zero" and self.value is not None:
            raise ValueError("op 'zero' takes no value; use op='mean' to write a given value")
        if self.op == "replace" and not callable(self.value):
            raise ValueError(f"op 'replace' needs a function act -> act as value, got {type(self.value).__name__}")
        if self.op in ("clamp", "project_out"):
            if self.site == "mlp_post" and self.units is not None:
                raise ValueError(f"op {self.op!r} projects on a direction; neurons are scalars. Use op='mean' or 'scale'")
            direction = self.value[0] if isinstance(self.value, tuple) else self.value
            if not isinstance(direction, Tensor) or not torch.isfinite(direction).all() or float(direction.norm()) == 0:
                raise ValueError(f"op {self.op!r} needs a finite, non-zero direction tensor as value")
        if isinstance(self.value, Tensor):
            if self.value.is_complex():
                raise ValueError("intervention values must be real tensors, got a complex one")
            if self.value.device.type == "meta":
                raise ValueError("intervention value is on the meta device (no data); materialise it first")
            if self.op != "replace" and not torch.isfinite(self.value).all():
                raise ValueError(f"intervention value for {self.site} layer {self.layer} has NaN or inf entries")
        if isinstance(self.value, numbers.Number) and not isinstance(self.value, bool):
            if self.op not in ("add", "scale", "mean"):
                raise ValueError(f"op {self.op!r} needs a tensor value, got the number {self.value!r}")
            if not torch.isfinite(torch.tensor(float(self.value))):
                raise ValueError(f"intervention value must be finite, got {self.value!r}")
        object.__setattr__(self, "positions", _as_positions(self.positions))

    def replace(self, **changes: Any) -> Intervention:
        """A copy with ``changes`` applied (the value is immutable)."""
        fields = {k: getattr(self, k) for k in ("site", "layer", "op", "units", "value", "positions")}
        fields.update(changes)
        return Intervention(**fields)

    def __repr__(self) -> str:
        v = self.value
        vs = f"tensor{list(v.shape)}" if isinstance(v, Tensor) else ("fn" if callable(v) else repr(v))
        units = "" if self.units is None else f", units={list(self.units)}"
        pos = "" if self.positions == "all" else f", positions={self.positions!r}"
        return f"Intervention({self.site!r}, layer={self.layer}, op={self.op!r}{units}, value={vs}{pos})"


_VALUE_DOC = {
    "add": "a tensor or number to add",
    "mean": "the tensor (or number) to write",
    "scale": "a factor (number or tensor)",
    "clamp": "(direction, target) or a vector v: projection on v/|v| set to |v|",
    "project_out": "a direction tensor",
    "patch": "cached activations [batch, pos, *site] or [pos, *site]",
    "replace": "a function act -> act",
}


def _as_units(units: Any) -> tuple[int, ...]:
    if isinstance(units, Tensor):
        units = units.tolist()
    if isinstance(units, numbers.Integral):
        units = [units]
    out: list[int] = []
    for u in units:
        if isinstance(u, bool) or not isinstance(u, numbers.Integral) or u < 0:
            raise ValueError(f"units must be non-negative integers, got {u!r}")
        out.append(int(u))
    if not out:
        raise ValueError("units is empty; give at least one head/neuron index, or None for the whole site")
    if len(set(out)) != len(out):
        raise ValueError(f"units has duplicates: {out}")
    return tuple(out)


def _as_positions(positions: Any) -> str | tuple[tuple[int, ...], ...]:
    if isinstance(positions, str):
        if positions not in POSITIONS:
            raise ValueError(f"positions {positions!r} is not one of {POSITIONS} or a per-row list of indices")
        return positions
    try:
        rows = tuple(tuple(int(p) for p in row) for row in positions)
    except TypeError:
        raise ValueError(
            f"positions must be one of {POSITIONS} or a per-row list of index lists, got {positions!r}"
        ) from None
    if any(p < 0 for row in rows for p in row):
        raise ValueError("explicit positions are absolute token indices and must be non-negative")
    return rows


# --------------------------------------------------------------------------------------------
# where sites live
# --------------------------------------------------------------------------------------------
def _unwrap(module: Any) -> Any:
    """The HF module inside a transformer-lens bridge component (``_original_component``)."""
    while isinstance(getattr(module, "_original_component", None), nn.Module):
        module = module._original_component
    return module


def _child(module: nn.Module, names: Sequence[str], what: str) -> nn.Module:
    for n in names:
        sub = getattr(module, n, None)
        if isinstance(sub, nn.Module):
            return _unwrap(sub)
    raise ValueError(
        f"cannot find the {what} of {type(module).__name__} (looked for {', '.join(names)}); "
        "this architecture's layout is not supported for this site"
    )


_ATTN = ("self_attn", "attn", "attention", "self_attention")
_MLP = ("mlp", "feed_forward", "ffn")
_O_PROJ = ("o_proj", "out_proj", "c_proj", "dense", "o")
_DOWN = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "w2")


def _sandwich(layer: nn.Module) -> bool:
    """Gemma 2/3 style: norms after each sublayer (``post_attention_layernorm`` is a post-norm there)."""
    return isinstance(getattr(layer, "pre_feedforward_layernorm", None), nn.Module)


def site_module(layer_module: nn.Module, site: str) -> tuple[nn.Module, str]:
    """``(module, "input" | "output")`` holding ``site`` in one decoder layer (see the module doc)."""
    layer = _unwrap(layer_module)
    if site == "resid_pre":
        return layer, "input"
    if site == "resid_post":
        return layer, "output"
    if site == "attn_out":
        if _sandwich(layer):
            return _unwrap(layer.post_attention_layernorm), "output"
        return _child(layer, _ATTN, "attention module"), "output"
    if site == "mlp_out":
        if _sandwich(layer) and isinstance(getattr(layer, "post_feedforward_layernorm", None), nn.Module):
            return _unwrap(layer.post_feedforward_layernorm), "output"
        return _child(layer, _MLP, "MLP"), "output"
    if site == "resid_mid":
        names = ("pre_feedforward_layernorm",) if _sandwich(layer) else ("post_attention_layernorm", "ln_2")
        return _child(layer, names, "pre-MLP norm"), "input"
    if site == "head_out":
        return _child(_child(layer, _ATTN, "attention module"), _O_PROJ, "attention output projection"), "input"
    if site == "mlp_post":
        return _child(_child(layer, _MLP, "MLP"), _DOWN, "MLP down projection"), "input"
    raise ValueError(f"unknown site {site!r}; valid sites: {', '.join(SITES)}")


def hook_roots(model: Any) -> list[Any]:
    """What must be hooked to change ``model``: the model, and for a psylens ``Model`` whose bridge is
    booted, the bridge too (it runs twin modules over the same weights)."""
    roots = [model]
    bridge = model.bridge if getattr(model, "bridge_booted", False) else None
    if bridge is not None and unwrap_hf_model(bridge) is not unwrap_hf_model(model):
        roots.append(bridge)
    return roots


def layer_count(model: Any) -> int:
    return len(decoder_layers(model))


def _layers_owner(hf: nn.Module, layers: nn.ModuleList) -> nn.Module:
    for module in hf.modules():
        if any(child is layers for child in module.children()):
            return module
    return hf


def _geometry(model: Any) -> dict[str, int]:
    hf = unwrap_hf_model(model)
    cfg = getattr(hf, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    d_model = int(getattr(cfg, "hidden_size", 0) or hf.get_input_embeddings().weight.shape[1])
    n_heads = int(getattr(cfg, "num_attention_heads", 0) or 1)
    d_head = int(getattr(cfg, "head_dim", None) or d_model // n_heads)
    d_mlp = int(getattr(cfg, "intermediate_size", 0) or 4 * d_model)
    return {"d_model": d_model, "n_heads": n_heads, "d_head": d_head, "d_mlp": d_mlp}


def _site_shape(site: str, geo: dict[str, int]) -> tuple[int, ...]:
    width = SITES[site].width
    if width == "heads":
        return (geo["n_heads"], geo["d_head"])
    if width == "d_mlp":
        return (geo["d_mlp"],)
    return (geo["d_model"],)


# --------------------------------------------------------------------------------------------
# positions
# --------------------------------------------------------------------------------------------
class _Call:
    """What the current forward call feeds: set by a pre-hook on the module that owns the layers."""

    __slots__ = ("past", "n_new", "real", "prompt_len", "resid_pre")

    def __init__(self) -> None:
        self.past = 0
        self.n_new = 0
        self.real: Tensor | None = None  # [B, n_new] bool; None = every position is a real token
        self.prompt_len: int | None = None
        self.resid_pre: dict[int, Tensor] = {}  # layer -> input, for resid_mid edits


def _past_length(pkv: Any) -> int:
    if pkv is None:
        return 0
    if hasattr(pkv, "get_seq_length"):
        return int(pkv.get_seq_length())
    try:  # legacy tuple-of-tuples cache
        return int(pkv[0][0].shape[-2])
    except (IndexError, TypeError, AttributeError):
        return 0


def _first_tensor(*candidates: Any) -> Tensor | None:
    for c in candidates:
        if isinstance(c, Tensor):
            return c
    return None


def _begin_hook(call: _Call) -> Callable[..., None]:
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        call.resid_pre = {}
        x = _first_tensor(kwargs.get("input_ids"), kwargs.get("inputs_embeds"), args[0] if args else None)
        if x is None or x.ndim < 2:
            call.past, call.n_new, call.real = 0, 0, None
            return
        n_new = int(x.shape[1])
        # transformers < 5 passes the KV cache as ``past_key_values``; 5.x as ``cache``
        pkv = kwargs.get("past_key_values")
        past = _past_length(pkv if pkv is not None else kwargs.get("cache"))
        attn = kwargs.get("attention_mask")
        if attn is None and len(args) > 1 and isinstance(args[1], Tensor):
            attn = args[1]
        if past == 0 and isinstance(attn, Tensor) and attn.ndim == 2 and attn.shape[1] > n_new:
            # a cache that does not report its length (the bridge keeps its own): the 2-D mask
            # spans the cached positions plus the new ones
            past = int(attn.shape[1]) - n_new
        if past == 0 or call.prompt_len is None:
            call.prompt_len = n_new if past == 0 else past
        real: Tensor | None = None
        if isinstance(attn, Tensor) and attn.ndim == 2 and attn.shape[1] >= n_new:
            cols = attn[:, past : past + n_new] if attn.shape[1] >= past + n_new else attn[:, -n_new:]
            real = cols != 0
            if bool(real.all()):
                real = None
        call.past, call.n_new, call.real = past, n_new, real

    return hook


def _mask(positions: Any, call: _Call, batch: int, seq: int, device: torch.device) -> Tensor | None | bool:
    """[B, S] bool of the positions to change; ``None`` = all; ``False`` = none in this call."""
    past = call.past if call.n_new == seq else 0
    real = call.real if call.n_new == seq else None
    sel: Tensor | None = None
    if positions == "prompt" or positions == "generated":
        prompt_len = call.prompt_len if call.prompt_len is not None else seq
        pos = torch.arange(past, past + seq, device=device)
        keep = pos < prompt_len if positions == "prompt" else pos >= prompt_len
        if not bool(keep.any()):
            return False
        sel = None if bool(keep.all()) else keep.unsqueeze(0).expand(batch, -1)
    elif positions != "all":
        rows = positions
        if len(rows) != batch and len(rows) != 1:
            raise ValueError(f"explicit positions give {len(rows)} rows but the batch has {batch}")
        # the indices are gathered on the host and written in one indexing op (no per-element device writes)
        pairs = [(b, p - past) for b in range(batch) for p in rows[b if len(rows) > 1 else 0] if past <= p < past + seq]
        if not pairs:
            return False
        sel = torch.zeros(batch, seq, dtype=torch.bool, device=device)
        sel[tuple(torch.tensor(pairs, device=device).T)] = True
    if real is not None and sel is not None:
        return real.to(device) & sel
    return real.to(device) if real is not None else sel


# --------------------------------------------------------------------------------------------
# ops
# --------------------------------------------------------------------------------------------
def _placed(t: Tensor) -> Callable[[Tensor], Tensor]:
    """``t`` on the device and dtype of the activation it meets, copied once per (device, dtype)."""
    cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def get(like: Tensor) -> Tensor:
        key = (like.device, like.dtype)
        if key not in cache:
            cache[key] = t.detach().to(like.dtype).to(like.device)  # cast first: a float64 value cannot go to MPS
        return cache[key]

    return get


def _direction(value: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(value, tuple):
        d, target = value
        return d, torch.as_tensor(target, dtype=torch.float32)
    return value, None


def edit_function(iv: Intervention) -> Callable[[Tensor, int], Tensor]:
    """``f(act, past) -> new act`` for the intervention's op on a site tensor ``[batch, pos, *w]``
    (``*w`` already restricted to ``iv.units``). ``past`` is the absolute index of ``pos`` 0 (for
    ``patch``). Used by the hooks here and by the nnsight helpers."""
    op, value = iv.op, iv.value
    if op == "zero":
        return lambda x, past: torch.zeros_like(x)
    if op in ("add", "scale", "mean") and isinstance(value, Tensor):
        v = _placed(value)  # a value on another device or dtype is moved to the activation's, once
        if op == "add":
            return lambda x, past: x + _rows(v(x), x)
        if op == "scale":
            return lambda x, past: x * _rows(v(x), x)
        return lambda x, past: _rows(v(x), x).expand_as(x).clone()
    if op == "add":
        return lambda x, past: x + value
    if op == "scale":
        return lambda x, past: x * value
    if op == "mean":
        return lambda x, past: torch.full_like(x, float(value))
    if op in ("clamp", "project_out"):
        d, target = _direction(value)
        d32 = d.detach().float()
        norm = d32.norm(dim=-1, keepdim=True)
        u = d32 / norm
        tgt = (norm.squeeze(-1) if target is None else target) if op == "clamp" else torch.zeros(())

        def project(x: Tensor, past: int) -> Tensor:
            uu = u.to(x.device)
            xf = x.float()
            coef = (xf * uu).sum(-1) - tgt.to(x.device)  # [B, S, *units]
            return (xf - coef.unsqueeze(-1) * uu).to(x.dtype)

        return project
    if op == "patch":

        placed = _placed(value)

        def patch(x: Tensor, past: int) -> Tensor:
            src = placed(x)
            src = src if src.ndim == x.ndim else src.unsqueeze(0)
            seq = x.shape[1]
            if src.shape[1] < past + seq:
                raise ValueError(
                    f"patch value covers {src.shape[1]} positions but this forward needs positions "
                    f"{past}–{past + seq - 1}; cache the source over the whole sequence"
                )
            out = src[:, past : past + seq]
            if out.shape[0] not in (1, x.shape[0]) or out.shape[2:] != x.shape[2:]:
                raise ValueError(
                    f"patch value has shape {list(src.shape)}; expected [batch, pos, {', '.join(map(str, x.shape[2:]))}]"
                )
            return out.expand_as(x).clone()

        return patch

    def replace(x: Tensor, past: int) -> Tensor:
        new = value(x)
        if not isinstance(new, Tensor) or new.shape != x.shape:
            got = list(new.shape) if isinstance(new, Tensor) else type(new).__name__
            raise ValueError(f"replace function returned {got}; it must return a tensor of shape {list(x.shape)}")
        return new.to(x.dtype)

    return replace


def _rows(v: Tensor, x: Tensor) -> Tensor:
    """A value with a leading batch dimension (``[B, 1, *w]``) must match the batch."""
    if v.ndim == x.ndim and v.shape[0] not in (1, x.shape[0]):
        raise RuntimeError(f"intervention value has {v.shape[0]} rows but the batch has {x.shape[0]}")
    return v


def _check_value(iv: Intervention, geo: dict[str, int]) -> None:
    shape = _site_shape(iv.site, geo)
    if iv.units is not None:
        limit = shape[0]
        bad = [u for u in iv.units if u >= limit]
        if bad:
            what = "heads" if iv.site == "head_out" else "neurons"
            raise ValueError(f"unit {bad[0]} out of range: layer {iv.layer} has {limit} {what} (0–{limit - 1})")
        shape = (len(iv.units), *shape[1:])
    v = iv.value[0] if isinstance(iv.value, tuple) else iv.value
    if not isinstance(v, Tensor) or iv.op in ("replace",):
        return
    if iv.op == "patch":
        want = shape
        if tuple(v.shape[-len(want):]) != want or v.ndim not in (len(want) + 1, len(want) + 2):
            raise ValueError(
                f"patch value for {iv.site} layer {iv.layer} has shape {list(v.shape)}; "
                f"expected [batch, pos, {', '.join(map(str, want))}] or [pos, ...]"
            )
        return
    if iv.op in ("clamp", "project_out"):
        want = shape if iv.site == "head_out" and iv.units is not None else shape[-1:]
        if iv.site == "head_out" and iv.units is None and tuple(v.shape) == shape:
            return
        if tuple(v.shape) != tuple(want) and tuple(v.shape) != shape[-1:]:
            raise ValueError(f"direction for {iv.site} layer {iv.layer} has shape {list(v.shape)}; expected {list(want)}")
        return
    try:
        torch.broadcast_shapes(tuple(v.shape), (1, 1, *shape))
    except RuntimeError:
        raise ValueError(
            f"value for {iv.site} layer {iv.layer} has shape {list(v.shape)}; expected {list(shape)} "
            f"(or [batch, 1 or pos, {', '.join(map(str, shape))}])"
        ) from None
    if v.ndim > len(shape) + 2:
        raise ValueError(f"value for {iv.site} layer {iv.layer} has too many dimensions: {list(v.shape)}")


# --------------------------------------------------------------------------------------------
# hooks
# --------------------------------------------------------------------------------------------
def _view(site: str, x: Tensor, geo: dict[str, int]) -> Tensor:
    if site == "head_out" and x.ndim == 3:
        return x.unflatten(-1, (geo["n_heads"], geo["d_head"]))
    return x


def _unview(site: str, v: Tensor, like: Tensor) -> Tensor:
    return v.flatten(-2) if site == "head_out" and like.ndim == 3 else v


def _register(
    module: nn.Module, where: str, fn: Callable[[Tensor], Tensor | None], *, prepend: bool
) -> torch.utils.hooks.RemovableHandle:
    """Hook ``fn(tensor) -> replacement | None`` on ``module``'s first input or output tensor."""
    if where == "input":

        def pre(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args and isinstance(args[0], Tensor):
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            if isinstance(kwargs.get("hidden_states"), Tensor):
                new = fn(kwargs["hidden_states"])
                return None if new is None else (args, {**kwargs, "hidden_states": new})
            raise TypeError(f"cannot reach the input of {type(mod).__name__}: no tensor argument found")

        return module.register_forward_pre_hook(pre, with_kwargs=True, prepend=prepend)

    def post(mod: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, Tensor):
            new = fn(output)
            return None if new is None else new
        if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
            new = fn(output[0])
            return None if new is None else (new, *output[1:])
        raise TypeError(
            f"cannot reach the output of {type(mod).__name__}: it is a {type(output).__name__}, "
            "expected a tensor or a tuple starting with one"
        )

    return module.register_forward_hook(post, prepend=prepend)


class InterventionHandle:
    """Hooks changing a model until :meth:`remove` (also a context manager). ``remove()`` is idempotent;
    after it the model computes bit-identical outputs to before."""

    def __init__(self, hooks: list[torch.utils.hooks.RemovableHandle], interventions: Sequence[Intervention]):
        self._hooks = hooks
        self.interventions = tuple(interventions)

    @property
    def active(self) -> bool:
        return bool(self._hooks)

    def remove(self) -> None:
        hooks, self._hooks = self._hooks, []
        for h in hooks:
            h.remove()

    def __enter__(self) -> InterventionHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"InterventionHandle({len(self.interventions)} interventions, {'active' if self.active else 'removed'})"


def _apply_one(iv: Intervention, f: Callable[[Tensor, int], Tensor], call: _Call, x: Tensor) -> Tensor | None:
    """The edited site tensor ``x`` (``[B, S, *w]``), or ``None`` when nothing changes in this call."""
    m = _mask(iv.positions, call, x.shape[0], x.shape[1], x.device)
    if m is False:
        return None
    if iv.units is None:
        new = f(x, call.past if call.n_new == x.shape[1] else 0)
    else:
        idx = torch.tensor(iv.units, device=x.device)
        sub = f(x.index_select(2, idx), call.past if call.n_new == x.shape[1] else 0)
        new = x.clone()
        new[:, :, idx] = sub.to(x.dtype)
    if m is None:
        return new
    mm = m.reshape(*m.shape, *([1] * (x.ndim - 2)))
    return torch.where(mm, new, x)


def attach(model: Any, interventions: Sequence[Intervention]) -> InterventionHandle:
    """Hook ``interventions`` into ``model`` until the handle's ``remove()``; prefer :func:`intervene`.

    Raises ``ValueError`` (before registering anything) when a layer, unit or value does not fit.
    """
    ivs = list(interventions)
    for iv in ivs:
        if not isinstance(iv, Intervention):
            raise TypeError(f"expected Intervention objects, got {type(iv).__name__}")
    n = layer_count(model)
    geo = _geometry(model)
    for iv in ivs:
        if iv.layer >= n:
            raise ValueError(f"layer {iv.layer} out of range: the model has {n} layers (0–{n - 1})")
        _check_value(iv, geo)
    hooks: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for root in hook_roots(model):
            hooks.extend(_attach_root(root, ivs, geo))
    except BaseException:
        for h in hooks:
            h.remove()
        raise
    return InterventionHandle(hooks, ivs)


def _attach_root(root: Any, ivs: list[Intervention], geo: dict[str, int]) -> list[torch.utils.hooks.RemovableHandle]:
    call = _Call()
    layers = decoder_layers(root)
    owner = _layers_owner(unwrap_hf_model(root), layers)
    hooks = [owner.register_forward_pre_hook(_begin_hook(call), with_kwargs=True, prepend=True)]
    # later interventions run after earlier ones at the same site: register in reverse with prepend
    for iv in reversed(ivs):
        layer = layers[iv.layer]
        f = edit_function(iv)
        if iv.site == "resid_mid":
            hooks.extend(_attach_resid_mid(layer, iv, f, call))
            continue
        module, where = site_module(layer, iv.site)

        def fn(x: Tensor, iv: Intervention = iv, f: Callable[[Tensor, int], Tensor] = f) -> Tensor | None:
            v = _view(iv.site, x, geo)
            new = _apply_one(iv, f, call, v)
            return None if new is None else _unview(iv.site, new, x)

        hooks.append(_register(module, where, fn, prepend=True))
    return hooks


def _attach_resid_mid(layer: nn.Module, iv: Intervention, f: Callable[[Tensor, int], Tensor], call: _Call) -> list[Any]:
    """``resid_mid`` = ``resid_pre + attn contribution``: edit it by changing the contribution."""
    contrib, _ = site_module(layer, "attn_out")
    key = iv.layer

    def stash(x: Tensor) -> None:
        call.resid_pre[key] = x
        return None

    def fn(a: Tensor) -> Tensor | None:
        r = call.resid_pre.get(key)
        if r is None or r.shape != a.shape:
            raise RuntimeError(f"resid_mid edit at layer {key}: the layer input was not seen in this forward")
        mid = r + a
        new = _apply_one(iv, f, call, mid)
        return None if new is None else new - r

    return [
        _register(_unwrap(layer), "input", stash, prepend=True),
        _register(contrib, "output", fn, prepend=True),
    ]


@contextlib.contextmanager
def intervene(model: Any, interventions: Sequence[Intervention]) -> Iterator[InterventionHandle]:
    """``with intervene(model, [iv, ...]):`` — changed inside the block, restored on exit (also after an error).

    ``model``: a ``transformers`` causal LM, a psylens ``Model`` (its HF model and, if booted, its bridge)
    or a ``TransformerBridge``. Several interventions at one site apply in list order.
    """
    handle = attach(model, interventions)  # registered before the try: a failed attach leaves nothing behind
    try:
        yield handle
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def tap(
    model: Any,
    keys: Sequence[tuple[str, int]],
    fn: Callable[[str, int, Tensor], None],
    *,
    grad: bool = False,
) -> Iterator[None]:
    """Call ``fn(site, layer, act)`` with each site tensor ``[batch, pos, *site]`` as it is produced.

    Read-only: ``fn``'s return value is ignored. ``fn`` may raise :class:`StopForward` to end the
    forward early (the caller catches it). With ``grad=True`` the tensor handed over is part of the
    autograd graph and keeps its ``.grad`` after ``backward()``. Hooks only the model itself (not a
    psylens ``Model``'s bridge twin).
    """
    root = model.hf_model if hasattr(model, "hf_model") else model
    layers = decoder_layers(root)
    n = len(layers)
    geo = _geometry(root)
    for site, layer in keys:
        if site not in SITES:
            raise ValueError(f"unknown site {site!r}; valid sites: {', '.join(SITES)}")
        if not 0 <= layer < n:
            raise ValueError(f"layer {layer} out of range: the model has {n} layers (0–{n - 1})")
    hooks: list[torch.utils.hooks.RemovableHandle] = []
    try:
        for site, layer in keys:
            module, where = site_module(layers[layer], site)
            hooks.append(_register(module, where, _reader(site, layer, fn, geo, grad), prepend=False))
        yield
    finally:
        for h in hooks:
            h.remove()


def _reader(site: str, layer: int, fn: Callable[[str, int, Tensor], None], geo: dict[str, int], grad: bool) -> Callable[[Tensor], Tensor | None]:
    def hook(x: Tensor) -> Tensor | None:
        if grad and site == "head_out" and x.ndim == 3:
            # hand over a view that the forward really uses, so its .grad is filled
            v = x.unflatten(-1, (geo["n_heads"], geo["d_head"]))
            if v.requires_grad:
                v.retain_grad()
            fn(site, layer, v)
            return v.flatten(-2)
        if grad and x.requires_grad:
            x.retain_grad()
        fn(site, layer, _view(site, x, geo))
        return None

    return hook


@dataclass
class Recording:
    """Activations captured by :func:`record`: ``rec[site, layer]`` → ``[batch, pos, *site]``.

    Several forward calls (e.g. KV-cache generation) are joined along ``pos``; :meth:`calls` gives
    them one by one. With ``grad=True`` the stored tensors carry ``.grad`` after ``backward()``.
    """

    sites: tuple[str, ...]
    layers: tuple[int, ...]
    _store: dict[tuple[str, int], list[Tensor]] = field(default_factory=dict)

    def calls(self, site: str, layer: int) -> list[Tensor]:
        key = (site, layer)
        if key not in self._store:
            raise KeyError(f"nothing recorded for {key}; recorded sites {list(self.sites)} at layers {list(self.layers)}")
        return list(self._store[key])

    def __getitem__(self, key: tuple[str, int]) -> Tensor:
        parts = self.calls(*key)
        if not parts:
            raise KeyError(f"{key} was hooked but no forward pass ran inside the record block")
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def __contains__(self, key: object) -> bool:
        return key in self._store and bool(self._store[key])  # type: ignore[index]

    def keys(self) -> list[tuple[str, int]]:
        return [k for k, v in self._store.items() if v]


@contextlib.contextmanager
def record(
    model: Any,
    sites: str | Sequence[str],
    layers: int | Sequence[int],
    *,
    grad: bool = False,
) -> Iterator[Recording]:
    """``with record(model, sites, layers) as rec:`` — capture site tensors of every forward in the block.

    Read-only. ``rec["head_out", 10]`` is ``[batch, pos, n_heads, d_head]``; ``rec["mlp_post", 3]``
    ``[batch, pos, d_mlp]``; residual sites ``[batch, pos, d_model]``. ``grad=False`` stores detached
    tensors; ``grad=True`` keeps them in the graph with ``.grad`` filled by ``backward()`` (attribution).
    """
    from psylens.sites import validate_sites

    site_list = validate_sites(sites)
    layer_list = [layers] if isinstance(layers, int) else list(layers)
    for layer in layer_list:
        if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
            raise ValueError(f"layer {layer!r} is not an integer")
    rec = Recording(tuple(site_list), tuple(int(x) for x in layer_list))
    keys = [(s, int(layer)) for s in site_list for layer in layer_list]
    for k in keys:
        rec._store[k] = []

    def keep(site: str, layer: int, act: Float[Tensor, "batch pos ..."]) -> None:
        rec._store[(site, layer)].append(act if grad else act.detach().clone())

    with tap(model, keys, keep, grad=grad):
        yield rec
