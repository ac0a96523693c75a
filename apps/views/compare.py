"""Base vs tuned: what tuning changed (``psylens compare``), from the weights to the text.

Reads ``compare/summary.json`` and the section files behind it (names from
``psylens.compare.artifacts``): the weight-change map (layer × module; relative norm, changed
fraction, effective rank or principal overlap), activation-difference curves by layer, the
next-token KL of the task traces per text and by layer (each model's logit lens), the emotion probe curves of both models with the base probes'
transfer to the tuned model, the concept rise/fall table, the steering transfer, side-by-side
generations (plain and steered), and — when the features section ran — behaviour-label and SAE
feature frequency shifts and the crosscoder's latent classes. A section the run skipped shows the
reason ``summary.json`` gives. Every file is read through :func:`kit.load`; a missing or corrupt file
is one line and the rest of the page goes on. Figure and table builders are plain functions (no
streamlit), tested without a browser.

Footgun: the per-text KL bars are KL(tuned ‖ base) of the two models' *final* next-token distributions;
the per-layer KL curve (``layer_kl.parquet``) is KL(base ‖ tuned) of each model's logit lens — its own
final norm and unembedding applied to that layer's ``resid_post`` — so its last layer is the output KL
in the other direction, and early layers read through a head they were not trained to feed (a logit
lens is only a lens). Concept changes use the *base* model's directions on both models.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from psylens.apps.views import kit
from psylens.compare import artifacts as A
from psylens.runs import Run

__all__ = [
    "TITLE",
    "available",
    "render",
    "WEIGHT_METRICS",
    "ACTIVATION_MEASURES",
    "MODEL_COLORS",
    "file_problems",
    "section_status",
    "module_kind",
    "weight_matrix",
    "weight_heatmap",
    "top_modules",
    "activation_figure",
    "kl_figure",
    "layer_kl_figure",
    "kl_top_frame",
    "lens_frame",
    "probe_figure",
    "direction_figure",
    "concept_table",
    "concept_figure",
    "steering_table",
    "steering_figure",
    "steering_source",
    "generation_rows",
    "label_table",
    "label_figure",
    "frequency_figure",
    "changed_features",
    "crosscoder_counts",
    "crosscoder_figure",
    "latent_ratio_figure",
]

TITLE = "Base vs tuned"

MAKE = "`psylens compare --base M --tuned M2 (or --tuned-adapter DIR) --out RUN` writes it"
MAKE_FEATURES = ("`psylens compare ... --sections features` writes it (needs a step SAE in the run: "
                 "`psylens sae train`)")
SUMMARY_ART = kit.Artifact(A.SUMMARY, "json", "comparison summary", MAKE, schema=A.SCHEMA_VERSION)
WEIGHTS_ART = kit.Artifact(A.WEIGHTS, "json", "weight-change table", MAKE, expect=list)
ACTIVATIONS_ART = kit.Artifact(A.ACTIVATIONS, "json", "activation differences", MAKE, schema=A.SCHEMA_VERSION)
LAYER_KL_ART = kit.Artifact(A.LAYER_KL, "table", "per-layer KL table", MAKE)
EMOTIONS_ART = kit.Artifact(A.EMOTIONS, "json", "emotion comparison", MAKE, schema=A.SCHEMA_VERSION)
STEERING_ART = kit.Artifact(A.STEERING, "json", "steering transfer", MAKE, schema=A.SCHEMA_VERSION)
GENERATIONS_ART = kit.Artifact(A.GENERATIONS, "json", "side-by-side generations",
                               "`psylens compare` writes it with the activations or steering section",
                               schema=A.SCHEMA_VERSION)
FEATURES_ART = kit.Artifact(A.FEATURES, "json", "feature comparison", MAKE_FEATURES, schema=A.SCHEMA_VERSION)
FREQUENCIES_ART = kit.Artifact(A.FEATURE_FREQUENCIES, "table", "feature frequency table", MAKE_FEATURES)
CROSSCODER_ART = kit.Artifact(A.CROSSCODER, "json", "crosscoder summary", MAKE_FEATURES, schema=A.SCHEMA_VERSION)
LATENTS_ART = kit.Artifact(A.CROSSCODER_LATENTS, "table", "crosscoder latent table", MAKE_FEATURES)
ARTIFACTS = (SUMMARY_ART, WEIGHTS_ART, ACTIVATIONS_ART, LAYER_KL_ART, EMOTIONS_ART, STEERING_ART, GENERATIONS_ART, FEATURES_ART,
             FREQUENCIES_ART, CROSSCODER_ART, LATENTS_ART)

#: weights.json measures the map can colour by: key → (label, what it means)
WEIGHT_METRICS: dict[str, tuple[str, str]] = {
    "relative_norm": ("‖ΔW‖ / ‖W‖", "how much of the matrix changed (Frobenius norms)"),
    "changed_fraction": ("changed fraction", "fraction of entries changed beyond the dtype tolerance"),
    "effective_rank": ("effective rank of ΔW", "how many directions the change spans (a LoRA of rank r: ≤ r)"),
    "principal_overlap": ("principal overlap", "overlap of ΔW's top directions with W's own (random: small)"),
}
#: activations.json per-layer measures: key → (label, transform)
ACTIVATION_MEASURES: dict[str, str] = {
    "relative": "‖mean diff‖ / ‖base residual‖",
    "relative_contribution": "what the layer itself adds / ‖base residual‖",
    "one_minus_cosine": "1 − token cosine (base, tuned)",
    "token_diff_norm": "mean ‖tuned − base‖ per token",
}
MODEL_COLORS = {"base": kit.REAL, "tuned": kit.EVAL}
SET_DASH = {"emotions": "solid", "tasks": "dash"}
_MODULE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CLASS_COLORS = {"tuned_only": kit.EVAL, "tuned_norm_only": "#f4a3a3", "base_only": kit.REAL, "base_norm_only": "#9ec5e8",
                "shared": kit.SELECT, "intermediate": kit.LEXICAL, "dead": kit.CONTROL}


def available(run: Run) -> bool:
    return run.has(A.SUMMARY)


def _fmt(x: Any, digits: int = 3) -> str:
    v = kit.num(x)
    return "—" if math.isnan(v) else f"{v:.{digits}g}"


def _ci_text(value: Any, ci: Any, digits: int = 3) -> str:
    c = kit.as_list(ci)
    if len(c) == 2 and not any(math.isnan(kit.num(v)) for v in c):
        return f"{_fmt(value, digits)} [{_fmt(c[0], digits)}, {_fmt(c[1], digits)}]"
    return _fmt(value, digits)


# -- shape checks ---------------------------------------------------------------------------------
_NUM = (int, float)
TOP_FIELDS: dict[str, dict[str, Any]] = {
    A.SUMMARY: {"models": dict, "sections": dict, "plots": dict},
    A.ACTIVATIONS: {"sets": dict, "kl": dict, "lens": dict, "cosine_between_sets": list, "config": dict, "layer_kl": dict},
    A.EMOTIONS: {"probes": dict, "directions": dict, "concepts": dict},
    A.STEERING: {"base": dict, "tuned": dict, "emotions": list, "layer": int, "alpha": _NUM, "steering": dict,
                 "read_back": dict},
    A.GENERATIONS: {"prompts": list, "steered": dict, "steered_reason": str, "config": dict},
    A.FEATURES: {"sae": dict, "traces": dict, "labels": dict, "diversity": dict, "frequencies": dict},
    A.CROSSCODER: {"counts": dict, "noise": dict, "fit": dict, "settings": dict},
}
_LAYER_ROW = {"layer": int, "relative": _NUM, "token_cosine": _NUM, "relative_contribution": _NUM,
              "token_diff_norm": _NUM, "mean_diff_norm": _NUM, "mean_diff_norm_ci95": list}


def _pre(prefix: str, problems: list[str]) -> list[str]:
    """``"`key` is a str (…)"`` → ``"`prefix.key` is a str (…)"``."""
    return [f"`{prefix}.{p[1:]}" for p in problems]


def _each(items: Any, spec: dict[str, Any], where: str) -> list[str]:
    out = []
    for i, item in enumerate(kit.as_list(items)):
        if isinstance(item, dict):
            out += _pre(f"{where}[{i}]", kit.field_problems(item, spec))
        else:
            out.append(f"`{where}[{i}]` is a {type(item).__name__} (dict expected)")
    return out


def file_problems(rel: str, obj: Any) -> list[str]:
    """The fields of a ``RUN/compare/`` JSON file present with the wrong type (``"`sets.tasks.layers[0].layer` is a
    str (int expected)"``); empty when the file has the shape the page reads. Absent fields are not problems."""
    if rel == A.WEIGHTS:
        return _each(obj, {"module": str, "layer": int, **{k: _NUM for k in A.WEIGHT_KEYS[2:]}}, "rows") \
            if isinstance(obj, list) else [f"the file is a {type(obj).__name__} (list expected)"]
    out = kit.field_problems(obj, TOP_FIELDS.get(rel, {}))
    d = kit.as_dict(obj)
    if rel == A.SUMMARY:
        for name, sec in kit.as_dict(d.get("sections")).items():
            if not isinstance(sec, dict):
                out.append(f"`sections.{name}` is a {type(sec).__name__} (dict expected)")
            else:
                out += _pre(f"sections.{name}", kit.field_problems(sec, {"status": str, "reason": str, "headline": dict}))
    elif rel == A.ACTIVATIONS:
        for name, st_ in kit.as_dict(d.get("sets")).items():
            if not isinstance(st_, dict):
                out.append(f"`sets.{name}` is a {type(st_).__name__} (dict expected)")
                continue
            out += _pre(f"sets.{name}", kit.field_problems(st_, {"layers": list, "n_texts": int}))
            out += _each(st_.get("layers"), _LAYER_ROW, f"sets.{name}.layers")
        out += _pre("kl", kit.field_problems(d.get("kl"), {"per_text": list, "top_positions": list, "mean_kl": _NUM}))
    elif rel == A.EMOTIONS:
        p = kit.as_dict(d.get("probes"))
        out += _pre("probes", kit.field_problems(p, {"base": dict, "tuned": dict, "transfer": list}))
        for name in A.MODEL_NAMES:
            out += _pre(f"probes.{name}", kit.field_problems(p.get(name), {"layers": list, "accuracy": list,
                                                                           "accuracy_ci95": list, "chance": _NUM}))
        out += _pre("concepts", kit.field_problems(d.get("concepts"), {"concepts": list, "rises": list, "falls": list,
                                                                       "band": list}))
        out += _each(kit.as_dict(d.get("concepts")).get("concepts"), {"concept": str, "change": _NUM, "change_ci95": list},
                     "concepts.concepts")
    elif rel == A.STEERING:
        for name in A.MODEL_NAMES:
            out += _pre(name, kit.field_problems(d.get(name), {"value": _NUM, "own_shift": dict}))
    elif rel == A.GENERATIONS:
        out += _each(d.get("prompts"), {"prompt": str, "base": str, "tuned": str}, "prompts")
    elif rel == A.FEATURES:
        for label, v in kit.as_dict(d.get("labels")).items():
            if not isinstance(v, dict):
                out.append(f"`labels.{label}` is a {type(v).__name__} (dict expected)")
    return out


def checked(run: Run, art: kit.Artifact) -> Any | None:
    """:func:`kit.load`, then one warning naming the wrong-typed fields (and ``None``: the section is not drawn)."""
    obj = kit.load(run, art)
    if obj is None:
        return None
    problems = file_problems(art.rel, obj)
    if problems:
        shown = "; ".join(problems[:3]) + ("; …" if len(problems) > 3 else "")
        st.warning(f"`{art.rel}` has fields of the wrong type ({shown}); it is not shown — re-run the step that "
                   f"writes it ({art.make}).")
        return None
    return obj


# -- summary --------------------------------------------------------------------------------------
def section_status(summary: Any) -> pd.DataFrame:
    """One row a report section in report order: ``section``, ``status`` (done / skipped / failed / not run),
    ``reason`` (why it did not run; empty when done)."""
    secs = kit.as_dict(kit.as_dict(summary).get("sections"))
    rows = []
    for name in A.SECTIONS:
        sec = secs.get(name)
        if not isinstance(sec, dict):
            rows.append({"section": name, "status": "not run",
                         "reason": f"not requested (add it to --sections: {','.join(A.SECTIONS)})"})
            continue
        status = str(sec.get("status", "?"))
        rows.append({"section": name, "status": status,
                     "reason": "" if status == "done" else str(sec.get("reason") or "no reason recorded")})
    return pd.DataFrame(rows, columns=["section", "status", "reason"])


# -- weights --------------------------------------------------------------------------------------
def module_kind(module: str, layer: Any) -> str:
    """``model.layers.3.mlp.down_proj`` (layer 3) → ``mlp.down_proj``: the module's name inside its layer."""
    m = re.search(rf"(?:^|\.){int(layer)}\.(.+)$", str(module)) if isinstance(layer, int) else None
    return m.group(1) if m else str(module)


def _kind_key(kind: str) -> tuple[int, str]:
    last = kind.rsplit(".", 1)[-1]
    return (_MODULE_ORDER.index(last) if last in _MODULE_ORDER else len(_MODULE_ORDER), kind)


def weight_matrix(rows: Any, metric: str = "relative_norm") -> tuple[list[str], list[int], np.ndarray]:
    """``(module kinds, layers, z [kind, layer])`` of ``metric`` from ``weights.json`` rows (NaN where a module
    is absent; rows without an integer layer or a number are skipped). ``ValueError`` for an unknown metric."""
    if metric not in WEIGHT_METRICS:
        raise ValueError(f"unknown weight metric {metric!r}; valid: {', '.join(WEIGHT_METRICS)}")
    cells: dict[tuple[str, int], float] = {}
    for r in kit.as_list(rows):
        r = kit.as_dict(r)
        layer = r.get("layer")
        if not isinstance(layer, int) or isinstance(layer, bool) or not isinstance(r.get("module"), str):
            continue
        cells[(module_kind(r["module"], layer), layer)] = kit.num(r.get(metric))
    kinds = sorted({k for k, _ in cells}, key=_kind_key)
    layers = sorted({layer for _, layer in cells})
    z = np.full((len(kinds), len(layers)), np.nan)
    for (k, layer), v in cells.items():
        z[kinds.index(k), layers.index(layer)] = v
    return kinds, layers, z


def weight_heatmap(rows: Any, metric: str = "relative_norm") -> go.Figure:
    """Layer × module heatmap of ``metric`` (blank where a module is absent)."""
    kinds, layers, z = weight_matrix(rows, metric)
    label, _ = WEIGHT_METRICS[metric]
    zl = [[float(v) if math.isfinite(v) else None for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=zl, x=layers, y=kinds, colorscale="Viridis", colorbar={"title": label},
                               hovertemplate="layer %{x}<br>%{y}<br>" + label + " %{z:.4g}<extra></extra>"))
    kit.style(fig, f"Weight change by layer and module: {label}", "layer", None, height=max(300, 90 + 28 * len(kinds)))
    fig.update_yaxes(type="category")
    return kit.layer_ticks(fig, layers)


def top_modules(rows: Any, n: int = 15) -> pd.DataFrame:
    """The ``n`` modules with the largest relative norm (changed ones only), every weights.json measure."""
    frame = pd.DataFrame([kit.as_dict(r) for r in kit.as_list(rows)], columns=list(A.WEIGHT_KEYS))
    for c in A.WEIGHT_KEYS[2:]:
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    frame = frame[frame["relative_norm"] > 0].sort_values("relative_norm", ascending=False)
    return frame.head(n).reset_index(drop=True)


# -- activations ----------------------------------------------------------------------------------
def _measure(row: dict[str, Any], measure: str) -> float:
    if measure == "one_minus_cosine":
        return 1.0 - kit.num(row.get("token_cosine"))
    return kit.num(row.get(measure))


def activation_figure(res: Any, measure: str = "relative") -> go.Figure:
    """One line an input set (emotion texts solid, task traces dashed) of ``measure`` by layer; for
    ``relative`` the 95% band of the mean difference (its bootstrap interval over texts, scaled alike)."""
    if measure not in ACTIVATION_MEASURES:
        raise ValueError(f"unknown activation measure {measure!r}; valid: {', '.join(ACTIVATION_MEASURES)}")
    fig = go.Figure()
    all_layers: list[int] = []
    for name, s in kit.as_dict(kit.as_dict(res).get("sets")).items():
        rows = [kit.as_dict(r) for r in kit.as_list(kit.as_dict(s).get("layers"))]
        xs = [r.get("layer") for r in rows]
        all_layers += [x for x in xs if isinstance(x, int)]
        ys = [_measure(r, measure) for r in rows]
        color = kit.LEXICAL if name == "tasks" else kit.REAL
        if measure == "relative":
            lo, hi = [], []
            for r in rows:
                ci, norm, rel = kit.as_list(r.get("mean_diff_norm_ci95")), kit.num(r.get("mean_diff_norm")), kit.num(r.get("relative"))
                scale = rel / norm if norm > 0 else 0.0  # no difference at all: a zero-width band
                lo.append(kit.num(ci[0]) * scale if len(ci) == 2 else math.nan)
                hi.append(kit.num(ci[1]) * scale if len(ci) == 2 else math.nan)
            if not all(math.isnan(v) for v in lo + hi):
                fig.add_trace(go.Scatter(x=xs + xs[::-1], y=hi + lo[::-1], fill="toself", fillcolor="rgba(154,154,154,0.25)",
                                         line={"width": 0}, hoverinfo="skip", name=f"{name}: 95% interval"))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"{name} ({kit.as_dict(s).get('n_texts', '?')} texts)",
                                 line={"color": color, "dash": SET_DASH.get(name, "dot")},
                                 hovertemplate="layer %{x}<br>%{y:.4g}<extra>" + name + "</extra>"))
    kit.style(fig, f"Activation difference by layer (resid_post): {ACTIVATION_MEASURES[measure]}", "layer",
              ACTIVATION_MEASURES[measure])
    return kit.layer_ticks(fig, all_layers)


