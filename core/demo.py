"""The main job (`psylens demo`): the whole pipeline on the embedded model, into one run.

Steps, each recorded in ``RUN/steps/<name>.json``: load the model → harvest the built-in ``emotions``
set (``resid_post``, every layer, mean over the text's tokens) → per-layer summary → emotion
directions and probes (``psylens.probes``) → a small steering sweep (``psylens.steering``) → the
emotion-concepts validation (``psylens.validation``, :meth:`ValidationConfig.quick_config
<psylens.validation.suite.ValidationConfig.quick_config>` with story directions: fewer stories,
contexts, prompts and activities than ``psylens validate``; its summary says so, and its feels-matrix
and read-back gates steer with the sweep's picked vectors).
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

__all__ = ["run_demo", "DEMO_STEPS", "headlines", "headline_lines", "demo_validation_config"]

log = logging.getLogger(__name__)

DEMO_STEPS = ("load", "harvest", "summary", "probes", "steering", "validation")


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
             ci95=res.get("best_accuracy_ci95"), chance=res.get("chance"),
             lexical=(res.get("lexical_baseline") or {}).get("accuracy"))

    if "steering" in steps:
        from psylens.steering.sweep import run_sweep

        t0 = time.perf_counter()
        res = run_sweep(m, run, quick=True, seed=seed, progress=progress)
        done("steering", t0, mean_success=res.get("mean_success"), ci95=res.get("mean_success_ci95"))

    if "validation" in steps:
        from psylens.validation.suite import ValidationConfig, run_validation

        t0 = time.perf_counter()
        res = run_validation(m, run, demo_validation_config(seed), progress=progress)
        done("validation", t0, passed=f"{res['passed']}/{res['total']}", source=res["source"],
             steering=(res.get("steering") or {}).get("from"))
    return run


def demo_validation_config(seed: int = 0) -> Any:
    """The demo's validation: ``ValidationConfig.quick_config`` (story directions, 8 contexts, 6 prompts of
    16 tokens, 12 stories a concept, 40 neutral texts, 30 scenario groups, 8 activities), the budget
    of ≤ 2.5 min on SmolLM2-135M on a 2-core CPU (BENCHMARKS.md)."""
    from psylens.validation.suite import ValidationConfig

    return ValidationConfig.quick_config(source="stories", seed=seed)


def _pair(v: Any) -> list[float] | None:
    return None if v is None else [float(v[0]), float(v[1])]


def headlines(run: Run | str | os.PathLike[str]) -> dict[str, Any]:
    """The run's headline results beside their controls, with 95% intervals (read from its summaries).

    ``{"probes": {...} | None, "steering": {...} | None, "validation": {...} | None}``. Probes: the best layer's held-out-scenario
    accuracy and interval, the shuffled-label control, chance, and the lexical (bag-of-words) baseline with
    the paired verdict ``beats_lexical``. Steering: mean success over emotions and its interval, and per
    baseline (prompting, random, none) its success, interval, the paired difference's interval and
    ``beats`` — true only when that interval excludes zero. Validation: gates passed of gated, the
    source, whether the quick suite ran and what the steering gates steered with, and per gate its
    value, threshold, control and verdict. Missing steps give ``None``.
    """
    from psylens.runs import open_run

    r = run if isinstance(run, Run) else open_run(run)
    out: dict[str, Any] = {"probes": None, "steering": None, "validation": None}
    if r.file("probes/summary.json").is_file():
        p = r.read_json("probes/summary.json")
        lex = p.get("lexical_baseline") or None
        out["probes"] = {
            "best_layer": p.get("best_layer"),
            "accuracy": p.get("best_accuracy"),
            "ci95": _pair(p.get("best_accuracy_ci95")),
            "shuffled": p.get("shuffled_accuracy_at_best_layer"),
            "shuffled_ci95": _pair(p.get("shuffled_accuracy_ci95_at_best_layer")),
            "chance": p.get("chance"),
            "lexical": None if lex is None else {"accuracy": lex.get("accuracy"), "ci95": _pair(lex.get("ci95"))},
            "beats_lexical": p.get("beats_lexical_at_best_layer"),
            "layers_tied_with_best": p.get("layers_tied_with_best"),
            "n": p.get("n"),
        }
    if r.file("steering/summary.json").is_file():
        s = r.read_json("steering/summary.json")
        vs = s.get("mean_vs") or {}
        base_ci = s.get("mean_baselines_ci95") or {}
        out["steering"] = {
            "success": s.get("mean_success"),
            "ci95": _pair(s.get("mean_success_ci95")),
            "target": (s.get("targets") or {}).get("success"),
            "n_test": (s.get("n_prompts") or {}).get("test"),
            "baselines": {
                c: {
                    "success": (s.get("mean_baselines") or {}).get(c),
                    "ci95": _pair(base_ci.get(c)),
                    "diff": (vs.get(c) or {}).get("diff"),
                    "diff_ci95": _pair((vs.get(c) or {}).get("ci95")),
                    "beats": bool((vs.get(c) or {}).get("beats", False)),
                }
                for c in ("prompting", "random", "none")
            },
            "judge_ceiling": (s.get("judge_validation") or {}).get("accuracy"),
        }
    if r.file("validation/summary.json").is_file():
        v = r.read_json("validation/summary.json")
        out["validation"] = {
            "passed": v.get("passed"),
            "total": v.get("total"),
            "source": v.get("source"),
            "layer": v.get("layer"),
            "quick": bool(v.get("quick")),
            "steering": (v.get("steering") or {}).get("from"),
            "gates": {
                name: {"value": g.get("value"), "threshold": g.get("threshold"), "control": g.get("control"),
                       "passed": bool(g.get("passed")), "gated": bool(g.get("gated", True)),
                       "skipped": g.get("skipped"), "unit": g.get("unit")}
                for name, g in (v.get("gates") or {}).items()
            },
        }
    return out


def _ci(v: list[float] | None) -> str:
    return "" if v is None else f" [{v[0]:.2f}, {v[1]:.2f}]"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{float(v):.2f}"


def headline_lines(h: dict[str, Any]) -> list[str]:
    """Plain-text closing lines for :func:`headlines` (95% intervals in brackets)."""
    lines: list[str] = []
    p = h.get("probes")
    if p is not None:
        lex = p.get("lexical") or {}
        verdict = "beats" if p.get("beats_lexical") else "does not beat"
        lines.append(
            f"probes: best layer {p.get('best_layer')} accuracy {_num(p.get('accuracy'))}{_ci(p.get('ci95'))}"
            f" vs shuffled labels {_num(p.get('shuffled'))}{_ci(p.get('shuffled_ci95'))}, chance {_num(p.get('chance'))},"
            f" words alone (lexical) {_num(lex.get('accuracy'))}{_ci(lex.get('ci95'))}: {verdict} the words alone"
        )
    st = h.get("steering")
    if st is not None:
        lines.append(
            f"steering: mean success {_num(st.get('success'))}{_ci(st.get('ci95'))} over {st.get('n_test')} held-out "
            f"prompts (target {_num(st.get('target'))}; the judge's own ceiling {_num(st.get('judge_ceiling'))})"
        )
        for c, b in st["baselines"].items():
            verdict = "beats it" if b["beats"] else "does not beat it"
            lines.append(
                f"  vs {c:<9} {_num(b.get('success'))}{_ci(b.get('ci95'))}: difference {_num(b.get('diff'))}"
                f"{_ci(b.get('diff_ci95'))} → {verdict}"
            )
    va = h.get("validation")
    if va is not None:
        how = "quick: fewer stories, contexts and prompts" if va.get("quick") else "full"
        steer = {"sweep": "the sweep's picked vectors", "config": f"layer {va.get('layer')}"}.get(va.get("steering") or "", "")
        lines.append(
            f"validation ({va.get('source')} directions, {how}; steering gates with {steer}): "
            f"{va.get('passed')}/{va.get('total')} gates passed"
        )
        for name, g in va["gates"].items():
            if g.get("skipped"):
                lines.append(f"  {name:<18} skipped: {g['skipped']}")
                continue
            verdict = "reported, not gated" if not g["gated"] else ("passed" if g["passed"] else "not passed")
            unit = f" {g['unit']}" if g.get("unit") else ""
            lines.append(
                f"  {name:<18} {_num(g.get('value'))}{unit} vs control {_num(g.get('control'))}"
                f" (threshold {_num(g.get('threshold'))}) → {verdict}"
            )
    return lines
