"""Probes: where the model represents emotion, how well a linear read-out decodes it, and the controls.

Reads ``probes/summary.json`` and the tables ``psylens probe`` (or ``psylens demo``) writes beside it:
``layer_curve.parquet``, ``confusion.json``, ``geometry_*.parquet``, ``cross_format.parquet``,
``persistence.parquet``, ``system_prompt_shift.parquet``, ``eval.parquet``. Each section says what
is missing and how to make it when its file is absent. Figure builders are plain functions
(no streamlit), so they can be tested and reused in notebooks.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from psylens import artifacts as A
from psylens.apps.views import kit
from psylens.probes import artifacts as PA
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
    "misclassified",
    "nearest",
    "valence_text",
    "read_text",
]

TITLE = "Probes"

DIR = PA.DIR
SUMMARY = PA.SUMMARY
CURVE = PA.LAYER_CURVE
CONFUSION = PA.CONFUSION
COSINE = PA.GEOMETRY_COSINE
PCA = PA.GEOMETRY_PCA
VALENCE = PA.GEOMETRY_VALENCE
CROSS = PA.CROSS_FORMAT
PERSIST = PA.PERSISTENCE
SHIFT = PA.SYSTEM_PROMPT_SHIFT
EVAL = PA.EVAL

REAL = kit.REAL
CONTROL = kit.CONTROL
SELECT = kit.SELECT
EVAL_COLOR = kit.EVAL
MAKE = "`psylens probe --model M --out RUN` (or `psylens demo`) writes it"
LABEL_SETS = {"headline": "six emotions", "all_labels": "all labels (with neutral)"}


def _art(rel: str, kind: str, what: str, schema: int | None = None, expect: Any = None) -> kit.Artifact:
    return kit.Artifact(rel, kind, what, MAKE, schema=schema, expect=expect)


SUMMARY_ART = _art(SUMMARY, "json", "probe summary", PA.SCHEMA_VERSION)
CURVE_ART = _art(CURVE, "table", "layer curve")
CONFUSION_ART = _art(CONFUSION, "json", "confusion matrices")
COSINE_ART = _art(COSINE, "table", "geometry tables")
PCA_ART = _art(PCA, "table", "geometry PCA table")
VALENCE_ART = _art(VALENCE, "table", "valence table")
CROSS_ART = _art(CROSS, "table", "cross-format table")
PERSIST_ART = _art(PERSIST, "table", "persistence table")
SHIFT_ART = _art(SHIFT, "table", "system-prompt shift table")
EVAL_ART = _art(EVAL, "table", "eval-file curve")
PROBES_ART = _art(PA.PROBES, "probes", "saved probes")
ROWS_ART = kit.Artifact(f"{A.ACTIVATIONS}/{A.ROWS}", "json", "stimulus list",
                        "`psylens harvest ... --out RUN` (or `psylens demo`) writes it", schema=A.SCHEMA_VERSION)


SUMMARY_FIELDS: dict[str, Any] = {
    "site": str, "labels": list, "layers": list, "positions": str, "best_layer": int, "best_accuracy": (int, float),
    "shuffled_accuracy_at_best_layer": (int, float), "chance": (int, float), "accuracy_by_layer": list,
    "eval": dict, "geometry": dict, "persistence": dict, "format": str,
}


def available(run: Run) -> bool:
    return run.has(SUMMARY)


# --------------------------------------------------------------------------------------------
# figures (pure functions of tables)
# --------------------------------------------------------------------------------------------
def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 380) -> go.Figure:
    return kit.style(fig, title, x, y, height=height)


def _band(c: pd.DataFrame, col: str) -> tuple[list[float], list[float]] | None:
    """(lo, hi) of the 95% interval of ``col`` per row: columns ``<col>_ci95_lo``/``<col>_ci95_hi``
    (what ``ProbeResults.table`` writes), ``<col>_lo``/``<col>_hi`` or ``<col>_ci95`` pairs."""
    for lo, hi in ((f"{col}_ci95_lo", f"{col}_ci95_hi"), (f"{col}_lo", f"{col}_hi")):
        if lo in c and hi in c and c[lo].notna().any():
            return [kit.num(v) for v in c[lo]], [kit.num(v) for v in c[hi]]
    if f"{col}_ci95" in c:
        pairs = [v if isinstance(v, (list, tuple, np.ndarray)) and len(v) == 2 else (math.nan, math.nan)
                 for v in c[f"{col}_ci95"]]
        if any(not math.isnan(kit.num(float(p[0]))) for p in pairs):
            return [float(p[0]) for p in pairs], [float(p[1]) for p in pairs]
    return None


LEXICAL_COLUMNS = ("lexical_accuracy", "lexical", "bow_accuracy")


def layer_curve_figure(curve: pd.DataFrame, *, eval_curve: pd.DataFrame | None = None, selectivity: bool = False,
                       title: str = "Accuracy by layer", lexical: float | None = None) -> go.Figure:
    """Real accuracy (with its 95% band when recorded) beside the shuffled-label control, the
    bag-of-words baseline as a dashed line (``lexical`` or a lexical column), chance dotted."""
    c = curve.sort_values("layer")
    fig = go.Figure()
    band = _band(c, "accuracy")
    if band is not None:
        x = list(c["layer"])
        fig.add_trace(go.Scatter(x=x + x[::-1], y=band[1] + band[0][::-1], fill="toself", fillcolor="rgba(31,119,180,0.15)",
                                 line={"width": 0}, hoverinfo="skip", name="95% interval", showlegend=True))
    fig.add_trace(go.Scatter(x=c["layer"], y=c["accuracy"], name="probe (held-out scenarios)", mode="lines+markers",
                             line={"color": REAL}))
    if "shuffled_accuracy" in c and c["shuffled_accuracy"].notna().any():
        fig.add_trace(go.Scatter(x=c["layer"], y=c["shuffled_accuracy"], name="shuffled labels (control)",
                                 mode="lines+markers", line={"color": CONTROL, "dash": "dash"}))
    lex_col = next((col for col in LEXICAL_COLUMNS if col in c and c[col].notna().any()), None)
    if lex_col is not None:
        fig.add_trace(go.Scatter(x=c["layer"], y=c[lex_col], name="bag-of-words probe (lexical baseline)", mode="lines",
                                 line={"color": kit.LEXICAL, "dash": "dash"}))
    elif lexical is not None and not math.isnan(kit.num(lexical)):
        fig.add_hline(y=float(lexical), line_dash="dash", line_color=kit.LEXICAL, annotation_text="bag-of-words baseline")
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
    low = 0.0
    if selectivity and "selectivity" in c:
        low = min(0.0, float(np.nanmin(pd.to_numeric(c["selectivity"], errors="coerce").fillna(0))))
    fig.update_yaxes(range=[low - 0.02, 1.02])
    kit.layer_ticks(fig, list(c["layer"]))
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
    kit.layer_ticks(fig, list(v["layer"]))
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
    kit.layer_ticks(fig, list(cross["layer"]) if "layer" in cross else [])
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
    kit.layer_ticks(fig, list(t["offset"]))
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
def _pct(v: Any) -> str:
    x = kit.num(v)
    return "—" if math.isnan(x) else f"{x:.1%}"


def nearest(layers: list[int], layer: int) -> int:
    """The layer of ``layers`` closest to ``layer`` (the lower one on ties)."""
    return min(layers, key=lambda v: (abs(v - layer), v))


def _section_layer(what: str, layers: list[int], page_layer: int) -> int:
    """The page's layer when ``what`` has it, else its nearest layer — and say so."""
    if page_layer in layers:
        return page_layer
    use = nearest(layers, page_layer)
    st.caption(f"{what} was measured at layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))} only: "
               f"showing layer {use}, the nearest to the page's layer {page_layer}.")
    return use


