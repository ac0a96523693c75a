"""Step SAEs: a feature browser for the SAEs ``psylens sae train`` writes under ``RUN/saes/<name>/``.

Reads (names from ``psylens.saes.artifacts``): ``step_sae.json`` (site, layer, segmentation),
``metrics.json`` (held-out explained variance, L0, dead fraction), ``features.json`` (each behaviour
label's best latent with its held-out AUROC and the shuffled-label control; per latent: frequency,
top steps, position profile, logit-lens tokens, decoder cluster and 2-D map), SAELens' ``cfg.json`` +
``sae_weights.safetensors``, the cached step activations ``saes/steps/<site>-L<layer>-<pooling>-<seg>.safetensors``,
``traces/traces.jsonl`` and, when ``psylens sae steer`` has run, ``steering/summary.json``.

Shows: the label table (AUROC beside its control), one latent's activation histogram (steps with the
label it was picked for against the rest), its top steps highlighted inside their trace, logit-lens
tokens, position-in-trace profile, the decoder-cluster map, and a trace viewer that colours each step
by its behaviour label (``psylens.saes.labels.label_step``, the labeller the SAE's AUROCs used) and
names its top latent; with feature steering, the label's steps per trace under each condition (no
steering, the feature, a random vector of the same norm) with the paired effects and the target.

Every step's latents are computed here from the cached step activations and the SAE's weights
(:func:`encode_steps`: the SAELens inference encoders of the architectures psylens saves — JumpReLU
(BatchTopK saves as JumpReLU), TopK, standard — re-written in torch so the page does not import
SAELens; a unit test checks them against SAELens). Every file is read through :func:`kit.load`; a
missing or corrupt file is one line and the rest of the page goes on. Figure and HTML builders are
plain functions (no streamlit), tested without a browser.

Footguns: the step cache is keyed by (site, layer, pooling, segmentation), so a later SAE trained on
*other traces* at the same layer overwrites it; the page checks that the cache's traces are the
SAE's (``held_out.json``) and says so when they are not. Labels are recomputed by the rules on
every render — they are the labeller's guesses, not truth (docs/saes.md gives its accuracy).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from jaxtyping import Float
from torch import Tensor

from psylens.apps import cache
from psylens.apps.views import kit
from psylens.runs import Run
from psylens.saes import artifacts as SA

__all__ = [
    "TITLE",
    "available",
    "render",
    "LABEL_COLORS",
    "sae_names",
    "artifacts_for",
    "steps_artifact",
    "encode_steps",
    "label_table",
    "feature_options",
    "feature_frame",
    "step_labels",
    "target_caption",
    "top_features",
    "histogram_figure",
    "position_figure",
    "decoder_map_figure",
    "steering_figure",
    "steering_table",
    "highlight_step_html",
    "trace_html",
]

TITLE = "Step SAEs"

MAKE = "`psylens sae train --run RUN --layer L` writes it"
TRACES_MAKE = "`psylens traces --model M --out RUN` writes it"
TRACES_ART = kit.Artifact(SA.TRACES, "jsonl", "reasoning traces", TRACES_MAKE)
STEER_MAKE = "`psylens sae steer --run RUN --name NAME` writes it"

#: one colour per behaviour label (psylens.saes.labels.LABELS), the same on every figure
LABEL_COLORS: dict[str, str] = {
    "emotion_attribution": "#d62728",
    "perspective_taking": "#9467bd",
    "reflection": "#1f77b4",
    "backtracking": "#ff7f0e",
    "conclusion": "#2ca02c",
    "restatement": "#8c8c8c",
}
ARCHS = ("jumprelu", "topk", "standard")  # SAELens inference architectures psylens saves

LABEL_FIELDS: dict[str, Any] = {"feature": int, "auroc": (int, float), "control_auroc": (int, float),
                                "train_auroc": (int, float), "n_positive": int, "n_steps": int, "auroc_ci": list}
FEATURE_FIELDS: dict[str, Any] = {"feature": int, "frequency": (int, float), "mean_activation": (int, float),
                                  "top_steps": list, "position_profile": dict, "logit_lens": list, "cluster": int,
                                  "xy": list}


def label_color(label: str) -> str:
    return LABEL_COLORS.get(label, kit.emotion_color(label))


# -- which SAEs, which files ----------------------------------------------------------------------
def sae_names(run: Run) -> list[str]:
    """The SAE folders in ``RUN/saes/`` that hold a ``step_sae.json`` (sorted; the step cache excluded).

    Folders that a symlink takes outside the run are left out.
    """
    root = run.path / SA.DIR
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.name.startswith(".") or f"{SA.DIR}/{p.name}" == SA.STEPS_DIR:
            continue
        try:
            info = kit.resolve_inside(run, SA.sae_file(p.name, SA.STEP_SAE))
        except ValueError:
            continue
        if info.is_file():
            out.append(p.name)
    return out


def available(run: Run) -> bool:
    return bool(sae_names(run))


def artifacts_for(name: str) -> dict[str, kit.Artifact]:
    """The kit artifacts of one SAE folder: ``info``, ``metrics``, ``features``, ``held_out``, ``cfg``, ``weights``."""
    f = lambda file: SA.sae_file(name, file)  # noqa: E731
    return {
        "info": kit.Artifact(f(SA.STEP_SAE), "json", "step SAE record", MAKE, schema=SA.SCHEMA_VERSION),
        "metrics": kit.Artifact(f(SA.METRICS), "json", "SAE metrics", MAKE, schema=SA.SCHEMA_VERSION),
        "features": kit.Artifact(f(SA.FEATURES), "json", "SAE features", MAKE, schema=SA.SCHEMA_VERSION),
        "held_out": kit.Artifact(f(SA.HELD_OUT), "json", "held-out trace ids", MAKE),
        "cfg": kit.Artifact(f(SA.SAE_CFG), "json", "SAELens config", MAKE),
        "weights": kit.Artifact(f(SA.SAE_WEIGHTS), "tensors", "SAE weights", MAKE),
        "steering": kit.Artifact(f(SA.STEERING_SUMMARY), "json", "feature steering", STEER_MAKE),
    }


def steps_artifact(info: Mapping[str, Any]) -> kit.Artifact | None:
    """The cached step activations an SAE was trained on (from its ``step_sae.json``), or ``None`` when the
    record does not say (a ``--tokens`` SAE has no step cache)."""
    site, layer, pooling, seg = info.get("site"), info.get("layer"), info.get("pooling"), info.get("segmentation")
    if info.get("tokens") is True or pooling == "tokens":
        return None
    if not (isinstance(site, str) and isinstance(layer, int) and not isinstance(layer, bool)
            and isinstance(pooling, str) and isinstance(seg, str)):
        return None
    try:
        rel = SA.steps_file(site, layer, f"{pooling}-{seg}")
    except ValueError:
        return None
    return kit.Artifact(rel, "tensors", "cached step activations", MAKE)


def _read_steps(run: Run, art: kit.Artifact) -> tuple[Tensor, list[str], list[int]]:
    """``(acts [n, d], trace_ids, steps)`` of a step cache through :func:`kit.read`; the index is in the
    file's safetensors metadata (``StepSet.save``). :class:`kit.ArtifactProblem` when unreadable."""
    tensors = kit.read(run, art)
    try:
        from safetensors import safe_open

        with safe_open(str(kit.resolve_inside(run, art.rel)), framework="pt", device="cpu") as f:
            md = f.metadata() or {}
        desc = json.loads(md["psylens_step_set"])
        tids = [str(t) for t in desc["trace_ids"]]
        steps = [int(s) for s in desc["steps"]]
        acts = tensors["acts"]
        if acts.ndim != 2 or acts.shape[0] != len(tids) or len(steps) != len(tids):
            raise ValueError(f"acts {list(acts.shape)} for {len(tids)} trace ids and {len(steps)} steps")
    except Exception as e:  # noqa: BLE001 — one line, never a traceback
        raise kit.ArtifactProblem(art, f"`{art.rel}` has no usable step index ({kit._short(e)}); "
                                       f"re-run the step that writes it ({MAKE}).") from None
    return acts, tids, steps


