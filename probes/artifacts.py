"""The files ``psylens probe`` (``psylens.probes.pipeline.run_probes``) writes, relative to the run.

Writers (``probes/pipeline.py``) and readers (the explorer's probes page) import these names. Bump
``SCHEMA_VERSION`` when the meaning or layout of ``summary.json`` changes; it is written into the
summary as ``schema_version``.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "DIR",
    "SUMMARY",
    "DIRECTIONS",
    "PROBES",
    "LAYER_CURVE",
    "CONFUSION",
    "GEOMETRY_COSINE",
    "GEOMETRY_PCA",
    "GEOMETRY_VALENCE",
    "GEOMETRY",
    "CROSS_FORMAT",
    "PERSISTENCE",
    "SYSTEM_PROMPT_SHIFT",
    "EVAL",
    "directions_file",
    "probes_name",
]

SCHEMA_VERSION = 1
DIR = "probes"
SUMMARY = f"{DIR}/summary.json"
DIRECTIONS = f"{DIR}/directions.safetensors"  # + the .json sidecar beside it
PROBES = f"{DIR}/probes"  # + ".safetensors" (arrays, fitted probes) and ".json" (scores)
LAYER_CURVE = f"{DIR}/layer_curve.parquet"
CONFUSION = f"{DIR}/confusion.json"
GEOMETRY_COSINE = f"{DIR}/geometry_cosine.parquet"
GEOMETRY_PCA = f"{DIR}/geometry_pca.parquet"
GEOMETRY_VALENCE = f"{DIR}/geometry_valence.parquet"
GEOMETRY = {"cosine": GEOMETRY_COSINE, "pca": GEOMETRY_PCA, "valence": GEOMETRY_VALENCE}
CROSS_FORMAT = f"{DIR}/cross_format.parquet"
PERSISTENCE = f"{DIR}/persistence.parquet"
SYSTEM_PROMPT_SHIFT = f"{DIR}/system_prompt_shift.parquet"
EVAL = f"{DIR}/eval.parquet"


def directions_file(site: str, first: bool) -> str:
    """The directions of ``site``: ``probes/directions.safetensors`` for the headline (first) site,
    ``probes/directions-<site>.safetensors`` for the others."""
    return DIRECTIONS if first else f"{DIR}/directions-{site}.safetensors"


def probes_name(site: str, first: bool) -> str:
    """The ``ProbeResults.save`` name of ``site``'s probes inside ``probes/``: ``probes`` or ``probes-<site>``."""
    return "probes" if first else f"probes-{site}"
