"""Circuits: each emotion's heads and neurons (``psylens circuits``), proven by ablation and enhancement.

Reads ``circuits/summary.json`` and the files behind it (names from ``psylens.circuits.artifacts``):
the layer × head heatmap of one score (``direct``, ``atp`` or ``patching``) from ``scores.safetensors``,
the top neurons with the stimuli they fire on most, the ablation curves (the circuit against the band
of size-matched random sets, mean ± std, mean and zero ablation), enhancement against random sets,
sublayer influence per layer (attention vs MLP), circuit modulation vs steering vs prompting, and the
summary table against the issue's targets. Every file is read through :func:`kit.load`; a missing or
corrupt file is one line and the rest of the page goes on. Figure and table builders are plain
functions (no streamlit), tested without a browser.

Footgun: ``patching`` is computed only for the top-K units by ``atp`` — every other cell of its
heatmap is NaN (drawn blank), not zero. The random band is the spread of a handful of draws (≥ 5),
so a circuit line just outside it is weak evidence; the summary's interval (``drop_ci95``) is the
one to quote.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from psylens.apps.views import kit
from psylens.circuits import artifacts as CA
from psylens.runs import Run

__all__ = [
    "TITLE",
    "available",
    "render",
    "TARGETS",
    "summary_table",
    "targets_met",
    "heads_matrix",
    "score_heatmap",
    "top_neurons_frame",
    "ablation_bands",
    "ablation_figure",
    "enhancement_figure",
    "sublayer_frame",
    "sublayer_figure",
    "modulation_figure",
    "METHOD_COLORS",
]

TITLE = "Circuits"

MAKE = "`psylens circuits --model M --run RUN` (add `--quick` for a small run) writes it"
SUMMARY_ART = kit.Artifact(CA.SUMMARY, "json", "circuits summary", MAKE, schema=CA.SCHEMA_VERSION)
SCORES_ART = kit.Artifact(CA.SCORES, "tensors", "circuit unit scores", MAKE)
ABLATION_ART = kit.Artifact(CA.ABLATION, "table", "ablation curves", MAKE)
ENHANCEMENT_ART = kit.Artifact(CA.ENHANCEMENT, "table", "enhancement table", MAKE)
SUBLAYERS_ART = kit.Artifact(CA.SUBLAYERS, "table", "sublayer influence table", MAKE)
MODULATION_ART = kit.Artifact(CA.MODULATION, "table", "circuit modulation table", MAKE)
TOP_NEURONS_ART = kit.Artifact(CA.TOP_NEURONS, "table", "top neurons table", MAKE)
ARTIFACTS = (SUMMARY_ART, SCORES_ART, ABLATION_ART, ENHANCEMENT_ART, SUBLAYERS_ART, MODULATION_ART, TOP_NEURONS_ART)

#: the issue's targets on SmolLM2-135M-Instruct: (column, comparison, threshold)
TARGETS: dict[str, tuple[str, float]] = {
    "drop": (">=", 0.5),
    "random drop": ("<=", 0.10),
    "gain": (">=", 0.30),
    "random gain": ("<=", 0.05),
    "ρ atp~patching": (">=", 0.7),
    "eval drop": (">=", 0.5),
    "eval random drop": ("<=", 0.10),
}
COST_TARGET = 4.0
METHOD_COLORS = {"circuit": kit.REAL, "steering": kit.SELECT, "prompting": kit.LEXICAL, "random": "#c7c7c7",
                 "none": kit.CONTROL}
SUBLAYER_COLORS = {"attn": "#1f77b4", "mlp": "#ff7f0e"}
MODULATION_METRICS = (("feels_shift", "feels row margin (nats)"), ("row_win", "feels row win"),
                      ("read_back_win", "read-back win rate"), ("fluency", "fluency (log-prob / token)"),
                      ("lexicon_hit_rate", "lexicon hit rate"))

SUMMARY_FIELDS: dict[str, Any] = {"n_heads": int, "n_neurons": int, "ablation": dict, "enhancement": dict,
                                  "atp_vs_patching_spearman": (int, float), "faithfulness": (int, float),
                                  "completeness": (int, float), "eval": dict}


def available(run: Run) -> bool:
    return run.has(CA.SUMMARY)


def _fmt(x: Any, digits: int = 3) -> str:
    v = kit.num(x)
    return "—" if math.isnan(v) else f"{v:.{digits}g}"


def _emotions(summary: Any) -> list[str]:
    return [str(e) for e, v in kit.as_dict(kit.as_dict(summary).get("emotions")).items() if isinstance(v, dict)]


# -- summary table --------------------------------------------------------------------------------
def selection_text(record: Any) -> str:
    """How the circuit was selected, in a few words (the summary's per-emotion ``selection``; "—" when absent):
    the mode, and for ``drop`` the cut (units kept of the candidates, and the discovery drop it reached — with
    its interval's lower end when the cut asked for ``confidence``)."""
    r = kit.as_dict(record)
    mode = r.get("mode")
    if not isinstance(mode, str):
        return "—"
    if mode != "drop":
        return mode
    cand, n, target = kit.num(r.get("n_candidates")), kit.num(r.get("n")), kit.num(r.get("target"))
    if "target" not in r:
        return f"drop: left uncut ({r.get('reason', 'no search recorded')})"
    conf = kit.num(r.get("confidence"))
    bar = f"drop {target:g}" + (f" at {conf:.0%} confidence" if np.isfinite(conf) else "")
    if not r.get("reached"):
        return f"{bar}: not reached, all {cand:.0f} candidates kept"
    low = f", lower end {kit.num(r.get('drop_lower')):.2f}" if np.isfinite(conf) else ""
    return f"{bar}: {n:.0f} of {cand:.0f} candidates (discovery drop {kit.num(r.get('drop')):.2f}{low})"


def summary_table(summary: Any) -> pd.DataFrame:
    """One row an emotion: circuit size, drop vs random drop (± std), gain vs random gain, atp-vs-patching
    Spearman, faithfulness, completeness and the eval set's drop vs random drop (NaN where absent)."""
    rows = []
    for e in _emotions(summary):
        s = summary["emotions"][e]
        a, g, ev = kit.as_dict(s.get("ablation")), kit.as_dict(s.get("enhancement")), kit.as_dict(s.get("eval"))
        rows.append({
            "emotion": e,
            "heads": kit.num(s.get("n_heads")),
            "neurons": kit.num(s.get("n_neurons")),
            "drop": kit.num(a.get("drop")),
            "drop 95%": kit.fmt_interval(a.get("drop"), kit.interval(a, "drop")),
            "random drop": kit.num(a.get("random_drop")),
            "random drop std": kit.num(a.get("random_drop_std")),
            "gain": kit.num(g.get("gain")),
            "random gain": kit.num(g.get("random_gain")),
            "ρ atp~patching": kit.num(s.get("atp_vs_patching_spearman")),
            "faithfulness": kit.num(s.get("faithfulness")),
            "completeness": kit.num(s.get("completeness")),
            "eval drop": kit.num(ev.get("drop")),
            "eval random drop": kit.num(ev.get("random_drop")),
            "selection": selection_text(s.get("selection")),
        })
    cols = ["emotion", "heads", "neurons", "drop", "drop 95%", "random drop", "random drop std", "gain", "random gain",
            "ρ atp~patching", "faithfulness", "completeness", "eval drop", "eval random drop", "selection"]
    return pd.DataFrame(rows, columns=cols)


def _meets(value: float, op: str, threshold: float) -> bool | None:
    if math.isnan(value):
        return None
    return value >= threshold if op == ">=" else value <= threshold


def targets_met(table: pd.DataFrame) -> pd.DataFrame:
    """Per emotion, whether each target of :data:`TARGETS` is met (``True``/``False``; ``None`` when not measured),
    plus ``ablation`` (drop ≥ 50% while random ≤ 10%), ``enhancement`` (gain ≥ 30%, random ≤ 5%) and ``eval``."""
    out = []
    for _, r in table.iterrows():
        row: dict[str, Any] = {"emotion": r["emotion"]}
        for col, (op, thr) in TARGETS.items():
            row[col] = _meets(float(r[col]), op, thr)
        for name, pair in (("ablation", ("drop", "random drop")), ("enhancement", ("gain", "random gain")),
                           ("eval", ("eval drop", "eval random drop"))):
            vals = [row[c] for c in pair]
            row[name] = None if None in vals else all(vals)
        out.append(row)
    return pd.DataFrame(out, columns=["emotion", *TARGETS, "ablation", "enhancement", "eval"], dtype=object)


def _verdict_cell(value: float, col: str) -> str:
    if math.isnan(value):
        return "—"
    op, thr = TARGETS[col]
    ok = _meets(value, op, thr)
    return f"{'✓' if ok else '✗'} {value:.3g}"


# -- scores ---------------------------------------------------------------------------------------
def heads_matrix(scores: dict[str, Any], emotion: str, score: str) -> np.ndarray:
    """``[n_layers, n_heads]`` float array of ``score`` for ``emotion``'s heads (``KeyError`` naming the key if absent)."""
    key = CA.score_key(emotion, score, "heads")
    if key not in scores:
        raise KeyError(f"{CA.SCORES} has no {key!r} (it has {len(scores)} keys)")
    t = scores[key]
    arr = np.asarray(t.float().numpy() if hasattr(t, "float") else t, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"{key} has shape {tuple(arr.shape)}; [n_layers, n_heads] expected")
    return arr


def score_heatmap(scores: dict[str, Any], emotion: str, score: str, readout_layer: int | None = None) -> go.Figure:
    """Layer × head heatmap of ``score`` for ``emotion`` (diverging around 0; NaN — units not scored — blank)."""
    z = heads_matrix(scores, emotion, score)
    n_layers, n_heads = z.shape
    finite = np.abs(z[np.isfinite(z)])
    lim = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    zl: list[list[float | None]] = [[float(v) if math.isfinite(v) else None for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=zl, x=list(range(n_heads)), y=list(range(n_layers)), colorscale="RdBu", reversescale=True, zmid=0,
        zmin=-lim, zmax=lim, colorbar={"title": score},
        hovertemplate="layer %{y} head %{x}<br>" + score + " %{z:+.4g}<extra></extra>",
    ))
    kit.style(fig, f"{emotion}: {score} score of each attention head", "head", "layer",
              height=max(320, 60 + 14 * n_layers))
    if readout_layer is not None and 0 <= readout_layer < n_layers:
        fig.add_hline(y=readout_layer + 0.5, line_dash="dot", line_color=kit.CONTROL,
                      annotation_text=f"read-out layer {readout_layer}", annotation_position="top left")
    return fig


def top_neurons_frame(table: pd.DataFrame, emotion: str) -> pd.DataFrame:
    """The top neurons of ``emotion`` in score order, each with its top-activating stimuli in rank order."""
    need = {"emotion", "layer", "neuron", "score", "rank", "text", "activation"}
    if not need <= set(table.columns):
        raise ValueError(f"the top-neurons table needs columns {sorted(need)}; it has {sorted(table.columns)}")
    t = table[table["emotion"].astype(str) == emotion]
    t = t.assign(score=pd.to_numeric(t["score"], errors="coerce"), rank=pd.to_numeric(t["rank"], errors="coerce"))
    t = t.sort_values(["score", "layer", "neuron", "rank"], ascending=[False, True, True, True])
    cols = [c for c in ("layer", "neuron", "score", "rank", "label", "activation", "text") if c in t.columns]
    out = t[cols].reset_index(drop=True)
    return out.assign(unit=[f"L{int(a)}.n{int(b)}" for a, b in zip(out["layer"], out["neuron"])])[["unit", *cols]]


# -- ablation and enhancement ---------------------------------------------------------------------
def ablation_bands(table: pd.DataFrame, emotion: str, split: str = "heldout") -> pd.DataFrame:
    """Per (method, n_units): the circuit's drop and the random sets' mean and std (ddof 1) of the drop."""
    need = {"emotion", "split", "method", "kind", "n_units", "drop"}
    if not need <= set(table.columns):
        raise ValueError(f"the ablation table needs columns {sorted(need)}; it has {sorted(table.columns)}")
    t = table[(table["emotion"].astype(str) == emotion) & (table["split"].astype(str) == split)]
    t = t.assign(drop=pd.to_numeric(t["drop"], errors="coerce"), n_units=pd.to_numeric(t["n_units"], errors="coerce"))
    rows = []
    for (method, n), sub in t.groupby(["method", "n_units"], sort=True):
        circ = sub[sub["kind"].astype(str) == "circuit"]["drop"]
        rnd = sub[sub["kind"].astype(str) == "random"]["drop"].dropna()
        rows.append({"method": str(method), "n_units": int(n),
                     "circuit": float(circ.iloc[0]) if len(circ) else math.nan,
                     "random_mean": float(rnd.mean()) if len(rnd) else math.nan,
                     "random_std": float(rnd.std(ddof=1)) if len(rnd) > 1 else math.nan,
                     "n_random": int(len(rnd))})
    return pd.DataFrame(rows, columns=["method", "n_units", "circuit", "random_mean", "random_std", "n_random"])


def ablation_figure(table: pd.DataFrame, emotion: str, split: str = "heldout") -> go.Figure:
    """Drop vs number of units ablated: the circuit's line and the random sets' band (mean ± std), per method
    (mean ablation solid, zero ablation dashed)."""
    bands = ablation_bands(table, emotion, split)
    fig = go.Figure()
    for method in [m for m in ("mean", "zero") if m in set(bands["method"])] + \
            [m for m in dict.fromkeys(bands["method"]) if m not in ("mean", "zero")]:
        b = bands[bands["method"] == method].sort_values("n_units")
        dash = "dash" if method == "zero" else "solid"
        x = [int(v) for v in b["n_units"]]
        std = b["random_std"].fillna(0.0)
        hi = list(b["random_mean"] + std)
        lo = list(b["random_mean"] - std)
        fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", fillcolor="rgba(154,154,154,0.25)",
                                 line={"width": 0}, hoverinfo="skip", name=f"random sets, mean ± std ({method})"))
        fig.add_trace(go.Scatter(x=x, y=list(b["random_mean"]), mode="lines+markers", name=f"random mean ({method})",
                                 line={"color": kit.CONTROL, "dash": dash},
                                 hovertemplate="%{x} units<br>random drop %{y:.3f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=x, y=list(b["circuit"]), mode="lines+markers", name=f"circuit ({method} ablation)",
                                 line={"color": kit.emotion_color(emotion), "dash": dash, "width": 3},
                                 hovertemplate="%{x} units<br>circuit drop %{y:.3f}<extra></extra>"))
    fig.add_hline(y=0.5, line_dash="dot", line_color=kit.SELECT, annotation_text="target: circuit ≥ 50%",
                  annotation_position="top left")
    fig.add_hline(y=0.1, line_dash="dot", line_color=kit.CONTROL, annotation_text="random ≤ 10%",
                  annotation_position="bottom left")
    kit.style(fig, f"{emotion}: signal drop vs units ablated ({split})", "units ablated (top units first)",
              "drop = 1 − signal after / before", height=420, legend_below=True)
    return fig