# -- encoding -------------------------------------------------------------------------------------
@torch.no_grad()
def encode_steps(weights: Mapping[str, Tensor], cfg: Mapping[str, Any], acts: Float[Tensor, "n d_in"],
                 batch: int = 4096) -> Float[Tensor, "n d_sae"]:
    """Latents of ``acts`` under a saved SAELens SAE (``sae_weights.safetensors`` + ``cfg.json``), as SAELens'
    inference ``encode`` computes them: ``h = (x − b_dec·apply_b_dec_to_input) W_enc + b_enc``, then
    ``jumprelu``: ``relu(h)·[h > threshold]``; ``topk``: ``h·‖W_dec‖`` when ``rescale_acts_by_decoder_norm``,
    the top ``k`` kept and ReLU'd; ``standard``: ``relu(h)``.

    ``ValueError`` for another architecture, a run-time input normalisation (``constant_norm_rescale``,
    ``layer_norm``) or shapes that do not fit.
    """
    arch = cfg.get("architecture")
    if arch not in ARCHS:
        raise ValueError(f"SAE architecture {arch!r} is not one the page can encode ({', '.join(ARCHS)}); "
                         "open it with sae_lens.SAE.load_from_disk instead")
    norm = cfg.get("normalize_activations", "none")
    if norm in ("constant_norm_rescale", "layer_norm"):
        raise ValueError(f"the SAE normalises its input at run time ({norm!r}); the page encodes only SAEs "
                         "whose scaling is folded into the weights (as psylens saves them)")
    missing = [k for k in ("W_enc", "b_enc", "b_dec", "W_dec") + (("threshold",) if arch == "jumprelu" else ())
               if k not in weights]
    if missing:
        raise ValueError(f"the SAE weights lack {missing}; it is not a saved SAELens {arch} SAE")
    W_enc = weights["W_enc"].float()  # [d_in, d_sae]
    b_enc, b_dec = weights["b_enc"].float(), weights["b_dec"].float()
    if acts.ndim != 2 or acts.shape[1] != W_enc.shape[0]:
        raise ValueError(f"step activations {list(acts.shape)} do not fit an SAE with d_in {W_enc.shape[0]}")
    apply_b_dec = bool(cfg.get("apply_b_dec_to_input", True))
    dec_norm = weights["W_dec"].float().norm(dim=-1)  # [d_sae]
    k = cfg.get("k")
    if arch == "topk" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"a topk SAE's cfg.json needs a positive integer 'k', got {k!r}")
    out = []
    for i in range(0, acts.shape[0], batch):
        x = acts[i : i + batch].float()
        h = (x - b_dec * apply_b_dec) @ W_enc + b_enc  # [b, d_sae]
        if arch == "jumprelu":
            z = torch.relu(h) * (h > weights["threshold"].float()).float()
        elif arch == "topk":
            if cfg.get("rescale_acts_by_decoder_norm", False):
                h = h * dec_norm
            vals, idx = torch.topk(h, k=min(int(k), h.shape[1]), dim=-1)  # type: ignore[arg-type]
            z = torch.zeros_like(h).scatter(-1, idx, vals.relu())
        else:
            z = torch.relu(h)
        out.append(z)
    if not out:
        return torch.zeros((0, W_enc.shape[1]))
    return torch.cat(out)


