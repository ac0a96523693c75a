"""The files ``psylens steer sweep`` (``psylens.steering.sweep.run_sweep``) writes, relative to the run.

Writers (``steering/sweep.py``) and readers (the explorer's steering page) import these names. Bump
``SCHEMA_VERSION`` when the meaning or layout of ``summary.json`` changes; it is written into the
summary as ``schema_version``.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "DIR",
    "SUMMARY",
    "GRID",
    "GENERATIONS",
    "VECTORS",
    "EXPRESSION_DIRECTIONS",
    "PROBE_DIRECTIONS",
    "vector_file",
]

SCHEMA_VERSION = 1
DIR = "steering"
SUMMARY = f"{DIR}/summary.json"
GRID = f"{DIR}/grid.json"
GENERATIONS = f"{DIR}/generations.jsonl"
VECTORS = f"{DIR}/vectors"
EXPRESSION_DIRECTIONS = f"{DIR}/expression_directions.safetensors"
# the probes step's directions, which a sweep with directions="probes" reads (owned by psylens.probes.artifacts)
PROBE_DIRECTIONS = "probes/directions.safetensors"


def vector_file(emotion: str) -> str:
    """``steering/vectors/<emotion>.safetensors`` — the chosen steering vector of ``emotion``.

    Footgun: ``emotion`` is used as a file name; it must be a plain name (no ``/`` or ``..``).
    """
    if not emotion or "/" in emotion or "\\" in emotion or emotion in (".", ".."):
        raise ValueError(f"emotion {emotion!r} cannot name a vector file; give a plain name such as 'joy'")
    return f"{VECTORS}/{emotion}.safetensors"
