"""Steering: the sweep (layer × scale heatmap), the baselines table, example generations, a playground.

Reads ``steering/summary.json``, ``steering/grid.json`` and ``steering/generations.jsonl`` (written by
``psylens steer sweep``). The playground is the one place the explorer loads a model: only when the
user clicks *Generate*, once per model (``st.cache_resource``).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from psylens.apps.views import kit
from psylens.runs import Run
from psylens.steering import artifacts as SA

__all__ = [
    "TITLE",
    "available",
    "render",
    "summary_table",
    "grid_frame",
    "heatmap",
    "examples_frame",
    "read_generations",
    "generate_pair",
    "sweep_directions",
]

TITLE = "Steering"

SUMMARY = SA.SUMMARY
GRID = SA.GRID
GENERATIONS = SA.GENERATIONS
DIRECTIONS = SA.PROBE_DIRECTIONS
VECTORS = SA.VECTORS
MAKE = "`psylens steer sweep --run RUN` (or `psylens demo`) writes it"

SUMMARY_ART = kit.Artifact(SUMMARY, "json", "steering summary", MAKE, schema=SA.SCHEMA_VERSION)
GRID_ART = kit.Artifact(GRID, "json", "sweep grid (so no heatmap)", MAKE)
GENERATIONS_ART = kit.Artifact(GENERATIONS, "jsonl", "example generations", MAKE)
DIRECTIONS_ART = kit.Artifact(DIRECTIONS, "directions", "directions file", "`psylens probe` or the sweep writes it")


SUMMARY_FIELDS: dict[str, Any] = {
    "emotions": dict, "mean_success": (int, float), "mean_baselines": dict, "targets": dict, "n_prompts": dict,
    "residual_norms": dict, "directions": dict, "judge_validation": dict, "fluency_reference": dict,
}
EMOTION_FIELDS: dict[str, Any] = {
    "best_layer": int, "best_alpha": (int, float), "best_scale": (int, float), "success": (int, float),
    "baselines": dict, "vs": dict, "perplexity_ratio": (int, float),
}


def available(run: Run) -> bool:
    return run.has(SUMMARY)


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _fmt(x: Any, digits: int = 2) -> str:
    v = _num(x)
    return "—" if math.isnan(v) else f"{v:.{digits}f}"


# -- pure helpers (tested without streamlit) ----------------------------------------------------
SAMPLED_COLUMNS = ["steering (sampled)", "prompting (sampled)", "random (sampled)", "none (sampled)", "perplexity × (sampled)"]


INTERVAL_COLUMNS = ["steering [95%]", "beats random", "beats prompting"]


def summary_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per emotion: the chosen layer and scale, success (with its 95% interval where recorded),
    perplexity ratio, baselines, and the "beats" verdicts — a tick only when the paired difference's
    interval excludes zero; old runs without intervals say "(no interval)"."""
    rows = []
    emotions = kit.as_dict(summary.get("emotions"))
    for e, v in emotions.items():
        if not isinstance(v, dict):
            continue
        b = kit.as_dict(v.get("baselines"))
        rows.append({
            "emotion": e,
            "layer": v.get("best_layer") if isinstance(v.get("best_layer"), int) else None,
            "alpha": _num(v.get("best_alpha")),
            "scale (× norm)": _num(v.get("best_scale")),
            "steering": _num(v.get("success")),
            "steering [95%]": kit.fmt_interval(v.get("success"), kit.interval(v, "success")),
            "prompting": _num(b.get("prompting")),
            "random direction": _num(b.get("random")),
            "no steering": _num(b.get("none")),
            "perplexity ×": _num(v.get("perplexity_ratio")),
            "fluent": bool(v.get("meets_fluency", False)),
            "beats random": kit.beats_text(v, "random"),
            "beats prompting": kit.beats_text(v, "prompting"),
        })
        sampled = v.get("sampled")
        if isinstance(sampled, dict):  # the full sweep also scores the chosen cell with sampling
            sb = kit.as_dict(sampled.get("baselines"))
            rows[-1].update({
                "steering (sampled)": _num(sampled.get("success")),
                "prompting (sampled)": _num(sb.get("prompting")),
                "random (sampled)": _num(sb.get("random")),
                "none (sampled)": _num(sb.get("none")),
                "perplexity × (sampled)": _num(sampled.get("perplexity_ratio")),
            })
    cols = ["emotion", "layer", "alpha", "scale (× norm)", "steering", "steering [95%]", "prompting", "random direction",
            "no steering", "perplexity ×", "fluent", "beats random", "beats prompting"]
    if any("steering (sampled)" in r for r in rows):
        cols += SAMPLED_COLUMNS
    return pd.DataFrame(rows, columns=cols)