@st.cache_data(show_spinner="Encoding the steps…", max_entries=4)
def _latents(key: tuple[tuple[str, int], ...], _weights: Mapping[str, Tensor], _cfg: Mapping[str, Any],
             _acts: Tensor) -> np.ndarray:
    """:func:`encode_steps`, cached by the absolute paths and mtimes of the step cache, weights and config."""
    return encode_steps(_weights, _cfg, _acts).numpy()


def top_features(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each step's top latent and its activation (``-1`` and 0 where no latent fires)."""
    if z.size == 0:
        return np.zeros(z.shape[0], dtype=int), np.zeros(z.shape[0])
    top = z.argmax(axis=1)
    val = z[np.arange(z.shape[0]), top]
    return np.where(val > 0, top, -1), np.where(val > 0, val, 0.0)


# -- tables ---------------------------------------------------------------------------------------
def _labels_block(features: Any) -> dict[str, dict[str, Any]]:
    return {str(k): v for k, v in kit.as_dict(kit.as_dict(features).get("labels")).items() if isinstance(v, dict)}


def _feature_list(features: Any) -> list[dict[str, Any]]:
    return [f for f in kit.as_list(kit.as_dict(features).get("features")) if isinstance(f, dict)]


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def label_table(features: Any) -> pd.DataFrame:
    """One row a behaviour label: its best latent, held-out AUROC (95% interval), the shuffled-label control
    AUROC beside it, the training AUROC it was chosen by, and the held-out positives (NaN where absent)."""
    rows = []
    for name, rec in _labels_block(features).items():
        f = _int(rec.get("feature"))
        rows.append({
            "label": name,
            "feature": f if f is not None else math.nan,
            "AUROC (held-out)": kit.num(rec.get("auroc")),
            "95% interval": kit.fmt_interval(rec.get("auroc"), kit.interval(rec, "auroc") or _ci(rec.get("auroc_ci"))),
            "control AUROC (shuffled)": kit.num(rec.get("control_auroc")),
            "train AUROC": kit.num(rec.get("train_auroc")),
            "positives": kit.num(rec.get("n_positive")),
            "held-out steps": kit.num(rec.get("n_steps")),
            "chosen on": str(rec.get("selected_on") or "—"),
        })
    cols = ["label", "feature", "AUROC (held-out)", "95% interval", "control AUROC (shuffled)", "train AUROC",
            "positives", "held-out steps", "chosen on"]
    out = pd.DataFrame(rows, columns=cols)
    for c in ("feature", "positives", "held-out steps"):  # whole numbers, blank where absent
        out[c] = pd.to_numeric(out[c]).round().astype("Int64")
    return out


def _ci(v: Any) -> tuple[float, float] | None:
    if isinstance(v, list) and len(v) == 2:
        lo, hi = kit.num(v[0]), kit.num(v[1])
        if not (math.isnan(lo) or math.isnan(hi)):
            return lo, hi
    return None


def _feature_index(features: Any) -> dict[int, dict[str, Any]]:
    out = {}
    for i, rec in enumerate(_feature_list(features)):
        j = _int(rec.get("feature"))
        out[j if j is not None else i] = rec
    return out


def feature_options(features: Any) -> list[int]:
    """Latents to offer, best first: each label's best latent (label order), then live latents by frequency."""
    index = _feature_index(features)
    best = [f for f in (_int(r.get("feature")) for r in _labels_block(features).values()) if f is not None]
    rest = sorted(index, key=lambda j: -(kit.num(index[j].get("frequency")) if not math.isnan(kit.num(index[j].get("frequency"))) else -1))
    return list(dict.fromkeys([*best, *rest]))


def feature_frame(features: Any) -> pd.DataFrame:
    """One row a latent: frequency, mean activation when on, cluster, labels it is best for, logit-lens tokens."""
    best: dict[int, list[str]] = {}
    for name, rec in _labels_block(features).items():
        f = _int(rec.get("feature"))
        if f is not None:
            best.setdefault(f, []).append(name)
    rows = []
    for j, rec in _feature_index(features).items():
        lens = [str(t) for t in kit.as_list(rec.get("logit_lens"))]
        rows.append({"feature": j, "frequency": kit.num(rec.get("frequency")),
                     "mean activation": kit.num(rec.get("mean_activation")),
                     "cluster": _int(rec.get("cluster")) if _int(rec.get("cluster")) is not None else math.nan,
                     "best for": ", ".join(best.get(j, [])), "logit lens": " ".join(repr(t) for t in lens[:8])})
    return pd.DataFrame(rows, columns=["feature", "frequency", "mean activation", "cluster", "best for", "logit lens"])


# -- steps and labels -----------------------------------------------------------------------------
def _trace_index(traces: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(t.get("id", i)): dict(t) for i, t in enumerate(traces)}


def step_labels(trace: Mapping[str, Any], segmentation: str = "sentence") -> list[dict[str, Any]]:
    """The trace's steps as the SAE saw them: ``[{"step", "start", "end", "text", "labels"}]`` (segmented with
    ``segmentation`` by ``psylens.saes.steps.trace_steps``; labelled by ``label_step`` with the prompt as
    context, as ``psylens sae train`` labels them)."""
    from psylens.saes.labels import label_step
    from psylens.saes.steps import trace_steps

    tr = trace_steps(trace, segmentation)
    prompt = trace.get("prompt") if isinstance(trace.get("prompt"), str) else None
    return [{"step": i, "start": a, "end": b, "text": tr.text[a:b], "labels": label_step(tr.text[a:b].strip(), prompt)}
            for i, (a, b) in enumerate(tr.spans)]


def _esc(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def highlight_step_html(text: str, start: int, end: int, *, color: str = "#f2b701", note: str = "") -> str:
    """``text`` (escaped) with ``text[start:end]`` in a ``<mark>``; ``note`` shown as its tooltip."""
    start, end = max(0, start), min(len(text), end)
    title = f' title="{html.escape(note, quote=True)}"' if note else ""
    return (f'<div style="line-height:1.6">{_esc(text[:start])}<mark style="background:{color}55;'
            f'border-bottom:2px solid {color}"{title}>{_esc(text[start:end])}</mark>{_esc(text[end:])}</div>')


def trace_html(text: str, steps: Sequence[Mapping[str, Any]], tops: Sequence[tuple[int, float]] | None = None) -> str:
    """The trace with each step coloured by its first behaviour label (uncoloured when it has none), the top
    latent as a superscript, labels and latent in the tooltip; the text between steps is kept as is."""
    parts, pos = [], 0
    for i, s in enumerate(steps):
        a, b = int(s["start"]), int(s["end"])
        parts.append(_esc(text[pos:a]))
        labels = list(s.get("labels") or [])
        top = tops[i] if tops is not None and i < len(tops) else None
        tip = f"step {s['step']}: {', '.join(labels) or 'no label'}"
        sup = ""
        if top is not None and top[0] >= 0:
            tip += f"; top feature {top[0]} ({top[1]:.3g})"
            sup = f'<sup style="color:#555">f{top[0]}</sup>'
        style = (f"background:{label_color(labels[0])}33;border-bottom:2px solid {label_color(labels[0])}"
                 if labels else "border-bottom:1px dotted #999")
        parts.append(f'<span style="{style}" title="{html.escape(tip, quote=True)}">{_esc(text[a:b])}</span>{sup}')
        pos = b
    parts.append(_esc(text[pos:]))
    return f'<div style="line-height:1.8">{"".join(parts)}</div>'


# -- figures --------------------------------------------------------------------------------------
def histogram_figure(values: Sequence[float] | np.ndarray, feature: int, *, labelled: Sequence[bool] | None = None,
                     label: str | None = None, bins: int = 40) -> go.Figure:
    """Histogram of the latent's activation over the steps where it fires (zeros left out; their count is in
    the title). With ``labelled`` (one bool a step) the steps with ``label`` and the rest are two overlaid
    histograms: a latent for the label sits to the right for its steps only."""
    v = np.asarray(values, dtype=float).reshape(-1)
    on = v > 0
    fig = go.Figure()
    if labelled is not None and label:
        m = np.asarray(labelled, dtype=bool).reshape(-1)
        if m.shape != v.shape:
            raise ValueError(f"{m.shape[0]} label flags for {v.shape[0]} activations; give one flag a step")
        for name, sel, color in ((f"steps labelled {label}", m, label_color(label)), ("other steps", ~m, kit.CONTROL)):
            fig.add_trace(go.Histogram(x=v[on & sel].tolist(), name=f"{name} ({int((on & sel).sum())} of {int(sel.sum())} fire)",
                                       marker_color=color, opacity=0.65, nbinsx=bins))
        fig.update_layout(barmode="overlay")
    else:
        fig.add_trace(go.Histogram(x=v[on].tolist(), name="steps where it fires", marker_color=kit.REAL, nbinsx=bins))
    kit.style(fig, f"Feature {feature}: activation where it fires ({int(on.sum())} of {v.size} steps; "
                   f"{v.size - int(on.sum())} at zero not drawn)", "activation", "steps", height=340)
    return fig


def position_figure(profile: Mapping[str, Any], feature: int) -> go.Figure:
    """Firing rate (bars) and mean activation (line, right axis) per bin of relative position in the trace."""
    edges = [kit.num(e) for e in kit.as_list(profile.get("bin_edges"))]
    rate = [kit.num(r) for r in kit.as_list(profile.get("rate"))]
    mean = [kit.num(m) for m in kit.as_list(profile.get("mean"))]
    n = len(rate)
    if n == 0 or len(edges) != n + 1:
        raise ValueError(f"a position profile needs n rates and n + 1 bin edges, got {n} and {len(edges)}")
    centers = [(edges[i] + edges[i + 1]) / 2 for i in range(n)]
    names = [f"{edges[i]:.1f}–{edges[i + 1]:.1f}" for i in range(n)]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centers, y=rate, name="firing rate", marker_color=kit.REAL, width=[0.8 / n] * n,
                         customdata=names, hovertemplate="position %{customdata}<br>rate %{y:.3f}<extra></extra>"))
    if len(mean) == n:
        fig.add_trace(go.Scatter(x=centers, y=mean, name="mean activation", mode="lines+markers", yaxis="y2",
                                 line={"color": kit.LEXICAL}, customdata=names,
                                 hovertemplate="position %{customdata}<br>mean %{y:.3g}<extra></extra>"))
    kit.style(fig, f"Feature {feature}: where in the trace it fires (0 = first step, 1 = last)",
              "relative position in the trace", "firing rate", height=320)
    fig.update_layout(yaxis2={"title": "mean activation", "overlaying": "y", "side": "right", "showgrid": False})
    fig.update_xaxes(range=[0, 1])
    return fig