def render(run: Run) -> None:
    st.title(TITLE)
    summary = kit.load(run, SUMMARY_ART)
    if summary is None:
        return
    if not kit.warn_fields(SUMMARY_ART, summary, SUMMARY_FIELDS):
        summary = {k: v for k, v in summary.items() if k not in {f.split("`")[1] for f in
                                                                kit.field_problems(summary, SUMMARY_FIELDS)}}
    curve = kit.load(run, CURVE_ART, quiet=True)
    readout = _READOUT.get(str(summary.get("positions", "last")), str(summary.get("positions")))
    labels = ", ".join(str(x) for x in kit.as_list(summary.get("labels")))
    st.caption(
        f"Linear probes (multinomial logistic regression) on `{summary.get('site', '?')}` at every layer, scored on "
        f"scenarios held out of training. Labels: {labels or '?'}. Each text is read out as {readout}. "
        "Grey dashed lines are the same probes trained on shuffled labels: what chance looks like."
    )
    layers = kit.layer_options(kit.as_list(summary.get("layers")),
                               list(curve["layer"]) if isinstance(curve, pd.DataFrame) and "layer" in curve else [])
    with kit.guard(SUMMARY_ART):
        render_headline(summary)
    if not layers:
        st.warning(f"`{SUMMARY}` lists no probed layers; {MAKE} again.")
        return
    best = summary.get("best_layer")
    default = best if best in layers else layers[len(layers) // 2]
    layer = int(st.select_slider(
        f"Layer for the whole page ({len(layers)} probed: {_layers_text(layers)}; best {best})",
        options=layers, value=default, key="probes_layer",
        help="Every section below shows this layer; a section measured at fewer layers says which it shows."))
    st.divider()
    with kit.guard(CURVE_ART):
        render_layer_curves(run, summary, curve, layer)
    st.divider()
    with kit.guard(CONFUSION_ART):
        render_confusion(run, summary, layer)
    st.divider()
    with kit.guard(PROBES_ART):
        render_read_text(run, summary, layer)
    st.divider()
    with kit.guard(COSINE_ART):
        render_geometry(run, summary, layer)
    st.divider()
    with kit.guard(CROSS_ART):
        render_cross_format(run)
    st.divider()
    with kit.guard(PERSIST_ART):
        render_persistence(run, summary, layer)
    st.divider()
    with kit.guard(SHIFT_ART):
        render_shift(run, summary, layer)


_READOUT = {"mean": "the mean over its tokens", "last": "its last token"}


def _layers_text(layers: list[int]) -> str:
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}"
    return ", ".join(map(str, layers))