def enhancement_figure(table: pd.DataFrame, emotion: str, split: str = "heldout") -> go.Figure:
    """Gain from scaling the circuit's units, beside the random sets' mean gain with its std as error bar."""
    need = {"emotion", "kind", "factor", "gain"}
    if not need <= set(table.columns):
        raise ValueError(f"the enhancement table needs columns {sorted(need)}; it has {sorted(table.columns)}")
    t = table[table["emotion"].astype(str) == emotion]
    if "split" in t.columns and (t["split"].astype(str) == split).any():
        t = t[t["split"].astype(str) == split]
    t = t.assign(gain=pd.to_numeric(t["gain"], errors="coerce"))
    fig = go.Figure()
    factors = sorted(pd.to_numeric(t["factor"], errors="coerce").dropna().unique())
    labels = [f"×{f:g}" for f in factors]
    circ = [float(t[(t["factor"] == f) & (t["kind"].astype(str) == "circuit")]["gain"].mean()) for f in factors]
    rnd = [t[(t["factor"] == f) & (t["kind"].astype(str) == "random")]["gain"] for f in factors]
    fig.add_trace(go.Bar(x=labels, y=circ, name="circuit", marker_color=kit.emotion_color(emotion)))
    fig.add_trace(go.Bar(x=labels, y=[float(r.mean()) for r in rnd], name="random sets (mean ± std)",
                         marker_color=kit.CONTROL,
                         error_y={"type": "data", "array": [float(r.std(ddof=1)) if len(r) > 1 else 0.0 for r in rnd]}))
    fig.add_hline(y=0.3, line_dash="dot", line_color=kit.SELECT, annotation_text="target: circuit ≥ 30%")
    kit.style(fig, f"{emotion}: enhancement (scaling the units)", "scale factor", "gain = signal after / before − 1",
              height=340)
    fig.update_layout(barmode="group")
    return fig


