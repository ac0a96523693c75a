"""Named activation sites and their TransformerBridge hook names.

psylens names a small vocabulary of places in a decoder block; each maps onto the
transformer-lens ``TransformerBridge`` hook vocabulary, which is the same across
architectures (Llama, Qwen2, Gemma, ...).

=============  ==================================  ============================
site           bridge hook                         activation per token
=============  ==================================  ============================
resid_pre      ``blocks.{l}.hook_resid_pre``       ``[d_model]``
resid_mid      ``blocks.{l}.hook_resid_mid``       ``[d_model]``
resid_post     ``blocks.{l}.hook_resid_post``      ``[d_model]`` (= HF ``hidden_states[l+1]``)
attn_out       ``blocks.{l}.hook_attn_out``        ``[d_model]``
mlp_out        ``blocks.{l}.hook_mlp_out``         ``[d_model]``
head_out       ``blocks.{l}.attn.hook_z``          ``[n_heads, d_head]`` (per-head z)
mlp_post       ``blocks.{l}.mlp.hook_post``        ``[d_mlp]`` (neurons)
=============  ==================================  ============================
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["SITES", "Site", "hook_name", "resolve_layers", "validate_sites"]


@dataclass(frozen=True)
class Site:
    name: str
    hook: str  # format string with {l}
    width: str  # "d_model" | "heads" | "d_mlp"
    doc: str


SITES: dict[str, Site] = {
    s.name: s
    for s in (
        Site("resid_pre", "blocks.{l}.hook_resid_pre", "d_model", "residual stream entering block l"),
        Site("resid_mid", "blocks.{l}.hook_resid_mid", "d_model", "residual stream between attention and MLP"),
        Site("resid_post", "blocks.{l}.hook_resid_post", "d_model", "residual stream leaving block l"),
        Site("attn_out", "blocks.{l}.hook_attn_out", "d_model", "attention sublayer output"),
        Site("mlp_out", "blocks.{l}.hook_mlp_out", "d_model", "MLP sublayer output"),
        Site("head_out", "blocks.{l}.attn.hook_z", "heads", "per-head attention output z [n_heads, d_head]"),
        Site("mlp_post", "blocks.{l}.mlp.hook_post", "d_mlp", "MLP neurons (activation before the down projection)"),
    )
}


def validate_sites(sites: str | Iterable[str]) -> list[str]:
    """Return ``sites`` as a de-duplicated list, or raise a ``ValueError`` listing valid names."""
    if isinstance(sites, str):
        sites = [s for s in sites.replace(",", " ").split() if s]
    out: list[str] = []
    for s in sites:
        if s not in SITES:
            raise ValueError(f"unknown site {s!r}; valid sites: {', '.join(SITES)}")
        if s not in out:
            out.append(s)
    if not out:
        raise ValueError(f"no sites given; choose one or more of: {', '.join(SITES)}")
    return out


def resolve_layers(layers: int | Sequence[int] | None, n_layers: int) -> list[int]:
    """Normalise a layer selection. ``None`` means all layers; negatives count from the end."""
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, numbers.Integral) and not isinstance(layers, bool):
        layers = [int(layers)]
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise ValueError(
            f"layers={layers!r} is not a layer index or a list of them; give e.g. 12, [0, 5, 12], "
            f"range(10, 20) or None for all (indices 0–{n_layers - 1})"
        )
    out: list[int] = []
    for raw in layers:
        if hasattr(raw, "ndim") and getattr(raw, "ndim", None) == 0 and hasattr(raw, "item"):
            raw = raw.item()  # a 0-d tensor or numpy array
        if isinstance(raw, bool) or not isinstance(raw, numbers.Integral):
            raise ValueError(f"layer {raw!r} is not an integer; give layer indices 0–{n_layers - 1}")
        raw = int(raw)
        layer = raw + n_layers if raw < 0 else raw
        if not 0 <= layer < n_layers:
            raise ValueError(
                f"layer {raw} out of range: the model has {n_layers} layers (0–{n_layers - 1}); "
                f"negative indices count from the end (-1 is {n_layers - 1})"
            )
        if layer not in out:
            out.append(layer)
    if not out:
        raise ValueError(f"empty layer list; give layer indices 0–{n_layers - 1} or None for all")
    return sorted(out)


def hook_name(site: str, layer: int) -> str:
    """The bridge hook name for ``site`` at ``layer`` (validates the site name)."""
    validate_sites([site])
    return SITES[site].hook.format(l=layer)
