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

from psylens.apps.cache import json_file, mtime_ns, run_meta
from psylens.runs import Run

__all__ = [
    "TITLE",
    "available",
    "render",
    "summary_table",
    "grid_frame",
    "heatmap",
    "examples_frame",
    "read_generations",
]

TITLE = "Steering"

SUMMARY = "steering/summary.json"
GRID = "steering/grid.json"
GENERATIONS = "steering/generations.jsonl"
DIRECTIONS = "probes/directions.safetensors"
VECTORS = "steering/vectors"


def available(run: Run) -> bool:
    return run.has(SUMMARY)


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.nan


def _fmt(x: Any, digits: int = 2) -> str:
    v = _num(x)
    return "—" if math.isnan(v) else f"{v:.{digits}f}"


# -- pure helpers (tested without streamlit) ----------------------------------------------------
SAMPLED_COLUMNS = ["steering (sampled)", "prompting (sampled)", "random (sampled)", "none (sampled)", "perplexity × (sampled)"]


def summary_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per emotion: the chosen layer and scale, success, perplexity ratio, baselines, verdicts."""
    rows = []
    emotions = summary.get("emotions") if isinstance(summary.get("emotions"), dict) else {}
    for e, v in emotions.items():
        if not isinstance(v, dict):
            continue
        b = v.get("baselines") if isinstance(v.get("baselines"), dict) else {}
        rows.append({
            "emotion": e,
            "layer": v.get("best_layer"),
            "alpha": _num(v.get("best_alpha")),
            "scale (× norm)": _num(v.get("best_scale")),
            "steering": _num(v.get("success")),
            "prompting": _num(b.get("prompting")),
            "random direction": _num(b.get("random")),
            "no steering": _num(b.get("none")),
            "perplexity ×": _num(v.get("perplexity_ratio")),
            "fluent": bool(v.get("meets_fluency", False)),
            "beats random": bool(v.get("beats_random", False)),
            "beats prompting": bool(v.get("beats_prompting", False)),
        })
        sampled = v.get("sampled")
        if isinstance(sampled, dict):  # the full sweep also scores the chosen cell with sampling
            sb = sampled.get("baselines") if isinstance(sampled.get("baselines"), dict) else {}
            rows[-1].update({
                "steering (sampled)": _num(sampled.get("success")),
                "prompting (sampled)": _num(sb.get("prompting")),
                "random (sampled)": _num(sb.get("random")),
                "none (sampled)": _num(sb.get("none")),
                "perplexity × (sampled)": _num(sampled.get("perplexity_ratio")),
            })
    cols = ["emotion", "layer", "alpha", "scale (× norm)", "steering", "prompting", "random direction", "no steering",
            "perplexity ×", "fluent", "beats random", "beats prompting"]
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
        margin={"t": 60, "b": 40},
    )
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


def examples_frame(gens: list[dict[str, Any]], emotion: str, *, sampled: bool = False, k: int = 8) -> pd.DataFrame:
    """Held-out prompts side by side: no steering, steering, prompting, random direction (greedy by default)."""
    by_prompt: dict[int, dict[str, Any]] = {}
    for g in gens:
        if g.get("split") != "test" or bool(g.get("sampled")) != sampled:
            continue
        cond = g.get("condition")
        if cond == "none" or g.get("emotion") == emotion:
            row = by_prompt.setdefault(int(g.get("prompt_index", -1)), {"prompt": g.get("prompt", "")})
            label = {"none": "no steering", "steer": "steered", "prompting": "prompting", "random": "random direction"}.get(str(cond))
            if label:
                judged = g.get("judged") or "—"
                row[label] = f"{g.get('text', '')}  [{judged}]"
    cols = ["prompt", "no steering", "steered", "prompting", "random direction"]
    return pd.DataFrame(list(by_prompt.values())[:k], columns=cols)


# -- rendering ------------------------------------------------------------------------------------
def render(run: Run) -> None:
    st.title(TITLE)
    summary = json_file(run, SUMMARY)
    if not isinstance(summary, dict) or not isinstance(summary.get("emotions"), dict) or not summary["emotions"]:
        st.error(f"`{SUMMARY}` holds no per-emotion results; rerun `psylens steer sweep --run {run.path}`.")
        return
    st.caption(
        f"Model `{summary.get('model', '?')}` · judge `{summary.get('judge', '?')}` · "
        f"{_n(summary, 'dev')} dev prompts pick the layer and scale, {_n(summary, 'test')} held-out prompts score them."
    )
    render_headline(summary)
    st.divider()
    render_table(summary)
    st.divider()
    render_heatmaps(run, summary)
    st.divider()
    render_examples(run, summary)
    st.divider()
    render_playground(run, summary)


def _n(summary: dict[str, Any], split: str) -> str:
    n = summary.get("n_prompts")
    return str(n.get(split, "?")) if isinstance(n, dict) else "?"


def render_headline(summary: dict[str, Any]) -> None:
    targets = summary.get("targets") if isinstance(summary.get("targets"), dict) else {}
    base = summary.get("mean_baselines") if isinstance(summary.get("mean_baselines"), dict) else {}
    cols = st.columns(4)
    cols[0].metric("Mean success (steering)", _fmt(summary.get("mean_success")),
                   help=f"target ≥ {targets.get('success', 0.8)} at perplexity ratio ≤ {targets.get('max_perplexity_ratio', 1.5)}")
    cols[1].metric("Prompting", _fmt(base.get("prompting")))
    cols[2].metric("Random direction", _fmt(base.get("random")))
    cols[3].metric("No steering", _fmt(base.get("none")))
    if summary.get("meets_target"):
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
               "Perplexity ×: perplexity of the steered text under the unsteered model, over that of unsteered text.")


def render_heatmaps(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Sweep: layer × scale")
    if not run.has(GRID):
        st.info(f"No `{GRID}` in this run, so no heatmap.")
        return
    frame = grid_frame(json_file(run, GRID))
    if frame.empty or "emotion" not in frame:
        st.warning(f"`{GRID}` holds no cells.")
        return
    emotions = [e for e in summary["emotions"] if e in set(frame["emotion"])]
    emotion = st.selectbox("Emotion", emotions, key="steering_heatmap_emotion")
    entry = summary["emotions"].get(emotion, {})
    best = (entry.get("best_layer"), entry.get("best_scale")) if entry.get("best_scale") is not None else None
    max_ratio = _num((summary.get("targets") or {}).get("max_perplexity_ratio", 1.5))
    st.plotly_chart(heatmap(frame, emotion, max_ratio if not math.isnan(max_ratio) else 1.5, best), width="stretch")


@st.cache_data(show_spinner=False, max_entries=8)
def _generations(path: str, mtime: int) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return read_generations(f.read())


def render_examples(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Examples (held-out prompts)")
    if not run.has(GENERATIONS):
        st.info(f"No `{GENERATIONS}` in this run.")
        return
    path = run.file(GENERATIONS).resolve()
    gens = _generations(str(path), mtime_ns(path))
    emotion = st.selectbox("Emotion", list(summary["emotions"]), key="steering_examples_emotion")
    st.dataframe(examples_frame(gens, emotion), hide_index=True, width="stretch")
    st.caption("[judged emotion] after each text; — means the judge found no single dominant emotion.")


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _model(spec: str) -> Any:
    from psylens.models import load_model

    return load_model(spec, boot_bridge=False)


@st.cache_resource(show_spinner=False, max_entries=2)
def _directions(path: str, mtime: int) -> Any:
    from psylens.steering.vector import load_directions

    return load_directions(path)


def _model_spec(run: Run, summary: dict[str, Any]) -> str | None:
    if isinstance(summary.get("model"), str):
        return summary["model"]
    model = run_meta(run).get("model")
    return model.get("spec") if isinstance(model, dict) else model


def _sweep_directions(run: Run, summary: dict[str, Any]) -> str:
    """The directions file the sweep steered with (its best alphas belong to it), else the probes'."""
    d = summary.get("directions")
    rel = d.get("file") if isinstance(d, dict) else None
    return rel if isinstance(rel, str) and rel and run.has(rel) else DIRECTIONS