def lexical_baseline(summary: dict[str, Any]) -> float | None:
    """The bag-of-words probe's accuracy from the summary (``lexical_accuracy`` or ``lexical.accuracy``)."""
    for v in (summary.get("lexical_accuracy"), kit.as_dict(summary.get("lexical")).get("accuracy"),
              kit.as_dict(summary.get("lexical_baseline")).get("accuracy"), summary.get("lexical_baseline")):
        if not math.isnan(kit.num(v)):
            return float(v)
    return None


def render_headline(summary: dict[str, Any]) -> None:
    cols = st.columns(5)
    cols[0].metric("Best layer", str(summary.get("best_layer", "—")))
    kit.metric(cols[1], "Accuracy there", summary.get("best_accuracy"), kit.interval(summary, "best_accuracy"), pct=True, digits=3,
                   help="Held-out-scenario accuracy: every text is scored by a probe that never saw its scenario "
                        "(95% interval over scenarios where recorded).")
    kit.metric(cols[2], "Shuffled control there", summary.get("shuffled_accuracy_at_best_layer"),
               kit.interval(summary, "shuffled_accuracy_at_best_layer")
               or kit.interval({"x": summary.get("shuffled_accuracy_ci95_at_best_layer")}, "x"), pct=True, digits=3,
                   help="The same probe trained on shuffled labels. It should sit at chance.")
    lex = lexical_baseline(summary)
    kit.metric(cols[3], "Bag-of-words baseline", lex, kit.interval(summary.get("lexical_baseline"), "accuracy"),
               pct=True, digits=3,
               help="A lexical probe on word counts, same texts and folds: what word content alone gives."
               if lex is not None else "Not recorded in this run.")
    cols[4].metric("Chance", _pct(summary.get("chance")))
    ev = summary.get("eval")
    if isinstance(ev, dict):
        st.caption(f"Eval file (texts written independently of the training set) at the best layer: "
                   f"{kit.fmt_interval(ev.get('accuracy_at_best_layer'), kit.interval(ev, 'accuracy_at_best_layer'), pct=True, digits=3)}.")
    acc = [kit.num(v) for v in kit.as_list(summary.get("accuracy_by_layer"))]
    best_acc = kit.num(summary.get("best_accuracy"))
    if acc and not math.isnan(acc[0]) and not math.isnan(best_acc):
        rise = f"The best layer scores {best_acc - acc[0]:+.1%} over layer 0"
        if summary.get("positions") == "mean":
            rise += " (with the mean read-out, layer 0 is word content alone)"
        if lex is not None:
            rise += f" and {best_acc - lex:+.1%} over the bag-of-words baseline"
        st.caption(rise + ": what the network adds is the rise above those.")
    layers = kit.as_list(summary.get("layers"))
    rises, rise_cis = kit.as_list(summary.get("rise_above_lexical_by_layer")), kit.as_list(summary.get("rise_above_lexical_ci95_by_layer"))
    best = summary.get("best_layer")
    if best in layers and len(rises) == len(layers) and len(rise_cis) == len(layers):
        i = layers.index(best)
        ci = kit.interval({"x": rise_cis[i]}, "x")
        verdict = "beats" if ci is not None and ci[0] > 0 else "does not beat"
        st.caption(f"At layer {best} the probe {verdict} the bag-of-words baseline: "
                   f"{kit.fmt_interval(rises[i], ci, pct=True, digits=3)} (paired over the same held-out texts).")
    tied = [v for v in kit.as_list(summary.get("layers_tied_with_best")) if v != best]
    if tied:
        st.caption(f"Layers {', '.join(map(str, tied))} are within the best layer's interval: the best layer is one of "
                   "several equally good ones, which is why other summaries (the per-layer Fisher ratio) may name another.")