# -- sublayers --------------------------------------------------------------------------------------
def sublayer_frame(table: pd.DataFrame | None, scores: dict[str, Any] | None, emotion: str) -> pd.DataFrame:
    """``layer × {attn, mlp}`` influence of ``emotion``: from the sublayer table (mean over alphas) when it has
    the emotion, else from ``scores.safetensors``'s ``{emotion}.influence.*``; empty when neither has it."""
    if table is not None and {"emotion", "layer", "sublayer", "influence"} <= set(table.columns):
        t = table[table["emotion"].astype(str) == emotion]
        if len(t):
            t = t.assign(influence=pd.to_numeric(t["influence"], errors="coerce"),
                         layer=pd.to_numeric(t["layer"], errors="coerce"))
            pivot = t.pivot_table(index="layer", columns="sublayer", values="influence", aggfunc="mean")
            pivot.index = pivot.index.astype(int)
            return pivot.reindex(columns=[c for c in CA.SUBLAYER_KINDS if c in pivot.columns])
    if scores:
        cols = {}
        for s in CA.SUBLAYER_KINDS:
            key = CA.influence_key(emotion, s)
            if key in scores:
                cols[s] = np.asarray(scores[key].float().numpy(), dtype=float).reshape(-1)
        if cols:
            frame = pd.DataFrame(cols)
            frame.index.name = "layer"
            return frame.dropna(how="all")
    return pd.DataFrame(columns=list(CA.SUBLAYER_KINDS))


