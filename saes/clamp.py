"""Clamp one SAE latent while the model runs: the latent's activation is set to a value at every
position, the SAE's error term kept (Templeton et al. 2024, "Scaling Monosemanticity": feature clamping).

>>> clamp = FeatureClamp.from_sae("RUN/saes/L12-...", feature=57, value=0.0)   # doctest: +SKIP
>>> with clamp.apply(model):                                                  # doctest: +SKIP
...     texts = model.generate(prompts, max_new_tokens=64)    # latent 57 off wherever it fired

With ``a = encode(x)[feature]`` (SAELens' own ``encode``) and ``d = W_dec[feature]``, the site tensor
becomes ``x + (value - a) · d``: ``decode`` is affine, so this is exactly "replace the latent's
activation in the reconstruction and keep the reconstruction error". With ``value = 0`` the stream
changes only where the latent fires, by the latent's own contribution — unlike adding ``alpha · d`` or
projecting ``d`` out (:meth:`psylens.steering.SteeringVector.from_sae`), which change every position.

The edit goes through :mod:`psylens.interventions` (op ``replace`` at the SAE's site and layer). The
SAE runs in float32 on the activation's device (moved there once); the result is cast back to the
activation's dtype, so bf16/fp16 models on GPU work.

.. warning:: A clamp is global state of the model while it is applied, like every intervention.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["FeatureClamp", "matched_control_feature"]

#: sites a step SAE can be clamped at (the residual stream)
CLAMP_SITES = ("resid_post", "resid_pre", "resid_mid")


@dataclass(frozen=True, eq=False)
class FeatureClamp:
    """One SAE latent clamped to ``value`` at ``site``/``layer`` (see the module docstring).

    Build it with :meth:`from_sae`. ``sae`` is the loaded SAELens SAE; ``value`` is in the latent's own
    activation units (``features.json`` gives each latent's mean activation where it fires).
    """

    sae: Any
    feature: int
    value: float
    site: str
    layer: int
    label: str = ""
    _placed: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_sae(cls, sae_dir: str | os.PathLike[str], feature: int, value: float = 0.0) -> FeatureClamp:
        """Load the SAE folder written by ``psylens sae train`` (``step_sae.json`` gives site and layer)."""
        from psylens.saes.artifacts import read_step_info
        from psylens.saes.train import load_sae

        d = Path(sae_dir)
        info = read_step_info(d)
        layer, site = int(info["layer"]), str(info.get("site", "resid_post"))
        if site not in CLAMP_SITES:
            raise ValueError(f"the SAE in {str(d)!r} reads {site!r}; clamping works on residual SAEs ({', '.join(CLAMP_SITES)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            raise ValueError(f"value must be a finite number (the latent's activation to hold), got {value!r}")
        sae = load_sae(d, device="cpu")
        d_sae = int(sae.W_dec.shape[0])
        if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)) or not 0 <= int(feature) < d_sae:
            raise ValueError(f"feature {feature!r} is out of range: the SAE has {d_sae} latents (0–{d_sae - 1})")
        sae.eval()
        return cls(sae=sae, feature=int(feature), value=float(value), site=site, layer=int(layer),
                   label=f"clamp:{d.name}/{int(feature)}={float(value):g}")

    def with_feature(self, feature: int) -> FeatureClamp:
        """The same SAE, value and site with another latent (e.g. a control)."""
        d_sae = int(self.sae.W_dec.shape[0])
        if not 0 <= int(feature) < d_sae:
            raise ValueError(f"feature {feature!r} is out of range: the SAE has {d_sae} latents (0–{d_sae - 1})")
        name = self.label.rsplit("/", 1)[0]
        return FeatureClamp(sae=self.sae, feature=int(feature), value=self.value, site=self.site, layer=self.layer,
                            label=f"{name}/{int(feature)}={self.value:g}")

    def _sae_on(self, device: torch.device) -> Any:
        key = str(device)
        if key not in self._placed:
            self._placed[key] = self.sae if str(device) == "cpu" else _copy_to(self.sae, device)
        return self._placed[key]

    def edit(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        """``x + (value - a) · W_dec[feature]`` with ``a`` the latent's activation on ``x`` (differentiable in
        ``x``; the SAE's own parameters are not trained by it)."""
        if x.shape[-1] != int(self.sae.W_dec.shape[1]):
            raise ValueError(f"the SAE reads vectors of size {int(self.sae.W_dec.shape[1])}; the site gives {x.shape[-1]}")
        sae = self._sae_on(x.device)
        xf = x.float()
        a = sae.encode(xf)[..., self.feature]  # [batch, pos]
        d = sae.W_dec[self.feature].float()  # [d_model]
        return (xf + (self.value - a).unsqueeze(-1) * d).to(x.dtype)

    def intervention(self) -> Any:
        """The :class:`psylens.interventions.Intervention` that applies the clamp."""
        from psylens.interventions import Intervention

        return Intervention(site=self.site, layer=self.layer, op="replace", value=self.edit)

    @contextlib.contextmanager
    def apply(self, model: Any) -> Iterator[Any]:
        """Context manager: the clamp is on inside the block and removed on exit (also on an exception)."""
        from psylens.interventions import intervene

        with intervene(model, [self.intervention()]) as handle:
            yield handle

    def __repr__(self) -> str:
        return f"FeatureClamp({self.label or self.feature!r}, {self.site} layer {self.layer})"


def _copy_to(sae: Any, device: torch.device) -> Any:
    import copy

    return copy.deepcopy(sae).to(device)


def matched_control_feature(
    features: Sequence[dict[str, Any]], feature: int, *, seed: int = 0, band: float = 2.0,
) -> int:
    """A random latent that fires about as often as ``feature`` — the control for clamping it.

    ``features``: ``features.json``'s per-latent records (``feature``, ``frequency``). Candidates are the
    other latents whose frequency is within ``band``× of the feature's (both ways); one is drawn with
    ``seed``. When none is, the latent of nearest frequency is taken.
    """
    freq = {int(f["feature"]): float(f.get("frequency") or 0.0) for f in features if "feature" in f}
    if feature not in freq:
        raise ValueError(f"feature {feature} is not in features.json ({len(freq)} latents there); pick one of them")
    target = freq[feature]
    if target <= 0:
        raise ValueError(f"feature {feature} never fires (frequency 0); clamping it changes nothing")
    others = {j: f for j, f in freq.items() if j != feature and f > 0}
    if not others:
        raise ValueError("no other latent fires; there is no control to clamp")
    near = sorted(j for j, f in others.items() if target / band <= f <= target * band)
    if near:
        return int(np.random.default_rng(seed).choice(near))
    return min(others, key=lambda j: (abs(others[j] - target), j))