def render_layer_curves(run: Run, summary: dict[str, Any], curve: Any, layer: int) -> None:
    st.subheader("Where emotion is decodable: accuracy by layer")
    if curve is None:
        kit.load(run, CURVE_ART)  # draws why (missing or unreadable)
        return
    if not isinstance(curve, pd.DataFrame) or not {"layer", "accuracy", "site"} <= set(curve.columns):
        st.warning(f"`{CURVE}` lacks the columns layer, accuracy, site; {MAKE} again.")
        return
    if "label_set" not in curve:
        curve = curve.assign(label_set="headline")
    sets = [s for s in LABEL_SETS if s in set(curve["label_set"])] or ["headline"]
    left, right = st.columns([2, 1])
    label_set = left.radio("Labels", sets, format_func=LABEL_SETS.get, horizontal=True, key="probes_label_set") \
        if len(sets) > 1 else sets[0]
    show_sel = right.checkbox("Show selectivity control", value=False, key="probes_selectivity",
                              help="Control task: one random label per scenario, learnable only by memorising "
                                   "scenarios (Hewitt & Liang). Selectivity = real − control, both on text-level folds.")
    ev = kit.load(run, EVAL_ART, quiet=not run.has(EVAL))
    lex = lexical_baseline(summary) if label_set == "headline" else None
    sites = list(dict.fromkeys(curve["site"]))
    tabs = st.tabs([str(s) for s in sites]) if len(sites) > 1 else [st.container()]
    for tab, site in zip(tabs, sites):
        with tab:
            c = curve[(curve["site"] == site) & (curve["label_set"] == label_set)]
            e = None
            if isinstance(ev, pd.DataFrame) and site == summary.get("site") and "label_set" in ev:
                e = ev[ev["label_set"] == label_set]
            fig = layer_curve_figure(c, eval_curve=e, selectivity=show_sel, lexical=lex if site == summary.get("site") else None,
                                     title=f"{LABEL_SETS.get(label_set, label_set)} · {site}")
            fig.add_vline(x=layer, line_dash="dot", line_color="#555555")
            st.plotly_chart(fig, width="stretch", key=f"probes_curve_{site}")
    with st.expander("Table"):
        st.dataframe(curve, hide_index=True, width="stretch")