def sublayer_figure(frame: pd.DataFrame, emotion: str) -> go.Figure:
    """Grouped bars per layer: attention vs MLP influence (read-out units per unit of injected norm)."""
    fig = go.Figure()
    for s in frame.columns:
        fig.add_trace(go.Bar(x=[int(v) for v in frame.index], y=[float(v) for v in frame[s]],
                             name={"attn": "attention", "mlp": "MLP"}.get(str(s), str(s)),
                             marker_color=SUBLAYER_COLORS.get(str(s), kit.CONTROL),
                             hovertemplate="layer %{x}<br>influence %{y:.4g}<extra>" + str(s) + "</extra>"))
    kit.style(fig, f"{emotion}: sublayer influence on the read-out projection", "layer",
              "influence (change per unit of injection)", height=360)
    fig.update_layout(barmode="group")
    kit.layer_ticks(fig, list(frame.index))
    return fig


# -- modulation -----------------------------------------------------------------------------------
def _number(v: Any) -> float:
    """A table cell as float (bools as 0/1); NaN for anything else."""
    if isinstance(v, (bool, np.bool_)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def modulation_figure(table: pd.DataFrame, emotions: list[str] | None = None) -> go.Figure:
    """Circuit modulation vs steering vs prompting (and none): one panel a measure (feels row margin, row win,
    read-back win rate with its 95% interval, fluency, lexicon hit rate), bars grouped by method per emotion.
    When the table marks each method's ``chosen`` strength (the best read-back among the fluent ones), only
    those rows are drawn — methods compared at equal fluency; else the first row of each (emotion, method).
    ``random`` rows (the control: random units at the circuit's strength) are drawn as their mean per emotion."""
    from plotly.subplots import make_subplots

    need = {"emotion", "method"}
    if not need <= set(table.columns):
        raise ValueError(f"the modulation table needs columns {sorted(need)}; it has {sorted(table.columns)}")
    metrics = [(c, label) for c, label in MODULATION_METRICS if c in table.columns]
    if not metrics:
        raise ValueError(f"the modulation table has none of {[c for c, _ in MODULATION_METRICS]}")
    t = table if emotions is None else table[table["emotion"].astype(str).isin(emotions)]
    is_rnd = t["method"].astype(str) == "random"
    rnd, t = t[is_rnd], t[~is_rnd]
    if "chosen" in t.columns and t["chosen"].map(lambda v: v is True or v == 1).any():
        t = t[t["chosen"].map(lambda v: v is True or v == 1)]  # each method at its strength of equal fluency
    if len(rnd):  # the control's draws, averaged (bools as rates); no interval of its own
        cols = [c for c, _ in metrics]
        mean = rnd[["emotion"] + cols].assign(**{c: rnd[c].map(_number) for c in cols}).groupby("emotion", sort=False).mean()
        t = pd.concat([t, mean.reset_index().assign(method="random")], ignore_index=True)
    emos = list(dict.fromkeys(t["emotion"].astype(str)))
    methods = [m for m in METHOD_COLORS if m in set(t["method"].astype(str))] + \
        [m for m in dict.fromkeys(t["method"].astype(str)) if m not in METHOD_COLORS]
    fig = make_subplots(rows=len(metrics), cols=1, subplot_titles=[label for _, label in metrics], shared_xaxes=True,
                        vertical_spacing=min(0.08, 0.5 / len(metrics)))
    for i, (col, label) in enumerate(metrics):
        for m in methods:
            sub = t[t["method"].astype(str) == m].drop_duplicates("emotion")
            sub.index = sub["emotion"].astype(str)
            vals = sub[col].map(_number)
            y = [float(vals.loc[e]) if e in vals.index else math.nan for e in emos]
            err = None
            if col == "read_back_win" and {"read_back_win_ci_low", "read_back_win_ci_high"} <= set(sub.columns):
                lo_s = sub["read_back_win_ci_low"].map(_number)
                hi_s = sub["read_back_win_ci_high"].map(_number)
                lo = [float(lo_s.loc[e]) if e in lo_s.index else math.nan for e in emos]
                hi = [float(hi_s.loc[e]) if e in hi_s.index else math.nan for e in emos]
                if not all(math.isnan(v) for v in lo + hi):
                    err = {"type": "data", "symmetric": False, "array": [h - v for h, v in zip(hi, y)],
                           "arrayminus": [v - lo_ for v, lo_ in zip(y, lo)]}
            fig.add_trace(go.Bar(x=emos, y=[float(v) for v in y], name=m, legendgroup=m, showlegend=i == 0,
                                 marker_color=METHOD_COLORS.get(m, kit.emotion_color(m)), error_y=err,
                                 hovertemplate=f"{m}<br>%{{x}}<br>{label} %{{y:.3g}}<extra></extra>"),
                          row=i + 1, col=1)
    kit.style(fig, "Control: circuit modulation vs steering vs prompting (same prompts)", height=200 * len(metrics) + 80)
    fig.update_layout(barmode="group")
    fig.update_annotations(font_size=12)
    return fig


# -- rendering ------------------------------------------------------------------------------------
def render(run: Run) -> None:
    st.title(TITLE)
    summary = kit.load(run, SUMMARY_ART)
    if summary is None:
        return
    emos = _emotions(summary)
    if not emos:
        st.warning(f"`{CA.SUMMARY}` holds no emotions; re-run the step that writes it ({MAKE}).")
        return
    with kit.guard(SUMMARY_ART):
        render_summary(summary)
    st.divider()
    left, right = st.columns(2)
    emotion = left.selectbox("Emotion", emos, key="circuits_emotion")
    score = right.radio("Score", list(CA.SCORE_NAMES), horizontal=True, key="circuits_score",
                        help="direct: the unit's own write onto the direction; atp: attribution patching "
                             "(gradient × (activation − baseline)); patching: real patching, top units by atp only")
    for section, art in ((render_heads, SCORES_ART), (render_top_neurons, TOP_NEURONS_ART),
                         (render_ablation, ABLATION_ART), (render_sublayers, SUBLAYERS_ART)):
        st.divider()
        with kit.guard(art):
            section(run, summary, emotion, score)
    st.divider()
    with kit.guard(MODULATION_ART):
        render_modulation(run, summary)


def render_summary(summary: dict[str, Any]) -> None:
    problems = [f"emotions.{e}: {p}" for e in _emotions(summary)
                for p in kit.field_problems(summary["emotions"][e], SUMMARY_FIELDS)]
    if problems:
        st.warning(f"`{CA.SUMMARY}` has fields of the wrong type ({'; '.join(problems[:3])}"
                   f"{'; …' if len(problems) > 3 else ''}); they are not shown — re-run the step that writes it ({MAKE}).")
    cost = kit.num(summary.get("cost_ratio"))
    cost_text = "not measured" if math.isnan(cost) else f"{cost:.2f}× one forward pass (target ≤ {COST_TARGET:g}×)"
    st.caption(f"Directions: `{summary.get('source', '?')}` · read-out layer {summary.get('readout_layer', '?')} · "
               f"model `{summary.get('model', '?')}` · scores for all units: {cost_text}")
    table = summary_table(summary)
    met = targets_met(table)
    n = len(met)
    n_abl = int((met["ablation"] == True).sum())  # noqa: E712 — None means not measured
    n_enh = int((met["enhancement"] == True).sum())  # noqa: E712
    n_rho = int((met["ρ atp~patching"] == True).sum())  # noqa: E712
    (st.success if n_abl >= min(5, n) and n else st.info)(
        f"Ablation target (drop ≥ 50%, random ≤ 10%) met for {n_abl} of {n} emotions (needed: ≥ 5 of 6); "
        f"enhancement (gain ≥ 30%, random ≤ 5%) for {n_enh}; atp~patching ρ ≥ 0.7 for {n_rho}.")
    shown = table.copy()
    for col in TARGETS:
        shown[col] = [_verdict_cell(float(v), col) for v in table[col]]
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={**{c: st.column_config.NumberColumn(c, format="%.3g")
                                   for c in ("random drop std", "faithfulness", "completeness")},
                                **{c: st.column_config.NumberColumn(c, format="%d") for c in ("heads", "neurons")}})
    st.caption("✓/✗ against the issue's targets on SmolLM2-135M-Instruct. drop = 1 − signal after ÷ before when the "
               "circuit is mean-ablated (held-out scenarios); random: size-matched random sets from the same layers "
               "(mean, std over ≥ 5 draws). faithfulness: the signal kept when everything *but* the circuit is "
               "mean-ablated; completeness: the signal removed when the circuit is. eval: the `--eval` file (default: "
               "held-out stories).")