def kl_figure(res: Any) -> go.Figure:
    """KL(p_tuned ‖ p_base) per task text (bars; mean over the text's positions) with the mean and its 95% interval."""
    kl = kit.as_dict(kit.as_dict(res).get("kl"))
    per = [kit.num(v) for v in kit.as_list(kl.get("per_text"))]
    kinds = [str(k) for k in kit.as_list(kit.as_dict(kit.as_dict(kit.as_dict(res).get("sets")).get("tasks")).get("kinds"))]
    labels = [f"{i}: {kinds[i]}" if i < len(kinds) else str(i) for i in range(len(per))]
    fig = go.Figure(go.Bar(x=labels, y=per, marker_color=kit.REAL, name="per text",
                           hovertemplate="text %{x}<br>KL %{y:.4g} nats<extra></extra>"))
    mean = kit.num(kl.get("mean_kl"))
    if not math.isnan(mean):
        ci = kit.interval(kl, "mean_kl")
        fig.add_hline(y=mean, line_color=kit.EVAL, annotation_text=f"mean {_ci_text(mean, list(ci) if ci else None)}")
        if ci:
            fig.add_hrect(y0=ci[0], y1=ci[1], fillcolor="rgba(214,39,40,0.12)", line_width=0)
    kit.style(fig, "Next-token KL(tuned ‖ base) on the task traces, mean over positions", "task text", "nats", height=340)
    fig.update_xaxes(type="category")
    return fig


