"""Applying steering vectors with plain torch forward hooks on the decoder layers.

Works on a ``transformers`` causal LM, a psylens ``Model`` (its ``hf_model`` and, when booted, its
bridge), a PEFT model or a TransformerBridge (whose decoder layers are ``BlockBridge`` modules; the
hook goes on the HF layer they wrap, so ``hook_resid_post`` and ``output_hidden_states`` both see the
steered value). No transformer-lens is needed at inference time.

>>> with sv.apply(model):                       # doctest: +SKIP
...     out = model.generate(**enc)             # steered
>>> handle = sv.attach(model)                   # doctest: +SKIP
>>> handle.remove()                             # doctest: +SKIP

Built on :mod:`psylens.interventions` (one ``Intervention`` per steered layer), which owns the hooks
and the position masks. How positions are known: a forward pre-hook on the module that owns the decoder layers
(``LlamaModel`` inside ``LlamaForCausalLM``) reads each call's ``attention_mask`` (2-D; padded
positions are 0 and never touched) and the KV cache's length. A call with an empty cache starts a
sequence: its tokens are the *prompt*; tokens fed while the cache holds that prompt are *generated*. Without a KV cache (``use_cache=False``) every call is a
new prompt, so ``positions="generated"`` then steers nothing.

.. warning:: Hooks are global state of the model: while attached, every forward through the model —
   from any code, any thread — is steered. Use :func:`apply` (a ``with`` block) so they are removed
   even when the block raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jaxtyping import Float
from torch import Tensor, nn

from psylens.interventions import Intervention, InterventionHandle, hook_roots
from psylens.interventions import attach as attach_interventions
from psylens.modules import decoder_layers, unwrap_hf_model

if TYPE_CHECKING:
    from psylens.steering.vector import SteeringVector

__all__ = [
    "SteeringHandle",
    "attach",
    "apply",
    "attach_rows",
    "apply_rows",
    "check_compatible",
    "model_width",
    "steering_roots",
    "interventions_for",
]


def model_width(model: Any) -> int:
    """``hidden_size`` of the model's text config (``d_model``)."""
    hf = unwrap_hf_model(model)
    cfg = getattr(hf, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    width = getattr(cfg, "hidden_size", None)
    if width is None:
        emb = hf.get_input_embeddings() if hasattr(hf, "get_input_embeddings") else None
        if emb is None:
            raise ValueError(f"cannot tell the hidden size of {type(hf).__name__}: no config.hidden_size")
        width = emb.weight.shape[1]
    return int(width)


def check_compatible(sv: SteeringVector, model: Any) -> nn.ModuleList:
    """The model's decoder layers, after checking ``sv``'s width and layers fit it (``ValueError`` if not)."""
    layers = decoder_layers(model)
    width = model_width(model)
    if sv.d_model != width:
        raise ValueError(
            f"steering vector has d_model {sv.d_model} but {type(unwrap_hf_model(model)).__name__} has hidden size "
            f"{width}; build the vector from directions of this model"
        )
    n = len(layers)
    bad = [layer for layer in sv.layers if layer >= n]
    if bad:
        raise ValueError(f"layer {bad[0]} out of range: the model has {n} layers (0–{n - 1})")
    return layers


def steering_roots(model: Any) -> list[Any]:
    """What steering ``model`` must hook (see :func:`psylens.interventions.hook_roots`)."""
    return hook_roots(model)


class SteeringHandle(InterventionHandle):
    """Hooks steering a model until :meth:`remove` (also a context manager).

    ``remove()`` is idempotent. After it, the model computes bit-identical outputs to before.
    A psylens ``Model`` whose ``TransformerBridge`` is booted is steered on both paths
    (``model.hf_model`` and ``model.bridge``); a bridge booted after attaching is not.
    Built on :func:`psylens.interventions.attach`: one intervention per steered layer.
    """

    def __init__(self, model: Any, interventions: Sequence[Intervention], *, positions: str = "all", site: str = "resid_post") -> None:
        handle = attach_interventions(model, interventions)
        super().__init__(handle._hooks, handle.interventions)
        self.positions = positions
        self.site = site
        self.layers = sorted(iv.layer for iv in interventions)

    def __enter__(self) -> SteeringHandle:
        return self

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"SteeringHandle(layers={self.layers}, positions={self.positions!r}, site={self.site!r}, {state})"


def interventions_for(sv: SteeringVector) -> list[Intervention]:
    """``sv`` as interventions, one per layer: ``add`` → add ``alpha·v``; ``ablate`` → project out ``v``;
    ``clamp`` → set the projection on ``v/|v|`` to ``alpha·|v|``."""
    out = []
    for layer, v in zip(sv.layers, sv.vectors):
        v32 = v.detach().float()
        if sv.mode == "add":
            iv = Intervention(site=sv.site, layer=layer, op="add", value=sv.alpha * v32, positions=sv.positions)
        elif sv.mode == "clamp":
            iv = Intervention(site=sv.site, layer=layer, op="clamp", value=(v32, sv.alpha * float(v32.norm())), positions=sv.positions)
        else:
            iv = Intervention(site=sv.site, layer=layer, op="project_out", value=v32, positions=sv.positions)
        out.append(iv)
    return out


def attach(sv: SteeringVector, model: Any) -> SteeringHandle:
    """Hook ``sv`` into ``model``; returns a :class:`SteeringHandle` — call ``.remove()`` when done.

    Raises ``ValueError`` when the vector's width or layers do not fit the model.
    """
    check_compatible(sv, model)
    return SteeringHandle(model, interventions_for(sv), positions=sv.positions, site=sv.site)


@contextlib.contextmanager
def apply(sv: SteeringVector, model: Any) -> Iterator[SteeringHandle]:
    """``with apply(sv, model):`` — steered inside the block, restored on exit (also after an exception)."""
    handle = attach(sv, model)  # registered before the try: a failed attach leaves nothing behind
    try:
        yield handle
    finally:
        handle.remove()


# -- a different vector per batch row (sweeps) -----------------------------------------------
def attach_rows(
    model: Any,
    deltas: Mapping[int, Float[Tensor, "batch d_model"]],
    *,
    positions: str = "all",
    site: str = "resid_post",
) -> SteeringHandle:
    """Add ``deltas[layer][b]`` to batch row ``b`` at each layer (``add`` mode, one vector per row).

    A zero row leaves that row exactly unsteered, so one batched ``generate`` can hold many
    steering conditions and their controls. Every forward must have ``batch`` rows.
    """
    from psylens.steering.vector import POSITIONS, STEERING_SITES

    if positions not in POSITIONS:
        raise ValueError(f"positions {positions!r} is not one of {POSITIONS}")
    if site not in STEERING_SITES:
        raise ValueError(f"site {site!r} is not one of {STEERING_SITES}")
    layers = decoder_layers(model)
    width = model_width(model)
    for layer, d in deltas.items():
        if not 0 <= layer < len(layers):
            raise ValueError(f"layer {layer} out of range: the model has {len(layers)} layers (0–{len(layers) - 1})")
        if d.ndim != 2 or d.shape[1] != width:
            raise ValueError(f"deltas[{layer}] has shape {list(d.shape)}; expected [batch, {width}]")

    ivs = [
        Intervention(site=site, layer=layer, op="add", value=d.detach().unsqueeze(1), positions=positions)
        for layer, d in deltas.items()
    ]
    return SteeringHandle(model, ivs, positions=positions, site=site)


@contextlib.contextmanager
def apply_rows(
    model: Any,
    deltas: Mapping[int, Float[Tensor, "batch d_model"]],
    *,
    positions: str = "all",
    site: str = "resid_post",
) -> Iterator[SteeringHandle]:
    """Context-manager form of :func:`attach_rows`."""
    handle = attach_rows(model, deltas, positions=positions, site=site)
    try:
        yield handle
    finally:
        handle.remove()
