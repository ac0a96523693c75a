"""psylens.compare: a base model against its tuned variant — weights, activations, emotions, steering, features.

>>> from psylens.compare import load_pair, run_compare, CompareConfig                # doctest: +SKIP
>>> pair = load_pair("smollm2-135m-instruct", tuned_adapter="adapters/psy-grpo")
>>> summary = run_compare(pair, "runs/cmp", CompareConfig.quick())
>>> # RUN/compare/{weights.json, weight_directions.safetensors, activations.json, emotions.json,
>>> #              summary.json, report.md, *.png}

Imports are lazy: ``import psylens.compare`` loads nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ModelPair",
    "load_pair",
    "pair_run",
    "check_compatible",
    "WeightsConfig",
    "WeightDiff",
    "weight_diffs",
    "lora_deltas",
    "run_weights",
    "ActivationsConfig",
    "activation_diffs",
    "run_activations",
    "EmotionsConfig",
    "emotion_shifts",
    "run_emotions",
    "CompareConfig",
    "run_compare",
    "FeaturesConfig",
    "run_features",
    "BatchTopKCrosscoder",
    "train_crosscoder",
    "latent_classes",
    "noise_control",
    "write_report",
]

_WHERE = {
    "ModelPair": "pair", "load_pair": "pair", "pair_run": "pair", "check_compatible": "pair",
    "WeightsConfig": "weights", "WeightDiff": "weights", "weight_diffs": "weights", "lora_deltas": "weights",
    "run_weights": "weights",
    "ActivationsConfig": "activations", "activation_diffs": "activations", "run_activations": "activations",
    "EmotionsConfig": "emotions", "emotion_shifts": "emotions", "run_emotions": "emotions",
    "CompareConfig": "pipeline", "run_compare": "pipeline", "write_report": "report",
    "FeaturesConfig": "features", "run_features": "features",
    "BatchTopKCrosscoder": "crosscoder", "train_crosscoder": "crosscoder", "latent_classes": "crosscoder",
    "noise_control": "crosscoder",
}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'psylens.compare' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"psylens.compare.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
