"""The main job (`psylens demo`): the whole pipeline on the embedded model, into one run.

Steps, each recorded in ``RUN/steps/<name>.json``: load the model → harvest the built-in ``emotions``
set (``resid_post``, every layer, mean over the text's tokens) → per-layer summary → emotion
directions and probes (``psylens.probes``) → a small steering sweep (``psylens.steering``) → the
emotion-concepts validation (``psylens.validation``, :meth:`ValidationConfig.quick_config
<psylens.validation.suite.ValidationConfig.quick_config>` with story directions: fewer stories,
contexts, prompts and activities than ``psylens validate``; its summary says so, and its feels-matrix
and read-back gates steer with the sweep's picked vectors) → a quick base-vs-tuned comparison of the
model and its shipped RL-tuned organism (``psylens.compare``, :func:`demo_compare_config`; skipped with
the reason when the model has no organism or this installation does not ship it).
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

__all__ = ["run_demo", "DEMO_STEPS", "headlines", "headline_lines", "demo_validation_config", "demo_compare_config",
           "demo_organism"]

log = logging.getLogger(__name__)

DEMO_STEPS = ("load", "harvest", "summary", "probes", "steering", "validation", "compare")


def run_demo(
    out: str | os.PathLike[str] = "runs/demo",
    *,
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    dtype: str | None = None,
    device_map: str | None = None,
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
    m = load_model(model, device=device, dtype=dtype, device_map=device_map)
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
        from psylens.validation.suite import run_validation

        t0 = time.perf_counter()
        res = run_validation(m, run, demo_validation_config(seed), progress=progress)
        done("validation", t0, passed=f"{res['passed']}/{res['total']}", source=res["source"],
             steering=(res.get("steering") or {}).get("from"))

    if "compare" in steps:
        t0 = time.perf_counter()
        alias, why = demo_organism(m)
        if alias is None:
            run.record_step("compare", skipped=why)
            done("compare", t0, skipped=why)
        else:
            from psylens.compare.pair import ModelPair
            from psylens.compare.pipeline import run_compare
            from psylens.validation import artifacts as vart

            tuned = load_model(alias, device=device, dtype=dtype, device_map=device_map)
            pair = ModelPair(m, tuned, adapter=str(tuned.adapter), adapter_on_base=True)
            cfg = demo_compare_config(seed, reuse_directions=run.has(vart.DIRECTIONS))
            res = run_compare(pair, run, cfg, progress=progress)
            sec = res.get("sections", {})
            done("compare", t0, tuned=alias, **{k: v.get("status") for k, v in sec.items()})
    return run


def demo_organism(model: Any) -> tuple[str | None, str | None]:
    """The shipped organism (RL-tuned adapter) of ``model`` as ``(alias, None)``, else ``(None, why not)``."""
    from psylens.models import ORGANISMS

    spec = getattr(model, "spec", model)
    if getattr(model, "adapter", None):
        return None, f"the demo model already carries an adapter ({model.adapter}); the comparison needs a plain base"
    found = [o for o in ORGANISMS.values() if o.base == spec]
    if not found:
        return None, f"no RL-tuned organism is registered for {spec!r} (organisms: {', '.join(ORGANISMS) or 'none'})"
    try:
        found[0].adapter_dir()
    except ValueError as e:
        return None, str(e)
    return found[0].alias, None


def demo_compare_config(seed: int = 0, *, reuse_directions: bool = True) -> Any:
    """The demo's base-vs-tuned comparison: every section at small sizes (4 emotion texts and 4 task prompts
    for the activations, 4 scenarios and 8 task prompts for the emotions, 4 "… I feel" contexts for the
    steering transfer, one side-by-side answer), ~2 min on SmolLM2 on a 2-core CPU; the features section
    skips (the demo trains no step SAE) and ``report.md`` holds tables, not PNGs (the explorer draws the
    figures; ``psylens compare`` writes the PNGs). ``reuse_directions``: the run's validation directions
    serve as the base's story directions (the demo's validation step wrote them); otherwise a quick fit
    on 8 stories a concept and 32 neutral texts."""
    from psylens.compare.activations import ActivationsConfig
    from psylens.compare.emotions import EmotionsConfig
    from psylens.compare.generations import GenerationsConfig
    from psylens.compare.pipeline import CompareConfig
    from psylens.compare.steering_transfer import SteeringTransferConfig

    stories = {} if reuse_directions else {"n_stories": 8, "n_neutral": 32}
    return CompareConfig(
        activations=ActivationsConfig(n_emotion=4, n_tasks=4, trace_tokens=12, seed=seed),
        emotions=EmotionsConfig(n_scenarios=4, n_tasks=8, seed=seed, **stories),
        steering=SteeringTransferConfig(n_contexts=4, seed=seed),
        generations=GenerationsConfig(n_prompts=1, max_new_tokens=32),
        plots=False,
        seed=seed,
    )


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

    ``{"probes": {...} | None, "steering": {...} | None, "validation": {...} | None, "compare": {...} | None}``. Probes: the best layer's held-out-scenario
    accuracy and interval, the shuffled-label control, chance, and the lexical (bag-of-words) baseline with
    the paired verdict ``beats_lexical``. Steering: mean success over emotions and its interval, and per
    baseline (prompting, random, none) its success, interval, the paired difference's interval and
    ``beats`` — true only when that interval excludes zero. Validation: gates passed of gated, the
    source, whether the quick suite ran and what the steering gates steered with, and per gate its
    value, threshold, control and verdict. Compare: the tuned model and each section's status, reason
    and headline numbers (``RUN/compare/summary.json``); a skipped step gives ``{"skipped": why}``.
    Missing steps give ``None``.
    """
    from psylens.runs import open_run

    r = run if isinstance(run, Run) else open_run(run)
    out: dict[str, Any] = {"probes": None, "steering": None, "validation": None, "compare": None}
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
            "judge": s.get("judge"),
            # issue #10's target (NRC success ÷ the judge's ceiling, margins over prompting and random, fluency);
            # "target" above is the retired one (success ≥ 0.80), kept for older readers
            "nrc_target": _nrc_target(s.get("target")),
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
    if r.file("compare/summary.json").is_file():
        c = r.read_json("compare/summary.json")
        out["compare"] = {"tuned": (c.get("models") or {}).get("tuned"), "sections": c.get("sections") or {}}
    elif r.file("steps/compare.json").is_file():
        why = r.read_json("steps/compare.json").get("skipped")
        out["compare"] = {"skipped": why} if why else None
    return out