def decoder_map_figure(features: Any, selected: int | None = None) -> go.Figure:
    """Latents at their 2-D decoder coordinates (``xy``), coloured by cluster; dead latents (cluster −1) grey;
    the selected latent ringed. ``ValueError`` when no latent has coordinates."""
    rows = []
    for j, rec in _feature_index(features).items():
        xy = kit.as_list(rec.get("xy"))
        if len(xy) == 2 and not any(math.isnan(kit.num(c)) for c in xy):
            c = _int(rec.get("cluster"))
            rows.append((j, kit.num(xy[0]), kit.num(xy[1]), -1 if c is None else c, kit.num(rec.get("frequency"))))
    if not rows:
        raise ValueError("no latent in features.json has 2-D coordinates (xy)")
    fig = go.Figure()
    clusters = sorted({r[3] for r in rows})
    for c in clusters:
        pts = [r for r in rows if r[3] == c]
        fig.add_trace(go.Scattergl(
            x=[p[1] for p in pts], y=[p[2] for p in pts], mode="markers", name="dead" if c < 0 else f"cluster {c}",
            marker={"color": kit.CONTROL if c < 0 else kit.emotion_color(f"cluster{c}"), "size": 7,
                    "opacity": 0.4 if c < 0 else 0.8},
            customdata=[[p[0], p[4]] for p in pts], showlegend=len(clusters) <= 12,
            hovertemplate="feature %{customdata[0]}<br>frequency %{customdata[1]:.3g}<extra>" +
                          ("dead" if c < 0 else f"cluster {c}") + "</extra>"))
    if selected is not None:
        sel = [r for r in rows if r[0] == selected]
        if sel:
            fig.add_trace(go.Scatter(x=[sel[0][1]], y=[sel[0][2]], mode="markers", name=f"feature {selected}",
                                     marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "black"}},
                                     hoverinfo="skip"))
    kit.style(fig, "Decoder map: latents by decoder direction (top-2 PCs), coloured by cosine cluster", "PC1", "PC2",
              height=420)
    return fig


