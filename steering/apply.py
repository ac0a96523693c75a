"""Applying steering vectors with plain torch forward hooks on the decoder layers.

Works on a ``transformers`` causal LM, a psylens ``Model`` (its ``hf_model`` and, when booted, its
bridge), a PEFT model or a TransformerBridge (whose decoder layers are ``BlockBridge`` modules; the
hook goes on the HF layer they wrap, so ``hook_resid_post`` and ``output_hidden_states`` both see the
steered value). No transformer-lens is needed at inference time.

>>> with sv.apply(model):                       # doctest: +SKIP
...     out = model.generate(**enc)             # steered
>>> handle = sv.attach(model)                   # doctest: +SKIP
>>> handle.remove()                             # doctest: +SKIP

How positions are known: a forward pre-hook on the module that owns the decoder layers
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

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
    "hook_target",
    "layers_owner",
    "steering_roots",
]

LayerOp = Callable[[Tensor], Tensor]


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


class _ForwardState:
    """Which positions of the current forward call the hooks may change (set by the model pre-hook)."""

    __slots__ = ("mask", "skip", "prompt_len", "in_forward")

    def __init__(self) -> None:
        self.mask: Tensor | None = None  # [B, S] bool, None = every position
        self.skip = False
        self.prompt_len: int | None = None
        self.in_forward = False


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


def steering_roots(model: Any) -> list[Any]:
    """What steering ``model`` must hook: the model, and for a psylens ``Model`` whose bridge is booted,
    the bridge too (it runs its own twin modules over the same weights)."""
    roots = [model]
    bridge = model.bridge if getattr(model, "bridge_booted", False) else None
    if bridge is not None and unwrap_hf_model(bridge) is not unwrap_hf_model(model):
        roots.append(bridge)
    return roots


class SteeringHandle:
    """Hooks steering a model until :meth:`remove` (also a context manager).

    ``remove()`` is idempotent. After it, the model computes bit-identical outputs to before.
    A psylens ``Model`` whose ``TransformerBridge`` is booted is steered on both paths
    (``model.hf_model`` and ``model.bridge``); a bridge booted after attaching is not.
    """

    def __init__(
        self,
        model: Any,
        build_op: Callable[[int, nn.Module], LayerOp],
        layers: Sequence[int],
        *,
        positions: str = "all",
        site: str = "resid_post",
    ) -> None:
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self.positions = positions
        self.site = site
        self.layers = sorted(layers)
        try:
            for root in steering_roots(model):
                self._attach_root(root, build_op)
        except BaseException:
            self.remove()
            raise

    def _attach_root(self, root: Any, build_op: Callable[[int, nn.Module], LayerOp]) -> None:
        state = _ForwardState()
        layer_modules = decoder_layers(root)
        top = layers_owner(unwrap_hf_model(root), layer_modules)
        self._hooks.append(top.register_forward_pre_hook(self._begin(state), with_kwargs=True, prepend=True))
        self._hooks.append(top.register_forward_hook(self._end(state), always_call=True))
        for layer in self.layers:
            module = hook_target(layer_modules[layer])
            op = build_op(layer, module)
            # prepend: run before hooks registered earlier (transformers' output_hidden_states
            # recorders, harvest hooks), so whatever records the layer sees the steered value
            if self.site == "resid_pre":
                hook = module.register_forward_pre_hook(self._pre_hook(op, state), with_kwargs=True, prepend=True)
            else:
                hook = module.register_forward_hook(self._post_hook(op, state), prepend=True)
            self._hooks.append(hook)

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return bool(self._hooks)

    def remove(self) -> None:
        """Remove every hook (safe to call twice)."""
        hooks, self._hooks = self._hooks, []
        for h in hooks:
            h.remove()

    def __enter__(self) -> SteeringHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"SteeringHandle(layers={self.layers}, positions={self.positions!r}, site={self.site!r}, {state})"

    # -- which positions ----------------------------------------------------------------------
    def _begin(self, st: _ForwardState) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            st.in_forward = True
            x = _first_tensor(kwargs.get("input_ids"), kwargs.get("inputs_embeds"), args[0] if args else None)
            if x is None or x.ndim < 2:
                st.mask, st.skip = None, False
                return
            n_new = int(x.shape[1])
            # transformers < 5.x passes the KV cache as ``past_key_values``; newer versions as ``cache``
            pkv = kwargs.get("past_key_values")
            past = _past_length(pkv if pkv is not None else kwargs.get("cache"))
            attn = kwargs.get("attention_mask")
            if attn is None and len(args) > 1 and isinstance(args[1], Tensor):
                attn = args[1]
            if past == 0 and isinstance(attn, Tensor) and attn.ndim == 2 and attn.shape[1] > n_new:
                # a cache that does not report its length (TransformerBridge keeps its own): the 2-D
                # attention mask spans the cached positions plus the new ones
                past = int(attn.shape[1]) - n_new
            if past == 0 or st.prompt_len is None:
                st.prompt_len = n_new if past == 0 else past
            real: Tensor | None = None
            if isinstance(attn, Tensor) and attn.ndim == 2 and attn.shape[1] >= n_new:
                cols = attn[:, past : past + n_new] if attn.shape[1] >= past + n_new else attn[:, -n_new:]
                real = cols != 0
                if bool(real.all()):
                    real = None
            sel: Tensor | None = None
            if self.positions != "all":
                pos = torch.arange(past, past + n_new, device=x.device)
                keep = pos < st.prompt_len if self.positions == "prompt" else pos >= st.prompt_len
                if not bool(keep.any()):
                    st.mask, st.skip = None, True
                    return
                sel = None if bool(keep.all()) else keep.unsqueeze(0).expand(x.shape[0], -1)
            if real is not None and sel is not None:
                mask: Tensor | None = real & sel.to(real.device)
            else:
                mask = real if real is not None else sel
            st.mask, st.skip = mask, False

        return hook

    @staticmethod
    def _end(st: _ForwardState) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            st.in_forward = False
            st.mask, st.skip = None, False

        return hook

    @staticmethod
    def _steer(op: LayerOp, h: Tensor, st: _ForwardState) -> Tensor:
        new = op(h)
        mask = st.mask
        if mask is None:
            return new
        m = mask.to(h.device)
        if m.shape != h.shape[:2]:
            raise RuntimeError(
                f"steering hook: position mask {list(m.shape)} does not match the hidden states {list(h.shape[:2])}; "
                "call the model with input_ids/attention_mask as keyword arguments"
            )
        return torch.where(m.unsqueeze(-1), new, h)

    def _post_hook(self, op: LayerOp, st: _ForwardState) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if st.skip:
                return None
            if isinstance(output, Tensor):
                return self._steer(op, output, st)
            if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
                return (self._steer(op, output[0], st), *output[1:])
            raise TypeError(
                f"cannot steer {type(module).__name__}: its output is a {type(output).__name__}, "
                "expected a tensor or a tuple starting with one"
            )

        return hook

    def _pre_hook(self, op: LayerOp, st: _ForwardState) -> Callable[..., Any]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if st.skip:
                return None
            if args and isinstance(args[0], Tensor):
                return (self._steer(op, args[0], st), *args[1:]), kwargs
            if isinstance(kwargs.get("hidden_states"), Tensor):
                return args, {**kwargs, "hidden_states": self._steer(op, kwargs["hidden_states"], st)}
            raise TypeError(f"cannot steer the input of {type(module).__name__}: no hidden_states tensor found")

        return hook


def layers_owner(hf: nn.Module, layers: nn.ModuleList) -> nn.Module:
    """The module whose child is the decoder-layer list (``LlamaModel`` for a ``LlamaForCausalLM``).

    Its forward receives ``input_ids``/``inputs_embeds``, ``attention_mask`` and ``past_key_values``
    however the model is wrapped: a wrapper that calls the outer model's ``forward`` method directly
    would bypass hooks on the outer model, but the outer model always *calls* this one.
    """
    for module in hf.modules():
        if any(child is layers for child in module.children()):
            return module
    return hf


def hook_target(layer_module: nn.Module) -> nn.Module:
    """The module to hook for a decoder layer: the wrapped HF layer inside a ``BlockBridge``, else the layer.

    transformers records ``output_hidden_states`` with its own hooks on the HF decoder layer; hooking
    that module first (``prepend``) makes the recorded hidden states, the bridge's
    ``blocks.{l}.hook_resid_post`` and every later layer see the steered value.
    """
    inner = getattr(layer_module, "_original_component", None)
    return inner if isinstance(inner, nn.Module) else layer_module


# -- per-layer operations ---------------------------------------------------------------------
def _layer_place(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in module.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _op(mode: str, v: Tensor, alpha: float, device: torch.device, dtype: torch.dtype) -> LayerOp:
    v32 = v.detach().to(device=device, dtype=torch.float32)
    if mode == "add":
        w = (alpha * v32).to(dtype)
        return lambda h: h + w.to(h.dtype)
    norm = float(v32.norm())
    u = v32 / norm
    target = alpha * norm if mode == "clamp" else 0.0

    def project(h: Tensor) -> Tensor:
        hf = h.float()
        coef = hf @ u - target  # [B, S]
        return (hf - coef.unsqueeze(-1) * u).to(h.dtype)

    return project


def attach(sv: SteeringVector, model: Any) -> SteeringHandle:
    """Hook ``sv`` into ``model``; returns a :class:`SteeringHandle` — call ``.remove()`` when done.

    Raises ``ValueError`` when the vector's width or layers do not fit the model.
    """
    check_compatible(sv, model)
    index = {layer: i for i, layer in enumerate(sv.layers)}

    def build(layer: int, module: nn.Module) -> LayerOp:
        device, dtype = _layer_place(module)
        return _op(sv.mode, sv.vectors[index[layer]], sv.alpha, device, dtype)

    return SteeringHandle(model, build, sv.layers, positions=sv.positions, site=sv.site)


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

    def build(layer: int, module: nn.Module) -> LayerOp:
        device, dtype = _layer_place(module)
        w = deltas[layer].detach().to(device=device, dtype=dtype).unsqueeze(1)  # [B, 1, D]

        def op(h: Tensor) -> Tensor:
            if h.shape[0] != w.shape[0]:
                raise RuntimeError(f"attach_rows: deltas[{layer}] has {w.shape[0]} rows but the batch has {h.shape[0]}")
            return h + w

        return op

    return SteeringHandle(model, build, list(deltas), positions=positions, site=site)


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