def _nrc_target(t: Any) -> dict[str, Any] | None:
    if not isinstance(t, dict):
        return None  # a summary written before the target moved to success ÷ ceiling
    keys = ("success_over_ceiling", "min_success_over_ceiling", "margin", "over_prompting", "over_random",
            "all_fluent", "fluency", "met")
    return {k: t.get(k) for k in keys}


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
        judge = f"{st['judge']} judge" if st.get("judge") else "the judge"
        lines.append(
            f"steering: mean success {_num(st.get('success'))}{_ci(st.get('ci95'))} over {st.get('n_test')} held-out "
            f"prompts ({judge}; its own ceiling {_num(st.get('judge_ceiling'))})"
        )
        t = st.get("nrc_target")
        if t is not None:
            def signed(v: Any) -> str:
                return "n/a" if v is None else f"{float(v):+.2f}"

            lines.append(
                f"  target: NRC success ÷ ceiling {_num(t.get('success_over_ceiling'))} (needs ≥ "
                f"{_num(t.get('min_success_over_ceiling'))}), above prompting {signed(t.get('over_prompting'))} and "
                f"random {signed(t.get('over_random'))} (needs ≥ {_num(t.get('margin'))} each), every vector fluent "
                f"({t.get('fluency')}): {'yes' if t.get('all_fluent') else 'no'} → {'met' if t.get('met') else 'not met'}"
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
    lines.extend(_compare_lines(h.get("compare")))
    return lines


def _compare_lines(c: dict[str, Any] | None) -> list[str]:
    if c is None:
        return []
    if c.get("skipped"):
        return [f"base vs tuned: skipped: {c['skipped']}"]
    tuned = c.get("tuned") or {}
    name = tuned.get("spec") if isinstance(tuned, dict) else tuned
    lines = [f"base vs tuned ({name}; report: compare/report.md):"]
    for sec, st in (c.get("sections") or {}).items():
        h = st.get("headline") or {}
        if st.get("status") != "done":
            lines.append(f"  {sec:<12} {st.get('status')}: {st.get('reason')}")
        elif sec == "weights":
            lines.append(
                f"  {sec:<12} {h.get('modules_changed')}/{h.get('modules')} modules changed; top {h.get('top_module')} "
                f"(relative norm {_num(h.get('top_relative_norm'))}); overlap with W's principal directions "
                f"{_num(h.get('mean_principal_overlap'))} vs chance {_num(h.get('principal_overlap_chance'))}"
            )
        elif sec == "activations":
            t = h.get("tasks") or {}
            lines.append(
                f"  {sec:<12} task prompts differ from layer {t.get('first_changed_layer')} (most at {t.get('top_layer')}); "
                f"next-token KL {_num(h.get('mean_kl'))}{_ci(h.get('mean_kl_ci95'))}"
            )
        elif sec == "emotions":
            lines.append(
                f"  {sec:<12} probe accuracy base {_num(h.get('base_best_accuracy'))} / tuned "
                f"{_num(h.get('tuned_best_accuracy'))} (chance {_num(h.get('chance'))}); concepts rising "
                f"{', '.join(h.get('rises') or []) or 'none'}; falling {', '.join(h.get('falls') or []) or 'none'}"
            )
        elif sec == "steering":
            read = ""
            if h.get("read_back_base") is not None:
                read = (f"; read-back base {_num(h.get('read_back_base'))} vs tuned {_num(h.get('read_back_tuned'))} "
                        f"(random control {_num(h.get('read_back_control_base'))} / "
                        f"{_num(h.get('read_back_control_tuned'))}), tuned − base {_num(h.get('read_back_difference'))}"
                        f"{_ci(h.get('read_back_difference_ci95'))}")
            lines.append(
                f"  {sec:<12} the base's vectors: feels gap base {_num(h.get('base_gap'))} vs tuned {_num(h.get('tuned_gap'))} "
                f"(random control {_num(h.get('control_gap_base'))} / {_num(h.get('control_gap_tuned'))}); tuned − base "
                f"{_num(h.get('own_shift_difference'))}{_ci(h.get('own_shift_difference_ci95'))}{read}"
            )
        else:
            lines.append(f"  {sec:<12} done")
    return lines