def layer_kl_figure(table: pd.DataFrame) -> go.Figure:
    """The per-layer KL(base ‖ tuned) of the two models' logit lenses (``layer_kl.parquet``): a curve by layer with
    its 95% band (bootstrap over task texts). ``ValueError`` when a column the curve needs is missing."""
    need = {"layer", "kl"}
    if not need <= set(table.columns):
        raise ValueError(f"the per-layer KL table needs columns {sorted(need)}; it has {sorted(table.columns)}")
    t = table.assign(layer=pd.to_numeric(table["layer"], errors="coerce"), kl=pd.to_numeric(table["kl"], errors="coerce"))
    t = t.dropna(subset=["layer"]).sort_values("layer")
    xs = [int(x) for x in t["layer"]]
    fig = go.Figure()
    if {"kl_lo", "kl_hi"} <= set(t.columns):
        lo = [kit.num(v) for v in pd.to_numeric(t["kl_lo"], errors="coerce")]
        hi = [kit.num(v) for v in pd.to_numeric(t["kl_hi"], errors="coerce")]
        if not all(math.isnan(v) for v in lo + hi):
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=hi + lo[::-1], fill="toself", fillcolor="rgba(214,39,40,0.15)",
                                     line={"width": 0}, hoverinfo="skip", name="95% interval"))
    fig.add_trace(go.Scatter(x=xs, y=[kit.num(v) for v in t["kl"]], mode="lines+markers", name="KL(base ‖ tuned)",
                             line={"color": kit.EVAL}, hovertemplate="layer %{x}<br>KL %{y:.4g} nats<extra></extra>"))
    kit.style(fig, "Logit-lens KL by layer: each model's resid_post through its own final norm and unembedding",
              "layer", "nats", height=340)
    return kit.layer_ticks(fig, xs)


def kl_top_frame(res: Any) -> pd.DataFrame:
    """The positions where the two models' next-token distributions differ most: context, both next tokens."""
    rows = [kit.as_dict(r) for r in kit.as_list(kit.as_dict(kit.as_dict(res).get("kl")).get("top_positions"))]
    cols = ["kl", "text", "position", "context", "base_next", "tuned_next", "in_trace"]
    frame = pd.DataFrame(rows, columns=cols)
    frame["kl"] = pd.to_numeric(frame["kl"], errors="coerce")
    return frame


