"""Probes: where the model represents emotion, how well a linear read-out decodes it, and the controls.

Reads ``probes/summary.json`` and the tables ``psylens probe`` (or ``psylens demo``) writes beside it:
``layer_curve.parquet``, ``confusion.json``, ``geometry_*.parquet``, ``cross_format.parquet``,
``persistence.parquet``, ``system_prompt_shift.parquet``, ``eval.parquet``. Each section says what
is missing and how to make it when its file is absent. Figure builders are plain functions
(no streamlit), so they can be tested and reused in notebooks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from psylens.apps.cache import json_file, table_file
from psylens.runs import Run

__all__ = [
    "TITLE",
    "available",
    "render",
    "layer_curve_figure",
    "confusion_figure",
    "cosine_figure",
    "pca_figure",
    "persistence_figure",
    "shift_figure",
    "cross_format_figure",
]

TITLE = "Probes"

DIR = "probes"
SUMMARY = f"{DIR}/summary.json"
CURVE = f"{DIR}/layer_curve.parquet"
CONFUSION = f"{DIR}/confusion.json"
COSINE = f"{DIR}/geometry_cosine.parquet"
PCA = f"{DIR}/geometry_pca.parquet"
VALENCE = f"{DIR}/geometry_valence.parquet"
CROSS = f"{DIR}/cross_format.parquet"
PERSIST = f"{DIR}/persistence.parquet"
SHIFT = f"{DIR}/system_prompt_shift.parquet"
EVAL = f"{DIR}/eval.parquet"

REAL = "#1f77b4"
CONTROL = "#9a9a9a"
SELECT = "#2ca02c"
EVAL_COLOR = "#d62728"
MAKE = "`psylens probe --model M --out RUN` (or `psylens demo`) writes it"
LABEL_SETS = {"headline": "six emotions", "all_labels": "all labels (with neutral)"}


def available(run: Run) -> bool:
    return run.has(SUMMARY)


# --------------------------------------------------------------------------------------------
# figures (pure functions of tables)
# --------------------------------------------------------------------------------------------
def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title=title,
        height=height,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        xaxis_title=x,
        yaxis_title=y,
    )
    return fig


def layer_curve_figure(curve: pd.DataFrame, *, eval_curve: pd.DataFrame | None = None, selectivity: bool = False,
                       title: str = "Accuracy by layer") -> go.Figure:
    """Real accuracy with the shuffled-label control beside it, chance as a dotted line."""
    c = curve.sort_values("layer")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=c["layer"], y=c["accuracy"], name="probe (held-out scenarios)", mode="lines+markers",
                             line={"color": REAL}))
    if "shuffled_accuracy" in c and c["shuffled_accuracy"].notna().any():
        fig.add_trace(go.Scatter(x=c["layer"], y=c["shuffled_accuracy"], name="shuffled labels (control)",
                                 mode="lines+markers", line={"color": CONTROL, "dash": "dash"}))
    if eval_curve is not None and len(eval_curve):
        e = eval_curve.sort_values("layer")
        fig.add_trace(go.Scatter(x=e["layer"], y=e["accuracy"], name="eval file", mode="lines+markers",
                                 line={"color": EVAL_COLOR}))
    if selectivity and "control_task_accuracy" in c and c["control_task_accuracy"].notna().any():
        fig.add_trace(go.Scatter(x=c["layer"], y=c["control_task_accuracy"], name="control task (memorising scenarios)",
                                 mode="lines", line={"color": CONTROL, "dash": "dot"}))
        fig.add_trace(go.Scatter(x=c["layer"], y=c["selectivity"], name="selectivity", mode="lines",
                                 line={"color": SELECT}))
    if "chance" in c and len(c):
        fig.add_hline(y=float(c["chance"].iloc[0]), line_dash="dot", line_color=CONTROL, annotation_text="chance")
    fig.update_yaxes(range=[min(0.0, float(np.nanmin(c.get("selectivity", pd.Series([0.0])).fillna(0)))) - 0.02, 1.02])
    return _layout(fig, title, "layer", "accuracy")


def confusion_figure(matrix: list[list[float]] | np.ndarray, labels: list[str], *, normalise: bool = True,
                     title: str = "Confusion") -> go.Figure:
    m = np.asarray(matrix, dtype=float)
    z = m / np.maximum(m.sum(1, keepdims=True), 1) if normalise else m
    text = [[f"{int(m[i, j])}" for j in range(m.shape[1])] for i in range(m.shape[0])]
    fig = go.Figure(go.Heatmap(z=z, x=labels, y=labels, colorscale="Blues", zmin=0, zmax=1 if normalise else None,
                               text=text, texttemplate="%{text}", hovertemplate="true %{y} → predicted %{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, "predicted", "true", height=420)


def cosine_figure(cos: pd.DataFrame, layer: int) -> go.Figure:
    t = cos[cos["layer"] == layer]
    labels = list(dict.fromkeys(t["a"]))
    z = t.pivot(index="a", columns="b", values="cosine").loc[labels, labels]
    fig = go.Figure(go.Heatmap(z=z.values, x=labels, y=labels, colorscale="RdBu", zmid=0, zmin=-1, zmax=1,
                               text=np.round(z.values, 2), texttemplate="%{text}"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, f"Cosine between emotion directions · layer {layer}", "", "", height=420)


def pca_figure(pca: pd.DataFrame, layer: int) -> go.Figure:
    t = pca[pca["layer"] == layer]
    val = t["valence"].astype(float) if "valence" in t else pd.Series([0.0] * len(t))
    fig = go.Figure(go.Scatter(
        x=t["pc1"], y=t["pc2"], mode="markers+text", text=t["emotion"], textposition="top center",
        marker={"size": 14, "color": val, "colorscale": "RdYlGn", "showscale": True, "colorbar": {"title": "valence"}},
    ))
    ev1 = float(t["explained_pc1"].iloc[0]) if len(t) else float("nan")
    ev2 = float(t["explained_pc2"].iloc[0]) if len(t) else float("nan")
    return _layout(fig, f"Emotion centroids, PC1 × PC2 · layer {layer}",
                   f"PC1 ({ev1:.0%} of variance)", f"PC2 ({ev2:.0%})", height=420)


def valence_figure(val: pd.DataFrame) -> go.Figure:
    v = val.sort_values("layer")
    fig = go.Figure(go.Scatter(x=v["layer"], y=v["valence_rho"], mode="lines+markers", name="Spearman ρ",
                               line={"color": REAL}, customdata=v["valence_p"],
                               hovertemplate="layer %{x}: ρ=%{y:.2f}, p=%{customdata:.3f}<extra></extra>"))
    fig.update_yaxes(range=[-0.05, 1.05])
    return _layout(fig, "Does PC1 order the emotions by valence?", "layer", "|ρ| (PC1 vs valence)", height=300)


def cross_format_figure(cross: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    colors = {"directions": REAL, "probe": EVAL_COLOR}
    for (train, test, method), t in cross.groupby(["train", "test", "method"]):
        t = t.sort_values("layer")
        dash = "solid" if train == sorted(cross["train"].unique())[-1] else "dash"
        fig.add_trace(go.Scatter(x=t["layer"], y=t["accuracy"], name=f"{method}: {train} → {test}", mode="lines",
                                 line={"color": colors.get(method, REAL), "dash": dash}))
    if len(cross):
        fig.add_hline(y=float(cross["chance"].iloc[0]), line_dash="dot", line_color=CONTROL, annotation_text="chance")
        fig.add_trace(go.Scatter(x=cross.groupby("layer")["shuffled_accuracy"].max().index,
                                 y=cross.groupby("layer")["shuffled_accuracy"].max().values,
                                 name="shuffled labels (best of all four)", mode="lines",
                                 line={"color": CONTROL, "dash": "dash"}))
    fig.update_yaxes(range=[0, 1.02])
    _layout(fig, "Cross-format: learn on one format, classify the other", "layer", "accuracy", height=440)
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0.0},
                      margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig


def persistence_figure(per: pd.DataFrame, layer: int) -> go.Figure:
    t = per[per["layer"] == layer].sort_values("offset")
    fig = go.Figure()
    if "transfer_accuracy" in t:
        fig.add_trace(go.Scatter(x=t["offset"], y=t["transfer_accuracy"], mode="lines+markers", line={"color": REAL},
                                 name="event probe read later (same read-out)"))
    fig.add_trace(go.Scatter(x=t["offset"], y=t["accuracy"], mode="lines+markers", line={"color": SELECT},
                             name="probe refitted at the offset (is it still there?)"))
    fig.add_trace(go.Scatter(x=t["offset"], y=t["shuffled_accuracy"], mode="lines", name="shuffled labels (control)",
                             line={"color": CONTROL, "dash": "dash"}))
    if len(t):
        fig.add_hline(y=float(t["chance"].iloc[0]), line_dash="dot", line_color=CONTROL, annotation_text="chance")
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, f"Persistence: decoding the event's emotion k tokens into a neutral continuation · layer {layer}",
                   "tokens after the event (offset)", "accuracy")


def shift_figure(shift: pd.DataFrame, layer: int) -> go.Figure:
    t = shift[shift["layer"] == layer]
    prompts = list(dict.fromkeys(t["prompt"]))
    dirs = list(dict.fromkeys(t["direction"]))
    z = t.pivot(index="prompt", columns="direction", values="shift_sd").loc[prompts, dirs]
    lim = max(1.0, float(np.nanmax(np.abs(z.values))) if z.size else 1.0)
    fig = go.Figure(go.Heatmap(z=z.values, x=dirs, y=[f"mood: {p}" for p in prompts], colorscale="RdBu", zmid=0,
                               zmin=-lim, zmax=lim, text=np.round(z.values, 2), texttemplate="%{text}",
                               colorbar={"title": "SD"}))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, f"Shift of neutral texts along each direction under a mood system prompt · layer {layer}",
                   "projection on the direction of", "system prompt", height=420)


# --------------------------------------------------------------------------------------------
# page
# --------------------------------------------------------------------------------------------
def _table(run: Run, rel: str) -> pd.DataFrame | None:
    if not run.has(rel):
        return None
    try:
        return table_file(run, rel)
    except Exception as e:  # a corrupt parquet is shown as an error, not a crash
        st.error(f"`{rel}` cannot be read ({type(e).__name__}: {e}); re-run `psylens probe` to rewrite it.")
        return None


def _missing(rel: str, what: str) -> None:
    st.info(f"No {what} in this run (`{rel}`). {MAKE}.")


def _pct(v: Any) -> str:
    return "—" if v is None else f"{float(v):.1%}"


def render(run: Run) -> None:
    st.title(TITLE)
    try:
        summary = json_file(run, SUMMARY)
    except ValueError as e:
        st.error(f"`{SUMMARY}` is not valid JSON ({e}); re-run `psylens probe`.")
        return
    if not isinstance(summary, dict):
        st.error(f"`{SUMMARY}` holds a {type(summary).__name__}, not a JSON object; re-run `psylens probe`.")
        return
    st.caption(
        f"Linear probes (multinomial logistic regression) on `{summary.get('site', '?')}` at every layer, scored on "
        f"scenarios held out of training. Labels: {', '.join(summary.get('labels', []))}. "
        f"Each text is read out as {_READOUT.get(summary.get('positions', 'last'), summary.get('positions'))}. "
        "Grey dashed lines are the same probes trained on shuffled labels: what chance looks like."
    )
    render_headline(summary)
    st.divider()
    render_layer_curves(run, summary)
    st.divider()
    render_confusion(run, summary)
    st.divider()
    render_geometry(run, summary)
    st.divider()
    render_cross_format(run)
    st.divider()
    render_persistence(run, summary)
    st.divider()
    render_shift(run, summary)


_READOUT = {"mean": "the mean over its tokens", "last": "its last token"}


def render_headline(summary: dict[str, Any]) -> None:
    cols = st.columns(5)
    cols[0].metric("Best layer", str(summary.get("best_layer", "—")))
    cols[1].metric("Accuracy there", _pct(summary.get("best_accuracy")),
                   help="Held-out-scenario accuracy: every text is scored by a probe that never saw its scenario.")
    cols[2].metric("Shuffled control there", _pct(summary.get("shuffled_accuracy_at_best_layer")),
                   help="The same probe trained on shuffled labels. It should sit at chance.")
    cols[3].metric("Chance", _pct(summary.get("chance")))
    ev = summary.get("eval")
    cols[4].metric("Eval file at best layer", _pct(ev.get("accuracy_at_best_layer")) if isinstance(ev, dict) else "—",
                   help="Texts written independently of the training set (`--eval FILE`)." if ev else "Run with --eval FILE.")
    emergence = summary.get("emergence_layer")
    if emergence is not None:
        st.caption(f"The signal first exceeds twice chance at layer {emergence}.")
    acc = summary.get("accuracy_by_layer") or []
    if summary.get("positions") == "mean" and acc:
        st.caption(f"With the mean read-out, layer 0 (word content alone) already scores {_pct(acc[0])}: "
                   "what the network adds is the rise above it.")


def render_layer_curves(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Where emotion is decodable: accuracy by layer")
    curve = _table(run, CURVE)
    if curve is None:
        _missing(CURVE, "layer curve")
        return
    if "label_set" not in curve:
        curve = curve.assign(label_set="headline")
    sets = [s for s in LABEL_SETS if s in set(curve["label_set"])]
    left, right = st.columns([2, 1])
    label_set = left.radio("Labels", sets, format_func=LABEL_SETS.get, horizontal=True, key="probes_label_set") \
        if len(sets) > 1 else (sets[0] if sets else "headline")
    show_sel = right.checkbox("Show selectivity control", value=False, key="probes_selectivity",
                              help="Control task: one random label per scenario, learnable only by memorising "
                                   "scenarios (Hewitt & Liang). Selectivity = real − control, both on text-level folds.")
    ev = _table(run, EVAL)
    sites = list(dict.fromkeys(curve["site"]))
    tabs = st.tabs(sites) if len(sites) > 1 else [st.container()]
    for tab, site in zip(tabs, sites):
        with tab:
            c = curve[(curve["site"] == site) & (curve["label_set"] == label_set)]
            e = None
            if ev is not None and site == summary.get("site") and "label_set" in ev:
                e = ev[ev["label_set"] == label_set]
            st.plotly_chart(layer_curve_figure(c, eval_curve=e, selectivity=show_sel,
                                               title=f"{LABEL_SETS.get(label_set, label_set)} · {site}"),
                            width="stretch", key=f"probes_curve_{site}")
    with st.expander("Table"):
        st.dataframe(curve, hide_index=True, width="stretch")


def _layer_picker(label: str, layers: list[int], default: int | None, key: str) -> int:
    if not layers:
        return default or 0
    value = default if default in layers else layers[len(layers) // 2]
    return int(st.select_slider(label, options=layers, value=value, key=key))


def render_confusion(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("What is confused with what")
    if not run.has(CONFUSION):
        _missing(CONFUSION, "confusion matrices")
        return
    conf = json_file(run, CONFUSION)
    site = summary.get("site")
    entry = conf.get(site, {}) if isinstance(conf, dict) else {}
    sets = [s for s in LABEL_SETS if s in entry]
    if not sets:
        st.warning(f"`{CONFUSION}` has nothing for site `{site}`.")
        return
    cols = st.columns(3)
    label_set = cols[0].radio("Labels", sets, format_func=LABEL_SETS.get, horizontal=True, key="probes_conf_set") \
        if len(sets) > 1 else sets[0]
    which = cols[1].radio("Labels used in training", ["real", "shuffled"], horizontal=True, key="probes_conf_which")
    normalise = cols[2].checkbox("Row-normalise", value=True, key="probes_conf_norm")
    e = entry[label_set]
    layer = _layer_picker("Layer", list(e["layers"]), summary.get("best_layer"), "probes_conf_layer")
    mats = e.get(which)
    if mats is None:
        st.info("No shuffled-label confusion recorded.")
        return
    m = mats[e["layers"].index(layer)]
    st.plotly_chart(confusion_figure(m, e["labels"], normalise=normalise,
                                     title=f"{'Shuffled-label control' if which == 'shuffled' else 'Probe'} · layer {layer}"),
                    width="stretch", key="probes_confusion")


def render_geometry(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Geometry of the emotion directions")
    cos, pca, val = _table(run, COSINE), _table(run, PCA), _table(run, VALENCE)
    if cos is None or pca is None:
        _missing(COSINE, "geometry tables")
        return
    layers = sorted(int(v) for v in cos["layer"].unique())
    layer = _layer_picker("Layer", layers, summary.get("best_layer"), "probes_geo_layer")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(cosine_figure(cos, layer), width="stretch", key="probes_cosine")
    with right:
        st.plotly_chart(pca_figure(pca, layer), width="stretch", key="probes_pca")
    if val is not None and val["valence_rho"].notna().any():
        st.plotly_chart(valence_figure(val), width="stretch", key="probes_valence")
        geo = summary.get("geometry") or {}
        if geo:
            st.caption(
                f"At layer {geo.get('layer')}: PC1 orders the emotions {' > '.join(geo.get('pc1_order', []))}; "
                f"ρ = {geo.get('valence_rho')} (permutation p = {geo.get('valence_p')}) against the valence scores "
                f"{geo.get('valence')}. PC1's sign is arbitrary, so |ρ| is shown."
            )


def render_cross_format(run: Run) -> None:
    st.subheader("Cross-format: implicit events ↔ explicit statements")
    cross = _table(run, CROSS)
    if cross is None:
        _missing(CROSS, "cross-format table")
        return
    st.caption("Directions (argmax projection) and probes learned on one format, scored on the other; "
               "each side is centred on its own mean (no labels used).")
    st.plotly_chart(cross_format_figure(cross), width="stretch", key="probes_cross")


def render_persistence(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Persistence: how long after the event is the emotion still there?")
    per = _table(run, PERSIST)
    if per is None:
        _missing(PERSIST, "persistence table")
        return
    layers = sorted(int(v) for v in per["layer"].unique())
    layer = _layer_picker("Layer", layers, summary.get("best_layer"), "probes_persist_layer")
    st.plotly_chart(persistence_figure(per, layer), width="stretch", key="probes_persistence")
    p = summary.get("persistence") or {}
    if p:
        st.caption(
            f"{p.get('n_texts')} emotional events ({p.get('n_groups')} scenarios) followed by the same neutral text. "
            "Blue: the probe trained at the event's last token (on other scenarios) read k tokens later. "
            "Green: a probe refitted at each offset, scored on held-out scenarios."
        )


def render_shift(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("System-prompt shift: does a mood prompt move neutral text along the emotion directions?")
    shift = _table(run, SHIFT)
    if shift is None:
        _missing(SHIFT, "system-prompt shift table")
        return
    layers = sorted(int(v) for v in shift["layer"].unique())
    layer = _layer_picker("Layer", layers, summary.get("best_layer"), "probes_shift_layer")
    st.plotly_chart(shift_figure(shift, layer), width="stretch", key="probes_shift")
    matched = shift[shift["prompt"] == shift["direction"]].groupby("layer")["shift_sd"].mean().reset_index()
    fig = go.Figure(go.Scatter(x=matched["layer"], y=matched["shift_sd"], mode="lines+markers", line={"color": REAL},
                               name="mood prompt along its own direction"))
    fig.add_hline(y=0, line_dash="dot", line_color=CONTROL)
    st.plotly_chart(_layout(fig, "Mean shift along the matching direction, by layer", "layer",
                            "shift (SD of unprompted texts)", height=300), width="stretch", key="probes_shift_layers")
    st.caption("Each cell: (mean projection with the mood prompt − without) / SD without, over the same neutral texts.")
