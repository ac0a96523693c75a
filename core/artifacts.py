"""Run-level files: what a run directory holds outside any one analysis.

Every writer and reader of these files imports the names from here (no copied path strings).
Paths are relative to the run directory::

    RUN/run.json                          what ran: command, models, config, seed, versions, times
    RUN/steps/<name>.json                 one record per analysis step (config, outputs, timings)
    RUN/activations/<name>/manifest.json  a named activation set (legacy: RUN/activations/manifest.json = "default")
    RUN/summary/layers.json               the per-layer summary (``psylens.summary``)

``SCHEMA_VERSION`` is the version of these run-level files; readers that meet a newer version should
say so rather than guess.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "RUN_FILE",
    "STEPS",
    "ACTIVATIONS",
    "DEFAULT_ACTIVATIONS",
    "MANIFEST",
    "ROWS",
    "LAYER_SUMMARY",
    "LAYER_SUMMARY_SCHEMA_VERSION",
    "step_file",
    "activations_dir",
]

SCHEMA_VERSION = 1
RUN_FILE = "run.json"
STEPS = "steps"
ACTIVATIONS = "activations"
DEFAULT_ACTIVATIONS = "default"
MANIFEST = "manifest.json"
ROWS = "rows.json"
LAYER_SUMMARY = "summary/layers.json"
LAYER_SUMMARY_SCHEMA_VERSION = 1


def step_file(name: str) -> str:
    """``steps/<name>.json`` — the record of step ``name`` (see ``Run.step``)."""
    return f"{STEPS}/{name}.json"


def activations_dir(name: str = DEFAULT_ACTIVATIONS) -> str:
    """``activations/<name>`` — a named activation set.

    Footgun: the legacy layout (a manifest directly in ``activations/``) is the set ``"default"``;
    use ``Run.activations(name)`` to open a set rather than joining this path yourself.
    """
    return f"{ACTIVATIONS}/{name}"