def lens_frame(res: Any, layer: int) -> pd.DataFrame:
    """The activation-difference lens at ``layer``: rank, the tokens the mean difference promotes through the
    tuned and the base model's unembedding (empty when the layer is absent or unchanged)."""
    for row in kit.as_list(kit.as_dict(kit.as_dict(res).get("lens")).get("layers")):
        row = kit.as_dict(row)
        if row.get("layer") == layer:
            tuned = [kit.as_dict(t) for t in kit.as_list(row.get("tuned"))]
            base = [kit.as_dict(t) for t in kit.as_list(row.get("base"))]
            n = max(len(tuned), len(base))
            return pd.DataFrame([{"rank": i + 1,
                                  "tuned's unembedding": repr(tuned[i].get("token")) if i < len(tuned) else "",
                                  "base's unembedding": repr(base[i].get("token")) if i < len(base) else ""}
                                 for i in range(n)], columns=["rank", "tuned's unembedding", "base's unembedding"])
    return pd.DataFrame(columns=["rank", "tuned's unembedding", "base's unembedding"])


# -- emotions -------------------------------------------------------------------------------------
def _band(fig: go.Figure, xs: list[Any], ci: list[Any], color: str, name: str) -> None:
    pairs = [kit.as_list(c) for c in ci]
    if len(pairs) != len(xs) or not pairs or any(len(c) != 2 for c in pairs):
        return
    lo = [kit.num(c[0]) for c in pairs]
    hi = [kit.num(c[1]) for c in pairs]
    rgb = tuple(int(color.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    fig.add_trace(go.Scatter(x=xs + xs[::-1], y=hi + lo[::-1], fill="toself", fillcolor=f"rgba{(*rgb, 0.15)}",
                             line={"width": 0}, hoverinfo="skip", name=name, showlegend=False))


def probe_figure(res: Any) -> go.Figure:
    """Cross-validated emotion-probe accuracy by layer for both models (95% bands), the shuffled-label control,
    chance, and the base probes on held-out texts of the base (dotted) and of the tuned model (dashed: transfer)."""
    p = kit.as_dict(kit.as_dict(res).get("probes"))
    fig = go.Figure()
    layers: list[int] = []
    for name in A.MODEL_NAMES:
        m = kit.as_dict(p.get(name))
        xs = kit.as_list(m.get("layers"))
        layers += [x for x in xs if isinstance(x, int)]
        _band(fig, xs, kit.as_list(m.get("accuracy_ci95")), MODEL_COLORS[name], f"{name} 95%")
        fig.add_trace(go.Scatter(x=xs, y=[kit.num(v) for v in kit.as_list(m.get("accuracy"))], mode="lines+markers",
                                 name=f"{name} probe (CV)", line={"color": MODEL_COLORS[name]}))
    shuffled = kit.as_list(kit.as_dict(p.get("base")).get("shuffled_accuracy"))
    if shuffled:
        fig.add_trace(go.Scatter(x=kit.as_list(kit.as_dict(p.get("base")).get("layers")), y=[kit.num(v) for v in shuffled],
                                 mode="lines", name="shuffled labels (base)", line={"color": kit.CONTROL, "dash": "dot"}))
    tr = [kit.as_dict(r) for r in kit.as_list(p.get("transfer"))]
    if tr:
        xs = [r.get("layer") for r in tr]
        fig.add_trace(go.Scatter(x=xs, y=[kit.num(r.get("base_on_base")) for r in tr], mode="lines",
                                 name="base probe, held-out base texts", line={"color": MODEL_COLORS["base"], "dash": "dot"}))
        fig.add_trace(go.Scatter(x=xs, y=[kit.num(r.get("base_on_tuned")) for r in tr], mode="lines+markers",
                                 name="base probe on tuned (transfer)", line={"color": MODEL_COLORS["tuned"], "dash": "dash"}))
    chance = kit.num(kit.as_dict(p.get("base")).get("chance"))
    if not math.isnan(chance):
        fig.add_hline(y=chance, line_dash="dot", line_color=kit.CONTROL, annotation_text="chance")
    kit.style(fig, "Emotion probes by layer: base, tuned, and the base probes on the tuned model", "layer", "accuracy",
              height=420, legend_below=True)
    return kit.layer_ticks(fig, layers)


def direction_figure(res: Any) -> go.Figure:
    """Cosine of the base and tuned emotion directions by layer, one line an emotion, with the random band
    (0 ± 2/√d)."""
    d = kit.as_dict(kit.as_dict(res).get("directions"))
    layers = kit.as_list(d.get("layers"))
    fig = go.Figure()
    sd = kit.num(d.get("random_direction_sd"))
    if not math.isnan(sd) and layers:
        fig.add_hrect(y0=-2 * sd, y1=2 * sd, fillcolor="rgba(154,154,154,0.2)", line_width=0,
                      annotation_text="random directions (±2 sd)", annotation_position="bottom left")
    for e, row in zip(kit.as_list(d.get("emotions")), kit.as_list(d.get("cosine"))):
        fig.add_trace(go.Scatter(x=layers, y=[kit.num(v) for v in kit.as_list(row)], mode="lines", name=str(e),
                                 line={"color": kit.emotion_color(str(e))}))
    kit.style(fig, "Do the emotion directions move? cos(base, tuned) by layer", "layer", "cosine", height=340)
    fig.update_yaxes(range=[min(-0.1, -3 * sd if not math.isnan(sd) else -0.1), 1.05])
    return kit.layer_ticks(fig, [x for x in layers if isinstance(x, int)])


def concept_table(res: Any) -> pd.DataFrame:
    """The 24 concepts at the assistant turn, largest rise first: change (tuned − base) with its 95% interval,
    change in base SDs, base and tuned mean projection, whether it beats random directions, and the verdict
    (``rise`` / ``fall``: interval excludes 0 and beyond random; ``—`` otherwise)."""
    c = kit.as_dict(kit.as_dict(res).get("concepts"))
    rises, falls = set(map(str, kit.as_list(c.get("rises")))), set(map(str, kit.as_list(c.get("falls"))))
    rows = []
    for r in kit.as_list(c.get("concepts")):
        r = kit.as_dict(r)
        name = str(r.get("concept"))
        ci = kit.as_list(r.get("change_ci95"))
        rows.append({"concept": name, "verdict": "rise" if name in rises else "fall" if name in falls else "—",
                     "change": kit.num(r.get("change")),
                     "ci low": kit.num(ci[0]) if len(ci) == 2 else math.nan,
                     "ci high": kit.num(ci[1]) if len(ci) == 2 else math.nan,
                     "in base SDs": kit.num(r.get("change_in_base_sd")),
                     "base": kit.num(r.get("base_mean")), "tuned": kit.num(r.get("tuned_mean")),
                     "beyond random": r.get("beyond_random") if isinstance(r.get("beyond_random"), bool) else None})
    cols = ["concept", "verdict", "change", "ci low", "ci high", "in base SDs", "base", "tuned", "beyond random"]
    frame = pd.DataFrame(rows, columns=cols)
    return frame.sort_values("change", ascending=False, na_position="last").reset_index(drop=True)


def concept_figure(table: pd.DataFrame, q95: float | None = None) -> go.Figure:
    """Horizontal bars of each concept's change with its 95% interval, coloured by verdict; the random
    directions' 95th percentile of |change| as a band (``q95``)."""
    t = table.sort_values("change", na_position="first")
    color = {"rise": kit.EVAL, "fall": kit.REAL}
    fig = go.Figure(go.Bar(
        x=list(t["change"]), y=list(t["concept"]), orientation="h",
        marker_color=[color.get(v, kit.CONTROL) for v in t["verdict"]],
        error_x={"type": "data", "symmetric": False, "array": list(t["ci high"] - t["change"]),
                 "arrayminus": list(t["change"] - t["ci low"])},
        hovertemplate="%{y}<br>change %{x:+.4g}<extra></extra>"))
    if q95 is not None and math.isfinite(q95):
        fig.add_vrect(x0=-q95, x1=q95, fillcolor="rgba(154,154,154,0.2)", line_width=0,
                      annotation_text="random directions (95%)", annotation_position="top left")
    kit.style(fig, "Concepts at the assistant turn: tuned − base (95% interval)", "change in projection", None,
              height=max(360, 60 + 18 * len(t)))
    return fig


# -- steering transfer ----------------------------------------------------------------------------
STEERING_COLUMNS = ["model", "gap (nats)", "95% interval", "random control", "passed", "rows won", "columns won",
                    "residual norm", "read-back win rate", "read-back 95% interval", "read-back vs random text",
                    "read-back random control", "read-back passed"]


def steering_table(res: Any) -> pd.DataFrame:
    """One row a model: the feels-matrix gap with its interval, the random-direction control, passed, rows and
    columns won, the residual norm at the steering layer; and the read-back gate's win rate with its interval,
    against the random-vector text, its random control and passed (NaN / None when the read-back did not run)."""
    rows = []
    r = kit.as_dict(res)
    rb = kit.as_dict(r.get("read_back"))
    for name in A.MODEL_NAMES:
        g = kit.as_dict(r.get(name))
        b = kit.as_dict(rb.get(name))
        rows.append({"model": name, "gap (nats)": kit.num(g.get("value")),
                     "95% interval": _ci_text(g.get("value"), g.get("gap_ci95")),
                     "random control": kit.num(g.get("control")),
                     "passed": g.get("passed") if isinstance(g.get("passed"), bool) else None,
                     "rows won": kit.num(g.get("rows_won")), "columns won": kit.num(g.get("cols_won")),
                     "residual norm": kit.num(g.get("residual_norm")),
                     "read-back win rate": kit.num(b.get("value")),
                     "read-back 95% interval": _ci_text(b.get("value"), b.get("ci95")) if b else "—",
                     "read-back vs random text": kit.num(b.get("win_rate_vs_random")),
                     "read-back random control": kit.num(b.get("control")),
                     "read-back passed": b.get("passed") if isinstance(b.get("passed"), bool) else None})
    return pd.DataFrame(rows, columns=STEERING_COLUMNS)


def steering_source(res: Any) -> str:
    """What steered, in words: the base's sweep vectors (each emotion's layer and alpha) or its story directions
    at one layer with the base's alpha."""
    r = kit.as_dict(res)
    used = kit.as_dict(r.get("steering"))
    if used.get("from") == "sweep":
        vecs = kit.as_dict(used.get("vectors"))
        each = ", ".join(f"{e} L{kit.as_dict(v).get('layer', '?')} α {_fmt(kit.as_dict(v).get('alpha'))}" for e, v in vecs.items())
        return f"the base's steering-sweep vectors ({each})"
    return f"the base's story directions at layer {r.get('layer', '?')} with the base's alpha {_fmt(r.get('alpha'))}"


def steering_figure(res: Any) -> go.Figure:
    """Each emotion's own shift (its words under its own vector, nats) on both models: grouped bars."""
    r = kit.as_dict(res)
    emos = [str(e) for e in kit.as_list(r.get("emotions"))]
    fig = go.Figure()
    for name in A.MODEL_NAMES:
        own = kit.as_dict(kit.as_dict(r.get(name)).get("own_shift"))
        fig.add_trace(go.Bar(x=emos, y=[kit.num(own.get(e)) for e in emos], name=name, marker_color=MODEL_COLORS[name],
                             hovertemplate="%{x}<br>own shift %{y:+.3g} nats<extra>" + name + "</extra>"))
    where = ("each at its own layer and alpha" if kit.as_dict(r.get("steering")).get("from") == "sweep"
             else f"at layer {r.get('layer', '?')}, alpha {_fmt(r.get('alpha'))}")
    kit.style(fig, f"The base's vectors on both models: own shift, {where}",
              "emotion", "own shift (nats)", height=340)
    fig.update_layout(barmode="group")
    return fig


# -- generations ----------------------------------------------------------------------------------
def generation_rows(gen: Any) -> list[dict[str, str]]:
    """The prompts both models answered: ``{"label", "prompt", "base", "tuned", "same"}`` (``same``: "yes"/"no")."""
    out = []
    for i, r in enumerate(kit.as_list(kit.as_dict(gen).get("prompts"))):
        r = kit.as_dict(r)
        if not all(isinstance(r.get(k), str) for k in ("prompt", "base", "tuned")):
            continue
        kind = r.get("kind") if isinstance(r.get("kind"), str) else None
        first = r["prompt"].strip().splitlines()[0] if r["prompt"].strip() else ""
        label = f"{i + 1}. {kind + ': ' if kind else ''}{first[:70]}{'…' if len(first) > 70 else ''}"
        out.append({"label": label, "prompt": r["prompt"], "base": r["base"], "tuned": r["tuned"],
                    "same": "yes" if r["base"] == r["tuned"] else "no"})
    return out


# -- features -------------------------------------------------------------------------------------
def label_table(features: Any) -> pd.DataFrame:
    """Behaviour labels: steps carrying the label per trace, base and tuned with intervals, the paired difference
    and whether its interval excludes 0; largest |difference| first."""
    rows = []
    for label, v in kit.as_dict(kit.as_dict(features).get("labels")).items():
        v = kit.as_dict(v)
        rows.append({"label": str(label), "base": kit.num(v.get("base")), "tuned": kit.num(v.get("tuned")),
                     "difference": kit.num(v.get("difference")),
                     "base 95%": _ci_text(v.get("base"), v.get("base_ci95")),
                     "tuned 95%": _ci_text(v.get("tuned"), v.get("tuned_ci95")),
                     "difference 95%": _ci_text(v.get("difference"), v.get("difference_ci95")),
                     "excludes 0": v.get("excludes_zero") if isinstance(v.get("excludes_zero"), bool) else None,
                     "share base": kit.num(v.get("share_base")), "share tuned": kit.num(v.get("share_tuned"))})
    cols = ["label", "base", "tuned", "difference", "base 95%", "tuned 95%", "difference 95%", "excludes 0",
            "share base", "share tuned"]
    frame = pd.DataFrame(rows, columns=cols)
    return frame.loc[frame["difference"].abs().sort_values(ascending=False, na_position="last").index].reset_index(drop=True)


def changed_features(table: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The ``n`` features with the largest |difference| among the changed ones (all when there is no ``changed``)."""
    if not {"feature", "difference"} <= set(table.columns):
        raise ValueError(f"the feature frequency table needs columns ['difference', 'feature']; it has {sorted(table.columns)}")
    t = table.assign(difference=pd.to_numeric(table["difference"], errors="coerce"))
    if "changed" in t.columns:
        t = t[t["changed"].map(lambda v: v is True or v == 1)]
    return t.loc[t["difference"].abs().sort_values(ascending=False).index].head(n).reset_index(drop=True)


def label_figure(features: Any) -> go.Figure:
    """Behaviour-label frequency per trace, base vs tuned, with each model's 95% interval."""
    labels = kit.as_dict(kit.as_dict(features).get("labels"))
    names = [str(k) for k in labels]
    fig = go.Figure()
    for m in A.MODEL_NAMES:
        vals = [kit.num(kit.as_dict(labels[k]).get(m)) for k in labels]
        cis = [kit.as_list(kit.as_dict(labels[k]).get(f"{m}_ci95")) for k in labels]
        err = None
        if cis and all(len(c) == 2 for c in cis):
            err = {"type": "data", "symmetric": False, "array": [kit.num(c[1]) - v for c, v in zip(cis, vals)],
                   "arrayminus": [v - kit.num(c[0]) for c, v in zip(cis, vals)]}
        fig.add_trace(go.Bar(x=names, y=vals, name=m, marker_color=MODEL_COLORS[m], error_y=err))
    kit.style(fig, "Behaviour labels: steps carrying the label per trace", "label", "steps per trace", height=340)
    fig.update_layout(barmode="group")
    return fig


def frequency_figure(table: pd.DataFrame) -> go.Figure:
    """Each step-SAE feature's firing frequency on the base (x) and the tuned model (y); features whose paired
    interval excludes 0 in colour, the rest grey; the diagonal is "no change"."""
    need = {"feature", "base", "tuned"}
    if not need <= set(table.columns):
        raise ValueError(f"the feature frequency table needs columns {sorted(need)}; it has {sorted(table.columns)}")
    t = table.assign(base=pd.to_numeric(table["base"], errors="coerce"), tuned=pd.to_numeric(table["tuned"], errors="coerce"))
    changed = t["changed"].map(lambda v: v is True or v == 1) if "changed" in t.columns else pd.Series(False, index=t.index)
    fig = go.Figure()
    for flag, name, color in ((False, "unchanged (interval includes 0)", kit.CONTROL), (True, "changed", kit.EVAL)):
        s = t[changed == flag]
        text = [f"feature {int(f)}" + (f" ({lab})" if isinstance(lab, str) and lab else "")
                for f, lab in zip(s["feature"], s["label"] if "label" in s.columns else [""] * len(s))]
        fig.add_trace(go.Scatter(x=list(s["base"]), y=list(s["tuned"]), mode="markers", name=f"{name}: {len(s)}",
                                 marker={"color": color, "size": 6 if flag else 4}, text=text,
                                 hovertemplate="%{text}<br>base %{x:.3g}<br>tuned %{y:.3g}<extra></extra>"))
    hi = float(np.nanmax(t[["base", "tuned"]].to_numpy())) if len(t) else 1.0
    hi = hi if math.isfinite(hi) and hi > 0 else 1.0
    fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", name="no change", line={"color": kit.CONTROL, "dash": "dot"}))
    kit.style(fig, "Step-SAE feature frequency: base vs tuned", "fraction of base steps", "fraction of tuned steps", height=420)
    return fig


def crosscoder_counts(cc: Any) -> pd.DataFrame:
    """Latents per class (:data:`CROSSCODER_CLASSES` order, then any other) in the crosscoder and in its noise control."""
    d = kit.as_dict(cc)
    counts, noise = kit.as_dict(d.get("counts")), kit.as_dict(kit.as_dict(d.get("noise")).get("counts"))
    names = [c for c in A.CROSSCODER_CLASSES if c in counts or c in noise] + \
        [str(c) for c in counts if c not in A.CROSSCODER_CLASSES]
    return pd.DataFrame([{"class": c, "crosscoder": kit.num(counts.get(c)), "noise control": kit.num(noise.get(c))}
                         for c in names], columns=["class", "crosscoder", "noise control"])


def crosscoder_figure(cc: Any) -> go.Figure:
    """Latent counts per class: the crosscoder beside its noise-control crosscoder."""
    t = crosscoder_counts(cc)
    fig = go.Figure()
    fig.add_trace(go.Bar(x=list(t["class"]), y=list(t["crosscoder"]), name="crosscoder",
                         marker_color=[CLASS_COLORS.get(c, kit.REAL) for c in t["class"]]))
    fig.add_trace(go.Bar(x=list(t["class"]), y=list(t["noise control"]), name="noise control", marker_color=kit.CONTROL))
    kind = kit.as_dict(kit.as_dict(cc).get("noise")).get("kind")
    kit.style(fig, f"Crosscoder latent classes (control: {kind or 'noise'} crosscoder)", "class", "latents", height=340)
    fig.update_layout(barmode="group")
    return fig


def latent_ratio_figure(latents: pd.DataFrame) -> go.Figure:
    """Histogram of the decoder-norm ratio (0: base-only, 0.5: shared, 1: tuned-only), stacked by class."""
    if "ratio" not in latents.columns:
        raise ValueError(f"the crosscoder latent table needs a 'ratio' column; it has {sorted(latents.columns)}")
    t = latents.assign(ratio=pd.to_numeric(latents["ratio"], errors="coerce"))
    cls = t["cls"].astype(str) if "cls" in t.columns else pd.Series("all", index=t.index)
    fig = go.Figure()
    for c in [c for c in A.CROSSCODER_CLASSES if c in set(cls)] + [c for c in dict.fromkeys(cls) if c not in A.CROSSCODER_CLASSES]:
        fig.add_trace(go.Histogram(x=list(t["ratio"][cls == c]), name=c, xbins={"start": 0, "end": 1.0001, "size": 0.05},
                                   marker_color=CLASS_COLORS.get(c, kit.REAL)))
    kit.style(fig, "Crosscoder latents: decoder-norm ratio (0 base-only · 0.5 shared · 1 tuned-only)", "ratio", "latents",
              height=320)
    fig.update_layout(barmode="stack")
    return fig


# -- rendering ------------------------------------------------------------------------------------
def render(run: Run) -> None:
    st.title(TITLE)
    summary = checked(run, SUMMARY_ART)
    if summary is None:
        return
    with kit.guard(SUMMARY_ART):
        render_header(summary)
    sections = kit.as_dict(summary.get("sections"))
    for title, name, fn, art in (
        ("Weights: where the change is", "weights", render_weights, WEIGHTS_ART),
        ("Activations: where the models part", "activations", render_activations, ACTIVATIONS_ART),
        ("Emotion representations", "emotions", render_emotions, EMOTIONS_ART),
        ("Steering transfer", "steering", render_steering, STEERING_ART),
    ):
        st.divider()
        st.subheader(title)
        if _explain_section(sections, name):
            with kit.guard(art):
                fn(run, kit.as_dict(sections[name].get("headline")))
    st.divider()
    st.subheader("Side by side: the same prompt, both models")
    with kit.guard(GENERATIONS_ART):
        render_generations(run)
    st.divider()
    st.subheader("Features: behaviours, SAE features, crosscoder latents")
    if _explain_section(sections, "features"):
        render_features(run)


def _explain_section(sections: dict[str, Any], name: str) -> bool:
    """Whether the section ran; else draw one line with the reason ``summary.json`` gives."""
    sec = sections.get(name)
    if not isinstance(sec, dict):
        st.info(f"The `{name}` section was not run in this comparison; add it to `--sections` "
                f"({','.join(A.SECTIONS)}).")
        return False
    if sec.get("status") != "done":
        reason = " ".join(str(sec.get("reason") or "no reason recorded").split())
        st.info(f"The `{name}` section was {sec.get('status', 'not done')}: {reason}")
        return False
    return True


def render_header(summary: dict[str, Any]) -> None:
    models = kit.as_dict(summary.get("models"))
    cols = st.columns(2)
    for col, name in zip(cols, A.MODEL_NAMES):
        rec = kit.as_dict(models.get(name))
        adapter = f" + adapter `{rec['adapter']}`" if isinstance(rec.get("adapter"), str) and rec.get("adapter") else ""
        col.markdown(f"**{name}**: `{rec.get('spec', '?')}`{adapter}")
        if rec.get("fingerprint"):
            col.caption(f"fingerprint `{rec.get('fingerprint')}`")
    status = section_status(summary)
    done = int((status["status"] == "done").sum())
    st.caption(f"{done} of {len(status)} sections done; the others say why below.")
    st.dataframe(status, hide_index=True, width="stretch")


def render_weights(run: Run, h: dict[str, Any]) -> None:
    rows = checked(run, WEIGHTS_ART)
    if rows is None:
        return
    if not rows:
        st.info(f"`{A.WEIGHTS}` is empty (no linear module was compared).")
        return
    metric = st.radio("Colour by", list(WEIGHT_METRICS), horizontal=True, key="compare_weight_metric",
                      format_func=lambda k: WEIGHT_METRICS[k][0], help="; ".join(f"{v[0]}: {v[1]}" for v in WEIGHT_METRICS.values()))
    st.plotly_chart(weight_heatmap(rows, metric), width="stretch")
    exact = "read exactly from the LoRA adapter (B·A·scale)" if h.get("exact_lora") else "tuned − base weights"
    st.caption(f"{h.get('modules_changed', '?')} of {h.get('modules', '?')} linear modules changed "
               f"({_fmt(h.get('changed_parameter_fraction'))} of their parameters); median effective rank of ΔW "
               f"{_fmt(h.get('median_effective_rank'))}; mean principal overlap {_fmt(h.get('mean_principal_overlap'))} "
               f"(random directions ≈ {_fmt(h.get('principal_overlap_chance'))}, the control). ΔW: {exact}. "
               f"{WEIGHT_METRICS[metric][0]}: {WEIGHT_METRICS[metric][1]}.")
    top = top_modules(rows)
    if len(top):
        st.dataframe(top, hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(c, format="%.4g") for c in A.WEIGHT_KEYS[2:]})


def render_activations(run: Run, h: dict[str, Any]) -> None:
    res = checked(run, ACTIVATIONS_ART)
    if res is None:
        return
    measure = st.radio("Measure", list(ACTIVATION_MEASURES), horizontal=True, key="compare_act_measure",
                       format_func=lambda k: ACTIVATION_MEASURES[k])
    st.plotly_chart(activation_figure(res, measure), width="stretch")
    facts = []
    for name, s in kit.as_dict(res.get("sets")).items():
        s = kit.as_dict(s)
        ranked = kit.as_list(s.get("layers_ranked"))
        facts.append(f"{name}: first changed layer {s.get('first_changed_layer')}, top layer by relative contribution "
                     f"{ranked[0] if ranked else '—'}")
    cos = [kit.num(v) for v in kit.as_list(res.get("cosine_between_sets"))]
    if cos:
        facts.append(f"cosine of the two sets' mean differences {min(cos):.2f}–{max(cos):.2f} across layers")
    st.caption("; ".join(facts) + ". A change planted in one layer propagates to the ones after it: the layer's own "
               "contribution ranks where it enters. Both models read the same tokens (the tuned model's greedy traces).")
    if "kl" in res:
        st.plotly_chart(kl_figure(res), width="stretch")
        kl = kit.as_dict(res.get("kl"))
        trace = (f"; over the generated tokens only {_ci_text(kl.get('mean_kl_trace'), kl.get('mean_kl_trace_ci95'))}"
                 if "mean_kl_trace" in kl else "")
        st.caption(f"Mean KL(tuned ‖ base) {_ci_text(kl.get('mean_kl'), kl.get('mean_kl_ci95'))} nats{trace}. KL is of the "
                   "two models' final next-token distributions at each position (not per layer); a model against "
                   "itself gives 0.")
        if "layer_kl" in res:
            table = kit.load(run, LAYER_KL_ART)
            if table is not None:
                with kit.guard(LAYER_KL_ART):
                    st.plotly_chart(layer_kl_figure(table), width="stretch")
                    lk = kit.as_dict(res.get("layer_kl"))
                    first = lk.get("first_nonzero_layer")
                    st.caption(f"KL(base ‖ tuned) of the two models' next-token distributions read off each layer's "
                               f"resid_post through each model's own final norm and unembedding (logit lens), over "
                               f"{lk.get('positions', '?')}, mean over task texts with a 95% bootstrap band. First layer "
                               f"above float noise: {first if first is not None else 'none'} (a model against itself: 0 "
                               "at every layer; a change entering at layer l: 0 before l). The last layer is the output KL.")
        top = kl_top_frame(res)
        if len(top):
            with st.expander(f"The {len(top)} positions where the models disagree most"):
                st.dataframe(top, hide_index=True, width="stretch",
                             column_config={"kl": st.column_config.NumberColumn("KL", format="%.4g")})
    lens_layers = [kit.as_dict(r).get("layer") for r in kit.as_list(kit.as_dict(res.get("lens")).get("layers"))]
    lens_layers = [x for x in lens_layers if isinstance(x, int)]
    if lens_layers:
        default = h.get("lens_top_layer") if h.get("lens_top_layer") in lens_layers else lens_layers[-1]
        layer = st.selectbox("Difference lens at layer", lens_layers, index=lens_layers.index(default), key="compare_lens_layer")
        frame = lens_frame(res, layer)
        if frame.empty:
            st.caption(f"Layer {layer}: the mean difference is zero here (the change enters later).")
        else:
            st.dataframe(frame, hide_index=True, width="stretch")
            st.caption(f"The tokens the mean activation difference ({kit.as_dict(res.get('lens')).get('positions', '?')}) "
                       "promotes through each model's final norm and unembedding: what the tuning pushes the model to say.")


def render_emotions(run: Run, h: dict[str, Any]) -> None:
    res = checked(run, EMOTIONS_ART)
    if res is None:
        return
    st.plotly_chart(probe_figure(res), width="stretch")
    tr = kit.as_dict(h.get("transfer_at_base_best_layer"))
    if tr:
        st.caption(f"Base best {_fmt(h.get('base_best_accuracy'))}, tuned best {_fmt(h.get('tuned_best_accuracy'))} "
                   f"(chance {_fmt(h.get('chance'))}). At layer {tr.get('layer')} the base probes read held-out texts "
                   f"{_fmt(tr.get('base_on_base'))} on the base and {_fmt(tr.get('base_on_tuned'))} on the tuned model: "
                   f"difference {_ci_text(tr.get('difference'), tr.get('difference_ci95'))} (paired over texts).")
    st.plotly_chart(direction_figure(res), width="stretch")
    c = kit.as_dict(res.get("concepts"))
    table = concept_table(res)
    if table.empty:
        st.info(f"`{A.EMOTIONS}` has no concept table.")
        return
    band = kit.as_list(c.get("band"))
    st.markdown(f"**Concepts at the assistant turn** — rise: {', '.join(map(str, kit.as_list(c.get('rises')))) or 'none'}; "
                f"fall: {', '.join(map(str, kit.as_list(c.get('falls')))) or 'none'}")
    q95 = kit.num(c.get("random_direction_abs_change_q95"))
    st.plotly_chart(concept_figure(table, None if math.isnan(q95) else q95), width="stretch")
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(k, format="%.3g")
                                for k in ("change", "ci low", "ci high", "in base SDs", "base", "tuned")})
    st.caption(f"The base model's story directions read on both models at the last prompt token of {c.get('n_tasks', '?')} "
               f"task prompts, averaged over layers {band[0] if band else '?'}–{band[-1] if band else '?'}. A rise or fall "
               f"needs an interval excluding 0 *and* |change| beyond {_fmt(q95)} (the 95th percentile of "
               f"{c.get('n_random_directions', '?')} random directions: the control). Task kinds agree with r = "
               f"{_fmt(c.get('mean_kind_correlation'))} (concepts permuted: {_fmt(c.get('permuted_control_mean_r'))}).")