# -- rendering ------------------------------------------------------------------------------------
def render(run: Run) -> None:
    st.title(TITLE)
    names = sae_names(run)
    if not names:
        st.info(f"No step SAE in this run (`{SA.DIR}/<name>/{SA.STEP_SAE}`). {MAKE}.")
        return
    name = st.selectbox("SAE", names, key="saes_name", help="the folders of RUN/saes/ written by psylens sae train") \
        if len(names) > 1 else names[0]
    arts = artifacts_for(name)
    info = kit.load(run, arts["info"])
    if info is None:
        return
    with kit.guard(arts["info"]):
        render_header(run, info, arts)
    features = kit.load(run, arts["features"])
    z_data = None
    with kit.guard("The step latents"):
        z_data = step_latents(run, info, arts)
    traces = kit.load(run, TRACES_ART, quiet=True)  # the trace viewer explains a missing or bad file
    if features is not None:
        st.divider()
        with kit.guard(arts["features"]):
            render_labels(features, arts)
        st.divider()
        with kit.guard(arts["features"]):
            render_feature(run, info, features, z_data, traces)
        st.divider()
        with kit.guard(arts["features"]):
            render_map(features)
    steering = None
    try:  # optional (only after `psylens sae steer`): silent when missing, one line when corrupt
        steering = kit.read(run, arts["steering"])
    except kit.ArtifactProblem as p:
        if p.level != "info":
            kit.explain(p)
    if steering is not None:
        st.divider()
        with kit.guard(arts["steering"]):
            render_steering(steering)
    st.divider()
    with kit.guard(TRACES_ART):
        render_traces(run, info, z_data, traces)


