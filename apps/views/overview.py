"""Overview: what ran (run.json), on which stimuli (activations/), and the first per-layer summary.

Reads ``run.json``, ``activations/manifest.json`` + ``activations/rows.json`` (no tensors) and
``summary/layers.json``; each section says what is missing and how to make it when a file is absent.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from psylens.apps.cache import json_file, run_meta
from psylens.runs import RUN_FILE, Run

__all__ = ["TITLE", "available", "render", "SiteCurves", "parse_layer_summary"]

TITLE = "Overview"

SUMMARY = "summary/layers.json"
MANIFEST = "activations/manifest.json"
ROWS = "activations/rows.json"
NONE_LABEL = "(none)"
N_EXAMPLES = 10

REAL_COLOR = "#1f77b4"
CONTROL_COLOR = "#9a9a9a"


def available(run: Run) -> bool:
    return run.has(RUN_FILE)


def render(run: Run) -> None:
    meta = run_meta(run)
    st.title(TITLE)
    st.caption(f"Run `{run.path}`")
    render_run_meta(meta)
    st.divider()
    render_stimuli(run)
    st.divider()
    render_layer_summary(run)


# -- run.json ---------------------------------------------------------------------------------
def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def format_time(value: Any) -> str:
    t = _parse_time(value)
    if t is None:
        return "—" if value in (None, "") else str(value)
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f" {t.tzname()}" if t.tzinfo else "")


def format_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def run_duration(meta: dict[str, Any]) -> str:
    start, end = _parse_time(meta.get("started") or meta.get("created")), _parse_time(meta.get("finished"))
    if start is None or end is None:
        return "not finished"
    return format_duration(max((end - start).total_seconds(), 0.0))


def _cell(value: Any) -> str:
    """One table cell as text (tables mix types; Arrow wants one type per column)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts as ``{"a.b": "value"}``; lists and scalars as compact text."""
    if isinstance(obj, dict) and obj:
        out: dict[str, str] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix or "value": _cell(obj)}


def kv_table(obj: Any, key: str = "key", value: str = "value") -> pd.DataFrame:
    rows = flatten(obj) if isinstance(obj, dict) and obj else {}
    return pd.DataFrame({key: list(rows), value: list(rows.values())})


def steps_table(steps: Any) -> pd.DataFrame:
    """One row per recorded step: name, when it finished, everything else it recorded."""
    rows = []
    if isinstance(steps, dict):
        for name, info in steps.items():
            info = dict(info) if isinstance(info, dict) else {"info": info}
            finished = info.pop("finished", None)
            details = "; ".join(f"{k}: {v}" for k, v in flatten(info).items()) if info else ""
            rows.append({"step": str(name), "finished": format_time(finished), "details": details})
    return pd.DataFrame(rows, columns=["step", "finished", "details"])


def _model_spec(meta: dict[str, Any]) -> str:
    model = meta.get("model")
    if isinstance(model, dict):
        return str(model.get("spec") or model.get("name") or "unknown")
    return str(model) if model else "unknown"


def _code(text: str) -> str:
    """``text`` as inline markdown code (backticks inside would end it early)."""
    return "`" + text.replace("`", "'") + "`"


def render_run_meta(meta: dict[str, Any]) -> None:
    st.subheader("Run")
    commit = meta.get("git_commit")
    st.markdown(
        f"**Model** {_code(_model_spec(meta))} · **Created** {format_time(meta.get('created'))} · "
        f"**git** {_code(str(commit)[:12]) if commit else 'not recorded'}"
    )
    steps_run = meta.get("steps") if isinstance(meta.get("steps"), dict) else {}
    cols = st.columns(3)
    cols[0].metric("Seed", _cell(meta.get("seed")))
    cols[1].metric("Duration", run_duration(meta))
    cols[2].metric("Steps run", str(len(steps_run)))
    st.markdown("**Command**")
    st.code(str(meta.get("command") or "—"), language="bash")

    left, right = st.columns(2)
    with left:
        st.markdown("**Config**")
        config = meta.get("config")
        if config:
            st.dataframe(kv_table(config, "setting"), hide_index=True, width="stretch")
        else:
            st.caption("No config recorded.")
        st.markdown("**Steps run**")
        steps = steps_table(meta.get("steps"))
        if len(steps):
            st.dataframe(steps, hide_index=True, width="stretch")
        else:
            st.caption("No steps recorded yet.")
    with right:
        model = meta.get("model")
        if isinstance(model, dict) and len(model) > 1:
            st.markdown("**Model**")
            st.dataframe(kv_table(model, "field"), hide_index=True, width="stretch")
        st.markdown("**Times**")
        times = {k: format_time(meta.get(k)) for k in ("created", "started", "finished")}
        st.dataframe(kv_table(times, "event", "time (UTC)"), hide_index=True, width="stretch")
        st.markdown("**Environment**")
        env = {"git commit": commit or "not recorded"}
        env.update({k: v for k, v in (meta.get("versions") or {}).items() if v})
        if isinstance(meta.get("host"), dict):
            env.update({f"host.{k}": v for k, v in meta["host"].items()})
        st.dataframe(kv_table(env, "name"), hide_index=True, width="stretch", height="content")
    with st.expander(f"Raw {RUN_FILE}"):
        st.json(meta, expanded=True)


# -- stimuli ----------------------------------------------------------------------------------
def count_table(values: list[Any], name: str) -> pd.DataFrame:
    counts = Counter(NONE_LABEL if v is None else str(v) for v in values)
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.DataFrame(rows, columns=[name, "count"])


def examples(rows: pd.DataFrame, label: str | None, k: int = N_EXAMPLES) -> pd.DataFrame:
    """``k`` example stimuli: of ``label``, or (``label=None``) taken in turn from every label."""
    if label is not None:
        return rows[rows["label"] == label].head(k)
    ranked = rows.assign(_rank=rows.groupby("label", sort=False).cumcount())
    return ranked.sort_values(["_rank"], kind="stable").head(k).drop(columns="_rank")


def stimuli_frame(rows: dict[str, Any]) -> pd.DataFrame:
    ids = list(rows.get("ids") or [])
    n = len(ids)

    def column(name: str) -> list[Any]:
        col = list(rows.get(name) or [])
        return col if len(col) == n else [None] * n

    labels = [NONE_LABEL if v is None else str(v) for v in column("labels")]
    groups = [NONE_LABEL if v is None else str(v) for v in column("groups")]
    return pd.DataFrame({"id": [str(i) for i in ids], "label": labels, "group": groups, "text": column("texts")})


def _layers_text(layers: list[int]) -> str:
    if not layers:
        return "none"
    if layers == list(range(layers[0], layers[-1] + 1)) and len(layers) > 2:
        return f"{layers[0]}–{layers[-1]} ({len(layers)} kept)"
    return ", ".join(map(str, layers))


def render_stimuli(run: Run) -> None:
    st.subheader("Stimuli")
    if not run.has(MANIFEST):
        render_stimuli_from_summary(run)
        return
    manifest = json_file(run, MANIFEST)
    n = int(manifest.get("n", 0))
    st.caption(
        f"{n} stimuli · sites {', '.join(manifest.get('sites', [])) or 'none'} · "
        f"layers {_layers_text(list(manifest.get('layers', [])))} · positions `{manifest.get('positions', '?')}`"
    )
    if not manifest.get("complete", False):
        done = sum(s.get("stop", 0) - s.get("start", 0) for s in manifest.get("shards", []))
        st.warning(
            f"The harvest is incomplete ({done} of {n} stimuli). "
            "Run the same harvest again with this run as output to resume it."
        )
    if not run.has(ROWS):
        st.info(f"No `{ROWS}` in this run, so no labels or texts to show.")
        return
    frame = stimuli_frame(json_file(run, ROWS))
    left, right = st.columns(2)
    with left:
        st.plotly_chart(label_bar(count_table(frame["label"].tolist(), "label")), width="stretch")
    with right:
        st.markdown("**Per group**")
        st.dataframe(count_table(frame["group"].tolist(), "group"), hide_index=True, width="stretch")
    labels = sorted(frame["label"].unique().tolist())
    choice = st.selectbox("Examples of", ["every label", *labels], key="overview_example_label")
    shown = examples(frame, None if choice == "every label" else choice)
    st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        column_config={"text": st.column_config.TextColumn("text", width="large")},
    )


def render_stimuli_from_summary(run: Run) -> None:
    summary = json_file(run, SUMMARY) if run.has(SUMMARY) else None
    counts = summary.get("label_counts") if isinstance(summary, dict) else None
    if isinstance(counts, dict) and counts:
        st.caption(f"From `{SUMMARY}` (this run keeps no activations, so no texts to show).")
        table = pd.DataFrame(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), columns=["label", "count"])
        st.plotly_chart(label_bar(table), width="stretch")
        return
    st.info(
        "No stimuli in this run: `activations/` is missing. "
        "`psylens harvest ... --out RUN` (or `psylens demo`) writes them."
    )


def label_bar(counts: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=counts["count"], y=counts["label"], orientation="h", marker_color=REAL_COLOR))
    fig.update_layout(
        title="Stimuli per label",
        height=max(220, 28 * len(counts) + 90),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        yaxis={"autorange": "reversed"},
        xaxis_title="stimuli",
    )
    return fig


# -- summary/layers.json ------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteCurves:
    """One site's per-layer curves from ``summary/layers.json`` (``None`` when absent or malformed)."""

    site: str
    layers: list[int]
    mean_norm: list[float] | None
    fisher_ratio: list[float] | None
    shuffled_fisher_ratio: list[float] | None


