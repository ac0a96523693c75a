"""The probes step of a run: harvest (or reuse) activations, fit, analyse, write ``RUN/probes/``.

``run_probes(model, run)`` is what ``psylens probe`` and ``psylens demo`` call. It writes::

    RUN/probes/summary.json               headline numbers (see below) + one section per analysis
    RUN/probes/directions.safetensors     Directions (+ .json sidecar) of the first site, every label
    RUN/probes/directions-<site>.safetensors   the other sites
    RUN/probes/probes.safetensors|json    fitted six-emotion probes per layer (first site; others: probes-<site>)
    RUN/probes/layer_curve.parquet        accuracy by layer with every control, per site and label set
    RUN/probes/confusion.json             confusion matrices per layer (real and shuffled labels)
    RUN/probes/geometry_{cosine,pca,valence}.parquet
    RUN/probes/cross_format.parquet       implicit events ↔ explicit statements
    RUN/probes/persistence.parquet        accuracy vs token offset after the event
    RUN/probes/system_prompt_shift.parquet
    RUN/probes/eval.parquet               with an eval file: accuracy per layer on it

``summary.json`` top-level keys (first site): ``labels`` (the six emotions, or every label but
``neutral`` for other sets), ``layers``, ``accuracy_by_layer``, ``shuffled_accuracy_by_layer``,
``best_layer``, ``best_accuracy``, ``chance``, and with an eval file ``eval: {accuracy_by_layer,
accuracy_at_best_layer, n}``; ``all_labels`` repeats the curve with ``neutral`` included;
``sites`` has the same block for every site.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from psylens.activations import Activations
from psylens.harvest import check_output
from psylens.io import finite_or_none
from psylens.probes import analyses as an
from psylens.probes import artifacts as art
from psylens.probes.directions import Directions, emotion_directions
from psylens.probes.fit import EvalResult, ProbeResults, eval_labels, fit_probes
from psylens.runs import Run, open_or_create_run
from psylens.sites import validate_sites
from psylens.stimuli import EMOTIONS, Stimuli, load, read_text_resource

if TYPE_CHECKING:
    from psylens.models import Model

__all__ = ["run_probes", "ANALYSES", "READOUTS", "DEFAULT_POSITIONS", "PROBES_DIR", "headline_labels", "parse_valence"]

log = logging.getLogger(__name__)

ANALYSES = ("geometry", "cross_format", "persistence", "system_prompt")
PROBES_DIR = art.DIR
ACTIVATION_SET = "probes"  # where the probes harvest when the run's default set is another harvest
READOUTS = ("mean", "last")
DEFAULT_POSITIONS = "mean"
TRANSFER_GROUPS = 40  # scenarios harvested at the last token to train the persistence transfer probes
NEUTRAL = "neutral"


def headline_labels(classes: Sequence[str]) -> list[str]:
    """The labels of the headline number: the six emotions when present, else every label but neutral."""
    six = [e for e in EMOTIONS if e in classes]
    if len(six) >= 2:
        return six
    rest = [c for c in classes if c != NEUTRAL]
    return rest if len(rest) >= 2 else list(classes)


def parse_valence(text: str) -> dict[str, float]:
    """``"joy>surprise>neutral>fear=sadness=disgust=anger"`` → scores (``>`` ranks, ``=`` ties)."""
    tiers = [t.strip() for t in text.split(">")]
    out: dict[str, float] = {}
    for rank, tier in enumerate(tiers):
        names = [n.strip() for n in tier.split("=") if n.strip()]
        if not names:
            raise ValueError(f"valence order {text!r} has an empty tier; write e.g. 'joy>surprise>neutral>fear=anger'")
        for name in names:
            if name in out:
                raise ValueError(f"valence order {text!r} names {name!r} twice")
            out[name] = float(len(tiers) - rank)
    if len(out) < 3:
        raise ValueError(f"valence order {text!r} ranks {len(out)} labels; give at least three")
    return out


def _as_run(run: Run | str | os.PathLike[str], model: Model) -> Run:
    if isinstance(run, Run):
        return run
    return open_or_create_run(Path(run), command="psylens.probes.run_probes", model=model)


def _activations_dir(run: Run, model: Model, stim: Stimuli, sites: list[str], positions: str) -> Path:
    """The run's default activation set when it holds (or will hold) this harvest; else the set ``probes``.

    A run made by ``psylens harvest --positions last`` keeps its activations; the probes' own read-out
    goes beside them (``RUN/activations/probes``), so harvest → probe works in one run.
    """
    default = run.activations_path()
    try:
        check_output(model, stim, default, sites=sites, positions=positions)
        return default
    except ValueError:
        log.info("the run's activations are another harvest; the probes harvest into activation set %r", ACTIVATION_SET)
        return run.activations_path(ACTIVATION_SET)


def _block(r: ProbeResults) -> dict[str, Any]:
    s = r.summary()
    keep = ("labels", "layers", "accuracy_by_layer", "shuffled_accuracy_by_layer", "best_layer", "best_accuracy", "chance",
            "macro_f1_by_layer", "shuffled_macro_f1_by_layer", "selectivity", "emergence_layer",
            "shuffled_accuracy_at_best_layer", "n", "kind", "cv", "n_splits", "C", "site",
            # intervals and the lexical baseline (psylens.stats; ProbeResults.interval_summary)
            "accuracy_ci95_by_layer", "best_accuracy_ci95", "layers_tied_with_best",
            "shuffled_accuracy_ci95_at_best_layer", "lexical_baseline", "rise_above_lexical_by_layer",
            "rise_above_lexical_ci95_by_layer", "beats_lexical_at_best_layer", "intervals")
    out = {k: s[k] for k in keep}
    out["landmarks"] = an.curve_landmarks(r)
    return out


SEPARATION_NOTE = (
    "summary/layers.json ranks layers by the Fisher ratio tr(S_between)/tr(S_within): an in-sample ratio of "
    "scatter traces over all dimensions and all labels (neutral included), dominated by the high-variance "
    "directions and by each scenario's shared context. The probes rank layers by held-out-scenario accuracy of "
    "a regularised linear probe on the six emotions, which can use any low-variance direction. They measure "
    "different things, so their best layers need not agree; trust the probes for decodability, and see "
    "layers_tied_with_best for which layers the probes cannot tell apart."
)


def _separation_note(run: Run, res: ProbeResults, site: str) -> dict[str, Any]:
    """Why the per-layer separation summary and the probes may name different best layers (and by how much)."""
    from psylens import artifacts

    out: dict[str, Any] = {"probe_best_layer": res.best_layer, "separation_best_layer": None,
                           "probe_accuracy_at_separation_best_layer": None, "separation_best_layer_tied": None,
                           "why": SEPARATION_NOTE}
    try:
        layers_json = run.read_json(artifacts.LAYER_SUMMARY) if run.file(artifacts.LAYER_SUMMARY).is_file() else None
    except (OSError, ValueError):
        layers_json = None
    sep = (layers_json or {}).get("sites", {}).get(site, {}).get("best_layer")
    if sep is None or int(sep) not in res.layers:
        return out
    j = res.layers.index(int(sep))
    out.update(
        separation_best_layer=int(sep),
        probe_accuracy_at_separation_best_layer=round(float(res.accuracy[j]), 4),
        probe_accuracy_ci95_at_separation_best_layer=[round(float(v), 4) for v in res.accuracy_ci95[j]],
        separation_best_layer_tied=int(sep) in res.layers_tied_with_best,
    )
    return out


def _check_eval(path: str | os.PathLike[str], classes: Sequence[str]) -> Stimuli:
    stim = load(path)
    missing = [s.id for s in stim if s.label is None]
    if missing:
        raise ValueError(
            f"eval file {str(path)!r}: {len(missing)} of {len(stim)} texts have no label (first: {missing[0]!r}); "
            f"every evaluation text needs a 'label', one of {list(classes)}"
        )
    unknown = sorted({s.label for s in stim if s.label not in classes})  # type: ignore[misc]
    if unknown:
        raise ValueError(
            f"eval file {str(path)!r} has labels {unknown} that the training set lacks; the probes know "
            f"{list(classes)}. Remove those texts or train on a set that has them"
        )
    return stim


def run_probes(
    model: Model,
    run: Run | str | os.PathLike[str],
    *,
    stimuli: str | os.PathLike[str] | Stimuli = "emotions",
    sites: Sequence[str] | str = ("resid_post",),
    eval_path: str | os.PathLike[str] | None = None,
    seed: int = 0,
    acts: Activations | None = None,
    progress: bool = True,
    kind: str = "logistic",
    analyses: Sequence[str] = ANALYSES,
    persistence_tokens: int = 200,
    persistence_groups: int = 8,
    neutral_texts: int = 20,
    batch_size: int = 16,
    valence: Mapping[str, float] | None = None,
    threads: int | None = None,
    positions: str = DEFAULT_POSITIONS,
) -> dict[str, Any]:
    """Run the probes step on ``model`` and write ``RUN/probes/`` (see the module doc). Returns the summary.

    Args:
        model: a loaded psylens ``Model``.
        run: a ``Run`` or a directory (created as a run if it is not one).
        stimuli: built-in set name, JSONL path or ``Stimuli`` (labels and groups needed).
        sites: sites to probe; the first is the headline.
        eval_path: optional labelled JSONL of texts never used in training.
        seed: folds, shuffles, control task.
        acts: activations already harvested for ``stimuli`` (the demo passes its own); else harvested
            into ``RUN/activations``.
        progress: progress bars for the harvests.
        kind: ``"logistic"`` or ``"mlp"`` for the layer-curve probes (the analyses always use logistic probes).
        analyses: any of ``ANALYSES``; the layer curve always runs.
        persistence_tokens: the largest token offset decoded after the event (≥ 200 recommended).
        persistence_groups: scenarios used for persistence (× the emotions).
        neutral_texts: neutral texts used for the system-prompt shift.
        batch_size: harvest batch size.
        valence: valence score per label for the geometry analysis (default ``analyses.VALENCE``).
        threads: torch threads for this step (restored afterwards); ``None`` leaves torch's setting.
            On a small shared CPU ``1`` harvests about twice as fast as 2 (threads wait on each other).
        positions: the read-out of each text — ``"mean"`` over its tokens (default) or its ``"last"``
            token — used for the training set, the eval file, the explicit statements and the neutral
            texts alike. Mean pooling carries over to texts of other styles far better than the last
            token (measured in BENCHMARKS.md: held-out file 0.78 vs 0.60 at the best layer).
    """
    if positions not in READOUTS:
        raise ValueError(f"positions {positions!r} is not one of {list(READOUTS)}; probes read one vector per text")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1 (or None to leave torch's setting), got {threads}")
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_probes(model, run, stimuli=stimuli, sites=sites, eval_path=eval_path, seed=seed, acts=acts,
                           progress=progress, kind=kind, analyses=analyses, persistence_tokens=persistence_tokens,
                           persistence_groups=persistence_groups, neutral_texts=neutral_texts, batch_size=batch_size,
                           valence=valence, positions=positions)
    finally:
        torch.set_num_threads(before)


def _run_probes(
    model: Model,
    run: Run | str | os.PathLike[str],
    *,
    stimuli: str | os.PathLike[str] | Stimuli,
    sites: Sequence[str] | str,
    eval_path: str | os.PathLike[str] | None,
    seed: int,
    acts: Activations | None,
    progress: bool,
    kind: str,
    analyses: Sequence[str],
    persistence_tokens: int,
    persistence_groups: int,
    neutral_texts: int,
    batch_size: int,
    valence: Mapping[str, float] | None,
    positions: str,
) -> dict[str, Any]:
    import torch

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    site_list = validate_sites(sites)
    unknown = [a for a in analyses if a not in ANALYSES]
    if unknown:
        raise ValueError(f"unknown analyses {unknown}; choose from {list(ANALYSES)}")
    stim = stimuli if isinstance(stimuli, Stimuli) else load(stimuli)
    classes = sorted({s.label for s in stim if s.label is not None})
    if len(classes) < 2:
        raise ValueError(
            f"stimuli {stim.name!r} have {len(classes)} label(s) {classes}; probes need at least two labels"
        )
    eval_stim = _check_eval(eval_path, classes) if eval_path is not None else None
    run = _as_run(run, model)
    # recorded in steps/probes.json only when everything below is written (an exception records nothing)
    step = run.begin_step("probes", {
        "stimuli": stim.name, "sites": site_list, "eval": str(eval_path) if eval_path is not None else None,
        "kind": kind, "analyses": list(analyses), "positions": positions, "seed": seed,
        "persistence_tokens": persistence_tokens, "persistence_groups": persistence_groups,
        "neutral_texts": neutral_texts, "batch_size": batch_size,
        "valence": dict(valence) if valence is not None else None,
    })
    pdir = run.file(PROBES_DIR)
    pdir.mkdir(parents=True, exist_ok=True)

    # -- activations -------------------------------------------------------------------------
    t = time.perf_counter()
    if acts is None:
        log.info("harvesting %d texts at %s", len(stim), site_list)
        acts = model.harvest(stim, sites=site_list, positions=positions, batch_size=batch_size,
                             out=_activations_dir(run, model, stim, site_list, positions), progress=progress)
    else:
        if acts.positions != positions:
            raise ValueError(
                f"the given activations were read out at positions={acts.positions!r} but the probes step "
                f"was asked for positions={positions!r}; pass positions={acts.positions!r} or harvest again"
            )
        missing = [s for s in site_list if s not in acts.tensors]
        if missing:
            raise ValueError(f"the given activations lack sites {missing}; they have {acts.sites}")
        if list(acts.ids) != list(stim.ids):
            raise ValueError(
                f"the given activations were harvested from other stimuli than {stim.name!r} "
                f"({len(acts)} vs {len(stim)} texts, or other ids); pass the stimuli they came from"
            )
    timings["harvest"] = time.perf_counter() - t
    fmt = str(acts.meta.get("format", "auto"))
    head = headline_labels(acts.classes)
    all_labels = acts.classes

    # -- probes and directions per site ------------------------------------------------------
    t = time.perf_counter()
    results: dict[str, ProbeResults] = {}
    results_all: dict[str, ProbeResults] = {}
    directions: dict[str, Directions] = {}
    for site in site_list:
        results[site] = fit_probes(acts, site=site, labels=head, kind=kind, seed=seed)
        if set(all_labels) != set(head):
            results_all[site] = fit_probes(acts, site=site, kind=kind, seed=seed, controls=("shuffled",))
        center = "group" if all(g is not None for g in acts.groups) else None
        directions[site] = emotion_directions(acts, site=site, center_by=center)
    timings["probes"] = time.perf_counter() - t
    first = site_list[0]
    main, main_all, dirs = results[first], results_all.get(first), directions[first]
    best = main.best_layer

    import pandas as pd

    curves = []
    confusion: dict[str, Any] = {}
    for site in site_list:
        for name, res in (("headline", results[site]), ("all_labels", results_all.get(site))):
            if res is None:
                continue
            curves.append(res.table().assign(label_set=name))
            confusion.setdefault(site, {})[name] = {
                "labels": list(res.classes),
                "layers": list(res.layers),
                "real": res.confusion.tolist(),
                "shuffled": None if res.shuffled_confusion is None else res.shuffled_confusion.tolist(),
            }
        drel = art.directions_file(site, site == first)
        directions[site].save(step.output(drel))
        step.output(str(Path(drel).with_suffix(".json")))
        pname = art.probes_name(site, site == first)
        results[site].save(pdir, name=pname)
        step.output(f"{PROBES_DIR}/{pname}.safetensors")
        step.output(f"{PROBES_DIR}/{pname}.json")
    run.write_table(art.LAYER_CURVE, pd.concat(curves, ignore_index=True))
    run.write_json(art.CONFUSION, confusion)
    step.output(art.LAYER_CURVE)
    step.output(art.CONFUSION)

    summary: dict[str, Any] = {
        "schema_version": art.SCHEMA_VERSION,
        **_block(main),
        "site": first,
        "all_labels": _block(main_all) if main_all is not None else None,
        "sites": {s: {**_block(results[s]), "all_labels": _block(results_all[s]) if s in results_all else None}
                  for s in site_list},
        "stimuli": stim.name,
        "n": len(acts),
        "positions": acts.positions,
        "format": fmt,
        "model": model.describe(),
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "directions": {
            "file": Path(art.DIRECTIONS).name,
            "method": dirs.method,
            "center_by": dirs.center_by,
            "emotions": list(dirs.emotions),
            "site": first,
        },
        "analyses": {},
    }
    summary["best_layer_vs_separation"] = _separation_note(run, main, first)
    notes: list[str] = []

    # -- eval --------------------------------------------------------------------------------
    if eval_stim is not None:
        t = time.perf_counter()
        ev_acts = model.harvest(eval_stim, sites=site_list, positions=positions, format=fmt, batch_size=batch_size,
                                progress=progress)
        summary["eval"], table = _evaluate(ev_acts, main, main_all, dirs, first, head, str(eval_path))
        run.write_table(art.EVAL, table)
        step.output(art.EVAL)
        timings["eval"] = time.perf_counter() - t

    # -- analyses ----------------------------------------------------------------------------
    if "geometry" in analyses:
        t = time.perf_counter()
        center = "group" if all(g is not None for g in acts.groups) else None
        geo = an.geometry(acts, directions=dirs, site=first, center_by=center,
                          valence=valence if valence is not None else an.VALENCE)
        for name, table in geo.tables().items():
            rel = art.GEOMETRY.get(name, f"{PROBES_DIR}/geometry_{name}.parquet")
            run.write_table(rel, table)
            step.output(rel)
        summary["geometry"] = geo.summary(best)
        summary["analyses"]["geometry"] = ", ".join(Path(art.GEOMETRY[k]).name for k in ("cosine", "pca", "valence"))
        timings["geometry"] = time.perf_counter() - t

    if "cross_format" in analyses:
        t = time.perf_counter()
        explicit = load("explicit")
        shared = [c for c in head if c in {s.label for s in explicit}]
        if len(shared) < 2:
            notes.append(f"cross_format skipped: the explicit set shares fewer than two labels with {head}")
        else:
            ex_acts = model.harvest(explicit, sites=[first], positions=positions, format=fmt, batch_size=batch_size,
                                    progress=progress)
            table = an.cross_format(acts, ex_acts, site=first, labels=shared, seed=seed)
            run.write_table(art.CROSS_FORMAT, table)
            step.output(art.CROSS_FORMAT)
            summary["cross_format"] = _cross_summary(table, best)
            summary["analyses"]["cross_format"] = Path(art.CROSS_FORMAT).name
        timings["cross_format"] = time.perf_counter() - t

    if "persistence" in analyses:
        t = time.perf_counter()
        summary["persistence"] = _persistence(
            model, run, stim, acts, first, head, best, fmt, seed, persistence_tokens, persistence_groups, progress,
            notes,
        )
        if summary["persistence"] is not None:
            step.output(art.PERSISTENCE)
            summary["analyses"]["persistence"] = Path(art.PERSISTENCE).name
        timings["persistence"] = time.perf_counter() - t

    if "system_prompt" in analyses:
        t = time.perf_counter()
        summary["system_prompt"] = _system_prompt(model, run, stim, dirs, first, head, best, fmt, neutral_texts,
                                                  batch_size, progress, notes, positions)
        if summary["system_prompt"] is not None:
            step.output(art.SYSTEM_PROMPT_SHIFT)
            summary["analyses"]["system_prompt"] = Path(art.SYSTEM_PROMPT_SHIFT).name
        timings["system_prompt"] = time.perf_counter() - t

    timings["total"] = time.perf_counter() - t_start
    summary["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    summary["notes"] = notes
    # explicitly null where a number is undefined: the valence correlation with fewer than three
    # valence-scored labels, the off-diagonal shift with a single mood prompt (psylens.probes.analyses)
    run.write_json(art.SUMMARY, summary, nan="null")
    step.output(art.SUMMARY)
    step.note(
        out=art.SUMMARY,
        stimuli=stim.name,
        sites=site_list,
        eval=str(eval_path) if eval_path is not None else None,
        kind=kind,
        analyses=list(analyses),
        best_layer=best,
        best_accuracy=finite_or_none(summary["best_accuracy"]),
        timings=summary["timings_s"],
    )
    run.finish_step(step)
    return summary


def _evaluate(
    ev_acts: Activations,
    main: ProbeResults,
    main_all: ProbeResults | None,
    dirs: Directions,
    site: str,
    head: list[str],
    path: str,
) -> tuple[dict[str, Any], Any]:
    import pandas as pd

    keep = [i for i, lab in enumerate(ev_acts.labels) if lab in set(head)]
    if len(keep) < 1:
        raise ValueError(f"eval file {path!r} has no texts labelled with {head}; nothing to score")
    sub = ev_acts.select(keep)
    res: EvalResult = main.evaluate(sub)
    y = eval_labels(sub, main.classes)
    hdirs = dirs.select(emotions=list(main.classes))
    dir_acc = [
        float((an.direction_predict(hdirs, sub.layer(site, layer).float(), layer) == y).mean()) for layer in main.layers
    ]
    out: dict[str, Any] = {**res.summary(), "file": path,
                           "directions_accuracy_by_layer": [round(a, 4) for a in dir_acc]}
    tables = [pd.DataFrame({"label_set": "headline", "layer": list(main.layers), "accuracy": res.accuracy,
                            "macro_f1": res.macro_f1, "directions_accuracy": dir_acc, "n": res.n,
                            "chance": 1.0 / len(main.classes)})]
    if main_all is not None:
        res_all = main_all.evaluate(ev_acts)
        out["all_labels"] = res_all.summary()
        tables.append(pd.DataFrame({"label_set": "all_labels", "layer": list(main_all.layers),
                                    "accuracy": res_all.accuracy, "macro_f1": res_all.macro_f1,
                                    "directions_accuracy": np.nan, "n": res_all.n,
                                    "chance": 1.0 / len(main_all.classes)}))
    out["confusion_at_best_layer"] = res.confusion[main.layers.index(main.best_layer)].tolist()
    return out, pd.concat(tables, ignore_index=True)


def _cross_summary(table: Any, best: int) -> dict[str, Any]:
    out: dict[str, Any] = {"layer": best}
    for (train, test, method), t in table.groupby(["train", "test", "method"]):
        at = t[t["layer"] == best]
        key = f"{method}_{train}_to_{test}"
        out[key] = {
            "accuracy_at_best_layer": round(float(at["accuracy"].iloc[0]), 4) if len(at) else None,
            "shuffled_at_best_layer": round(float(at["shuffled_accuracy"].iloc[0]), 4) if len(at) else None,
            "max_accuracy": round(float(t["accuracy"].max()), 4),
            "max_layer": int(t.loc[t["accuracy"].idxmax(), "layer"]),
            "chance": round(float(t["chance"].iloc[0]), 4),
            "n_test": int(t["n_test"].iloc[0]),
        }
    return out


def _persistence(
    model: Model, run: Run, stim: Stimuli, acts: Activations, site: str, head: list[str], best: int, fmt: str,
    seed: int, n_tokens: int, n_groups: int, progress: bool, notes: list[str],
) -> dict[str, Any] | None:
    from psylens.probes.classifiers import train_logistic_many
    from psylens.probes.directions import class_matrix

    try:
        continuation = an.cut_continuation(model.tokenizer, read_text_resource("neutral_continuation.txt"), n_tokens + 8)
        pstim = an.persistence_stimuli(stim, continuation, labels=head, n_groups=n_groups)
    except (ValueError, OSError) as e:
        notes.append(f"persistence skipped: {e}")
        return None
    n_l = model.n_layers
    layers = sorted({n_l // 4, n_l // 2, best})
    offsets = an.default_offsets(n_tokens)
    by_offset = an.harvest_persistence(model, pstim, offsets=offsets, layers=layers, site=site, format=fmt,
                                       progress=progress)
    # transfer probes: trained on the main set's other scenarios at the event's last token
    held = set(pstim.groups)
    rows = [i for i, g in enumerate(acts.groups) if g not in held and acts.labels[i] in set(head)]
    if acts.positions == "last":
        train = acts.select(rows)
    else:  # single tokens are decoded, so the transfer probe is trained on single (last) tokens
        others = sorted({acts.groups[i] for i in rows}, key=str)
        keep = set(np.random.default_rng(seed).permutation(len(others))[:TRANSFER_GROUPS].tolist())
        chosen = {others[k] for k in keep}
        sub = Stimuli([stim[i] for i in rows if acts.groups[i] in chosen], name=f"{stim.name}:transfer")
        train = model.harvest(sub, sites=[site], layers=layers, positions="last", format=fmt, progress=progress)
    _, x, y, classes, _ = class_matrix(train, site, head, what="persistence transfer")
    y_sh = np.random.default_rng(seed).permutation(y)
    xs = [x[:, train.layer_index(v)].contiguous() for v in layers]
    probes = train_logistic_many(xs + xs, [y] * len(xs) + [y_sh] * len(xs), classes)
    transfer = {v: (probes[i], probes[len(xs) + i]) for i, v in enumerate(layers)}
    table = an.persistence_curve(by_offset, site=site, labels=classes, transfer=transfer, seed=seed)
    run.write_table(art.PERSISTENCE, table)
    at_best = table[table["layer"] == best].sort_values("offset")
    chance = 1.0 / len(classes)
    above = at_best[at_best["transfer_accuracy"] > 2 * chance]["offset"]
    return {
        "layers": layers,
        "offsets": [int(o) for o in at_best["offset"]],
        "n_texts": len(pstim),
        "n_groups": len(held),
        "layer": best,
        "transfer_accuracy_by_offset": [round(float(v), 4) for v in at_best["transfer_accuracy"]],
        "transfer_shuffled_accuracy_by_offset": [round(float(v), 4) for v in at_best["transfer_shuffled_accuracy"]],
        "refit_accuracy_by_offset": [round(float(v), 4) for v in at_best["accuracy"]],
        "refit_shuffled_accuracy_by_offset": [round(float(v), 4) for v in at_best["shuffled_accuracy"]],
        "max_offset": int(at_best["offset"].max()),
        "last_offset_over_2x_chance": int(above.max()) if len(above) else None,
        "chance": round(chance, 4),
    }


def _system_prompt(
    model: Model, run: Run, stim: Stimuli, dirs: Directions, site: str, head: list[str], best: int, fmt: str,
    n_texts: int, batch_size: int, progress: bool, notes: list[str], positions: str,
) -> dict[str, Any] | None:
    import json

    neutral = [s for s in stim if s.label == NEUTRAL][:n_texts]
    if len(neutral) < 3:
        notes.append("system_prompt skipped: fewer than three neutral texts in the stimuli")
        return None
    prompts = json.loads(read_text_resource("system_prompts.json"))
    moods = [e for e in head if e in prompts]
    if not moods:
        notes.append(f"system_prompt skipped: no mood system prompt for {head}")
        return None
    nstim = Stimuli(neutral, name=f"{stim.name}:neutral")
    base = model.harvest(nstim, sites=[site], positions=positions, format=fmt, batch_size=batch_size,
                         progress=progress)
    prompted = {
        m: model.harvest(nstim, sites=[site], positions=positions, format=fmt, system_prompt=prompts[m],
                         batch_size=batch_size, progress=progress)
        for m in moods
    }
    table = an.system_prompt_shift(dirs, base, prompted, site=site)
    run.write_table(art.SYSTEM_PROMPT_SHIFT, table)
    out = an.shift_summary(table, best)
    out["n_texts"] = len(neutral)
    out["prompts"] = {m: prompts[m] for m in moods}
    by_layer = table[table["prompt"] == table["direction"]].groupby("layer")["shift_sd"].mean()
    out["mean_matched_shift_sd_by_layer"] = [round(float(v), 3) for v in by_layer.values]
    return out