def grid_frame(grid: Any) -> pd.DataFrame:
    """The dev-split cells of the sweep as a table (empty when ``grid`` is malformed)."""
    cells = grid.get("cells") if isinstance(grid, dict) else None
    if not isinstance(cells, list):
        return pd.DataFrame(columns=["emotion", "layer", "scale", "alpha", "success", "perplexity_ratio"])
    frame = pd.DataFrame([c for c in cells if isinstance(c, dict)])
    for col in ("success", "perplexity_ratio", "scale", "alpha"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def heatmap(frame: pd.DataFrame, emotion: str, max_ratio: float = 1.5, best: tuple[int, float] | None = None) -> go.Figure:
    """Success (colour) over layer × scale for ``emotion``, each cell annotated with its perplexity ratio.

    Cells over ``max_ratio`` are marked ✗ (too disfluent to count); the chosen cell is marked ★.
    """
    sub = frame[frame["emotion"] == emotion] if len(frame) else frame
    if len(sub):
        sub = sub[pd.to_numeric(sub.get("layer"), errors="coerce").notna() & pd.to_numeric(sub.get("scale"), errors="coerce").notna()]
    layers = sorted({int(v) for v in sub.get("layer", [])})
    scales = sorted({float(v) for v in sub.get("scale", [])})
    z = [[math.nan] * len(scales) for _ in layers]
    text = [[""] * len(scales) for _ in layers]
    for _, c in sub.iterrows():
        i, j = layers.index(int(c["layer"])), scales.index(float(c["scale"]))
        z[i][j] = _num(c.get("success"))
        ratio = _num(c.get("perplexity_ratio"))
        mark = " ✗" if not math.isnan(ratio) and ratio > max_ratio else ""
        star = "★ " if best is not None and (int(c["layer"]), float(c["scale"])) == (int(best[0]), float(best[1])) else ""
        text[i][j] = f"{star}{_fmt(z[i][j])}<br>ppl× {_fmt(ratio)}{mark}"
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[f"{s:g}" for s in scales], y=[str(v) for v in layers], text=text, texttemplate="%{text}",
            zmin=0, zmax=1, colorscale="Viridis", colorbar={"title": "success"},
            hovertemplate="layer %{y}, scale %{x}<br>success %{z:.2f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"{emotion}: success on the dev prompts (✗: perplexity ratio > {max_ratio:g}, ★: chosen)",
        xaxis_title="scale (× mean residual norm at the layer)", yaxis_title="layer", height=120 + 60 * max(len(layers), 1),
        margin={"t": 60, "b": 40}, template=kit.TEMPLATE,
    )
    # categorical axes: one tick per swept layer and scale, never interpolated numbers (9, 13, 17 -> "10, 15")
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=[f"{s:g}" for s in scales])
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=[str(v) for v in layers])
    return fig


def read_generations(text: str) -> list[dict[str, Any]]:
    """Parse ``generations.jsonl`` text, skipping lines that are not JSON objects."""
    out = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


CONDITIONS = {"none": "no steering", "steer": "steered", "prompting": "prompting", "random": "random direction"}


def examples_frame(gens: list[dict[str, Any]], emotion: str, *, sampled: bool = False, k: int = 8) -> pd.DataFrame:
    """Held-out prompts, one row per prompt and condition (no steering, steered, prompting, random
    direction): the full text and the judged emotion in its own column (greedy by default)."""
    rows: list[dict[str, Any]] = []
    prompts: list[int] = []
    seen: set[tuple[int, str]] = set()
    for g in gens:
        if g.get("split") != "test" or bool(g.get("sampled")) != sampled:
            continue
        cond = str(g.get("condition"))
        if cond not in CONDITIONS or not (cond == "none" or g.get("emotion") == emotion):
            continue
        try:
            idx = int(g.get("prompt_index", -1))
        except (TypeError, ValueError):
            idx = -1
        if (idx, cond) in seen:  # the unsteered text is written once per emotion's sweep
            continue
        if idx not in prompts:
            if len(prompts) >= k:
                continue
            prompts.append(idx)
        seen.add((idx, cond))
        judged = g.get("judged")
        rows.append({"_p": prompts.index(idx), "_c": list(CONDITIONS).index(cond), "prompt": str(g.get("prompt", "")),
                     "condition": CONDITIONS[cond], "judged": str(judged) if judged else "— (none dominant)",
                     "text": str(g.get("text", ""))})
    frame = pd.DataFrame(rows, columns=["_p", "_c", "prompt", "condition", "judged", "text"])
    frame = frame.sort_values(["_p", "_c"], kind="stable").drop(columns=["_p", "_c"]).reset_index(drop=True)
    return frame


