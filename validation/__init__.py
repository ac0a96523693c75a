"""Emotion validation without a text judge: story directions and the gates of ``psylens validate``.

- :mod:`psylens.validation.directions` — story directions (the paper's recipe).
- :mod:`psylens.validation.gates` — the gates, each ``{"value", "threshold", "control", "passed", ...}``
  plus the tables behind it (:class:`GateResult`).
- :mod:`psylens.validation.suite` — :func:`run_validation` writes ``RUN/validation/``.
- :mod:`psylens.validation.cli` — ``psylens validate``.

Nothing is imported eagerly beyond these names' modules (no model is loaded on import).
"""

from __future__ import annotations

from psylens.validation.directions import StoryConfig, directions_from_means, story_directions, text_means
from psylens.validation.gates import (
    GateResult,
    dose_response,
    feels_matrix,
    geometry,
    implicit_scenarios,
    logit_lens,
    read_back,
)
from psylens.validation.preferences import ACTIVITIES, preferences

__all__ = [
    "ACTIVITIES",
    "GateResult",
    "StoryConfig",
    "directions_from_means",
    "dose_response",
    "feels_matrix",
    "geometry",
    "implicit_scenarios",
    "logit_lens",
    "preferences",
    "read_back",
    "story_directions",
    "text_means",
]