def steering_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row a condition of ``steering/summary.json``: the label's steps per trace, the paired ratio and
    accuracy change against no steering (with intervals), accuracy, distinct-2 and the perplexity ratio
    (the condition's texts read by the unsteered model ÷ the unsteered texts)."""
    conds = kit.as_dict(summary.get("conditions"))
    effects = kit.as_dict(summary.get("effects"))
    rows = []
    for name, c in conds.items():
        c, e = kit.as_dict(c), kit.as_dict(effects.get(name))
        acc = kit.as_dict(e.get("accuracy_diff"))
        rows.append({
            "condition": name,
            "label steps / trace": kit.fmt_interval(c.get("label_steps_per_trace"), _ci(c.get("label_steps_per_trace_ci"))),
            "ratio vs none": kit.fmt_interval(e.get("label_steps_ratio"), _ci(e.get("label_steps_ratio_ci"))),
            "accuracy": kit.fmt_interval(c.get("accuracy"), _ci(c.get("accuracy_ci"))),
            "Δ accuracy vs none": kit.fmt_interval(acc.get("diff"), _ci(acc.get("ci95")), digits=3),
            "distinct-2": kit.num(c.get("distinct_2")),
            "perplexity ratio vs none": kit.num(e.get("perplexity_ratio")),
            "traces": kit.num(c.get("n_traces")),
        })
    return pd.DataFrame(rows)


def steering_figure(summary: Mapping[str, Any]) -> go.Figure:
    """The label's steps per trace under each condition, with the bootstrap interval over traces."""
    label = str(summary.get("label", "label"))
    conds = kit.as_dict(summary.get("conditions"))
    names, means, lo, hi = [], [], [], []
    for name, c in conds.items():
        c = kit.as_dict(c)
        m = kit.num(c.get("label_steps_per_trace"))
        if math.isnan(m):
            continue
        ci = _ci(c.get("label_steps_per_trace_ci")) or (m, m)
        names.append(name), means.append(m), lo.append(m - ci[0]), hi.append(ci[1] - m)
    colors = [LABEL_COLORS.get(label, "#1f77b4") if n.startswith("feature") else "#8c8c8c" if n.startswith("random")
              else "#333333" for n in names]
    fig = go.Figure(go.Bar(x=names, y=means, marker_color=colors,
                           error_y={"type": "data", "symmetric": False, "array": hi, "arrayminus": lo}))
    fig.update_layout(title=f"{label} steps per trace by condition (95% CI over traces)",
                      xaxis_title="condition", yaxis_title=f"{label} steps per trace")
    return kit.style(fig)


def target_caption(t: dict[str, Any], control: str, control_feature: Any = None) -> str:
    """One target's verdict (``summary["target"]`` and the like) with its numbers and both controls: the random
    vector (or ablation, or clamped latent) and, when it ran, the random feature (``random_feature_ratio``)."""
    verdict = "met" if t.get("met") else "not met"
    fluency = (f"; perplexity ratio {kit.num(t.get('perplexity_ratio')):.2f} (fluent at ≤ "
               f"{t.get('max_perplexity_ratio')})" if "fluent" in t else "")
    bare = (" — the steps and accuracy bars alone hold, the text does not"
            if t.get("met_ignoring_fluency") and not t.get("met") else "")
    rf = t.get("random_feature_ratio")
    feature = (f", random feature (latent {control_feature if control_feature is not None else '?'}) "
               f"{kit.num(rf):.2f}" if rf is not None else "")
    return (f"Target ({t.get('condition')}): the label's steps at most {t.get('threshold_ratio')} of the "
            f"unsteered ones with accuracy within {t.get('threshold_accuracy')}, fluent, every control failing — "
            f"**{verdict}**{bare} (ratio {kit.num(t.get('ratio')):.2f}, {control} {kit.num(t.get('random_ratio')):.2f}"
            f"{feature}, Δ accuracy {kit.num(t.get('accuracy_diff')):+.3f}{fluency}).")


def render_steering(summary: dict[str, Any]) -> None:
    label = summary.get("label", "?")
    st.subheader(f"Feature steering: {label} with feature {summary.get('feature', '?')} at layer {summary.get('layer', '?')}")
    st.plotly_chart(steering_figure(summary), width="stretch")
    st.dataframe(steering_table(summary), hide_index=True, width="stretch")
    for key, control in (("target", "random vector"), ("target_ablate", "random direction ablated"),
                         ("target_clamp", f"latent {summary.get('control_feature', '?')} clamped")):
        t = kit.as_dict(summary.get(key))
        if t:
            st.caption(target_caption(t, control, summary.get("control_feature")))
    st.caption("Every condition generates the same tasks with the same seeds, so steering is the only difference; "
               "pairs are matched trace by trace and the intervals resample tasks. The labels are the rule "
               "labeller's (docs/saes.md gives its accuracy).")


def render_header(run: Run, info: dict[str, Any], arts: dict[str, kit.Artifact]) -> None:
    kit.warn_fields(arts["info"], info, {"layer": int, "site": str, "arch": str, "d_sae": int, "segmentation": str})
    st.caption(f"Model `{info.get('model', '?')}` · {info.get('site', '?')} layer {info.get('layer', '?')} · "
               f"{info.get('pooling', '?')} pooling over {info.get('segmentation', '?')} steps · {info.get('arch', '?')} "
               f"(saved as {info.get('saved_as', '?')}), {info.get('d_sae', '?')} latents, k {info.get('k', '?')} · "
               f"{info.get('n_train_steps', '?')} training and {info.get('n_held_out_steps', '?')} held-out steps")
    metrics = kit.load(run, arts["metrics"])
    if metrics is None:
        return
    kit.warn_fields(arts["metrics"], metrics, {"explained_variance": (int, float), "l0": (int, float),
                                               "dead_fraction": (int, float), "mse": (int, float)})
    cols = st.columns(4)
    kit.metric(cols[0], "explained variance (held-out)", metrics.get("explained_variance"),
               _ci(metrics.get("explained_variance_ci")), help="1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² over held-out steps")
    kit.metric(cols[1], "L0 (held-out)", metrics.get("l0"), _ci(metrics.get("l0_ci")), digits=1,
               help="mean number of latents on per step")
    kit.metric(cols[2], "dead fraction (held-out)", metrics.get("dead_fraction"), pct=True, digits=3,
               help="latents that fire on no held-out step (few held-out steps overstate it)")
    kit.metric(cols[3], "dead fraction (training)", metrics.get("train_dead_fraction"), pct=True, digits=3,
               help="no firing in the last dead_window training batches")


def step_latents(run: Run, info: dict[str, Any], arts: dict[str, kit.Artifact]) -> dict[str, Any] | None:
    """``{"z": [n, d_sae], "rows": {(trace, step): row}, "trace_ids", "steps"}`` for every cached step, or
    ``None`` after one line saying why (no cache, corrupt file, cache of other traces, unknown architecture)."""
    art = steps_artifact(info)
    if art is None:
        st.info("This SAE has no step cache to read (a `--tokens` SAE, or `step_sae.json` lacks site/layer/"
                "pooling/segmentation): activation histograms and per-step top features are not shown.")
        return None
    try:
        acts, tids, steps = _read_steps(run, art)
    except kit.ArtifactProblem as p:
        kit.explain(p)
        return None
    cfg = kit.load(run, arts["cfg"])
    weights = kit.load(run, arts["weights"])
    if cfg is None or weights is None:
        return None
    held = kit.as_dict(kit.load(run, arts["held_out"], quiet=True))
    known = {str(t) for t in kit.as_list(held.get("held_out")) + kit.as_list(held.get("train"))}
    if known and not set(tids) <= known:
        st.warning(f"`{art.rel}` holds steps of traces that `{arts['held_out'].rel}` does not list (another SAE at "
                   f"this layer overwrote the cache?); re-run `psylens sae train` for `{arts['info'].rel.split('/')[1]}`.")
        return None
    try:
        files = [run.file(a.rel).resolve() for a in (art, arts["weights"], arts["cfg"])]
        key = tuple((str(f), cache.mtime_ns(f)) for f in files)
        z = _latents(key, weights, cfg, acts)
    except ValueError as e:
        st.warning(f"`{arts['cfg'].rel}` and its weights cannot encode the steps ({kit._short(e)}); histograms and "
                   "per-step top features are not shown.")
        return None
    return {"z": z, "rows": {(t, s): i for i, (t, s) in enumerate(zip(tids, steps))}, "trace_ids": tids,
            "steps": steps, "held_out": {str(t) for t in kit.as_list(held.get("held_out"))}}


def render_labels(features: dict[str, Any], arts: dict[str, kit.Artifact]) -> None:
    st.subheader("Behaviour labels: each label's best feature (held-out AUROC vs shuffled control)")
    problems = [f"labels.{k}: {p}" for k, v in _labels_block(features).items() for p in kit.field_problems(v, LABEL_FIELDS)]
    if problems:
        st.warning(f"`{arts['features'].rel}` has fields of the wrong type ({'; '.join(problems[:3])}"
                   f"{'; …' if len(problems) > 3 else ''}); they are not shown — re-run the step that writes it ({MAKE}).")
    table = label_table(features)
    if table.empty:
        st.info(f"`{arts['features'].rel}` has no label AUROCs (no labels were given to the SAE).")
        return
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f")
                                for c in ("AUROC (held-out)", "control AUROC (shuffled)", "train AUROC")})
    st.caption("For each behaviour label (the rule labeller, task prompt as context) the latent with the best AUROC "
               "on the training steps is scored on held-out traces' steps; the control is the same latent with the "
               "held-out labels shuffled and should sit near 0.5. The interval resamples held-out traces. A label "
               "with few positives gives a wide interval — read it before the point estimate.")


