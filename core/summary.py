"""The first per-layer summary of a harvest: how separable the labels are, layer by layer.

For each site and layer: the mean activation norm, and the Fisher ratio
``tr(S_between) / tr(S_within)`` of the labelled stimuli — beside the same ratio with the
labels shuffled (the control; it estimates what chance separation looks like with this
many stimuli and dimensions). Cheap, model-free, and a sanity check before probes.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from psylens.activations import Activations
from psylens.artifacts import LAYER_SUMMARY_SCHEMA_VERSION
from psylens.precision import wide

__all__ = ["fisher_ratio", "layer_summary", "BEST_LAYER_MEANING"]

BEST_LAYER_MEANING = (
    "the layer with the largest Fisher ratio: in-sample label separation over all dimensions and labels, "
    "dominated by high-variance directions and shared scenario context. It is not the probes' best layer "
    "(held-out-scenario accuracy of a regularised linear probe, RUN/probes/summary.json); the two can differ"
)


def fisher_ratio(x: Float[Tensor, "n d"], y: Int[Tensor, " n"]) -> float:
    """Between-class over within-class scatter (traces). 0 when classes coincide."""
    x = wide(x)  # float64 (float32 on MPS)
    mu = x.mean(0)
    between = x.new_zeros(())
    within = x.new_zeros(())
    for c in y.unique():
        xc = x[y == c]
        between = between + xc.shape[0] * ((xc.mean(0) - mu) ** 2).sum()
        within = within + ((xc - xc.mean(0)) ** 2).sum()
    return float(between / within.clamp_min(1e-12))


def layer_summary(acts: Activations, *, seed: int = 0) -> dict[str, Any]:
    """Per-site, per-layer norms and label separation with a shuffled-label control."""
    if acts.positions == "all":
        raise ValueError("layer_summary needs one row per stimulus; harvest with positions='last' or 'mean'")
    keep = [i for i, lab in enumerate(acts.labels) if lab is not None]
    counts: dict[str, int] = {}
    for i in keep:
        counts[acts.labels[i]] = counts.get(acts.labels[i], 0) + 1  # type: ignore[index]
    out: dict[str, Any] = {"schema_version": LAYER_SUMMARY_SCHEMA_VERSION, "n": len(acts), "label_counts": counts,
                           "seed": seed, "sites": {}}
    labelled = len(counts) >= 2
    gen = torch.Generator().manual_seed(seed)
    if labelled:
        sub = acts.select(keep)
        y = sub.label_ids()
        y_shuf = y[torch.randperm(len(y), generator=gen)]
    for site in acts.sites:
        x_all = acts[site].flatten(2)  # [n, L, d]
        entry: dict[str, Any] = {
            "layers": list(acts.layers),
            "mean_norm": x_all.norm(dim=-1).mean(0).tolist(),
        }
        if labelled:
            xs = sub[site].flatten(2)
            entry["fisher_ratio"] = [fisher_ratio(xs[:, j], y) for j in range(xs.shape[1])]
            entry["shuffled_fisher_ratio"] = [fisher_ratio(xs[:, j], y_shuf) for j in range(xs.shape[1])]
            best = max(range(len(acts.layers)), key=lambda j: entry["fisher_ratio"][j])
            entry["best_layer"] = acts.layers[best]
            entry["best_layer_meaning"] = BEST_LAYER_MEANING
        out["sites"][site] = entry
    return out