def _curve(entry: dict[str, Any], name: str, n: int, site: str, problems: list[str]) -> list[float] | None:
    values = entry.get(name)
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != n:
        size = len(values) if isinstance(values, list) else type(values).__name__
        problems.append(f"site `{site}`: `{name}` has {size} values for {n} layers; not drawn")
        return None
    try:
        return [float("nan") if v is None else float(v) for v in values]
    except (TypeError, ValueError):
        problems.append(f"site `{site}`: `{name}` holds non-numbers; not drawn")
        return None


def parse_layer_summary(obj: Any) -> tuple[list[SiteCurves], list[str]]:
    """The curves in a ``summary/layers.json`` object, and the problems found (never raises)."""
    problems: list[str] = []
    sites = obj.get("sites") if isinstance(obj, dict) else None
    if not isinstance(sites, dict):
        return [], ["no `sites` object"]
    out = []
    for site, entry in sites.items():
        layers = entry.get("layers") if isinstance(entry, dict) else None
        if not isinstance(layers, list) or not layers:
            problems.append(f"site `{site}`: no `layers` list")
            continue
        n = len(layers)
        out.append(
            SiteCurves(
                site=str(site),
                layers=[int(v) for v in layers],
                mean_norm=_curve(entry, "mean_norm", n, site, problems),
                fisher_ratio=_curve(entry, "fisher_ratio", n, site, problems),
                shuffled_fisher_ratio=_curve(entry, "shuffled_fisher_ratio", n, site, problems),
            )
        )
    return out, problems