def render_feature(run: Run, info: dict[str, Any], features: dict[str, Any], z_data: dict[str, Any] | None,
                   traces: list[dict[str, Any]] | None) -> None:
    st.subheader("One feature: activations, top steps, logit lens, position")
    options = feature_options(features)
    if not options:
        st.info("features.json lists no features.")
        return
    best_for: dict[int, list[str]] = {}
    for lab, rec in _labels_block(features).items():
        f = _int(rec.get("feature"))
        if f is not None:
            best_for.setdefault(f, []).append(lab)
    index = _feature_index(features)

    def fmt(j: int) -> str:
        rec = index.get(j, {})
        tag = f" — best for {', '.join(best_for[j])}" if j in best_for else ""
        return f"{j}{tag} (freq {kit.num(rec.get('frequency')):.3g})"

    feature = st.selectbox("Feature", options, format_func=fmt, key="saes_feature")
    rec = index.get(feature, {})
    bad = kit.field_problems(rec, FEATURE_FIELDS)
    if bad:
        st.warning(f"features.json: feature {feature} has fields of the wrong type ({'; '.join(bad[:3])}); "
                   f"they are not shown — re-run the step that writes it ({MAKE}).")
    lens = [str(t) for t in kit.as_list(rec.get("logit_lens"))]
    st.markdown(f"**Logit lens** (top tokens of `W_U (g ⊙ d_{feature})`): " +
                (" ".join(f"`{t!r}`" for t in lens) if lens else "—"))
    st.caption(f"frequency {kit.num(rec.get('frequency')):.3g} of steps · mean activation when on "
               f"{kit.num(rec.get('mean_activation')):.3g} · cluster {rec.get('cluster', '—')}")
    left, right = st.columns(2)
    with left:
        if z_data is not None and 0 <= feature < z_data["z"].shape[1]:
            label = best_for.get(feature, [None])[0]
            flags = None
            if label and traces is not None:
                flags = _label_flags(run, traces, z_data, info, label)
            st.plotly_chart(histogram_figure(z_data["z"][:, feature], feature, labelled=flags, label=label if flags else None),
                            width="stretch")
        elif z_data is not None:
            st.info(f"feature {feature} is outside the SAE's {z_data['z'].shape[1]} latents.")
    with right:
        prof = kit.as_dict(rec.get("position_profile"))
        if prof:
            with kit.guard("The position profile"):
                st.plotly_chart(position_figure(prof, feature), width="stretch")
    render_top_steps(rec, info, traces)


@st.cache_data(show_spinner="Labelling the steps…", max_entries=4)
def _labels_by_trace(key: tuple[str, int, str], _traces: list[dict[str, Any]]) -> dict[str, list[list[str]] | None]:
    """Each trace's step labels (``None`` for a trace that cannot be segmented), cached by the traces file's
    path, mtime and the segmentation."""
    out: dict[str, list[list[str]] | None] = {}
    for tid, trace in _trace_index(_traces).items():
        try:
            out[tid] = [s["labels"] for s in step_labels(trace, key[2])]
        except ValueError:
            out[tid] = None
    return out