# -- rendering ------------------------------------------------------------------------------------
def render(run: Run) -> None:
    st.title(TITLE)
    summary = kit.load(run, SUMMARY_ART)
    if summary is None:
        return
    if not isinstance(summary.get("emotions"), dict) or not summary["emotions"]:
        st.warning(f"`{SUMMARY}` holds no per-emotion results; rerun `psylens steer sweep --run {run.path}`.")
        return
    problems = kit.field_problems(summary, SUMMARY_FIELDS) + [
        f"emotions.{e}: {p}" for e, v in summary["emotions"].items() for p in kit.field_problems(v, EMOTION_FIELDS)
    ] + [f"emotions.{e} is a {type(v).__name__}" for e, v in summary["emotions"].items() if not isinstance(v, dict)]
    if problems:
        st.warning(f"`{SUMMARY}` has fields of the wrong type ({'; '.join(problems[:3])}{'; …' if len(problems) > 3 else ''});"
                   f" they are not shown — rerun `psylens steer sweep --run {run.path}`.")
    summary = {k: v for k, v in summary.items() if not kit.field_problems({k: v}, SUMMARY_FIELDS)}
    summary["emotions"] = {str(k): {f: x for f, x in v.items() if not kit.field_problems({f: x}, EMOTION_FIELDS)}
                           for k, v in summary["emotions"].items() if isinstance(v, dict)}
    st.caption(
        f"Judge `{summary.get('judge', '?')}` · "
        f"{_n(summary, 'dev')} dev prompts pick the layer and scale, {_n(summary, 'test')} held-out prompts score them."
    )
    with kit.guard(SUMMARY_ART):
        render_headline(summary)
    st.divider()
    with kit.guard(SUMMARY_ART):
        render_table(summary)
    st.divider()
    with kit.guard(GRID_ART):
        render_heatmaps(run, summary)
    st.divider()
    with kit.guard(GENERATIONS_ART):
        render_examples(run, summary)
    st.divider()
    with kit.guard("The playground"):
        render_playground(run, summary)


def _n(summary: dict[str, Any], split: str) -> str:
    n = summary.get("n_prompts")
    return str(n.get(split, "?")) if isinstance(n, dict) else "?"


def render_headline(summary: dict[str, Any]) -> None:
    targets = kit.as_dict(summary.get("targets"))
    base = kit.as_dict(summary.get("mean_baselines"))
    cols = st.columns(4)
    kit.metric(cols[0], "Mean success (steering)", summary.get("mean_success"), kit.interval(summary, "mean_success"),
                   help=f"target ≥ {targets.get('success', 0.8)} at perplexity ratio ≤ {targets.get('max_perplexity_ratio', 1.5)}"
                        " (95% interval over test prompts where recorded)")
    base_ci = summary.get("mean_baselines_ci95")
    kit.metric(cols[1], "Prompting", base.get("prompting"), kit.interval(base_ci, "prompting"))
    kit.metric(cols[2], "Random direction", base.get("random"), kit.interval(base_ci, "random"))
    kit.metric(cols[3], "No steering", base.get("none"), kit.interval(base_ci, "none"))
    verdicts = [f"beats {n}: {kit.beats_text({'vs': summary.get('mean_vs')}, n)}" for n in ("random", "prompting")
                if kit.paired({"vs": summary.get("mean_vs")}, n) is not None]
    if verdicts:
        st.caption("Mean over emotions, paired by prompt — " + " · ".join(verdicts) + " (difference [95% interval]).")
    if summary.get("meets_target") is True:
        st.success("Steering meets the target: success, fluency, and beats both baselines.")
    else:
        st.warning("Steering does not meet the target on this model (see the table); numbers are reported as measured.")
    jv = summary.get("judge_validation")
    if isinstance(jv, dict) and isinstance(jv.get("accuracy"), (int, float)):
        st.caption(
            f"The judge's own ceiling: it names the emotion of {_fmt(jv['accuracy'])} of {jv.get('n', '?')} plain "
            f"statements of it (built-in `{jv.get('set', 'explicit')}` set; {_fmt(jv.get('no_call'))} tied or "
            "without an emotion word). No steered text is likely to score much above that."
        )
    ref = summary.get("fluency_reference")
    if isinstance(ref, dict) and isinstance(ref.get("unsteered_sampled"), (int, float)):
        st.caption(
            f"What the perplexity cap ({targets.get('max_perplexity_ratio', 1.5)}×) means here: the model's own unsteered "
            f"text sampled at temperature {ref.get('temperature', 1.0)} scores {_fmt(ref['unsteered_sampled'])}×, "
            f"prompting {_fmt(ref.get('prompting'))}× (the denominator is greedy unsteered text)."
        )


