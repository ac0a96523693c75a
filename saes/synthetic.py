"""Synthetic step activations built from planted sparse features — the known answer for SAE training.

>>> data = planted_steps(n_steps=8192, d=64, n_features=48, active=3, label_feature={"reflection": 0})
>>> data.steps.acts.shape, data.directions.shape          # [8192, 64], [48, 64]
>>> data.labels["reflection"].float().mean()             # share of steps labelled reflection

Each step is ``Σ_i a_i f_i + noise`` with ``f_i`` random unit directions, each feature on with
probability ``active / n_features`` and magnitude uniform in ``[1, 3]``. A feature planted for a
label (``label_feature``) fires on a share ``label_recall`` of that label's steps (all by default)
and never on the others, so an SAE latent that recovers it separates the label — its AUROC can reach
at most ``label_recall + (1 - label_recall) / 2``; every other feature is independent of the labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from psylens.saes.data import StepSet

__all__ = ["PlantedSteps", "planted_steps", "recovered"]


@dataclass(frozen=True, eq=False)
class PlantedSteps:
    """Synthetic steps with the truth: ``directions [n_features, d]``, ``codes [n, n_features]``, labels."""

    steps: StepSet
    directions: Float[Tensor, "f d"]
    codes: Float[Tensor, "n f"]
    labels: dict[str, Bool[Tensor, " n"]]


def planted_steps(
    n_steps: int = 8192,
    d: int = 64,
    n_features: int = 48,
    active: float = 3.0,
    noise: float = 0.01,
    label_feature: Mapping[str, int] | None = None,
    label_rate: float = 0.15,
    label_recall: float = 1.0,
    steps_per_trace: int = 8,
    seed: int = 0,
) -> PlantedSteps:
    """Synthetic step vectors (see the module docstring). Traces are consecutive blocks of ``steps_per_trace``."""
    if n_features < 1 or d < 1 or n_steps < 1:
        raise ValueError(f"n_steps, d and n_features must be positive, got {n_steps}, {d}, {n_features}")
    if not 0 < active <= n_features:
        raise ValueError(f"active must be in (0, n_features={n_features}], got {active}")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_features, d, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    p = active / n_features
    on = torch.rand(n_steps, n_features, generator=g) < p
    mags = 1.0 + 2.0 * torch.rand(n_steps, n_features, generator=g)
    labels: dict[str, Tensor] = {}
    for name, f in (label_feature or {}).items():
        if not 0 <= f < n_features:
            raise ValueError(f"label {name!r}: feature {f} is outside 0..{n_features - 1}")
        lab = torch.rand(n_steps, generator=g) < label_rate
        labels[name] = lab
        # the planted feature fires on a share `label_recall` of the label's steps and never elsewhere
        on[:, f] = lab & (torch.rand(n_steps, generator=g) < label_recall)
    codes = on.float() * mags
    acts = codes @ dirs + noise * torch.randn(n_steps, d, generator=g)
    trace = [f"t{i // steps_per_trace:05d}" for i in range(n_steps)]
    step = [i % steps_per_trace for i in range(n_steps)]
    return PlantedSteps(StepSet(acts, tuple(trace), tuple(step)), dirs, codes, labels)


def recovered(directions: Float[Tensor, "f d"], decoder: Float[Tensor, "s d"], threshold: float = 0.9) -> Tensor:
    """Per planted feature, the best cosine to any decoder row; ``>= threshold`` counts as recovered."""
    a = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = decoder / decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (a @ b.T).max(dim=1).values
