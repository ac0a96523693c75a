"""psylens.steering: emotion steering that drops into any inference code.

>>> from psylens.steering import SteeringVector
>>> sv = SteeringVector.from_directions(dirs, "joy", layers=[12], alpha=4.0)   # doctest: +SKIP
>>> with sv.apply(model):                                                      # doctest: +SKIP
...     out = model.generate(**inputs)

Modules: ``vector`` (the value), ``apply`` (torch hooks), ``nnsight_apply`` (the same inside an
nnsight trace), ``export`` (llama.cpp control-vector GGUF), ``expression`` (emotion directions read
from the model prompted to express each emotion), ``judges``, ``probe_judge``, ``metrics``, ``sweep``
(``psylens steer sweep``), ``cli``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psylens.steering.apply import SteeringHandle, apply, apply_rows, attach, attach_rows
from psylens.steering.judges import Judge, LexiconJudge, LLMJudge, dominant, make_judge, success_rate
from psylens.steering.vector import MODES, POSITIONS, SteeringVector

__all__ = [
    "SteeringVector",
    "SteeringHandle",
    "MODES",
    "POSITIONS",
    "attach",
    "apply",
    "attach_rows",
    "apply_rows",
    "Judge",
    "LexiconJudge",
    "LLMJudge",
    "make_judge",
    "dominant",
    "success_rate",
    "perplexity_ratio",
    "repetition_rate",
    "nonword_fraction",
    "export_gguf",
    "read_gguf",
    "run_sweep",
    "SweepConfig",
    "expression_directions",
    "ProbeJudge",
    "nnsight_generate",
    "steer_trace",
]

if TYPE_CHECKING:
    from psylens.steering.export import export_gguf, read_gguf
    from psylens.steering.expression import expression_directions
    from psylens.steering.probe_judge import ProbeJudge
    from psylens.steering.metrics import nonword_fraction, perplexity_ratio, repetition_rate
    from psylens.steering.nnsight_apply import nnsight_generate, steer_trace
    from psylens.steering.sweep import SweepConfig, run_sweep

_LAZY = {
    "perplexity_ratio": "psylens.steering.metrics",
    "repetition_rate": "psylens.steering.metrics",
    "nonword_fraction": "psylens.steering.metrics",
    "export_gguf": "psylens.steering.export",
    "read_gguf": "psylens.steering.export",
    "run_sweep": "psylens.steering.sweep",
    "SweepConfig": "psylens.steering.sweep",
    "expression_directions": "psylens.steering.expression",
    "ProbeJudge": "psylens.steering.probe_judge",
    # nnsight patches builtins when imported: load it only when asked for.
    "nnsight_generate": "psylens.steering.nnsight_apply",
    "steer_trace": "psylens.steering.nnsight_apply",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'psylens.steering' has no attribute {name!r}")
