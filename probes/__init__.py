"""psylens.probes: where and how a model represents emotion — directions, probes, controls, analyses.

>>> from psylens.probes import emotion_directions, fit_probes, Directions      # doctest: +SKIP
>>> dirs = emotion_directions(acts)              # mean_diff, each scenario's mean removed first
>>> dirs["joy", 12]                              # unit Tensor[d_model]
>>> res = fit_probes(acts, labels=EMOTIONS)      # group CV, shuffled control, selectivity
>>> res.best_layer, res.best_accuracy, res.chance

``psylens.probes.pipeline.run_probes(model, run)`` runs everything and writes ``RUN/probes/``.
"""

from __future__ import annotations

from psylens.probes.analyses import (
    VALENCE,
    Geometry,
    cross_format,
    curve_landmarks,
    geometry,
    harvest_persistence,
    layer_curve,
    persistence_curve,
    persistence_stimuli,
    system_prompt_shift,
)
from psylens.probes.classifiers import Probe
from psylens.probes.directions import METHODS, Directions, emotion_directions
from psylens.probes.fit import EvalResult, ProbeResults, fit_probes, group_folds
from psylens.probes.synthetic import planted_activations

__all__ = [
    "Directions",
    "emotion_directions",
    "METHODS",
    "fit_probes",
    "ProbeResults",
    "EvalResult",
    "Probe",
    "group_folds",
    "layer_curve",
    "curve_landmarks",
    "geometry",
    "Geometry",
    "VALENCE",
    "cross_format",
    "persistence_stimuli",
    "harvest_persistence",
    "persistence_curve",
    "system_prompt_shift",
    "planted_activations",
]
