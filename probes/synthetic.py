"""Synthetic activations with a planted direction per label: the known answer for tests and notebooks.

``planted_activations`` builds ``Activations`` shaped like a real harvest: ``n_groups`` scenarios,
each with one text per label. A text's activation at a layer is::

    context[group, layer] + strength[layer] * planted[label, layer] + noise

The planted label vectors are unit-norm and sum to zero over labels, so "label mean minus the
mean of the other labels" points exactly along the planted vector; the context is large and
shared by a scenario's texts (what group-centring removes). Norms: planted ``strength``, context
about ``context_scale``, noise about ``noise``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from psylens.activations import Activations

__all__ = ["planted_activations"]


def planted_activations(
    labels: Sequence[str] = ("anger", "disgust", "fear", "joy", "sadness", "surprise"),
    *,
    n_groups: int = 20,
    n_layers: int = 4,
    d: int = 32,
    strength: float | Sequence[float] = 3.0,
    context_scale: float = 10.0,
    noise: float = 1.0,
    seed: int = 0,
    sample_seed: int | None = None,
    site: str = "resid_post",
) -> tuple[Activations, Float[Tensor, "label layer d"]]:
    """``(acts, planted)``: activations ``[n_groups·K, n_layers, d]`` and the planted unit vectors ``[K, L, d]``.

    ``strength`` may be one number or one per layer (0 plants nothing at that layer). ``seed``
    draws the planted vectors; ``sample_seed`` (default ``seed``) the contexts and noise, so two
    sets with one ``seed`` and different ``sample_seed`` share their planted directions only.
    """
    k = len(labels)
    if k < 2 or d < k:
        raise ValueError(f"need at least two labels and d ≥ number of labels; got {k} labels, d={d}")
    strengths = [float(strength)] * n_layers if isinstance(strength, (int, float)) else [float(s) for s in strength]
    if len(strengths) != n_layers:
        raise ValueError(f"strength has {len(strengths)} values for {n_layers} layers; give one per layer or one number")
    g = torch.Generator().manual_seed(seed)
    # zero-sum unit label vectors per layer: orthonormal basis, centred over labels, renormalised
    planted = torch.empty(k, n_layers, d)
    for layer in range(n_layers):
        q, _ = torch.linalg.qr(torch.randn(d, k, generator=g))
        v = q.T - q.T.mean(0, keepdim=True)
        planted[:, layer] = v / v.norm(dim=1, keepdim=True)
    if sample_seed is not None:
        g = torch.Generator().manual_seed(sample_seed + 1_000_003)
    context = context_scale * torch.randn(n_groups, n_layers, d, generator=g) / d**0.5
    s = torch.tensor(strengths).view(1, n_layers, 1)
    rows, lab, grp, ids, texts = [], [], [], [], []
    for gi in range(n_groups):
        for li, name in enumerate(labels):
            x = context[gi] + s[0] * planted[li] + noise * torch.randn(n_layers, d, generator=g) / d**0.5
            rows.append(x)
            lab.append(name)
            grp.append(f"g{gi:03d}")
            ids.append(f"g{gi:03d}-{name}")
            texts.append(f"scenario {gi}: a {name} event")
    acts = Activations(
        tensors={site: torch.stack(rows)},
        layers=list(range(n_layers)),
        labels=lab,
        groups=grp,
        ids=ids,
        texts=texts,
        meta={"model": "synthetic", "stimuli": "planted"},
    )
    return acts, planted
