"""File names and schema versions of ``RUN/compare/`` (writers and explorer pages import them from here).

Layout::

    RUN/compare/
      weights.json                    per linear module: relative_norm, changed_fraction, effective_rank,
                                      principal_overlap (sorted by relative_norm, descending)
      weight_directions.safetensors   per module name (the "module" of weights.json): top left singular
                                      vector of ΔW, [d_out]
      activations.json                per layer and input set: mean-difference norms and cosines, KL, lens
      base_directions.safetensors     the base model's 24 story directions (emotion and steering sections)
      steering.json                   the base's vectors on both models, judged by the feels-matrix gate
      emotions.json                   probe curves of both models, transfer, direction cosines, concept shifts
      summary.json                    every section: status ("done" / "skipped" + reason) and headline numbers
      report.md                       the readable report; PNG plots beside it (``*.png``)
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "COMPARE_DIR",
    "WEIGHTS",
    "WEIGHT_DIRECTIONS",
    "ACTIVATIONS",
    "EMOTIONS",
    "STEERING",
    "BASE_DIRECTIONS",
    "FEATURES",
    "SUMMARY",
    "REPORT",
    "SECTIONS",
    "WEIGHT_KEYS",
    "MODEL_NAMES",
    "plot_file",
]

SCHEMA_VERSION = 1
COMPARE_DIR = "compare"
WEIGHTS = f"{COMPARE_DIR}/weights.json"
WEIGHT_DIRECTIONS = f"{COMPARE_DIR}/weight_directions.safetensors"
ACTIVATIONS = f"{COMPARE_DIR}/activations.json"
EMOTIONS = f"{COMPARE_DIR}/emotions.json"
STEERING = f"{COMPARE_DIR}/steering.json"
BASE_DIRECTIONS = f"{COMPARE_DIR}/base_directions.safetensors"
FEATURES = f"{COMPARE_DIR}/features.json"
SUMMARY = f"{COMPARE_DIR}/summary.json"
REPORT = f"{COMPARE_DIR}/report.md"

#: the report's sections, in order (``--sections``)
SECTIONS: tuple[str, ...] = ("weights", "activations", "emotions", "steering", "features")
#: the keys of one ``weights.json`` row, in order
WEIGHT_KEYS: tuple[str, ...] = ("module", "layer", "relative_norm", "changed_fraction", "effective_rank", "principal_overlap")
#: the names of the two models in ``run.json``'s ``"models"``
MODEL_NAMES: tuple[str, str] = ("base", "tuned")


def plot_file(name: str) -> str:
    """``RUN/compare/<name>.png`` (plots sit beside ``report.md``)."""
    return f"{COMPARE_DIR}/{name}.png"