def render_steering(run: Run, h: dict[str, Any]) -> None:
    res = checked(run, STEERING_ART)
    if res is None:
        return
    st.dataframe(steering_table(res), hide_index=True, width="stretch",
                 column_config={k: st.column_config.NumberColumn(k, format="%.3g")
                                for k in ("gap (nats)", "random control", "residual norm", "read-back win rate",
                                          "read-back vs random text", "read-back random control")})
    st.plotly_chart(steering_figure(res), width="stretch")
    note = kit.as_dict(res.get("steering")).get("note")
    st.caption(f"Steered with {steering_source(res)}, the same on both models"
               + (f" ({note})" if isinstance(note, str) and note else "") + ". "
               f"feels_matrix gate on {res.get('n_contexts', '?')} “… I feel” contexts; own shift, tuned − base: "
               f"{_ci_text(res.get('own_shift_difference'), res.get('own_shift_difference_ci95'))} nats (0 for a model "
               "against itself). A tuned model with a larger residual norm receives a relatively weaker push.")
    rb = kit.as_dict(res.get("read_back"))
    if rb:
        st.caption(f"read_back gate ({rb.get('n_prompts', '?')} prompts, {rb.get('max_new_tokens', '?')} tokens): the "
                   "steered text, re-read by the same model unsteered, projects higher on the target direction than "
                   "its unsteered text (win rate; control: a random vector's text). Win rate, tuned − base: "
                   f"{_ci_text(rb.get('difference'), rb.get('difference_ci95'))} (paired over emotion × prompt; 0 for a "
                   "model against itself).")