def misclassified(probes: Any, rows: Any, layer: int, true: str | None = None,
                  predicted: str | None = None) -> pd.DataFrame:
    """Texts the probe at ``layer`` got wrong (out of fold): id, true, predicted, text.

    ``probes`` is a ``ProbeResults`` (its ``predictions [L, n]`` and ``ids``); ``rows`` the run's
    ``activations/rows.json`` (ids, texts). Optionally only the cell ``true`` → ``predicted``.
    """
    cols = ["id", "true", "predicted", "text"]
    idx = list(probes.layers).index(int(layer))
    pred = np.asarray(probes.predictions[idx])
    y = np.asarray(probes.y)
    r = kit.as_dict(rows)
    texts = dict(zip([str(i) for i in kit.as_list(r.get("ids"))], kit.as_list(r.get("texts"))))
    out = []
    for i, (t, p) in enumerate(zip(y.tolist(), pred.tolist())):
        if t == p:
            continue
        tl, pl = probes.classes[t], probes.classes[p]
        if (true is not None and tl != true) or (predicted is not None and pl != predicted):
            continue
        sid = str(probes.ids[i]) if i < len(probes.ids) else str(i)
        out.append({"id": sid, "true": tl, "predicted": pl, "text": str(texts.get(sid, "(text not in rows.json)"))})
    return pd.DataFrame(out, columns=cols)


def render_confusion(run: Run, summary: dict[str, Any], layer: int) -> None:
    st.subheader("What is confused with what")
    conf = kit.load(run, CONFUSION_ART)
    if conf is None:
        return
    site = summary.get("site")
    entry = kit.as_dict(conf.get(site))
    sets = [s for s in LABEL_SETS if isinstance(entry.get(s), dict)]
    if not sets:
        st.warning(f"`{CONFUSION}` has nothing for site `{site}`.")
        return
    cols = st.columns(3)
    label_set = cols[0].radio("Labels", sets, format_func=LABEL_SETS.get, horizontal=True, key="probes_conf_set") \
        if len(sets) > 1 else sets[0]
    which = cols[1].radio("Labels used in training", ["real", "shuffled"], horizontal=True, key="probes_conf_which")
    normalise = cols[2].checkbox("Row-normalise", value=True, key="probes_conf_norm")
    e = entry[label_set]
    conf_layers = kit.layer_options(kit.as_list(e.get("layers")))
    if not conf_layers:
        st.warning(f"`{CONFUSION}` lists no layers for `{site}`; {MAKE} again.")
        return
    shown = _section_layer("The confusion matrix", conf_layers, layer)
    mats = e.get(which)
    if mats is None:
        st.info("No shuffled-label confusion recorded.")
        return
    m = kit.as_list(mats)[kit.as_list(e.get("layers")).index(shown)]
    labels = [str(x) for x in kit.as_list(e.get("labels"))]
    st.plotly_chart(confusion_figure(m, labels, normalise=normalise,
                                     title=f"{'Shuffled-label control' if which == 'shuffled' else 'Probe'} · layer {shown}"),
                    width="stretch", key="probes_confusion")
    if which != "real" or label_set != "headline":
        return
    render_misclassified(run, m, labels, shown)


def render_misclassified(run: Run, matrix: Any, labels: list[str], layer: int) -> None:
    """The texts behind the off-diagonal cells of the matrix above (out-of-fold predictions)."""
    m = np.asarray(matrix, dtype=float)
    cells = [(labels[i], labels[j], int(m[i, j])) for i in range(len(labels)) for j in range(len(labels))
             if i != j and m[i, j] > 0]
    if not cells:
        st.caption(f"Misclassified texts at layer {layer}: none, every text is classified correctly.")
        return
    with st.expander(f"Misclassified texts at layer {layer} ({int(sum(c[2] for c in cells))}): pick a cell of the matrix"):
        _misclassified_table(run, cells, layer)


