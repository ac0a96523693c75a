"""Emotion lens: every token's projection on each emotion direction at a chosen layer.

Type a text, or generate from a prompt (optionally steered), and see a tokens × emotions heatmap and
a line per emotion, hover showing the token. Steering is either one emotion's direction at a scale of
the residual norm ("direction × scale"), or — when the run holds a steering sweep — the sweep's picked
vector of an emotion (``steering/vectors/<emotion>.safetensors``) with its own layer(s) and alpha as
saved, times a multiplier on that alpha. Both steer through ``SteeringVector.apply``. The directions are
the run's own: ``validation/directions.safetensors`` (24 concepts), ``probes/directions.safetensors``
or ``steering/expression_directions.safetensors`` — whichever are present, chosen on the page. The
computation is :func:`psylens.validation.lens.token_lens`.

The model is the run's own (``run.json``), loaded only when the user presses the button
(:func:`kit.shared_model`); every use of it — generation and reading — holds :data:`kit.MODEL_LOCK`,
since steering hooks are global state on a model shared by every browser session.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
import streamlit as st

from psylens.apps.views import kit
from psylens.models import prompt_special_tokens
from psylens.probes import artifacts as PA
from psylens.runs import Run
from psylens.steering import artifacts as SA
from psylens.validation import artifacts as VA

if TYPE_CHECKING:
    from psylens.steering.vector import SteeringVector

__all__ = [
    "TITLE",
    "available",
    "render",
    "DIRECTION_SOURCES",
    "present_sources",
    "heatmap_figure",
    "lines_figure",
    "read_text",
    "generate_and_read",
    "default_emotions",
    "DIRECTION_STEERING",
    "VECTOR_STEERING",
    "present_vectors",
    "load_vector",
    "scaled_vector",
    "describe_vector",
]

TITLE = "Emotion lens"

#: label -> the directions file it names, in order of preference (the first present is the default)
DIRECTION_SOURCES: dict[str, kit.Artifact] = {
    "validation (stories, 24 concepts)": kit.Artifact(
        VA.DIRECTIONS, "directions", "validated directions", "`psylens validate --model M --run RUN` writes it"),
    "probes": kit.Artifact(PA.DIRECTIONS, "directions", "probe directions", "`psylens probe` (or `psylens demo`) writes it"),
    "expression (steering)": kit.Artifact(
        SA.EXPRESSION_DIRECTIONS, "directions", "expression directions", "`psylens steer sweep --source expression` writes it"),
}
BASIC = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
STATE = "lens_result"
#: the two ways to steer a generation (the second offered only when the run holds picked vectors)
DIRECTION_STEERING = "direction × scale"
VECTOR_STEERING = "picked vector (steering sweep)"


def present_sources(run: Run) -> list[str]:
    """The labels of :data:`DIRECTION_SOURCES` whose file is in ``run``, in order of preference."""
    return [label for label, art in DIRECTION_SOURCES.items() if run.has(art.rel)]


def available(run: Run) -> bool:
    return bool(present_sources(run))


def present_vectors(run: Run) -> list[str]:
    """The emotions whose picked steering vector (``steering/vectors/<emotion>.safetensors``, written by
    ``psylens steer sweep``) is in ``run``: the basic six first, the rest by name. Files are only listed
    here; :func:`load_vector` reads one."""
    try:
        folder = kit.resolve_inside(run, SA.VECTORS)
    except ValueError:
        return []
    if not folder.is_dir():
        return []
    names = []
    for f in folder.iterdir():
        if f.suffix != ".safetensors" or not f.is_file():
            continue
        try:
            SA.vector_file(f.stem)
        except ValueError:
            continue
        names.append(f.stem)
    rank = {e: i for i, e in enumerate(BASIC)}
    return sorted(names, key=lambda e: (rank.get(e, len(BASIC)), e))


def load_vector(run: Run, emotion: str) -> SteeringVector:
    """The picked steering vector of ``emotion`` as the sweep saved it (layers, vectors, alpha, mode, …).

    ``ValueError`` naming the file when it is missing, lies outside the run or is not a steering vector.
    """
    from psylens.steering.vector import SteeringVector

    rel = SA.vector_file(emotion)
    path = kit.resolve_inside(run, rel)
    if not path.is_file():
        have = present_vectors(run)
        raise ValueError(f"no picked vector for {emotion!r} in this run (`{rel}`); the run has vectors for "
                         f"{have or 'no emotion'} — pick one of those, or run `psylens steer sweep`")
    return SteeringVector.load(path)


def scaled_vector(saved: SteeringVector, multiplier: float) -> SteeringVector:
    """``saved`` with its alpha multiplied by ``multiplier`` (1: as saved); every other field unchanged."""
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not math.isfinite(multiplier):
        raise ValueError(f"the multiplier on the saved alpha must be a finite number, got {multiplier!r}; "
                         "give e.g. 1.0 (the saved alpha) or 2.0 (twice it)")
    return saved * float(multiplier)


def _span(layers: tuple[int, ...]) -> str:
    if len(layers) > 2 and list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}–{layers[-1]}"
    return ", ".join(str(v) for v in layers)


def describe_vector(sv: SteeringVector) -> str:
    """One line: the vector's layer(s), alpha (and the sweep's scale of the residual norm), mode, site, positions."""
    meta = kit.as_dict(dict(sv.meta))
    scale = kit.num(meta.get("scale"))
    of = f" = {scale:g} × the residual norm ({meta.get('scale_reference', 'norm')})" if math.isfinite(scale) else ""
    what = "layer" if len(sv.layers) == 1 else "layers"
    return (f"{what} {_span(sv.layers)}, alpha {sv.alpha:.3g}{of}, {sv.mode} at {sv.site}, "
            f"{sv.positions} positions")


def default_emotions(emotions: tuple[str, ...] | list[str]) -> list[str]:
    """The basic six when the directions have them all, else every emotion."""
    return [e for e in BASIC if e in emotions] if all(e in emotions for e in BASIC) else list(emotions)


# -- figures (plain functions) ----------------------------------------------------------------------
def _shown(lens: Any, show_prompt: bool) -> Any:
    return lens if show_prompt else lens.without_prompt()


def _labels(tokens: tuple[str, ...] | list[str]) -> list[str]:
    return [t.replace("\n", "⏎") if t.strip() else repr(t) for t in tokens]


def heatmap_figure(lens: Any, emotions: list[str] | None = None, *, show_prompt: bool = True) -> go.Figure:
    """Tokens (x, in order) × emotions (y): each token's projection, diverging around zero; hover shows
    the token, its position and whether it belongs to the prompt."""
    lens = _shown(lens, show_prompt)
    names = list(emotions) if emotions else list(lens.emotions)
    cols = [lens.emotions.index(e) for e in names]
    z = lens.matrix[:, cols].T.tolist()  # (emotion, token)
    labels = _labels(lens.tokens)
    pos = list(range(len(labels)))
    part = ["prompt" if p else "text" for p in lens.is_prompt]
    custom = [[[labels[t], part[t]] for t in pos] for _ in names]
    finite = [abs(v) for row in z for v in row if math.isfinite(v)]
    lim = max(finite) if finite else 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=pos, y=names, customdata=custom, colorscale="RdBu", reversescale=True, zmid=0, zmin=-lim, zmax=lim,
        colorbar={"title": "projection"},
        hovertemplate="token %{x}: <b>%{customdata[0]}</b> (%{customdata[1]})<br>%{y}: %{z:.3f}<extra></extra>",
    ))
    step = max(1, len(pos) // 60)
    fig.update_xaxes(tickmode="array", tickvals=pos[::step], ticktext=labels[::step], tickangle=-60)
    fig.update_yaxes(type="category", autorange="reversed")
    kit.style(fig, f"Projection of each token on each emotion direction (layer {lens.layer})", None, "emotion",
              height=160 + 22 * len(names))
    if lens.n_prompt and show_prompt:
        fig.add_vline(x=lens.n_prompt - 0.5, line_dash="dash", line_color=kit.CONTROL)
    return fig


def lines_figure(lens: Any, emotions: list[str] | None = None, *, show_prompt: bool = True) -> go.Figure:
    """One line per emotion over the tokens; hover names the token. The prompt is shaded grey."""
    lens = _shown(lens, show_prompt)
    names = list(emotions) if emotions else list(lens.emotions)
    labels = _labels(lens.tokens)
    pos = list(range(len(labels)))
    fig = go.Figure()
    for e in names:
        col = lens.emotions.index(e)
        fig.add_trace(go.Scatter(
            x=pos, y=lens.matrix[:, col].tolist(), customdata=labels, mode="lines+markers", name=e,
            line={"color": kit.emotion_color(e)}, marker={"size": 4},
            hovertemplate=f"{e}<br>token %{{x}}: <b>%{{customdata}}</b><br>projection %{{y:.3f}}<extra></extra>",
        ))
    if lens.n_prompt and show_prompt:
        fig.add_vrect(x0=-0.5, x1=lens.n_prompt - 0.5, fillcolor=kit.CONTROL, opacity=0.12, line_width=0,
                      annotation_text="prompt", annotation_position="top left")
    kit.style(fig, "A line per emotion", "token", "projection", height=420, legend_below=True)
    return fig


# -- model use (always under the lock) --------------------------------------------------------------
def read_text(model: Any, dirs: Any, layer: int, text: str) -> Any:
    """:func:`token_lens` of ``text`` at ``layer``, holding :data:`kit.MODEL_LOCK`."""
    from psylens.validation.lens import token_lens

    with kit.MODEL_LOCK:
        return token_lens(model, text, dirs, layer)


def generate_and_read(model: Any, dirs: Any, layer: int, prompt: str, *, max_new_tokens: int = 48,
                      steer_emotion: str | None = None, scale: float = 0.5, steer_layer: int | None = None,
                      vector: SteeringVector | None = None,
                      read_steered: bool = False) -> tuple[Any, str, float | None]:
    """Generate from ``prompt`` (chat-formatted when the model has a template), optionally steered; then
    read prompt + generation at ``layer`` — by the plain model unless ``read_steered``.

    Steering is one of: ``steer_emotion``'s unit direction at ``steer_layer`` times ``scale`` × the
    prompt's mean residual norm there; or ``vector``, applied exactly as given (its own layers and
    alpha — e.g. :func:`scaled_vector` of :func:`load_vector`). Giving both is a ``ValueError``.

    Returns ``(lens, generated text, alpha or None)``. Holds :data:`kit.MODEL_LOCK` throughout: the
    steering hooks must not meet another session's forward pass.
    """
    from psylens.steering.vector import SteeringVector
    from psylens.validation.lens import mean_residual_norm, token_lens

    if vector is not None and not isinstance(vector, SteeringVector):
        raise ValueError(f"vector must be a SteeringVector (e.g. SteeringVector.load(path)), "
                         f"got {type(vector).__name__}")
    if vector is not None and steer_emotion is not None:
        raise ValueError(f"steer with one thing: got steer_emotion={steer_emotion!r} and a vector ({vector!r}); "
                         "pass steer_emotion=None to steer with the vector, or vector=None to steer with the direction")
    formatted = model.format_prompt(prompt)
    with kit.MODEL_LOCK:
        sv, alpha = vector, (None if vector is None else float(vector.alpha))
        if steer_emotion is not None:
            s_layer = layer if steer_layer is None else int(steer_layer)
            alpha = float(scale) * mean_residual_norm(model, formatted, s_layer)
            sv = SteeringVector.from_directions(dirs, steer_emotion, layers=[s_layer], alpha=alpha)
        if sv is not None:
            with sv.apply(model):
                text = model.generate(prompt, max_new_tokens=max_new_tokens)[0]
        else:
            text = model.generate(prompt, max_new_tokens=max_new_tokens)[0]
        lens = token_lens(model, text or " ", dirs, layer, prompt=formatted,
                          add_special_tokens=prompt_special_tokens(model),
                          steer=sv if read_steered else None)
    return lens, text, alpha


# -- rendering ------------------------------------------------------------------------------------
def render(run: Run) -> None:
    st.title(TITLE)
    sources = present_sources(run)
    if not sources:
        st.info("No emotion directions in this run (`" + "`, `".join(a.rel for a in DIRECTION_SOURCES.values())
                + "`). `psylens validate --model M --run RUN` (or `psylens probe`) writes them.")
        return
    c1, c2 = st.columns([2, 1])
    source = c1.selectbox("Directions", sources, key="lens_source")
    art = DIRECTION_SOURCES[source]
    dirs = kit.load(run, art)
    if dirs is None:
        return
    layers = [int(v) for v in dirs.layers]
    summary = kit.as_dict(kit.load(run, kit.Artifact(VA.SUMMARY, "json", "validation summary"), quiet=True))
    default = summary.get("layer") if summary.get("layer") in layers else layers[len(layers) // 2]
    layer = c2.selectbox("Layer", layers, index=layers.index(default), key="lens_layer")
    emotions = st.multiselect("Emotions", list(dirs.emotions), default=default_emotions(dirs.emotions), key="lens_emotions")
    spec = kit.run_model(kit.load(run, kit.RUN_META, quiet=True))
    if spec is None:
        st.info("run.json does not name the run's model, so the lens cannot load it.")
        return
    mode = st.radio("Input", ["Type a text", "Generate from a prompt"], horizontal=True, key="lens_mode")
    with kit.guard("The lens"):
        if mode == "Type a text":
            _render_text_input(run, spec, dirs, source, layer)
        else:
            _render_generate_input(run, spec, dirs, source, layer, summary)
        _render_result(emotions or list(dirs.emotions))


def _render_text_input(run: Run, spec: tuple[str, str | None], dirs: Any, source: str, layer: int) -> None:
    text = st.text_area("Text", value="My dog went missing three days ago, and this morning he was at the door.",
                        key="lens_text")
    if not st.button("Read", key="lens_read"):
        st.caption(f"Reading loads `{spec[0]}` (the run's model, from run.json) once, then it is cached.")
        return
    if not text.strip():
        st.warning("Type a text first.")
        return
    try:
        lens = read_text(kit.shared_model(*spec), dirs, int(layer), text)
    except ValueError as e:
        st.error(f"Cannot read: {e}")
        return
    st.session_state[STATE] = {"lens": lens, "key": (str(run.path), source, int(layer)), "note": ""}


def _render_generate_input(run: Run, spec: tuple[str, str | None], dirs: Any, source: str, layer: int,
                           summary: dict[str, Any]) -> None:
    prompt = st.text_area("Prompt", value="Describe what you did this morning.", key="lens_prompt")
    vectors = present_vectors(run)
    steer_by = DIRECTION_STEERING
    if vectors:  # without picked vectors the controls are exactly the direction × scale ones
        steer_by = st.radio("Steer by", [DIRECTION_STEERING, VECTOR_STEERING], horizontal=True, key="lens_steer_by")
    c1, c2, c3, c4 = st.columns(4)
    steer, steer_layer, scale = "(no steering)", int(layer), 0.5
    picked: SteeringVector | None = None
    multiplier = 1.0
    if steer_by == VECTOR_STEERING:
        steer = c1.selectbox("Picked vector", vectors, key="lens_vector")
        multiplier = c2.number_input("× saved alpha", value=1.0, step=0.25, key="lens_vector_mult")
        try:
            picked = load_vector(run, steer)
        except ValueError as e:
            st.warning(f"`{SA.vector_file(steer)}` cannot be read ({' '.join(str(e).split())}); "
                       "re-run `psylens steer sweep`, or steer by direction × scale.")
            return
        st.caption(f"The sweep's picked {steer} vector as saved: {describe_vector(picked)}.")
    else:
        steer = c1.selectbox("Steer with", ["(no steering)", *dirs.emotions], key="lens_steer")
        layers = [int(v) for v in dirs.layers]
        steer_layer = c2.selectbox("Steering layer", layers, index=layers.index(int(layer)), key="lens_steer_layer")
        cfg_scale = kit.num(kit.as_dict(summary.get("config")).get("scale"))
        scale = c3.number_input("Scale (× residual norm)", value=0.5 if math.isnan(cfg_scale) else cfg_scale,
                                step=0.1, key="lens_scale")
    n_tokens = c4.slider("New tokens", 4, 128, 40, key="lens_tokens")
    read_steered = st.checkbox("Read with the steering on (off: the plain model reads the steered text)",
                               key="lens_read_steered")
    if not st.button("Generate and read", key="lens_generate"):
        st.caption(f"Generating loads `{spec[0]}` (the run's model, from run.json) once, then it is cached.")
        return
    if not prompt.strip():
        st.warning("Type a prompt first.")
        return
    emotion = None if steer == "(no steering)" else steer
    try:
        vector = None if picked is None else scaled_vector(picked, float(multiplier))
        lens, text, alpha = generate_and_read(kit.shared_model(*spec), dirs, int(layer), prompt, max_new_tokens=n_tokens,
                                              steer_emotion=None if picked is not None else emotion, scale=float(scale),
                                              steer_layer=int(steer_layer), vector=vector, read_steered=read_steered)
    except ValueError as e:
        st.error(f"Cannot generate: {e}")
        return
    read = "; read with the steering on." if read_steered else "; read by the plain model."
    if picked is not None:
        where = ("layer " if len(picked.layers) == 1 else "layers ") + _span(picked.layers)
        note = (f"Steered with the sweep's picked {emotion} vector at {where}, alpha {alpha:.3g} "
                f"({float(multiplier):g} × the saved {picked.alpha:.3g})" + read)
    elif emotion:
        note = (f"Steered with {emotion} at layer {steer_layer}, alpha {alpha:.3g} "
                f"({scale:g} × the prompt's residual norm)" + read)
    else:
        note = "Unsteered."
    st.session_state[STATE] = {"lens": lens, "key": (str(run.path), source, int(layer)), "note": note, "text": text}


def _render_result(emotions: list[str]) -> None:
    result = st.session_state.get(STATE)
    if not isinstance(result, dict) or result.get("lens") is None:
        return
    lens = result["lens"]
    emotions = [e for e in emotions if e in lens.emotions] or list(lens.emotions)
    st.divider()
    if result.get("text") is not None:
        st.markdown("**Generated:** " + (result["text"] or "*(nothing)*"))
    if result.get("note"):
        st.caption(result["note"])
    show_prompt = True
    if lens.n_prompt:
        show_prompt = st.toggle("Show prompt tokens", value=False, key="lens_show_prompt")
    if not show_prompt and lens.n_prompt == len(lens.tokens):
        st.info("The generation is empty: only prompt tokens to show (turn on “Show prompt tokens”).")
        return
    st.plotly_chart(heatmap_figure(lens, emotions, show_prompt=show_prompt), width="stretch")
    st.plotly_chart(lines_figure(lens, emotions, show_prompt=show_prompt), width="stretch")
    st.caption(f"Projection of the residual stream after layer {lens.layer} on each unit direction (activation units).")