def render_generations(run: Run) -> None:
    gen = checked(run, GENERATIONS_ART)
    if gen is None:
        return
    rows = generation_rows(gen)
    cfg = kit.as_dict(gen.get("config"))
    if rows:
        pick = st.selectbox("Prompt", list(range(len(rows))), format_func=lambda i: rows[i]["label"], key="compare_gen_prompt")
        row = rows[pick]
        with st.expander("Prompt", expanded=False):
            st.text(row["prompt"])
        left, right = st.columns(2)
        for col, name in ((left, "base"), (right, "tuned")):
            col.markdown(f"**{name}**")
            col.text(row[name] or "(empty)")
        n_same = sum(r["same"] == "yes" for r in rows)
        st.caption(f"Greedy decoding, {cfg.get('max_new_tokens', '?')} new tokens; {len(rows) - n_same} of {len(rows)} "
                   "answers differ between the models (a model against itself: none).")
    else:
        st.info(f"`{A.GENERATIONS}` holds no prompts.")
    steered = kit.as_dict(gen.get("steered"))
    if steered and all(isinstance(steered.get(k), str) for k in ("base", "tuned", "base_steered", "tuned_steered")):
        what = "steering-sweep vector" if isinstance(steered.get("vector"), str) else "direction"
        st.markdown(f"**Steered** by the base's `{steered.get('emotion')}` {what} (layer {steered.get('layer')}, "
                    f"alpha {_fmt(steered.get('alpha'))}) — *{steered.get('prompt', '')}*")
        left, right = st.columns(2)
        for col, name in ((left, "base"), (right, "tuned")):
            col.markdown(f"**{name}**, unsteered")
            col.text(steered[name] or "(empty)")
            col.markdown(f"**{name}**, steered")
            col.text(steered[f"{name}_steered"] or "(empty)")
        st.caption("The same vector and alpha on both models: does the tuned model still follow the base's steering?")
    else:
        reason = gen.get("steered_reason") if isinstance(gen.get("steered_reason"), str) else "no steered text in this run"
        st.caption(f"No steered text: {reason}.")


