"""Overview: the run's headline results beside their controls, its stimuli, the per-layer summary, then metadata.

Reads (through :mod:`psylens.apps.views.kit`, so a missing or corrupt file is one line, never a
traceback) ``run.json``, ``activations/manifest.json`` + ``activations/rows.json`` (no tensors),
``summary/layers.json``, and the headline numbers of ``probes/summary.json`` and ``steering/summary.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from psylens import artifacts as A
from psylens.apps.views import kit
from psylens.probes import artifacts as PA
from psylens.runs import RUN_FILE, Run
from psylens.steering import artifacts as SA

__all__ = ["TITLE", "available", "render", "SiteCurves", "parse_layer_summary", "model_spec", "group_summary",
           "MANIFEST_ART", "ROWS_ART", "SUMMARY_ART"]

TITLE = "Overview"

SUMMARY = A.LAYER_SUMMARY
MANIFEST = f"{A.ACTIVATIONS}/{A.MANIFEST}"
ROWS = f"{A.ACTIVATIONS}/{A.ROWS}"
NONE_LABEL = "(none)"
N_EXAMPLES = 10

REAL_COLOR = kit.REAL
CONTROL_COLOR = kit.CONTROL

HARVEST = "`psylens harvest ... --out RUN` (or `psylens demo`) writes it"
MANIFEST_ART = kit.Artifact(MANIFEST, "json", "activation manifest", HARVEST, schema=A.SCHEMA_VERSION)
ROWS_ART = kit.Artifact(ROWS, "json", "stimulus list (labels, texts)", HARVEST, schema=A.SCHEMA_VERSION)
SUMMARY_ART = kit.Artifact(SUMMARY, "json", "per-layer summary", "`psylens demo` or `psylens harvest` writes it",
                           schema=A.LAYER_SUMMARY_SCHEMA_VERSION)
PROBE_SUMMARY_ART = kit.Artifact(PA.SUMMARY, "json", "probe summary", "`psylens probe --model M --out RUN` writes it",
                                 schema=PA.SCHEMA_VERSION)
STEER_SUMMARY_ART = kit.Artifact(SA.SUMMARY, "json", "steering summary", "`psylens steer sweep --run RUN` writes it",
                                 schema=SA.SCHEMA_VERSION)


def available(run: Run) -> bool:
    return run.has(RUN_FILE)


def render(run: Run) -> None:
    st.title(TITLE)
    meta = kit.load(run, kit.RUN_META)
    meta = meta if isinstance(meta, dict) else {}
    st.markdown(
        f"**Model** {_code(model_spec(meta))} · **Run** {_code(str(run.path))} · "
        f"**Created** {format_time(meta.get('created'))} · **Duration** {run_duration(meta)}"
    )
    with kit.guard("The headline results"):
        render_headline(run)
    st.divider()
    with kit.guard(MANIFEST_ART):
        render_stimuli(run)
    st.divider()
    with kit.guard(SUMMARY_ART):
        render_layer_summary(run)
    st.divider()
    with kit.guard(kit.RUN_META):
        render_run_meta(meta)


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


def model_spec(meta: dict[str, Any]) -> str:
    """The model's spec from run.json: ``model`` (dict or str), else the names in ``models``."""
    model = meta.get("model") if isinstance(meta, dict) else None
    if isinstance(model, dict):
        spec = model.get("spec") or model.get("name")
        if spec:
            return str(spec)
    elif isinstance(model, str) and model:
        return model
    models = kit.as_dict(meta.get("models") if isinstance(meta, dict) else None)
    specs = [str(kit.as_dict(v).get("spec") or name) for name, v in models.items()]
    return ", ".join(specs) if specs else "unknown"


_model_spec = model_spec


def _code(text: str) -> str:
    """``text`` as inline markdown code (backticks inside would end it early)."""
    return "`" + text.replace("`", "'") + "`"


def render_run_meta(meta: dict[str, Any]) -> None:
    st.subheader("Run")
    steps_run = meta.get("steps") if isinstance(meta.get("steps"), dict) else {}
    commit = meta.get("git_commit")
    st.caption(f"Seed {_cell(meta.get('seed'))} · {len(steps_run)} steps recorded · "
               f"git {_code(str(commit)[:12]) if commit else 'not recorded'}")
    st.markdown("**Command**")
    st.code(str(meta.get("command") or "—"), language="bash")
    with st.expander("Metadata and versions (config, steps, times, environment)", expanded=False):
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
            env: dict[str, Any] = {"git commit": commit or "not recorded"}
            env.update({k: v for k, v in kit.as_dict(meta.get("versions")).items() if v})
            if isinstance(meta.get("host"), dict):
                env.update({f"host.{k}": v for k, v in meta["host"].items()})
            st.dataframe(kv_table(env, "name"), hide_index=True, width="stretch")
        st.markdown(f"**Raw {RUN_FILE}**")
        st.json(meta, expanded=False)