def _misclassified_table(run: Run, cells: list[tuple[str, str, int]], layer: int) -> None:
    cells.sort(key=lambda c: -c[2])
    options = ["every confusion"] + [f"{t} → {p} ({n})" for t, p, n in cells]
    choice = st.selectbox("Cell of the matrix", options, key="probes_conf_cell")
    probes = kit.load(run, PROBES_ART)
    rows = kit.load(run, ROWS_ART)
    if probes is None or rows is None:
        return
    if int(layer) not in list(probes.layers):
        st.info(f"The saved probes have no predictions at layer {layer}.")
        return
    pick = None if choice == options[0] else cells[options.index(choice) - 1]
    wrong = misclassified(probes, rows, layer, *(pick[:2] if pick else (None, None)))
    st.caption(f"{len(wrong)} texts; each predicted by a probe that never saw its scenario.")
    st.table(wrong.head(50).set_index("id"))


def read_text(model: Any, probes: Any, text: str, *, site: str, positions: str, fmt: str = "auto") -> pd.DataFrame:
    """Read ``text`` through the saved probes: one row per probed layer, the predicted label and the
    probability of every class. Hold ``kit.MODEL_LOCK`` while calling it with a shared model."""
    import torch

    acts = model.harvest([text], sites=[site], layers=list(probes.layers), positions=positions, format=fmt,
                         progress=False)
    rows = []
    for i, layer in enumerate(probes.layers):
        x = acts.layer(site, layer) if hasattr(acts, "layer") else acts[site][:, i]
        with torch.no_grad():
            prob = torch.softmax(probes.probes[i].logits(x.reshape(1, -1)), dim=-1)[0]
        row = {"layer": int(layer), "predicted": probes.classes[int(prob.argmax())]}
        row.update({c: float(prob[k]) for k, c in enumerate(probes.classes)})
        rows.append(row)
    return pd.DataFrame(rows)


def render_read_text(run: Run, summary: dict[str, Any], layer: int) -> None:
    st.subheader("Read a text through the probes")
    if not run.has(f"{PA.PROBES}.json"):
        st.info(f"No saved probes in this run (`{PA.PROBES}.json`). {MAKE}.")
        return
    spec = kit.run_model(kit.load(run, kit.RUN_META, quiet=True))
    if spec is None:
        st.info("run.json does not name the model, so no text can be read through the probes.")
        return
    text = st.text_input("A text", placeholder="After months of waiting, the letter finally arrived.",
                         key="probes_read_text")
    if not st.button("Read it", key="probes_read_go"):
        st.caption(f"Reading loads `{spec[0]}` once (on demand, then cached).")
        return
    if not text.strip():
        st.warning("Type a text first.")
        return
    probes = kit.load(run, PROBES_ART)
    if probes is None:
        return
    try:
        model = kit.shared_model(*spec)
        with kit.MODEL_LOCK:
            table = read_text(model, probes, text, site=str(summary.get("site") or probes.site),
                              positions=str(summary.get("positions") or "last"), fmt=str(summary.get("format") or "auto"))
    except ValueError as e:
        st.error(f"Cannot read the text: {e}")
        return
    at = table[table["layer"] == layer] if layer in set(table["layer"]) else table[table["layer"] == nearest(list(table["layer"]), layer)]
    row = at.iloc[0]
    probs = {c: float(row[c]) for c in probes.classes}
    st.markdown(f"At layer {int(row['layer'])} the probe reads **{row['predicted']}** ({probs[row['predicted']]:.0%}).")
    fig = go.Figure(go.Bar(x=list(probs), y=list(probs.values()), marker_color=[kit.emotion_color(c) for c in probs]))
    st.plotly_chart(kit.style(fig, f"Probe probabilities · layer {int(row['layer'])}", "", "probability", height=300),
                    width="stretch", key="probes_read_bar")
    st.dataframe(table[["layer", "predicted"]].T, width="stretch")


