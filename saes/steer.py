"""Steer new traces with an SAE feature and count the behaviour it should change.

>>> report = feature_steering(model, "RUN/saes/L12-...", feature=17, label="reflection",
...                           alphas=[-8.0, 8.0], tasks="psych", split="test", samples=2)   # doctest: +SKIP
>>> report["conditions"]["feature@-8"]["label_steps_per_trace"]       # vs report["conditions"]["none"]

Conditions: ``none`` (no steering), ``feature@<alpha>`` (``SteeringVector.from_sae(sae_dir,
feature, alpha=alpha)``) and ``random@<alpha>`` (a random direction of the same norm at the same
layer and alpha — the control). Each condition generates traces with ``psylens.saes.generate_traces``
into ``out/<condition>/`` (a run directory each: resumable after a kill), then segments and labels
every step. Per condition: the label's steps per trace (mean, bootstrap 95% interval over traces)
and their share of all steps, task accuracy (Wilson interval), and fluency (distinct-2, 3-gram
repetition, zlib ratio of the reasoning texts).

Footgun: a steering vector is global state of the model while it is applied — nothing else may use
the model during a condition. Every trace of every condition uses the same seeds, so differences
come from the steering, not from sampling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["feature_steering", "condition_summary"]


def condition_summary(records: Sequence[dict[str, Any]], label: str, segmentation: str = "sentence") -> dict[str, Any]:
    """The label's steps per trace, share of steps, accuracy and fluency of a condition's trace records."""
    from psylens.saes.labels import label_step
    from psylens.saes.segment import segment
    from psylens.stats import bootstrap_ci, wilson_ci
    from psylens.steering.metrics import distinct_n, repetition_rate, zlib_ratio

    per_trace, n_steps = [], 0
    for r in records:
        steps = segment(r.get("text") or "", segmentation)
        n_steps += len(steps)
        per_trace.append(sum(label in label_step(s.text, r.get("prompt")) for s in steps))
    n = len(records)
    correct = sum(bool(r.get("correct")) for r in records)
    texts = [r.get("text") or "" for r in records]
    x = np.asarray(per_trace, dtype=float)
    return {
        "n_traces": n,
        "n_steps": n_steps,
        "label_steps_per_trace": float(x.mean()) if n else None,
        "label_steps_per_trace_ci": list(bootstrap_ci(x)) if n > 1 else None,
        "label_share_of_steps": float(x.sum() / n_steps) if n_steps else None,
        "accuracy": correct / n if n else None,
        "accuracy_ci": list(wilson_ci(correct, n)) if n else None,
        "distinct_2": distinct_n(texts, 2) if any(texts) else None,
        "repetition_3": repetition_rate(texts, 3) if any(texts) else None,
        "zlib_ratio": zlib_ratio(texts) if any(texts) else None,
    }


def feature_steering(
    model: Any,
    sae_dir: str | os.PathLike[str],
    feature: int,
    label: str,
    *,
    alphas: Sequence[float] = (-8.0, 8.0),
    out: str | os.PathLike[str] | None = None,
    tasks: Any = "psych",
    split: str | None = "test",
    samples: int = 2,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 16,
    segmentation: str = "sentence",
    random_seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate traces under each condition (see the module docstring) and summarise them.

    ``out``: where the per-condition trace runs go (default ``<sae_dir>/steering``). Returns
    ``{"feature", "label", "layer", "conditions": {name: summary}}``; the same dict is written to
    ``<out>/summary.json``.
    """
    from psylens.io import write_json
    from psylens.saes.labels import LABELS
    from psylens.saes.traces import generate_traces, read_traces
    from psylens.steering.vector import SteeringVector

    if label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {', '.join(LABELS)}")
    if not alphas:
        raise ValueError("give at least one alpha (negative suppresses, positive amplifies)")
    base = Path(out) if out is not None else Path(sae_dir) / "steering"
    conditions: dict[str, Any] = {"none": None}
    for a in alphas:
        sv = SteeringVector.from_sae(sae_dir, feature, alpha=float(a))
        conditions[f"feature@{a:g}"] = sv
        conditions[f"random@{a:g}"] = sv.random_like(seed=random_seed)
    result: dict[str, Any] = {"feature": int(feature), "label": label, "alphas": [float(a) for a in alphas],
                              "layer": None, "conditions": {}}
    for name, sv in conditions.items():
        folder = base / name.replace("@", "_at_")
        kwargs = dict(split=split, samples=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                      seed=seed, batch_size=batch_size, progress=progress)
        if sv is None:
            generate_traces(model, tasks, folder, **kwargs)
        else:
            result["layer"] = sv.layers[0]
            with sv.apply(model):
                generate_traces(model, tasks, folder, **kwargs)
        summary = condition_summary(read_traces(folder), label, segmentation)
        summary["vector_norm"] = float(sv.norms()[0] * abs(sv.alpha)) if sv is not None else 0.0
        result["conditions"][name] = summary
        write_json(base / "summary.json", result, nan="null")
    return result