def render_playground(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Playground")
    spec = _model_spec(run, summary)
    if not spec:
        st.info("The run does not name its model, so the playground cannot load it.")
        return
    emotions = list(summary["emotions"])
    c1, c2, c3 = st.columns(3)
    emotion = c1.selectbox("Emotion", emotions, key="steering_play_emotion")
    entry = summary["emotions"].get(emotion, {})
    dirs_path = run.file(_sweep_directions(run, summary))
    layers: list[int] = []
    if dirs_path.is_file():
        layers = list(_directions(str(dirs_path.resolve()), mtime_ns(dirs_path)).layers)
    elif run.has(f"{VECTORS}/{emotion}.safetensors"):
        layers = [int(entry.get("best_layer", 0))]
    if not layers:
        st.info(f"No `{_sweep_directions(run, summary)}` and no saved vector for {emotion}: nothing to steer with.")
        return
    default_layer = int(entry.get("best_layer", layers[0]))
    layer = c2.selectbox("Layer", layers, index=layers.index(default_layer) if default_layer in layers else 0,
                         key="steering_play_layer")
    norms = summary.get("residual_norms") if isinstance(summary.get("residual_norms"), dict) else {}
    alpha = c3.number_input("Alpha (activation units)", value=float(_num(entry.get("best_alpha")) if not math.isnan(_num(entry.get("best_alpha"))) else 8.0),
                            step=1.0, key="steering_play_alpha")
    if str(layer) in norms:
        st.caption(f"Mean residual norm at layer {layer}: {_fmt(norms[str(layer)], 1)} (alpha / norm = {alpha / _num(norms[str(layer)]):.2f})")
    prompt = st.text_area("Prompt", value="Describe what you did this morning.", key="steering_play_prompt")
    n_tokens = st.slider("New tokens", 8, 128, 48, key="steering_play_tokens")
    if not st.button("Generate", key="steering_play_go"):
        st.caption(f"Generating loads `{spec}` once (cached).")
        return
    if not prompt.strip():
        st.warning("Type a prompt first.")
        return
    try:
        from psylens.steering.judges import EMOTIONS, LexiconJudge
        from psylens.steering.vector import SteeringVector

        model = _model(spec)
        if dirs_path.is_file():
            sv = SteeringVector.from_directions(_directions(str(dirs_path.resolve()), mtime_ns(dirs_path)), emotion,
                                                layers=[int(layer)], alpha=float(alpha))
        else:
            sv = SteeringVector.load(run.file(f"{VECTORS}/{emotion}.safetensors")).replace(alpha=float(alpha))
        base = model.generate(prompt, max_new_tokens=n_tokens)[0]
        with sv.apply(model):
            steered = model.generate(prompt, max_new_tokens=n_tokens)[0]
        scores = LexiconJudge().score([base, steered])
    except ValueError as e:
        st.error(f"Cannot steer: {e}")
        return
    left, right = st.columns(2)
    for col, name, text, s in ((left, "Unsteered", base, scores[0]), (right, f"Steered ({emotion}, layer {layer}, alpha {alpha:g})", steered, scores[1])):
        col.markdown(f"**{name}**")
        col.write(text)
        col.dataframe(pd.DataFrame({"emotion": list(EMOTIONS), "judge score": [float(x) for x in s]}),
                      hide_index=True, width="stretch")