def render_features(run: Run) -> None:
    feats = checked(run, FEATURES_ART)
    if feats is not None:
        with kit.guard(FEATURES_ART):
            sae = kit.as_dict(feats.get("sae"))
            traces = kit.as_dict(feats.get("traces"))
            n = kit.as_dict(traces.get("n_traces"))
            st.caption(f"Step SAE `{sae.get('name', '—')}` ({sae.get('site', '?')}, layer {sae.get('layer', '?')}, "
                       f"{sae.get('d_sae', '?')} features) · traces: base {n.get('base', '?')}, tuned {n.get('tuned', '?')}"
                       if sae else f"No step SAE: behaviour labels only · traces: base {n.get('base', '?')}, "
                       f"tuned {n.get('tuned', '?')}")
            labels = label_table(feats)
            if len(labels):
                st.markdown("**Behaviour-label frequency**")
                st.plotly_chart(label_figure(feats), width="stretch")
                st.dataframe(labels, hide_index=True, width="stretch",
                             column_config={k: st.column_config.NumberColumn(k, format="%.3g")
                                            for k in ("base", "tuned", "difference", "share base", "share tuned")})
                st.caption("Steps carrying each label per trace; intervals paired over traces of the same task and "
                           "sample. A shift counts only when the difference's interval excludes 0.")
            div = kit.as_dict(feats.get("diversity"))
            if div:
                st.caption(f"Distinct active SAE features per trace: base {_ci_text(div.get('base'), div.get('base_ci95'))}, "
                           f"tuned {_ci_text(div.get('tuned'), div.get('tuned_ci95'))}, difference "
                           f"{_ci_text(div.get('difference'), div.get('difference_ci95'))}.")
    freq = kit.load(run, FREQUENCIES_ART)
    if freq is not None:
        with kit.guard(FREQUENCIES_ART):
            st.markdown("**SAE feature frequency shifts**")
            st.plotly_chart(frequency_figure(freq), width="stretch")
            top = changed_features(freq)
            if len(top):
                st.dataframe(top, hide_index=True, width="stretch")
                st.caption(f"The {len(top)} changed features with the largest shift (paired 95% interval over traces "
                           "excludes 0); `label`: the behaviour label the feature is the SAE's best latent for.")
    cc = checked(run, CROSSCODER_ART)
    if cc is not None:
        with kit.guard(CROSSCODER_ART):
            st.markdown("**Crosscoder latent classes**")
            st.plotly_chart(crosscoder_figure(cc), width="stretch")
            fit = kit.as_dict(cc.get("fit"))
            ev = kit.as_dict(fit.get("explained_variance"))
            st.caption(f"Tuned-only latents {cc.get('tuned_only', '?')} (noise control {cc.get('tuned_only_noise', '?')}; "
                       f"beyond noise: {cc.get('tuned_only_beyond_noise', '?')}); base-only {cc.get('base_only', '?')} "
                       f"(noise {cc.get('base_only_noise', '?')}). Explained variance base {_fmt(ev.get('base'))}, tuned "
                       f"{_fmt(ev.get('tuned'))}; L0 {_fmt(fit.get('l0'))}; dead {_fmt(fit.get('dead_fraction'))}. "
                       "*_norm_only latents pass the decoder-norm ratio but fail latent scaling (shrinkage, not "
                       "model-specific).")
    try:
        latents = kit.read(run, LATENTS_ART)
    except kit.ArtifactProblem as p:
        latents = None
        if not (p.level == "info" and cc is None):  # no crosscoder at all: said once above
            kit.explain(p)
    if latents is not None:
        with kit.guard(LATENTS_ART):
            st.plotly_chart(latent_ratio_figure(latents), width="stretch")
