"""Validation: the gates of ``psylens validate`` — emotion directions checked inside the model, each beside a control.

Reads ``validation/summary.json`` and the tables behind the gates (names from
``psylens.validation.artifacts``): the feels matrix (vector × emotion's words, shift in nats), the
dose-response levels and templates, the concepts' PCA with valence and arousal, the logit-lens token
lists, and the preferences (reported, not gated: a check for larger models). Every file is read
through :func:`kit.load`; a missing or corrupt table is one line and the rest of the page goes on.
Figure and table builders are plain functions (no streamlit), tested without a browser.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from psylens.apps.views import kit
from psylens.runs import Run
from psylens.validation import artifacts as VA

__all__ = [
    "TITLE",
    "available",
    "render",
    "gates_table",
    "verdict",
    "feels_figure",
    "dose_figure",
    "pca_figure",
    "logit_lens_frame",
    "GATE_ORDER",
]

TITLE = "Validation"

SUMMARY = VA.SUMMARY
MAKE = "`psylens validate --model M --run RUN` (add `--quick` for a small run) writes it"

SUMMARY_ART = kit.Artifact(SUMMARY, "json", "validation summary", MAKE, schema=VA.SCHEMA_VERSION)
FEELS_ART = kit.Artifact(VA.FEELS_MATRIX, "table", "feels matrix", MAKE)
FEELS_RANDOM_ART = kit.Artifact(VA.FEELS_RANDOM, "table", "feels matrix's random draws", MAKE)
DOSE_ART = kit.Artifact(VA.DOSE_RESPONSE, "table", "dose-response levels", MAKE)
DOSE_TEMPLATES_ART = kit.Artifact(VA.DOSE_TEMPLATES, "table", "dose-response templates", MAKE)
PCA_ART = kit.Artifact(VA.GEOMETRY_PCA, "table", "concept PCA", MAKE)
LOGIT_ART = kit.Artifact(VA.LOGIT_LENS, "table", "logit-lens tokens", MAKE)
PREFERENCES_ART = kit.Artifact(VA.PREFERENCES, "table", "preferences table", MAKE)
PREFERENCES_SHIFT_ART = kit.Artifact(VA.PREFERENCES_SHIFT, "table", "preferences Elo shift under steering", MAKE)
ARTIFACTS = (SUMMARY_ART, FEELS_ART, FEELS_RANDOM_ART, DOSE_ART, DOSE_TEMPLATES_ART, PCA_ART, LOGIT_ART, PREFERENCES_ART)

GATE_ORDER = ("feels_matrix", "implicit_scenarios", "dose_response", "geometry", "logit_lens", "read_back", "preferences")
GATE_TEXT = {
    "feels_matrix": "steering each vector raises its own emotion's words after “…I feel” (gap, nats)",
    "implicit_scenarios": "held-out stories and scenarios: top-1 accuracy of the directions",
    "dose_response": "templates whose projection follows the numeric level (|ρ| ≥ threshold, right sign)",
    "geometry": "PC1 of the concepts separates positive from negative valence (AUROC)",
    "logit_lens": "emotions with ≥ 3 of their words among the direction's top unembedded tokens",
    "read_back": "steered text re-read by the plain model projects higher on the target (win rate)",
    "preferences": "activities' projection vs. the model's own preference Elo (Spearman)",
}
NOT_GATED = "reported, not gated — for larger models"
VALENCE_COLORS = {"positive": "#2ca02c", "negative": "#d62728"}
AROUSAL_COLORS = {"high": "#ff7f0e", "low": "#1f77b4"}

GATE_FIELDS: dict[str, Any] = {"value": (int, float), "threshold": (int, float), "control": (int, float),
                               "passed": bool, "gated": bool}


def available(run: Run) -> bool:
    return run.has(SUMMARY)


def _fmt(x: Any, digits: int = 3) -> str:
    v = kit.num(x)
    return "—" if math.isnan(v) else f"{v:.{digits}g}"


# -- pure helpers ----------------------------------------------------------------------------------
def verdict(gate: Any) -> str:
    """``✓ passed`` / ``✗ failed``; ``reported, not gated — for larger models`` for an ungated gate
    (``preferences``); ``skipped (why)`` when the suite skipped it; for ``read_back`` failed on fluency
    alone, how many emotions' texts were fluent."""
    g = kit.as_dict(gate)
    if "skipped" in g:
        why = g.get("skipped")
        return f"skipped ({why})" if isinstance(why, str) and why else "skipped"
    if g.get("gated") is False:
        return NOT_GATED
    passed = g.get("passed")
    if not isinstance(passed, bool):
        return "—"
    if not passed and g.get("passed_ignoring_fluency") is True:  # read_back: the win rates pass, the texts do not
        flu = kit.as_dict(g.get("fluency"))
        n, total = flu.get("n_fluent"), len(kit.as_dict(flu.get("per_emotion")))
        return (f"✗ failed — texts not fluent ({n} of {total} emotions pass {flu.get('criterion', 'the criterion')}); "
                "the win rates alone pass")
    return "✓ passed" if passed else "✗ failed"


