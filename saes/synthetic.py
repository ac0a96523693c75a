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

__all__ = ["PlantedSteps", "planted_steps", "planted_hierarchy", "recovered"]


@dataclass(frozen=True, eq=False)
class PlantedSteps:
    """Synthetic steps with the truth: ``directions [n_features, d]``, ``codes [n, n_features]``, labels."""

    steps: StepSet
    directions: Float[Tensor, "f d"]
    codes: Float[Tensor, "n f"]
    labels: dict[str, Bool[Tensor, " n"]]


def _in_traces(acts: Float[Tensor, "n d"], steps_per_trace: int) -> StepSet:
    """The rows as consecutive traces of ``steps_per_trace`` steps."""
    n = int(acts.shape[0])
    trace = tuple(f"t{i // steps_per_trace:05d}" for i in range(n))
    return StepSet(acts, trace, tuple(i % steps_per_trace for i in range(n)))


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
    return PlantedSteps(_in_traces(acts, steps_per_trace), dirs, codes, labels)


def planted_hierarchy(
    n_steps: int = 4096,
    d: int = 64,
    n_parents: int = 4,
    n_children: int = 4,
    n_other: int = 24,
    parent_rate: float = 0.25,
    other_rate: float = 0.08,
    noise: float = 0.02,
    steps_per_trace: int = 8,
    seed: int = 0,
) -> PlantedSteps:
    """Steps with a planted *hierarchy*, the case that splits a behaviour over several latents.

    Each parent feature fires on a share ``parent_rate`` of the steps, and whenever it fires exactly one of
    its ``n_children`` child features fires with it (magnitudes in [1, 1.2]); ``n_other`` independent
    features fire at ``other_rate``. All directions are orthonormal (``d`` ≥ ``n_parents × (1 + n_children)
    + n_other``). ``labels["parent<p>"]`` marks the steps where parent ``p`` fires, ``directions`` holds the
    parents first. A sparse dictionary can reconstruct these steps equally well with one latent per
    parent + child pair (the parent *absorbed*) as with a parent latent and child latents; only the
    second has a single latent that separates each parent's label.
    """
    need = n_parents * (1 + n_children) + n_other
    if min(n_steps, n_parents, n_children) < 1 or n_other < 0 or d < need:
        raise ValueError(f"planted_hierarchy needs positive sizes and d >= n_parents*(1+n_children)+n_other = {need}; "
                         f"got n_steps={n_steps}, d={d}, n_parents={n_parents}, n_children={n_children}, n_other={n_other}")
    if not 0 < parent_rate < 1 or not 0 <= other_rate < 1:
        raise ValueError(f"parent_rate must lie in (0, 1) and other_rate in [0, 1), got {parent_rate}, {other_rate}")
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0].T[:need]  # orthonormal rows
    on_parent = torch.rand(n_steps, n_parents, generator=g) < parent_rate
    child = torch.randint(n_children, (n_steps, n_parents), generator=g)
    on_child = torch.zeros(n_steps, n_parents * n_children, dtype=torch.bool)
    rows = torch.arange(n_steps)
    for p in range(n_parents):
        on_child[rows, p * n_children + child[:, p]] = on_parent[:, p]
    on_other = torch.rand(n_steps, n_other, generator=g) < other_rate
    on = torch.cat([on_parent, on_child, on_other], dim=1)
    codes = on.float() * (1.0 + 0.2 * torch.rand(n_steps, need, generator=g))
    acts = codes @ basis + noise * torch.randn(n_steps, d, generator=g)
    labels = {f"parent{p}": on_parent[:, p].clone() for p in range(n_parents)}
    return PlantedSteps(_in_traces(acts, steps_per_trace), basis, codes, labels)


def recovered(directions: Float[Tensor, "f d"], decoder: Float[Tensor, "s d"], threshold: float = 0.9) -> Tensor:
    """Per planted feature, the best cosine to any decoder row; ``>= threshold`` counts as recovered."""
    a = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b = decoder / decoder.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (a @ b.T).max(dim=1).values
