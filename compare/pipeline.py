"""``run_compare``: every requested section on one model pair, each skipping with a reason when it does not apply.

>>> from psylens.compare import load_pair, run_compare, CompareConfig          # doctest: +SKIP
>>> pair = load_pair("smollm2-135m-instruct", tuned_adapter="adapter/")          # doctest: +SKIP
>>> summary = run_compare(pair, "runs/cmp", CompareConfig.quick())               # doctest: +SKIP
>>> summary["sections"]["weights"]["headline"]["modules_changed"]                # doctest: +SKIP

A section that fails raises (nothing is hidden); a section that does not apply (no SAE in the run,
a part not built yet) is recorded as ``{"status": "skipped", "reason": ...}`` in ``summary.json``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

from psylens.compare import artifacts as art
from psylens.compare.activations import ActivationsConfig
from psylens.compare.emotions import EmotionsConfig
from psylens.compare.features import FeaturesConfig
from psylens.compare.generations import GenerationsConfig
from psylens.compare.steering_transfer import SteeringTransferConfig
from psylens.compare.weights import WeightsConfig

__all__ = ["CompareConfig", "parse_sections", "run_compare"]

log = logging.getLogger(__name__)


def parse_sections(sections: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"weights,activations"`` → ``("weights", "activations")`` in report order; ``None``: all."""
    if sections is None:
        return art.SECTIONS
    items = [s.strip() for s in (sections.split(",") if isinstance(sections, str) else sections) if s.strip()]
    bad = [s for s in items if s not in art.SECTIONS]
    if bad or not items:
        raise ValueError(f"unknown section(s) {bad or sections!r}; valid: {','.join(art.SECTIONS)} (comma-separated)")
    return tuple(s for s in art.SECTIONS if s in items)


@dataclass(frozen=True)
class CompareConfig:
    """Which sections run and each one's settings; ``quick()`` is sized for the demo."""

    sections: tuple[str, ...] = art.SECTIONS
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    activations: ActivationsConfig = field(default_factory=ActivationsConfig)
    emotions: EmotionsConfig = field(default_factory=EmotionsConfig)
    steering: SteeringTransferConfig = field(default_factory=SteeringTransferConfig)
    #: side-by-side texts (``generations.json``), written when the activations or steering section runs
    generations: GenerationsConfig = field(default_factory=GenerationsConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    plots: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sections", parse_sections(self.sections))
        for name, cls in (("weights", WeightsConfig), ("activations", ActivationsConfig), ("emotions", EmotionsConfig),
                          ("steering", SteeringTransferConfig), ("generations", GenerationsConfig),
                          ("features", FeaturesConfig)):
            v = getattr(self, name)
            if isinstance(v, dict):
                object.__setattr__(self, name, cls(**v))
            elif not isinstance(v, cls):
                raise ValueError(f"{name} must be a {cls.__name__} (or its dict), got {type(v).__name__}")

    @classmethod
    def quick(cls, **changes: Any) -> CompareConfig:
        """Fewer texts and tokens: a SmolLM2 pair in a few minutes on a CPU."""
        base = cls(activations=ActivationsConfig(n_emotion=12, n_tasks=12, trace_tokens=16),
                   emotions=EmotionsConfig(n_scenarios=12, n_tasks=18, n_stories=8, n_neutral=32),
                   steering=SteeringTransferConfig(n_contexts=8, n_prompts=4, max_new_tokens=12),
                   features=FeaturesConfig(n_tasks=12, samples=1, max_new_tokens=96, d_latent=256, k=8, steps=800,
                                           n_boot=500))
        return replace(base, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {"sections": list(self.sections), "weights": self.weights.to_dict(),
                "activations": self.activations.to_dict(), "emotions": self.emotions.to_dict(),
                "steering": self.steering.to_dict(), "generations": self.generations.to_dict(),
                "features": self.features.to_dict(),
                "plots": self.plots, "seed": self.seed}


def _skip(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, "headline": None}


def _features_reason(run: Any) -> str:
    """Why the features section was not run (``benchmarks.compare`` writes it into a report-only summary)."""
    from psylens.compare.features import FeaturesConfig, features_reason

    return features_reason(run, FeaturesConfig()) or "not run in this benchmark (BENCH_SECTIONS)"


def _features(run: Any, pair: Any, cfg: CompareConfig, progress: bool) -> dict[str, Any]:
    from psylens.compare.features import features_reason, run_features

    why = features_reason(run, cfg.features)
    if why is not None:
        return _skip(why)
    return {"status": "done", "reason": None, "headline": run_features(run, pair, cfg.features, progress=progress)}


def run_compare(
    pair: Any, out: str | os.PathLike[str] | Any, config: CompareConfig | None = None, *,
    progress: bool = False, started: str | None = None,
) -> dict[str, Any]:
    """Run every section of ``config`` into ``out`` (a path or a ``Run``); write the summary and report; return the summary."""
    from psylens.compare.pair import pair_run
    from psylens.compare.report import write_report

    cfg = config or CompareConfig()
    run = out if hasattr(out, "step") else pair_run(out, pair, config=cfg.to_dict(), seed=cfg.seed, started=started)
    if hasattr(out, "step"):
        run.add_model("base", pair.base)
        run.add_model("tuned", pair.tuned, adapter=pair.adapter)
    run.file(art.COMPARE_DIR).mkdir(parents=True, exist_ok=True)
    status: dict[str, dict[str, Any]] = {}
    for name in cfg.sections:
        log.info("compare: %s", name)
        if name == "weights":
            from psylens.compare.weights import run_weights

            status[name] = {"status": "done", "reason": None, "headline": run_weights(run, pair, cfg.weights, progress=progress)}
        elif name == "activations":
            from psylens.compare.activations import run_activations

            status[name] = {"status": "done", "reason": None,
                            "headline": run_activations(run, pair, cfg.activations, progress=progress)}
        elif name == "emotions":
            from psylens.compare.emotions import run_emotions

            status[name] = {"status": "done", "reason": None, "headline": run_emotions(run, pair, cfg.emotions, progress=progress)}
        elif name == "steering":
            status[name] = _steering(run, pair, cfg, progress)
        elif name == "features":
            status[name] = _features(run, pair, cfg, progress)
    if cfg.generations.n_prompts and {"activations", "steering"} & set(cfg.sections):
        from psylens.compare.generations import run_generations

        log.info("compare: generations")
        run_generations(run, pair, cfg.generations)
    return write_report(run, status, plots=cfg.plots)


def _steering(run: Any, pair: Any, cfg: CompareConfig, progress: bool) -> dict[str, Any]:
    from psylens.compare.steering_transfer import run_steering_transfer

    return {"status": "done", "reason": None,
            "headline": run_steering_transfer(run, pair, cfg.steering, n_stories=cfg.emotions.n_stories,
                                                 n_neutral=cfg.emotions.n_neutral, progress=progress)}