_INTERVALS = (("value", ""), ("gap", "gap "), ("valence_auroc", "AUROC "), ("rate", "rate "))


def _interval_text(g: dict[str, Any]) -> str:
    for key, label in _INTERVALS:
        ci = kit.interval(g, key)
        if ci is not None:
            point = g.get("value") if key == "value" else g.get(key)
            if key in ("gap", "valence_auroc") and math.isnan(kit.num(point)):
                point = g.get("value")
            return label + kit.fmt_interval(point, ci)
    for set_name, block in kit.as_dict(g.get("sets")).items():  # implicit_scenarios: the value is the lowest set's
        ci = kit.interval(block, "accuracy")
        if ci is not None and kit.num(block.get("accuracy")) == kit.num(g.get("value")):
            return f"{set_name} " + kit.fmt_interval(block.get("accuracy"), ci)
    return ""


def gates_table(summary: Any) -> pd.DataFrame:
    """One row a gate, in the suite's order: what it checks, value, threshold, control, verdict and the
    95% interval where the summary records one (``value_ci95``/``ci95``, the feels gap's, the valence
    AUROC's, or the rate's for count gates). Gates that are not dicts are left out."""
    gates = kit.as_dict(kit.as_dict(summary).get("gates"))
    names = [n for n in GATE_ORDER if n in gates] + [n for n in gates if n not in GATE_ORDER]
    rows = []
    for name in names:
        g = gates[name]
        if not isinstance(g, dict):
            continue
        rows.append({
            "gate": name,
            "value": kit.num(g.get("value")),
            "threshold": kit.num(g.get("threshold")),
            "control": kit.num(g.get("control")),
            "passed": verdict(g),
            "95% interval": _interval_text(g),
            "checks": GATE_TEXT.get(name, ""),
        })
    return pd.DataFrame(rows, columns=["gate", "value", "threshold", "control", "passed", "95% interval", "checks"])


def _order(values: list[Any], preferred: list[str]) -> list[str]:
    seen = [str(v) for v in dict.fromkeys(values)]
    return [p for p in preferred if p in seen] + [v for v in seen if v not in preferred]


def feels_figure(matrix: pd.DataFrame) -> go.Figure:
    """Heatmap of the shift (nats) of each emotion's words (columns) under each steering vector (rows),
    each cell annotated; the diagonal is where the vector's own emotion should win."""
    need = {"vector", "words", "shift"}
    if not need <= set(matrix.columns):
        raise ValueError(f"the feels matrix needs columns {sorted(need)}; it has {sorted(matrix.columns)}")
    m = matrix.assign(shift=pd.to_numeric(matrix["shift"], errors="coerce"))
    rows = _order(list(m["vector"]), [])
    cols = _order(list(m["words"]), rows)
    pivot = m.pivot_table(index="vector", columns="words", values="shift", aggfunc="mean").reindex(index=rows, columns=cols)
    z = pivot.to_numpy(dtype=float)
    finite = [abs(v) for v in z.ravel() if math.isfinite(v)]
    lim = max(finite) if finite else 1.0
    text = [[("" if not math.isfinite(v) else f"{v:+.2f}") for v in row] for row in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=rows, text=text, texttemplate="%{text}", colorscale="RdBu", reversescale=True,
        zmid=0, zmin=-lim, zmax=lim, colorbar={"title": "nats"},
        hovertemplate="vector %{y} → %{x} words<br>shift %{z:+.3f} nats<extra></extra>",
    ))
    kit.style(fig, "Feels matrix: log-prob shift of each emotion's words (steered − unsteered)", "emotion's words",
              "steering vector", height=140 + 45 * max(len(rows), 1))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