def _label_flags(run: Run, traces: list[dict[str, Any]], z_data: dict[str, Any], info: dict[str, Any],
                 label: str) -> list[bool] | None:
    """Whether each cached step has ``label`` (``None`` when a cached trace is not in the traces file)."""
    seg = str(info.get("segmentation") or "sentence")
    path = run.file(SA.TRACES).resolve()
    labels = _labels_by_trace((str(path), cache.mtime_ns(path), seg), traces)
    flags: list[bool] = []
    for t, s in zip(z_data["trace_ids"], z_data["steps"]):
        steps = labels.get(t)
        if steps is None:
            return None
        flags.append(s < len(steps) and label in steps[s])
    return flags


def render_top_steps(rec: dict[str, Any], info: dict[str, Any], traces: list[dict[str, Any]] | None) -> None:
    tops = [t for t in kit.as_list(rec.get("top_steps")) if isinstance(t, dict)]
    if not tops:
        st.info("This feature fires on no step (dead): no top steps.")
        return
    st.markdown("**Top-activating steps**, highlighted inside their traces")
    seg = str(info.get("segmentation") or "sentence")
    by_id = _trace_index(traces or [])
    for k, top in enumerate(tops):
        tid, step, act = str(top.get("trace")), _int(top.get("step")), kit.num(top.get("activation"))
        head = f"{k + 1}. trace `{tid}`, step {step}, activation {act:.3g}"
        trace = by_id.get(tid)
        body = None
        if trace is not None and step is not None:
            try:
                steps = step_labels(trace, seg)
                if 0 <= step < len(steps):
                    s = steps[step]
                    text = str(trace.get("text") if "steps" not in trace else " ".join(x["text"] for x in steps))
                    body = highlight_step_html(text, s["start"], s["end"],
                                               note=f"step {step}: {', '.join(s['labels']) or 'no label'}")
            except ValueError:
                body = None
        if body is None:  # no trace file (or it changed): the context features.json kept
            body = (f'<div style="line-height:1.6">{_esc(str(top.get("before", "")))} <mark>{_esc(str(top.get("text", "")))}'
                    f'</mark> {_esc(str(top.get("after", "")))}</div>')
        with st.expander(head, expanded=k == 0):
            st.markdown(body, unsafe_allow_html=True)


def render_map(features: dict[str, Any]) -> None:
    st.subheader("Decoder clusters")
    try:
        fig = decoder_map_figure(features, st.session_state.get("saes_feature"))
    except ValueError:
        st.info("features.json has no 2-D decoder map (no `xy` per feature).")
        return
    st.plotly_chart(fig, width="stretch")
    clusters = kit.as_dict(features.get("clusters"))
    st.caption(f"{clusters.get('method', 'clusters of decoder columns')}; map: {clusters.get('map', 'top-2 PCs')}. "
               "Latents close together write similar directions; dead latents (grey) are projected, not clustered.")


def render_traces(run: Run, info: dict[str, Any], z_data: dict[str, Any] | None,
                  traces: list[dict[str, Any]] | None) -> None:
    st.subheader("Trace viewer: steps coloured by behaviour label, with their top feature")
    if traces is None:
        kit.load(run, TRACES_ART)  # one line: missing or unreadable
        return
    if not traces:
        st.info(f"`{SA.TRACES}` holds no readable trace.")
        return
    by_id = _trace_index(traces)
    held = z_data["held_out"] if z_data is not None else set()
    ids = list(by_id)
    tid = st.selectbox("Trace", ids, key="saes_trace",
                       format_func=lambda t: f"{t}{' (held out)' if t in held else ''} — {str(by_id[t].get('kind', ''))}")
    trace = by_id[tid]
    seg = str(info.get("segmentation") or "sentence")
    try:
        steps = step_labels(trace, seg)
    except ValueError as e:
        st.warning(f"trace `{tid}` cannot be segmented ({kit._short(e)}).")
        return
    tops: list[tuple[int, float]] | None = None
    if z_data is not None:
        rows = [z_data["rows"].get((tid, s["step"])) for s in steps]
        if all(r is not None for r in rows):
            top, val = top_features(z_data["z"][rows])
            tops = list(zip(top.tolist(), val.tolist()))
        else:
            st.info(f"trace `{tid}` has no cached step activations: top features are not shown.")
    text = str(trace.get("text")) if "steps" not in trace else " ".join(s["text"] for s in steps)
    legend = " ".join(f'<span style="background:{c}33;border-bottom:2px solid {c};padding:0 4px">{html.escape(k)}</span>'
                      for k, c in LABEL_COLORS.items())
    st.markdown(legend, unsafe_allow_html=True)
    with st.expander("Prompt", expanded=False):
        st.text(str(trace.get("prompt", "")))
    st.markdown(trace_html(text, steps, tops), unsafe_allow_html=True)
    frame = pd.DataFrame({
        "step": [s["step"] for s in steps],
        "labels": [", ".join(s["labels"]) for s in steps],
        "top feature": [(t[0] if t[0] >= 0 else None) for t in tops] if tops else [None] * len(steps),
        "activation": [t[1] for t in tops] if tops else [math.nan] * len(steps),
        "text": [s["text"].strip() for s in steps],
    })
    st.dataframe(frame, hide_index=True, width="stretch",
                 column_config={"activation": st.column_config.NumberColumn("activation", format="%.3g")})
    st.caption(f"answer {trace.get('answer', '—')} · correct {trace.get('correct', '—')} · steps segmented by "
               f"{seg}, as the SAE saw them; labels by the rule labeller (the colour is the first label; hover for all).")
