"""Steering transfer: do the base model's emotion steering vectors still work on the tuned model?

The base model's story directions (the ones the emotion section projects on; the run's
``validation/directions.safetensors`` when ``psylens validate`` saved them, else fitted now) steer
both models at the same layer (:func:`psylens.validation.suite.default_layer`) with the *same*
strength: ``alpha`` is fixed on the base model (``scale`` × its mean residual norm at that layer) and
reused unchanged on the tuned model, so the tuned model receives exactly the base's vectors.

Each model is judged by the validation gate :func:`psylens.validation.gates.feels_matrix` (the "… I
feel" next-token check, with its random-direction control): its gap, pass/fail, and each emotion's
own shift. ``own_shift_difference`` is the paired change tuned − base over the six emotions with a
bootstrap interval; a model compared with itself gives exactly 0.

.. warning:: A vector that transfers "worse" may have found a tuned model whose residual norm grew at
   that layer (the same alpha is then relatively weaker): ``residual_norm`` of both is in the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from psylens.compare import artifacts as art

__all__ = ["SteeringTransferConfig", "steering_transfer", "run_steering_transfer"]


@dataclass(frozen=True)
class SteeringTransferConfig:
    """``layer``: steering layer (``None``: 0.45 of the depth); ``scale``: alpha as a multiple of the base's
    residual norm; ``n_contexts``: "… I feel" contexts (≤ 24 built in); ``n_random``: control draws (≥ 5)."""

    layer: int | None = None
    scale: float = 0.5
    n_contexts: int = 24
    n_random: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale must be positive (a multiple of the residual norm), got {self.scale}")
        if self.n_contexts < 1:
            raise ValueError(f"n_contexts must be at least 1, got {self.n_contexts}")
        if self.n_random < 5:
            raise ValueError(f"n_random must be at least 5 (the gate's own minimum), got {self.n_random}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gate_row(g: Any) -> dict[str, Any]:
    s = g.to_dict()
    keep = ("value", "threshold", "control", "passed", "rows_won", "cols_won", "gap_ci95", "own_shift",
            "own_minus_random", "residual_norm")
    return {k: s.get(k) for k in keep}


def steering_transfer(
    pair: Any, directions: Any, config: SteeringTransferConfig | None = None, *, words: Any = None, contexts: Any = None,
) -> dict[str, Any]:
    """Both models' feels-matrix gates under the base's vectors at the base's alpha (see the module doc)."""
    from psylens.concepts import feel_contexts, feel_words
    from psylens.stats import paired_diff_ci
    from psylens.stimuli import EMOTIONS
    from psylens.validation.gates import feels_matrix
    from psylens.validation.suite import default_layer

    cfg = config or SteeringTransferConfig()
    layer = cfg.layer if cfg.layer is not None else default_layer(pair.n_layers)
    if not 0 <= layer < pair.n_layers:
        raise ValueError(f"layer {layer} out of range: the models have {pair.n_layers} layers (0–{pair.n_layers - 1})")
    words = words if words is not None else feel_words()
    contexts = list(contexts if contexts is not None else feel_contexts())[: cfg.n_contexts]
    emos = [e for e in EMOTIONS if e in directions.emotions]
    kw = dict(words=words, contexts=contexts, emotions=emos, n_random=cfg.n_random, seed=cfg.seed)
    g_base = feels_matrix(pair.base, directions, layer, scale=cfg.scale, **kw)
    alpha = float(g_base.to_dict()["steering"]["alpha"])
    g_tuned = feels_matrix(pair.tuned, directions, layer, alpha=alpha, **kw)
    rb, rt = _gate_row(g_base), _gate_row(g_tuned)
    ob = np.array([rb["own_shift"][e] for e in emos], dtype=float)
    ot = np.array([rt["own_shift"][e] for e in emos], dtype=float)
    d = paired_diff_ci(ot, ob, seed=cfg.seed)
    return {
        "schema_version": art.SCHEMA_VERSION,
        "config": cfg.to_dict(),
        "layer": layer,
        "alpha": alpha,
        "gate": "feels_matrix",
        "emotions": emos,
        "n_contexts": len(contexts),
        "base": rb,
        "tuned": rt,
        "own_shift_difference": d.diff,
        "own_shift_difference_ci95": [d.lo, d.hi],
    }


def headline(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "layer": result["layer"], "alpha": result["alpha"],
        "base_gap": result["base"]["value"], "base_passed": result["base"]["passed"],
        "tuned_gap": result["tuned"]["value"], "tuned_passed": result["tuned"]["passed"],
        "control_gap_base": result["base"]["control"], "control_gap_tuned": result["tuned"]["control"],
        "own_shift_difference": result["own_shift_difference"],
        "own_shift_difference_ci95": result["own_shift_difference_ci95"],
    }


def run_steering_transfer(run: Any, pair: Any, config: SteeringTransferConfig | None = None, *, directions: Any = None,
                          seed: int = 0, n_stories: int | None = None, n_neutral: int | None = None,
                          progress: bool = False) -> dict[str, Any]:
    """Write ``RUN/compare/steering.json``; return the headline numbers. ``n_stories`` / ``n_neutral``: a quick
    fit of the base's story directions when neither the run nor ``directions`` has them."""
    from dataclasses import replace

    cfg = config or SteeringTransferConfig(seed=seed)
    if config is None and seed:
        cfg = replace(cfg, seed=seed)
    if directions is None:
        from psylens.compare.emotions import base_directions

        directions = base_directions(pair, run, n_stories=n_stories, n_neutral=n_neutral, progress=progress)
    with run.step("compare_steering", cfg.to_dict()) as step:
        result = steering_transfer(pair, directions, cfg)
        run.write_json(art.STEERING, result, nan="null")
        step.output(art.STEERING)
    return headline(result)