def dose_figure(levels: pd.DataFrame, templates: pd.DataFrame | None = None, *, columns: int = 3) -> go.Figure:
    """Dose-response curves, one panel a template: the expected emotion's projection over the numeric level,
    the panel titled with ρ (and the shuffled-level control's ρ) when ``templates`` has them. Levels spanning
    two orders of magnitude or more get a log axis."""
    from plotly.subplots import make_subplots

    need = {"template", "level", "projection"}
    if not need <= set(levels.columns):
        raise ValueError(f"the dose-response table needs columns {sorted(need)}; it has {sorted(levels.columns)}")
    lv = levels.assign(level=pd.to_numeric(levels["level"], errors="coerce"),
                       projection=pd.to_numeric(levels["projection"], errors="coerce")).dropna(subset=["level", "projection"])
    names = _order(list(lv["template"]), [])
    info: dict[str, dict[str, Any]] = {}
    if templates is not None and "template" in templates.columns:
        for _, r in templates.iterrows():
            info[str(r["template"])] = dict(r)
    titles = []
    for n in names:
        t = info.get(n, {})
        mark = {True: " ✓", False: " ✗"}.get(t.get("passed") if isinstance(t.get("passed"), bool) else None, "")
        rho = f" ρ {_fmt(t.get('rho'), 2)} (ctrl {_fmt(t.get('control_rho'), 2)}){mark}" if t else ""
        titles.append(f"{n}{rho}")
    cols = max(1, min(columns, len(names)))
    nrows = max(1, math.ceil(len(names) / cols))
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=titles or None, horizontal_spacing=0.07,
                        vertical_spacing=min(0.12, 0.6 / nrows))
    for i, n in enumerate(names):
        sub = lv[lv["template"].astype(str) == n].sort_values("level")
        emo = str(sub["emotion"].iloc[0]) if "emotion" in sub.columns and len(sub) else ""
        fig.add_trace(go.Scatter(
            x=sub["level"], y=sub["projection"], mode="lines+markers", name=emo or n, showlegend=False,
            line={"color": kit.emotion_color(emo) if emo else kit.REAL},
            hovertemplate=f"{n} ({emo})<br>level %{{x:g}}<br>projection %{{y:.4f}}<extra></extra>",
        ), row=i // cols + 1, col=i % cols + 1)
        x = sub["level"]
        if len(x) and float(x.min()) > 0 and float(x.max()) / float(x.min()) >= 100:  # $1 … $20M: a log axis
            fig.update_xaxes(type="log", row=i // cols + 1, col=i % cols + 1)
    kit.style(fig, "Dose-response: the expected emotion's projection over the level", height=240 * nrows + 60)
    fig.update_annotations(font_size=11)
    return fig


def pca_figure(pca: pd.DataFrame, by: str = "valence") -> go.Figure:
    """The concepts on PC1 × PC2, coloured by ``by`` (``valence`` or ``arousal``), each labelled."""
    if by not in ("valence", "arousal"):
        raise ValueError(f"colour by 'valence' or 'arousal', got {by!r}")
    need = {"concept", "pc1", "pc2", by}
    if not need <= set(pca.columns):
        raise ValueError(f"the PCA table needs columns {sorted(need)}; it has {sorted(pca.columns)}")
    colors = VALENCE_COLORS if by == "valence" else AROUSAL_COLORS
    fig = go.Figure()
    for value in _order(list(pca[by]), list(colors)):
        sub = pca[pca[by].astype(str) == value]
        fig.add_trace(go.Scatter(
            x=pd.to_numeric(sub["pc1"], errors="coerce"), y=pd.to_numeric(sub["pc2"], errors="coerce"),
            mode="markers+text", text=sub["concept"].astype(str), textposition="top center", name=f"{by} {value}",
            marker={"color": colors.get(value, kit.CONTROL), "size": 10},
            hovertemplate="%{text}<br>PC1 %{x:.3f}<br>PC2 %{y:.3f}<extra>" + f"{by} {value}" + "</extra>",
        ))
    kit.style(fig, f"Concepts on PC1 × PC2, coloured by {by}", "PC1", "PC2", height=460)
    return fig


def logit_lens_frame(tokens: pd.DataFrame, kind: str = "direction", k: int = 15) -> pd.DataFrame:
    """The top ``k`` tokens of each emotion's direction (``kind="random"``: the control), one column an
    emotion; a token that is one of the emotion's words is marked ✓."""
    need = {"emotion", "rank", "token"}
    if not need <= set(tokens.columns):
        raise ValueError(f"the logit-lens table needs columns {sorted(need)}; it has {sorted(tokens.columns)}")
    t = tokens if "kind" not in tokens.columns else tokens[tokens["kind"].astype(str) == kind]
    t = t.assign(rank=pd.to_numeric(t["rank"], errors="coerce")).dropna(subset=["rank"])
    t = t[t["rank"] <= k]
    out: dict[str, list[str]] = {}
    for emo in _order(list(t["emotion"]), []):
        sub = t[t["emotion"].astype(str) == emo].sort_values("rank")
        flags = sub["is_word"] if "is_word" in sub.columns else [False] * len(sub)
        out[emo] = [f"{'✓ ' if f is True or f == 1 else ''}{str(tok)!r}"[: 40] for tok, f in zip(sub["token"], flags)]
    n = max((len(v) for v in out.values()), default=0)
    frame = pd.DataFrame({e: v + [""] * (n - len(v)) for e, v in out.items()})
    frame.index = pd.RangeIndex(1, n + 1, name="rank")
    return frame


# -- rendering ------------------------------------------------------------------------------------
def render(run: Run) -> None:
    st.title(TITLE)
    summary = kit.load(run, SUMMARY_ART)
    if summary is None:
        return
    gates = summary.get("gates")
    if not isinstance(gates, dict) or not gates:
        st.warning(f"`{SUMMARY}` holds no gates; re-run the step that writes it ({MAKE}).")
        return
    with kit.guard(SUMMARY_ART):
        render_gates(summary)
    for section, art in ((render_feels, FEELS_ART), (render_dose, DOSE_ART), (render_geometry, PCA_ART),
                         (render_logit_lens, LOGIT_ART), (render_preferences, PREFERENCES_ART)):
        st.divider()
        with kit.guard(art):
            section(run, summary)


def render_gates(summary: dict[str, Any]) -> None:
    problems = [f"gates.{n}: {p}" for n, g in summary["gates"].items() for p in kit.field_problems(g, GATE_FIELDS)]
    problems += [f"gates.{n} is a {type(g).__name__}" for n, g in summary["gates"].items() if not isinstance(g, dict)]
    if problems:
        st.warning(f"`{SUMMARY}` has fields of the wrong type ({'; '.join(problems[:3])}{'; …' if len(problems) > 3 else ''});"
                   f" they are not shown — re-run the step that writes it ({MAKE}).")
    passed, total = summary.get("passed"), summary.get("total")
    source = summary.get("source", "?")
    layer = summary.get("layer", "?")
    quick = " · quick run (fewer contexts, prompts and activities)" if summary.get("quick") is True else ""
    st.caption(f"Directions: `{source}` · layer {layer}{quick} · model `{summary.get('model', '?')}`")
    if isinstance(passed, int) and isinstance(total, int) and not isinstance(passed, bool):
        (st.success if total and passed == total else st.info)(
            f"{passed} of {total} gates passed. Thresholds are the targets on SmolLM2-135M-Instruct; each value "
            "sits beside a control that should fail.")
    table = gates_table(summary)
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={**{c: st.column_config.NumberColumn(c, format="%.3g") for c in ("value", "threshold", "control")},
                                "passed": st.column_config.TextColumn("passed", width="medium")})
    st.caption("Control: random directions of the same norm (feels, logit lens, read-back), shuffled labels "
               "(scenarios, geometry) or shuffled levels (dose-response). `preferences` is "
               f"{NOT_GATED}: SmolLM2-135M shows no preference between pleasant and unpleasant activities.")


def render_feels(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Feels matrix")
    matrix = kit.load(run, FEELS_ART)
    if matrix is None:
        return
    st.plotly_chart(feels_figure(matrix), width="stretch")
    g = kit.as_dict(kit.as_dict(summary.get("gates")).get("feels_matrix"))
    own, rand = kit.as_dict(g.get("own_shift")), kit.as_dict(g.get("random_mean_shift"))
    if own:
        st.caption(
            f"Rows won {g.get('rows_won', '?')}/{g.get('n_emotions', '?')}, columns won {g.get('cols_won', '?')}/"
            f"{g.get('n_emotions', '?')}; gap (mean diagonal − off-diagonal) {_fmt(g.get('value'))} nats "
            f"against {_fmt(g.get('control'))} for random directions. Own shift vs. random draws' mean shift: "
            + ", ".join(f"{e} {_fmt(own.get(e), 2)} / {_fmt(rand.get(e), 2)}" for e in own) + ".")
    rnd = kit.load(run, FEELS_RANDOM_ART, quiet=True)
    if rnd is None and run.has(VA.FEELS_RANDOM):
        kit.load(run, FEELS_RANDOM_ART)  # corrupt: one line


def render_dose(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Dose-response")
    levels = kit.load(run, DOSE_ART)
    if levels is None:
        return
    templates = kit.load(run, DOSE_TEMPLATES_ART)
    st.plotly_chart(dose_figure(levels, templates), width="stretch")
    g = kit.as_dict(kit.as_dict(summary.get("gates")).get("dose_response"))
    if g:
        st.caption(f"{_fmt(g.get('value'))} of {g.get('n_templates', '?')} templates have |ρ| ≥ "
                   f"{_fmt(g.get('rho_threshold'), 2)} with the expected sign (needed: {_fmt(g.get('threshold'))}); "
                   "the control shuffles the levels.")


def render_geometry(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Geometry: the concepts on PC1 × PC2")
    pca = kit.load(run, PCA_ART)
    if pca is None:
        return
    left, right = st.columns(2)
    left.plotly_chart(pca_figure(pca, "valence"), width="stretch")
    right.plotly_chart(pca_figure(pca, "arousal"), width="stretch")
    g = kit.as_dict(kit.as_dict(summary.get("gates")).get("geometry"))
    if g:
        st.caption(
            f"Valence AUROC on PC1 {_fmt(g.get('valence_auroc', g.get('value')))} (control {_fmt(g.get('control'))}); "
            f"arousal AUROC on PC{g.get('arousal_pc', '?')} {_fmt(g.get('arousal_auroc'))} "
            f"(control {_fmt(g.get('control_arousal_auroc'))}); mean cosine of the basic six "
            f"{_fmt(g.get('basic_mean_cosine'))} (needed < {_fmt(g.get('cosine_threshold'))}).")


def render_logit_lens(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Logit lens: each direction's top tokens")
    tokens = kit.load(run, LOGIT_ART)
    if tokens is None:
        return
    st.dataframe(logit_lens_frame(tokens, "direction"), width="stretch")
    st.caption("✓: one of the emotion's words. The directions go through the final norm and the unembedding.")
    with st.expander("Control: random directions' top tokens"):
        st.dataframe(logit_lens_frame(tokens, "random"), width="stretch")


def render_preferences(run: Run, summary: dict[str, Any]) -> None:
    st.subheader("Preferences")
    g = kit.as_dict(kit.as_dict(summary.get("gates")).get("preferences"))
    st.info(f"Preferences are {NOT_GATED}: SmolLM2-135M shows no preference between pleasant and unpleasant "
            "activities (strength 0.505 vs 0.495), so a correlation here says little on small models.")
    if g:
        strength = kit.as_dict(g.get("strength"))
        st.caption(f"{g.get('value_kind', 'value')}: {_fmt(g.get('value'))} (control {_fmt(g.get('control'))}); "
                   + (f"strength pleasant {_fmt(strength.get('pleasant'))} vs unpleasant {_fmt(strength.get('unpleasant'))}; "
                      if strength else "")
                   + f"{g.get('n_activities', '?')} activities.")
    table = kit.load(run, PREFERENCES_ART)
    if table is not None:
        with st.expander("Activities: Elo and projections"):
            st.dataframe(table, hide_index=True, width="stretch")
    steer = kit.as_dict(g.get("steering")) if g else {}
    per = kit.as_dict(steer.get("emotions"))
    if per:
        st.markdown("**Elo shift under steering** (Elo steered − unsteered per activity; random: a same-norm random direction)")
        rows = [{"emotion": e, **{k: kit.as_dict(v).get(k) for k in (
            "spearman_shift_vs_projection", "random_spearman_shift_vs_projection", "pleasant_minus_unpleasant",
            "random_pleasant_minus_unpleasant", "mean_abs_shift", "random_mean_abs_shift")}} for e, v in per.items()]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        shift = kit.load(run, PREFERENCES_SHIFT_ART)
        if shift is not None:
            cols = [c for c in shift.columns if c.startswith("shift_") and not c.startswith("shift_random_")]
            if cols and "activity" in shift.columns:
                z = shift[cols].to_numpy(dtype=float)
                fig = go.Figure(go.Heatmap(z=z, x=[c.removeprefix("shift_") for c in cols], y=shift["activity"].astype(str),
                                           colorscale="RdBu", zmid=0, colorbar={"title": "Elo shift"}))
                kit.style(fig, "Elo shift of each activity under each emotion's steering", "steered with", "activity",
                          height=max(300, 14 * len(shift)))
                fig.update_layout(yaxis={"autorange": "reversed"})
                st.plotly_chart(fig, width="stretch")
