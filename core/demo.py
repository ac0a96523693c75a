"""The main job (`psylens demo`): the whole pipeline on the embedded model, into one run.

Steps, each recorded in ``RUN/steps/<name>.json``: load the model → harvest the built-in ``emotions``
set (``resid_post``, every layer, mean over the text's tokens) → per-layer summary → emotion
directions and probes (``psylens.probes``) → a small steering sweep (``psylens.steering``).
Re-running with the same ``out`` resumes the harvest from its shards.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from psylens import artifacts
from psylens.harvest import check_output
from psylens.io import ensure_writable_dir
from psylens.models import DEFAULT_MODEL, load_model
from psylens.runs import Run, create_run, now
from psylens.stimuli import load as load_stimuli
from psylens.summary import layer_summary

__all__ = ["run_demo", "DEMO_STEPS"]

log = logging.getLogger(__name__)

DEMO_STEPS = ("load", "harvest", "summary", "probes", "steering")


def run_demo(
    out: str | os.PathLike[str] = "runs/demo",
    *,
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    seed: int = 0,
    steps: tuple[str, ...] = DEMO_STEPS,
    progress: bool = True,
    on_step: Callable[[str, float, dict[str, Any]], None] | None = None,
) -> Run:
    """Run the demo pipeline into ``out`` and return the run.

    ``on_step(name, seconds, info)`` is called after each step (the CLI prints it).
    """
    unknown = [s for s in steps if s not in DEMO_STEPS]
    if unknown:
        raise ValueError(f"unknown demo steps {unknown}; valid steps: {', '.join(DEMO_STEPS)}")
    ensure_writable_dir(out)
    started = now()  # run.json records when the demo started, not when its harvest ended

    def done(name: str, t0: float, **info: Any) -> None:
        if on_step is not None:
            on_step(name, time.perf_counter() - t0, info)

    import torch

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    m = load_model(model, device=device)
    done("load", t0, model=repr(m))

    load_seconds = round(time.perf_counter() - t0, 2)

    stim = load_stimuli("emotions")
    positions = "mean"  # the probes' read-out (psylens.probes.pipeline.DEFAULT_POSITIONS)
    config = {"stimuli": stim.name, "sites": ["resid_post"], "positions": positions, "steps": list(steps)}
    acts_dir = Path(out) / artifacts.ACTIVATIONS
    # refused re-runs (another model, another harvest, another command's run in `out`) fail here, before any write
    check_output(m, stim, acts_dir, sites=["resid_post"], positions=positions)
    run = create_run(out, command="psylens demo", model=m, config=config, seed=seed, started=started)
    run.record_step("load", seconds=load_seconds, model=m.spec, device=str(m.device))
    t0 = time.perf_counter()
    with run.step("harvest", {"stimuli": stim.name, "sites": ["resid_post"], "positions": positions}) as step:
        acts = m.harvest(stim, sites=["resid_post"], positions=positions, out=acts_dir, progress=progress)
        step.output(artifacts.ACTIVATIONS)
        step.note(n=len(acts), sites=acts.sites, layers=acts.layers, output=artifacts.ACTIVATIONS)
    done("harvest", t0, n=len(acts), shape=list(acts["resid_post"].shape))

    if "summary" in steps:
        t0 = time.perf_counter()
        with run.step("summary", {"seed": seed}) as step:
            summ = layer_summary(acts, seed=seed)
            run.write_json(artifacts.LAYER_SUMMARY, summ)
            step.output(artifacts.LAYER_SUMMARY)
            step.note(output=artifacts.LAYER_SUMMARY)
        site = summ["sites"]["resid_post"]
        done("summary", t0, best_layer=site.get("best_layer"))

    if "probes" in steps:
        from psylens.probes.pipeline import run_probes

        t0 = time.perf_counter()
        res = run_probes(m, run, acts=acts, seed=seed, progress=progress, positions=positions)
        done("probes", t0, best_layer=res.get("best_layer"), best_accuracy=res.get("best_accuracy"),
             chance=res.get("chance"))

    if "steering" in steps:
        from psylens.steering.sweep import run_sweep

        t0 = time.perf_counter()
        res = run_sweep(m, run, quick=True, seed=seed, progress=progress)
        done("steering", t0, mean_success=res.get("mean_success"))
    return run