def _readout(summary: dict[str, Any]) -> int | None:
    v = summary.get("readout_layer")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def render_heads(run: Run, summary: dict[str, Any], emotion: str, score: str) -> None:
    st.subheader("Attention heads: layer × head scores")
    scores = kit.load(run, SCORES_ART)
    if scores is None:
        return
    key = CA.score_key(emotion, score, "heads")
    if key not in scores:
        st.info(f"`{CA.SCORES}` has no `{key}` (this emotion or score was not computed); {MAKE}.")
        return
    st.plotly_chart(score_heatmap(scores, emotion, score, _readout(summary)), width="stretch")
    z = heads_matrix(scores, emotion, score)
    finite = z[np.isfinite(z)]
    if finite.size:
        flat = np.where(np.isfinite(z), z, -np.inf).ravel()
        top = np.argsort(flat)[::-1][:3]
        tops = ", ".join(f"L{i // z.shape[1]}.h{i % z.shape[1]} {flat[i]:+.3g}" for i in top if np.isfinite(flat[i]))
        spread = float(np.std(finite)) if finite.size > 1 else math.nan
        st.caption(f"{finite.size} of {z.size} heads scored. Top: {tops}. The control is the spread of all heads "
                   f"(std {_fmt(spread)}): a top head that is not several stds above the rest is not a finding. "
                   "Heads above the read-out layer cannot write the signal (zero).")


