"""Sublayer influence: how much does writing along the emotion direction at one sublayer move the read-out?

For each layer ``l ≤ L`` and sublayer (``attn``: ``attn_out``; ``mlp``: ``mlp_out``), ``α·σ·v`` is added
to the sublayer's output at the stimuli's text tokens (``σ``: that sublayer's mean output norm over
those tokens; ``v``: the read-out direction), for several ``α``, and the mean read-out projection
``p`` at layer ``L`` is measured again. ``change`` = ``mean p_after − mean p_before``; ``influence``
is the least-squares slope of ``change`` against ``α·σ`` through the origin — read-out units per unit
of injected norm (1 for an undisturbed residual path; Gemma's post-norms rescale it).

The paper's "global circuit" measured each sublayer's effect on the final representation this way;
here the target is the read-out layer's projection, the quantity the circuit is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from psylens.circuits.signal import Prepared, _batches, _forward, masked, projections
from psylens.interventions import Intervention, StopForward, tap

__all__ = ["sublayer_scales", "sublayer_influence", "SITE_OF"]

SITE_OF = {"attn": "attn_out", "mlp": "mlp_out"}


@torch.no_grad()
def sublayer_scales(model: Any, data: Prepared, layer: int) -> dict[tuple[str, int], float]:
    """``σ``: mean L2 norm of ``attn_out`` / ``mlp_out`` over ``data``'s text tokens, layers ``0..layer``."""
    keys = [(SITE_OF[s], lay) for lay in range(layer + 1) for s in ("attn", "mlp")]
    sums = {k: 0.0 for k in keys}
    count = 0.0
    for b in _batches(data, False, ""):
        m = b.text_mask

        def keep(site: str, lay: int, x: Tensor, m: Tensor = m) -> None:
            sums[(site, lay)] += float(x[m.to(x.device)].float().norm(dim=-1).sum())
            if site == "mlp_out" and lay == layer:
                raise StopForward

        with tap(model, keys, keep):
            try:
                _forward(model, b)
            except StopForward:
                pass
        count += float(m.sum())
    return {(("attn" if s == "attn_out" else "mlp"), lay): v / count for (s, lay), v in sums.items()}


def sublayer_influence(
    model: Any,
    data: Prepared,
    direction: Tensor,
    layer: int,
    *,
    emotion: str = "",
    alphas: Sequence[float] = (0.25, 0.5, 1.0),
    layers: Sequence[int] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Rows of :data:`psylens.circuits.artifacts.SUBLAYER_COLUMNS` for every layer ``≤ layer`` (or ``layers``),
    sublayer and ``α``."""
    if not alphas or any(a == 0 for a in alphas):
        raise ValueError(f"alphas must be non-empty and non-zero, got {list(alphas)}")
    sig = sublayer_scales(model, data, layer)
    base = projections(model, data, direction, layer).double().mean().item()
    todo = [(lay, s) for lay in (layers if layers is not None else range(layer + 1)) for s in ("attn", "mlp")]
    it: Any = todo
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc=f"sublayers {emotion}", leave=False)
    v = direction.detach().float()
    rows = []
    for lay, s in it:
        sigma = sig[(s, lay)]
        changes = []
        for a in alphas:
            vec = (float(a) * sigma * v)

            def extra(b: Any, vec: Tensor = vec, lay: int = lay, s: str = s) -> list[Intervention]:
                return [Intervention(SITE_OF[s], lay, "replace", value=masked(lambda x, vec=vec: x + vec.to(x.device, x.dtype), b.text_mask))]

            after = projections(model, data, direction, layer, extra=extra).double().mean().item()
            changes.append(after - base)
        x = np.array([float(a) * sigma for a in alphas])
        y = np.array(changes)
        slope = float((x * y).sum() / (x * x).sum()) if (x * x).sum() > 0 else float("nan")
        for a, c in zip(alphas, changes):
            rows.append({"emotion": emotion, "layer": int(lay), "sublayer": s, "alpha": float(a), "sigma": sigma,
                         "change": c, "influence": slope})
    return pd.DataFrame(rows)