def valence_text(valence: Any) -> str:
    """``{"joy": 1.0, "anger": -0.6}`` as "joy +1.0, anger −0.6" (sorted high to low)."""
    items = [(str(k), kit.num(v)) for k, v in kit.as_dict(valence).items() if not math.isnan(kit.num(v))]
    items.sort(key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:+.1f}".replace("-", "−") for k, v in items)


def render_geometry(run: Run, summary: dict[str, Any], layer: int) -> None:
    st.subheader("Geometry of the emotion directions")
    cos = kit.load(run, COSINE_ART)
    pca = kit.load(run, PCA_ART, quiet=cos is None)
    if cos is None or pca is None:
        return
    val = kit.load(run, VALENCE_ART, quiet=True)
    shown = _section_layer("The geometry", kit.layer_options(list(cos["layer"])), layer)
    left, right = st.columns(2)
    with left:
        st.plotly_chart(cosine_figure(cos, shown), width="stretch", key="probes_cosine")
    with right:
        st.plotly_chart(pca_figure(pca, shown), width="stretch", key="probes_pca")
    if isinstance(val, pd.DataFrame) and "valence_rho" in val and val["valence_rho"].notna().any():
        st.plotly_chart(valence_figure(val), width="stretch", key="probes_valence")
    geo = kit.as_dict(summary.get("geometry"))
    if geo:
        order = " > ".join(str(x) for x in kit.as_list(geo.get("pc1_order")))
        rho, p = kit.num(geo.get("valence_rho")), kit.num(geo.get("valence_p"))
        st.caption(
            f"At layer {geo.get('layer')}: PC1 orders the emotions {order or '?'}; "
            f"|ρ| = {abs(rho):.2f} (permutation p = {p:.3f}) against the valence scores "
            f"{valence_text(geo.get('valence')) or 'not recorded'}. PC1's sign is arbitrary, so |ρ| is shown."
        )


def render_cross_format(run: Run) -> None:
    st.subheader("Cross-format: implicit events ↔ explicit statements")
    cross = kit.load(run, CROSS_ART)
    if cross is None:
        return
    st.caption("Directions (argmax projection) and probes learned on one format, scored on the other; "
               "each side is centred on its own mean (no labels used).")
    st.plotly_chart(cross_format_figure(cross), width="stretch", key="probes_cross")


def render_persistence(run: Run, summary: dict[str, Any], layer: int) -> None:
    st.subheader("Persistence: how long after the event is the emotion still there?")
    per = kit.load(run, PERSIST_ART)
    if per is None:
        return
    shown = _section_layer("Persistence", kit.layer_options(list(per["layer"])), layer)
    st.plotly_chart(persistence_figure(per, shown), width="stretch", key="probes_persistence")
    p = kit.as_dict(summary.get("persistence"))
    if p:
        st.caption(
            f"{p.get('n_texts')} emotional events ({p.get('n_groups')} scenarios) followed by the same neutral text. "
            "Blue: the probe trained at the event's last token (on other scenarios) read k tokens later. "
            "Green: a probe refitted at each offset, scored on held-out scenarios."
        )


def render_shift(run: Run, summary: dict[str, Any], layer: int) -> None:
    st.subheader("System-prompt shift: does a mood prompt move neutral text along the emotion directions?")
    shift = kit.load(run, SHIFT_ART)
    if shift is None:
        return
    shown = _section_layer("The system-prompt shift", kit.layer_options(list(shift["layer"])), layer)
    st.plotly_chart(shift_figure(shift, shown), width="stretch", key="probes_shift")
    matched = shift[shift["prompt"] == shift["direction"]].groupby("layer")["shift_sd"].mean().reset_index()
    fig = go.Figure(go.Scatter(x=matched["layer"], y=matched["shift_sd"], mode="lines+markers", line={"color": REAL},
                               name="mood prompt along its own direction"))
    fig.add_hline(y=0, line_dash="dot", line_color=CONTROL)
    st.plotly_chart(_layout(fig, "Mean shift along the matching direction, by layer", "layer",
                            "shift (SD of unprompted texts)", height=300), width="stretch", key="probes_shift_layers")
    st.caption("Each cell: (mean projection with the mood prompt − without) / SD without, over the same neutral texts.")