def render_top_neurons(run: Run, summary: dict[str, Any], emotion: str, score: str) -> None:
    st.subheader("Top neurons and the stimuli they fire on")
    table = kit.load(run, TOP_NEURONS_ART)
    if table is None:
        return
    frame = top_neurons_frame(table, emotion)
    if frame.empty:
        st.info(f"`{CA.TOP_NEURONS}` has no neurons for {emotion} (its circuit has none).")
        return
    st.dataframe(frame, hide_index=True, width="stretch",
                 column_config={"score": st.column_config.NumberColumn("score", format="%.3g"),
                                "activation": st.column_config.NumberColumn("activation", format="%.3g")})
    st.caption("The circuit's top neurons by score; for each, the stimuli (discovery + held-out scenarios) with the "
               "highest mean activation over the text. A neuron for the emotion should fire on its stimuli (label).")


def render_ablation(run: Run, summary: dict[str, Any], emotion: str, score: str) -> None:
    st.subheader("Ablation: the circuit vs size-matched random sets")
    table = kit.load(run, ABLATION_ART)
    if table is None:
        return
    splits = [s for s in ("heldout", "eval", "discovery") if "split" in table.columns and s in set(table["split"].astype(str))]
    if not splits or not (table["emotion"].astype(str) == emotion).any():
        st.info(f"`{CA.ABLATION}` has no curve for {emotion}.")
        return
    split = st.radio("Stimuli", splits, horizontal=True, key="circuits_split",
                     help="heldout: built-in scenarios never used for scoring; eval: the --eval file")
    st.plotly_chart(ablation_figure(table, emotion, split), width="stretch")
    a = kit.as_dict(kit.as_dict(kit.as_dict(summary.get("emotions")).get(emotion)).get("ablation"))
    if a:
        zero = (f"zero ablation {_fmt(a.get('drop_zero'))} vs {_fmt(a.get('random_drop_zero'))}; "
                if not math.isnan(kit.num(a.get("drop_zero"))) else "")
        st.caption(f"Full circuit, mean ablation (held-out): drop {kit.fmt_interval(a.get('drop'), kit.interval(a, 'drop'))} "
                   f"against random sets {_fmt(a.get('random_drop'))} ± {_fmt(a.get('random_drop_std'))} (std); {zero}"
                   "a drop above 1 means the signal reversed. The band is the control: a circuit inside it is no "
                   "better than any units from the same layers.")
    enh = kit.load(run, ENHANCEMENT_ART)
    if enh is not None and len(enh) and (enh["emotion"].astype(str) == emotion).any():
        with kit.guard(ENHANCEMENT_ART):
            st.plotly_chart(enhancement_figure(enh, emotion), width="stretch")