# -- headline ---------------------------------------------------------------------------------
def render_headline(run: Run) -> None:
    """The run's results, each beside its control: probes, steering, per-layer separability."""
    st.subheader("Headline results")
    shown = 0
    probes = kit.load(run, PROBE_SUMMARY_ART, quiet=not run.has(PA.SUMMARY))
    rows: list[dict[str, str]] = []
    if isinstance(probes, dict) and probes.get("best_accuracy") is not None:
        lex = kit.as_dict(probes.get("lexical_baseline")).get("accuracy", probes.get("lexical_accuracy"))
        controls = [f"shuffled labels {kit.fmt_interval(probes.get('shuffled_accuracy_at_best_layer'), None, pct=True, digits=3)}",
                    f"chance {kit.fmt_interval(probes.get('chance'), None, pct=True, digits=3)}"]
        if lex is not None:
            controls.append(f"bag-of-words probe {kit.fmt_interval(lex, None, pct=True, digits=3)}")
        rows.append({"result": f"Probe accuracy, best layer ({probes.get('best_layer', '?')})",
                     "value [95% interval]": kit.fmt_interval(probes.get("best_accuracy"),
                                                              kit.interval(probes, "best_accuracy"), pct=True, digits=3),
                     "beside its controls": " · ".join(controls)})
    steering = kit.load(run, STEER_SUMMARY_ART, quiet=not run.has(SA.SUMMARY))
    if isinstance(steering, dict) and steering.get("mean_success") is not None:
        base = kit.as_dict(steering.get("mean_baselines"))
        base_ci = steering.get("mean_baselines_ci95")
        controls = [f"{name} {kit.fmt_interval(base.get(key), kit.interval(base_ci, key))}"
                    for key, name in (("prompting", "prompting"), ("random", "random direction"), ("none", "no steering"))
                    if base.get(key) is not None]
        target = kit.as_dict(steering.get("targets")).get("success")
        rows.append({"result": "Steering success (mean over emotions)",
                     "value [95% interval]": kit.fmt_interval(steering.get("mean_success"),
                                                              kit.interval(steering, "mean_success")),
                     "beside its controls": " · ".join(controls + ([f"target {target}"] if target is not None else []))})
    shown = len(rows)
    if rows:
        st.table(pd.DataFrame(rows).set_index("result"))
    summary = kit.load(run, SUMMARY_ART, quiet=True)
    curves, _ = parse_layer_summary(summary)
    for c in curves[:1]:
        top = peak(c)
        if top is not None:
            shown += 1
            layer, value, control = top
            st.caption(f"Label separability (`{c.site}`) peaks at layer {layer}: Fisher ratio {value:.3g} against "
                       f"{'—' if control is None else f'{control:.3g}'} with shuffled labels."
                       + (" The probes' best layer can differ: the Fisher ratio weighs every direction, a probe "
                          "only the one it learns." if isinstance(probes, dict) else ""))
    if not shown:
        st.info("No results yet: this run holds no probe, steering or per-layer summary. "
                "`psylens demo` (or `psylens probe` / `psylens steer sweep`) writes them.")


# -- stimuli ----------------------------------------------------------------------------------
def count_table(values: list[Any], name: str) -> pd.DataFrame:
    counts = Counter(NONE_LABEL if v is None else str(v) for v in values)
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.DataFrame(rows, columns=[name, "count"])


def group_summary(groups: list[Any]) -> str:
    """One line for the per-group counts: "160 groups × 7 stimuli each" or "12 groups, 1–3 each (median 2)"."""
    counts = Counter(NONE_LABEL if g is None else str(g) for g in groups)
    if not counts or set(counts) == {NONE_LABEL}:
        return "No groups recorded."
    sizes = sorted(counts.values())
    if sizes[0] == sizes[-1]:
        return f"{len(counts)} groups × {sizes[0]} stimuli each."
    return f"{len(counts)} groups, {sizes[0]}–{sizes[-1]} stimuli each (median {statistics.median(sizes):g})."


def examples(rows: pd.DataFrame, label: str | None, k: int = N_EXAMPLES) -> pd.DataFrame:
    """``k`` example stimuli: of ``label``, or (``label=None``) taken in turn from every label."""
    if label is not None:
        return rows[rows["label"] == label].head(k)
    ranked = rows.assign(_rank=rows.groupby("label", sort=False).cumcount())
    return ranked.sort_values(["_rank"], kind="stable").head(k).drop(columns="_rank")