def render_table(summary: dict[str, Any]) -> None:
    st.subheader("Chosen vectors and baselines (held-out prompts)")
    table = summary_table(summary)
    st.dataframe(
        table, hide_index=True, width="stretch",
        column_config={c: st.column_config.NumberColumn(c, format="%.2f") for c in
                       ("alpha", "scale (× norm)", "steering", "prompting", "random direction", "no steering", "perplexity ×",
                        *SAMPLED_COLUMNS)},
    )
    st.caption("Success: fraction of generations whose dominant judged emotion is the target. "
               "Perplexity ×: perplexity of the steered text under the unsteered model, over that of unsteered text. "
               "Beats X: ✓ only when the 95% interval of the paired difference (same prompts) excludes zero.")


def render_heatmaps(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Sweep: layer × scale")
    grid = kit.load(run, GRID_ART)
    if grid is None:
        return
    frame = grid_frame(grid)
    if frame.empty or not {"emotion", "layer", "scale"} <= set(frame.columns):
        st.warning(f"`{GRID}` holds no cells.")
        return
    usable = pd.to_numeric(frame["layer"], errors="coerce").notna() & frame["scale"].notna()
    if not usable.all():
        st.warning(f"`{GRID}`: {int((~usable).sum())} of {len(frame)} cells lack a numeric layer or scale; not drawn.")
        frame = frame[usable]
        if frame.empty:
            return
    emotions = [e for e in summary["emotions"] if e in set(frame["emotion"])]
    if not emotions:
        st.warning(f"`{GRID}` has no cells for the emotions of `{SUMMARY}`.")
        return
    emotion = st.selectbox("Emotion", emotions, key="steering_heatmap_emotion")
    entry = kit.as_dict(summary["emotions"].get(emotion))
    best = (entry.get("best_layer"), entry.get("best_scale")) if not math.isnan(_num(entry.get("best_scale"))) \
        and isinstance(entry.get("best_layer"), int) else None
    max_ratio = _num(kit.as_dict(summary.get("targets")).get("max_perplexity_ratio", 1.5))
    st.plotly_chart(heatmap(frame, emotion, max_ratio if not math.isnan(max_ratio) else 1.5, best), width="stretch")


def render_examples(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Examples (held-out prompts)")
    gens = kit.load(run, GENERATIONS_ART)
    if gens is None:
        return
    emotion = st.selectbox("Emotion", list(summary["emotions"]), key="steering_examples_emotion")
    frame = examples_frame(gens, emotion)
    if frame.empty:
        st.info(f"No held-out generations for {emotion} in `{GENERATIONS}`.")
        return
    st.table(frame.set_index(["prompt", "condition"]))  # full texts, wrapped
    st.caption("Judged: the judge's dominant emotion for the text; — means no single emotion dominated.")


def sweep_directions(run: Run, summary: dict[str, Any]) -> str:
    """The directions file the sweep steered with (its best alphas belong to it), else the probes'.

    The path recorded in the summary is followed only when it stays inside the run
    (``kit.resolve_inside``: no absolute paths, no ``..``, no symlinks out) and the file exists.
    """
    rel = kit.as_dict(summary.get("directions")).get("file")
    if isinstance(rel, str) and rel:
        try:
            if kit.resolve_inside(run, rel).is_file():
                return rel
        except ValueError:
            pass
    return DIRECTIONS


_sweep_directions = sweep_directions


def generate_pair(model: Any, sv: Any, prompt: str, max_new_tokens: int) -> tuple[str, str]:
    """(unsteered, steered) generations of ``prompt``, holding ``kit.MODEL_LOCK`` throughout.

    The model is shared by every browser session and steering hooks are global state on it: the lock
    keeps one session's attach + generate + remove from overlapping any other session's use.
    """
    with kit.MODEL_LOCK:
        base = model.generate(prompt, max_new_tokens=max_new_tokens)[0]
        with sv.apply(model):
            steered = model.generate(prompt, max_new_tokens=max_new_tokens)[0]
    return base, steered


def render_playground(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Playground")
    spec = kit.run_model(kit.load(run, kit.RUN_META, quiet=True))
    if spec is None:
        st.info("run.json does not name the run's model, so the playground cannot load it.")
        return
    emotions = list(summary["emotions"])
    c1, c2, c3 = st.columns(3)
    emotion = c1.selectbox("Emotion", emotions, key="steering_play_emotion")
    entry = kit.as_dict(summary["emotions"].get(emotion))
    rel = sweep_directions(run, summary)
    dirs_art = DIRECTIONS_ART.with_rel(rel)
    dirs = kit.load(run, dirs_art, quiet=True) if run.has(rel) else None
    if dirs is None and run.has(rel):
        kit.load(run, dirs_art)  # corrupt: say so in one line
    vec_rel = SA.vector_file(emotion) if emotion and "/" not in emotion and emotion not in (".", "..") else None
    has_vec = vec_rel is not None and run.has(vec_rel)
    layers: list[int] = []
    if dirs is not None:
        layers = [int(v) for v in dirs.layers]
    elif has_vec and isinstance(entry.get("best_layer"), int):
        layers = [int(entry["best_layer"])]
    if not layers:
        st.info(f"No `{rel}` and no saved vector for {emotion}: nothing to steer with.")
        return
    default_layer = entry.get("best_layer") if entry.get("best_layer") in layers else layers[0]
    layer = c2.selectbox("Layer", layers, index=layers.index(default_layer), key="steering_play_layer")
    norms = kit.as_dict(summary.get("residual_norms"))
    best_alpha = _num(entry.get("best_alpha"))
    alpha = c3.number_input("Alpha (activation units)", value=8.0 if math.isnan(best_alpha) else best_alpha,
                            step=1.0, key="steering_play_alpha")
    norm = _num(norms.get(str(layer)))
    if not math.isnan(norm) and norm > 0:
        st.caption(f"Mean residual norm at layer {layer}: {norm:.1f} (alpha / norm = {alpha / norm:.2f})")
    prompt = st.text_area("Prompt", value="Describe what you did this morning.", key="steering_play_prompt")
    n_tokens = st.slider("New tokens", 8, 128, 48, key="steering_play_tokens")
    if not st.button("Generate", key="steering_play_go"):
        st.caption(f"Generating loads `{spec[0]}` (the run's model, from run.json) once, then it is cached.")
        return
    if not prompt.strip():
        st.warning("Type a prompt first.")
        return
    try:
        from psylens.steering.judges import EMOTIONS, LexiconJudge
        from psylens.steering.vector import SteeringVector

        if dirs is not None:
            sv = SteeringVector.from_directions(dirs, emotion, layers=[int(layer)], alpha=float(alpha))
        else:
            vec = kit.resolve_inside(run, vec_rel)  # type: ignore[arg-type]
            sv = SteeringVector.load(vec).replace(alpha=float(alpha))
        model = kit.shared_model(*spec)
        base, steered = generate_pair(model, sv, prompt, n_tokens)
        scores = LexiconJudge().score([base, steered])
    except ValueError as e:
        st.error(f"Cannot steer: {e}")
        return
    left, right = st.columns(2)
    for col, name, text, s in ((left, "Unsteered", base, scores[0]),
                               (right, f"Steered ({emotion}, layer {layer}, alpha {alpha:g})", steered, scores[1])):
        col.markdown(f"**{name}**")
        col.write(text)
        col.dataframe(pd.DataFrame({"emotion": list(EMOTIONS), "judge score": [float(x) for x in s]}),
                      hide_index=True, width="stretch")
