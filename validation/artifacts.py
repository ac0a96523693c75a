"""The files ``psylens validate`` (``psylens.validation.suite.run_validation``) writes, relative to the run.

Writers (``validation/suite.py``) and readers (the explorer's validation page) import these names. Bump
``SCHEMA_VERSION`` when the meaning or layout of ``summary.json`` changes; it is written into the
summary as ``schema_version``.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "DIR",
    "SUMMARY",
    "DIRECTIONS",
    "CONTROL_DIRECTIONS",
    "FEELS_MATRIX",
    "FEELS_RANDOM",
    "IMPLICIT_SCENARIOS",
    "DOSE_RESPONSE",
    "DOSE_TEMPLATES",
    "GEOMETRY_PCA",
    "LOGIT_LENS",
    "READ_BACK",
    "PREFERENCES",
    "PREFERENCES_SHIFT",
    "TABLES",
    "table_file",
]

SCHEMA_VERSION = 1
DIR = "validation"
SUMMARY = f"{DIR}/summary.json"
# the directions validated: all concepts, every layer, psylens.probes.Directions format (+ .json sidecar)
DIRECTIONS = f"{DIR}/directions.safetensors"
# story directions fitted on shuffled concept labels (the label control of implicit_scenarios and geometry)
CONTROL_DIRECTIONS = f"{DIR}/control_directions.safetensors"
FEELS_MATRIX = f"{DIR}/feels_matrix.parquet"  # one row per (vector, emotion's words): shift in nats
FEELS_RANDOM = f"{DIR}/feels_random.parquet"  # one row per (random draw, emotion's words)
IMPLICIT_SCENARIOS = f"{DIR}/implicit_scenarios.parquet"  # one row per held-out text: projections, top-1
DOSE_RESPONSE = f"{DIR}/dose_response.parquet"  # one row per (template, level): projection
DOSE_TEMPLATES = f"{DIR}/dose_templates.parquet"  # one row per template: rho, control rho, passed
GEOMETRY_PCA = f"{DIR}/geometry_pca.parquet"  # one row per concept: PC1-3, valence, arousal
LOGIT_LENS = f"{DIR}/logit_lens.parquet"  # one row per (direction, rank): token, is an emotion word
READ_BACK = f"{DIR}/read_back.parquet"  # one row per (emotion, prompt): projections of the three texts
PREFERENCES = f"{DIR}/preferences.parquet"  # one row per activity: Elo, projections
PREFERENCES_SHIFT = f"{DIR}/preferences_shift.parquet"  # one row per activity: Elo shift under each emotion's steering and its random control

#: gate name -> {table name: file}; the tables behind each gate in summary.json
TABLES: dict[str, dict[str, str]] = {
    "feels_matrix": {"matrix": FEELS_MATRIX, "random": FEELS_RANDOM},
    "implicit_scenarios": {"items": IMPLICIT_SCENARIOS},
    "dose_response": {"levels": DOSE_RESPONSE, "templates": DOSE_TEMPLATES},
    "geometry": {"pca": GEOMETRY_PCA},
    "logit_lens": {"tokens": LOGIT_LENS},
    "read_back": {"items": READ_BACK},
    "preferences": {"activities": PREFERENCES, "elo_shift": PREFERENCES_SHIFT},
}


def table_file(gate: str, table: str) -> str:
    """``validation/<file>.parquet`` of ``table`` behind ``gate``; ``ValueError`` names the valid ones."""
    if gate not in TABLES:
        raise ValueError(f"unknown gate {gate!r}; gates with tables: {sorted(TABLES)}")
    if table not in TABLES[gate]:
        raise ValueError(f"gate {gate!r} has no table {table!r}; it has {sorted(TABLES[gate])}")
    return TABLES[gate][table]
