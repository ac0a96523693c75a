"""psylens.saes: reasoning traces → steps → step activations → SAEs → behaviour features.

Names are imported lazily (``import psylens.saes`` loads neither torch-heavy modules nor SAELens).

Traces and steps: :func:`generate_traces`, :func:`read_traces` (``psylens traces``);
:func:`segment` (sentences or paragraphs with spans); :func:`step_activations` (one vector a step,
read in context); :func:`label_step` / :func:`label_steps` and :data:`LABELS` (behaviour labels).
"""

from __future__ import annotations

import importlib
from typing import Any

# ``segment`` is both a submodule and the function: import the function now (the module is light,
# only ``re``), so that loading the submodule later can never rebind ``psylens.saes.segment`` to it.
from psylens.saes.segment import Segment, segment  # noqa: E402

# name -> module (relative to psylens.saes)
_LAZY: dict[str, str] = {
    # traces, steps, labels
    "generate_traces": "traces",
    "read_traces": "traces",
    "format_trace_prompt": "traces",
    "TraceConfig": "traces",
    "step_activations": "steps",
    "trace_steps": "steps",
    "LABELS": "labels",
    "label_step": "labels",
    "label_steps": "labels",
    "labeller_accuracy": "labels",
    # SAEs: training through SAELens, features (second half of issue #12)
    "StepSet": "data",
    "StepDataProvider": "data",
    "split_by_trace": "data",
    "SAETrainConfig": "train",
    "train_sae": "train",
    "evaluate_sae": "train",
    "save_sae": "train",
    "load_sae": "train",
    "train_step_sae": "pipeline",
    "label_aurocs": "features",
    "features_report": "features",
    "planted_steps": "synthetic",
    "token_activations": "tokens",
    "ce_loss_recovered": "tokens",
    "feature_steering": "steer",
    "run_feature_steering": "steer",
    "random_control_feature": "steer",
    "random_feature_like": "steer",
    "FeatureClamp": "clamp",
    "matched_control_feature": "clamp",
    # step importance (Thought Anchors)
    "step_importance": "anchors",
    "importance_by_label": "anchors",
    "feature_importance_correlation": "anchors",
    "run_anchors": "anchors",
}

__all__ = sorted([*_LAZY, "segment", "Segment"])


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'psylens.saes' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"psylens.saes.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