def stimuli_frame(rows: dict[str, Any]) -> pd.DataFrame:
    ids = kit.as_list(rows.get("ids"))
    n = len(ids)

    def column(name: str) -> list[Any]:
        col = kit.as_list(rows.get(name))
        return col if len(col) == n else [None] * n

    labels = [NONE_LABEL if v is None else str(v) for v in column("labels")]
    groups = [NONE_LABEL if v is None else str(v) for v in column("groups")]
    texts = ["" if v is None else str(v) for v in column("texts")]
    return pd.DataFrame({"id": [str(i) for i in ids], "label": labels, "group": groups, "text": texts})


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
    manifest = kit.load(run, MANIFEST_ART)
    if manifest is None:
        return
    n = int(kit.num(manifest.get("n")) if kit.num(manifest.get("n")) == kit.num(manifest.get("n")) else 0)
    sites = [str(s) for s in kit.as_list(manifest.get("sites"))]
    st.caption(
        f"{n} stimuli · sites {', '.join(sites) or 'none'} · "
        f"layers {_layers_text(kit.layer_options(kit.as_list(manifest.get('layers'))))} · "
        f"positions `{manifest.get('positions', '?')}`"
    )
    if not manifest.get("complete", False):
        done = sum(int(kit.num(kit.as_dict(s).get("stop")) - kit.num(kit.as_dict(s).get("start")))
                   for s in kit.as_list(manifest.get("shards")) if kit.as_dict(s))
        st.warning(
            f"The harvest is incomplete ({done} of {n} stimuli). "
            "Run the same harvest again with this run as output to resume it."
        )
    rows = kit.load(run, ROWS_ART)
    if rows is None:
        return
    frame = stimuli_frame(rows)
    left, right = st.columns([2, 3])
    with left:
        st.plotly_chart(label_bar(count_table(frame["label"].tolist(), "label")), width="stretch")
        st.caption(f"**Groups** (scenarios): {group_summary(frame['group'].tolist())}")
    with right:
        labels = sorted(frame["label"].unique().tolist())
        choice = st.selectbox("Examples of", ["every label", *labels], key="overview_example_label")
        shown = examples(frame, None if choice == "every label" else choice)
        st.table(shown.set_index("id"))  # full texts, wrapped


def render_stimuli_from_summary(run: Run) -> None:
    summary = kit.load(run, SUMMARY_ART, quiet=True)
    counts = kit.as_dict(summary).get("label_counts") if summary is not None else None
    if isinstance(counts, dict) and counts:
        st.caption(f"From `{SUMMARY}` (this run keeps no activations, so no texts to show).")
        table = pd.DataFrame(sorted(counts.items(), key=lambda kv: (-kit.num(kv[1]), kv[0])), columns=["label", "count"])
        st.plotly_chart(label_bar(table), width="stretch")
        return
    st.info(
        "No stimuli in this run: `activations/` is missing. "
        "`psylens harvest ... --out RUN` (or `psylens demo`) writes them."
    )


def label_bar(counts: pd.DataFrame) -> go.Figure:
    colors = [kit.emotion_color(str(lab)) for lab in counts["label"]]
    fig = go.Figure(go.Bar(x=counts["count"], y=counts["label"], orientation="h", marker_color=colors))
    kit.style(fig, "Stimuli per label", "stimuli", None, height=max(220, 28 * len(counts) + 90))
    fig.update_layout(yaxis={"autorange": "reversed"}, margin={"l": 10, "r": 10, "t": 40, "b": 10})
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
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in layers):
            problems.append(f"site `{site}`: `layers` holds non-integers")
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
    kit.style(fig, title, "layer", y_title, height=360)
    fig.update_layout(hovermode="x unified")
    return fig


def fisher_figure(c: SiteCurves) -> go.Figure:
    """Fisher ratio with true labels beside the shuffled-label control, on the same axes."""
    fig = go.Figure()
    if c.fisher_ratio is not None:
        fig.add_trace(_line(c.layers, c.fisher_ratio, "real labels", REAL_COLOR))
    if c.shuffled_fisher_ratio is not None:
        fig.add_trace(_line(c.layers, c.shuffled_fisher_ratio, "shuffled labels (control)", CONTROL_COLOR, "dash"))
    return kit.layer_ticks(_layer_layout(fig, f"Label separability · {c.site}", "Fisher ratio (between / within)"), c.layers)


def norm_figure(c: SiteCurves) -> go.Figure:
    fig = go.Figure()
    if c.mean_norm is not None:
        fig.add_trace(_line(c.layers, c.mean_norm, "mean ‖activation‖", REAL_COLOR))
    return kit.layer_ticks(_layer_layout(fig, f"Activation norm · {c.site}", "mean L2 norm"), c.layers)


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
    summary = kit.load(run, SUMMARY_ART)
    if summary is None:
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