def render_sublayers(run: Run, summary: dict[str, Any], emotion: str, score: str) -> None:
    st.subheader("Sublayer influence: attention vs MLP per layer")
    table = kit.load(run, SUBLAYERS_ART)
    scores = kit.load(run, SCORES_ART, quiet=True)
    frame = sublayer_frame(table, scores, emotion)
    if frame.empty:
        st.info(f"No sublayer influence for {emotion} in `{CA.SUBLAYERS}` (the run skipped it: no alphas).")
        return
    st.plotly_chart(sublayer_figure(frame, emotion), width="stretch")
    st.caption("α·σ·v injected at one sublayer's output (σ: its activation scale); influence = change of the "
               "read-out projection per unit of injection (≈ 1 for an undisturbed residual path). Layers after the "
               "read-out layer cannot move it.")


def render_modulation(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Control: circuit modulation vs steering vs prompting")
    table = kit.load(run, MODULATION_ART)
    if table is None:
        return
    if table.empty:
        st.info(f"`{CA.MODULATION}` is empty (no generation was judged).")
        return
    st.plotly_chart(modulation_figure(table), width="stretch")
    ops = sorted({str((m or {}).get("circuit_op", "scale")) for m in
                  (e.get("modulation") for e in summary.get("emotions", {}).values()) if m})
    how = {"scale": "the circuit's units multiplied by the strength",
           "shift": "the strength × each unit's emotion contrast added to the circuit's units"}
    st.caption("Circuit: " + "; ".join(how.get(o, o) for o in ops or ["scale"]) + ". Same prompts for every method. feels row margin: the emotion's “… I feel” word shift minus the "
               "other emotions' (nats); row win: that margin is the row's largest; read-back win rate: generated text "
               "re-read projects higher than the unsteered text (95% interval); fluency: log-prob per token under "
               "the unmodified model — compare methods at equal fluency. `none` is the unsteered control; `random` is "
               "size-matched random units changed the same way at the circuit's strength (mean of the draws).")