def _line(x: list[int], y: list[float], name: str, color: str, dash: str = "solid") -> go.Scatter:
    return go.Scatter(x=x, y=y, name=name, mode="lines+markers", line={"color": color, "dash": dash})


def _layer_layout(fig: go.Figure, title: str, y_title: str) -> go.Figure:
    fig.update_layout(
        title=title,
        height=360,
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0},
        xaxis_title="layer",
        yaxis_title=y_title,
    )
    return fig


def fisher_figure(c: SiteCurves) -> go.Figure:
    """Fisher ratio with true labels beside the shuffled-label control, on the same axes."""
    fig = go.Figure()
    if c.fisher_ratio is not None:
        fig.add_trace(_line(c.layers, c.fisher_ratio, "real labels", REAL_COLOR))
    if c.shuffled_fisher_ratio is not None:
        fig.add_trace(_line(c.layers, c.shuffled_fisher_ratio, "shuffled labels (control)", CONTROL_COLOR, "dash"))
    return _layer_layout(fig, f"Label separability · {c.site}", "Fisher ratio (between / within)")


def norm_figure(c: SiteCurves) -> go.Figure:
    fig = go.Figure()
    if c.mean_norm is not None:
        fig.add_trace(_line(c.layers, c.mean_norm, "mean ‖activation‖", REAL_COLOR))
    return _layer_layout(fig, f"Activation norm · {c.site}", "mean L2 norm")


def peak(c: SiteCurves) -> tuple[int, float, float | None] | None:
    """(layer, Fisher ratio, control there) at the layer where the real Fisher ratio peaks."""
    if not c.fisher_ratio:
        return None
    best = max(
        range(len(c.layers)),
        key=lambda i: c.fisher_ratio[i] if c.fisher_ratio[i] == c.fisher_ratio[i] else float("-inf"),  # type: ignore[index]
    )
    control = c.shuffled_fisher_ratio[best] if c.shuffled_fisher_ratio else None
    return c.layers[best], c.fisher_ratio[best], control


def render_site(c: SiteCurves) -> None:
    top = peak(c)
    if top is not None:
        layer, value, control = top
        cols = st.columns(3)
        cols[0].metric("Most separable layer", str(layer))
        cols[1].metric("Fisher ratio there", f"{value:.3g}")
        cols[2].metric(
            "Control there",
            "—" if control is None else f"{control:.3g}",
            help="The same ratio with the labels shuffled: what separability looks like by chance.",
        )
    left, right = st.columns(2)
    with left:
        if c.fisher_ratio is None and c.shuffled_fisher_ratio is None:
            st.caption("No Fisher ratio recorded for this site.")
        else:
            st.plotly_chart(fisher_figure(c), width="stretch", key=f"overview_fisher_{c.site}")
    with right:
        if c.mean_norm is None:
            st.caption("No mean norm recorded for this site.")
        else:
            st.plotly_chart(norm_figure(c), width="stretch", key=f"overview_norm_{c.site}")


def render_layer_summary(run: Run) -> None:
    st.subheader("Per-layer summary")
    if not run.has(SUMMARY):
        st.info(f"No per-layer summary in this run (`{SUMMARY}`). `psylens demo` writes one.")
        return
    try:
        summary = json_file(run, SUMMARY)
    except ValueError as e:
        st.error(f"`{SUMMARY}` is not valid JSON ({e}); re-run the step that writes it.")
        return
    st.caption(
        "Fisher ratio: between-label over within-label variance of the activations at each layer. "
        "The grey dashed control repeats it with shuffled labels; the gap between the curves is the label signal."
    )
    curves, problems = parse_layer_summary(summary)
    for p in problems:
        st.warning(f"`{SUMMARY}`: {p}.")
    if not curves:
        return
    if len(curves) == 1:
        render_site(curves[0])
        return
    for tab, c in zip(st.tabs([c.site for c in curves]), curves):
        with tab:
            render_site(c)
