"""The explorer kit: load-or-explain, shared figure style and colours, and the page registry.

Every page reads run files through :func:`load` (or :func:`read`, which raises instead of
drawing) with an :class:`Artifact` that names the file (from the analysis package's
``artifacts.py``), what it is, how to make it, and the newest ``schema_version`` this explorer
understands. A file that is missing, corrupt (truncated JSON/Parquet/safetensors, wrong types)
or written by a newer psylens gives **one line** on the page (``st.info`` / ``st.warning``),
never a traceback. :func:`guard` is the safety net around a section that digs into a file's
contents: anything it raises becomes one line naming the file.

Paths are resolved **inside the run only** (:func:`resolve_inside`): a path that is absolute,
climbs with ``..`` or leaves the run through a symlink is refused. Paths read *from* a file
(``steering/summary.json``'s ``directions.file``) go through the same check.

Figures use :func:`style` (one template, one legend position) and :func:`emotion_color`
(one colour per emotion on every page).

Pages: :data:`PAGE_MODULES` lists them in sidebar order; :func:`pages` imports them. A page is a
module with ``TITLE``, ``available(run)`` and ``render(run)`` (:class:`Page`).
"""

from __future__ import annotations

import importlib
import threading
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import streamlit as st

from psylens import artifacts as run_artifacts
from psylens.apps import cache

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from psylens.runs import Run

__all__ = [
    "Artifact",
    "ArtifactProblem",
    "KINDS",
    "resolve_inside",
    "read",
    "load",
    "explain",
    "guard",
    "as_dict",
    "as_list",
    "num",
    "interval",
    "fmt_interval",
    "EMOTION_COLORS",
    "REAL",
    "CONTROL",
    "SELECT",
    "EVAL",
    "LEXICAL",
    "emotion_color",
    "style",
    "Page",
    "PAGE_MODULES",
    "pages",
    "check_page",
    "RUN_META",
    "paired",
    "beats_text",
    "layer_options",
    "MODEL_LOCK",
    "run_model",
    "shared_model",
    "field_problems",
    "warn_fields",
    "metric",
    "layer_ticks",
]

KINDS = ("json", "table", "tensors", "directions", "jsonl", "activations", "probes")


# -- artifacts ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """A file (or directory) a page reads, relative to the run.

    ``kind``: how to read it — ``json`` (top-level type ``expect``, ``dict`` unless told),
    ``table`` (Parquet → DataFrame), ``tensors`` (safetensors dict), ``directions``
    (``psylens.probes.Directions``), ``jsonl`` (list of JSON objects; bad lines skipped),
    ``activations`` (a directory with ``manifest.json``), ``probes`` (``ProbeResults`` saved as
    ``<rel>.json`` + ``<rel>.safetensors``; ``rel`` has no suffix).
    ``what``: a few words for messages ("probe summary"). ``make``: the command that writes it.
    ``schema``: the newest ``schema_version`` this explorer reads (JSON objects only; ``None``: not checked).
    """

    rel: str
    kind: str = "json"
    what: str = ""
    make: str = ""
    schema: int | None = None
    expect: type | tuple[type, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Artifact kind {self.kind!r} is unknown; valid kinds: {', '.join(KINDS)}")
        if not self.rel or Path(self.rel).is_absolute():
            raise ValueError(f"Artifact path {self.rel!r} must be a non-empty path relative to the run")

    def with_rel(self, rel: str) -> Artifact:
        """The same kind of file at another path (e.g. a directions file named by a summary)."""
        return Artifact(rel, self.kind, self.what, self.make, self.schema, self.expect)

    @property
    def label(self) -> str:
        return self.what or self.rel


class ArtifactProblem(ValueError):
    """Why an artifact cannot be shown, as one line; ``level`` is ``info`` (missing) or ``warning``."""

    def __init__(self, artifact: Artifact, message: str, level: str = "warning") -> None:
        super().__init__(message)
        self.artifact = artifact
        self.message = message
        self.level = level


RUN_META = Artifact(run_artifacts.RUN_FILE, "json", "run record", "every psylens command writes it",
                    schema=run_artifacts.SCHEMA_VERSION)


def _short(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(e).__name__}: {text}" if type(e).__name__ not in text else text


def resolve_inside(run: Run, rel: str | os.PathLike[str]) -> Path:
    """``run.path / rel`` with symlinks resolved, refused unless it stays inside the run.

    ``ValueError`` for an absolute path, a path with ``..``, or one that a symlink takes outside
    the run directory. Use it for every path that comes from a file (a summary naming another file).
    """
    text = os.fspath(rel)
    p = Path(text)
    if not text or p.is_absolute() or text.startswith(("/", "\\")) or (len(text) > 1 and text[1] == ":"):
        raise ValueError(f"artifact path {text!r} is not relative to the run; psylens reads files inside the run only")
    if ".." in p.parts or ".." in text.replace("\\", "/").split("/"):
        raise ValueError(f"artifact path {text!r} climbs out with '..'; psylens reads files inside the run only")
    root = run.path.resolve()
    full = (root / p).resolve()
    if full != root and root not in full.parents:
        raise ValueError(f"artifact path {text!r} leads outside the run (a symlink?); psylens reads files inside the run only")
    return full


def _read_jsonl(path: str, mtime: int) -> list[dict[str, Any]]:
    import json

    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


@st.cache_resource(show_spinner=False, max_entries=8)
def _directions(path: str, mtime: int) -> Any:
    from psylens.probes.directions import Directions

    return Directions.load(path)


@st.cache_resource(show_spinner=False, max_entries=4)
def _probes(directory: str, name: str, mtime: int) -> Any:
    from psylens.probes.fit import ProbeResults

    return ProbeResults.load(directory, name=name)


@st.cache_data(show_spinner=False, max_entries=8)
def _jsonl(path: str, mtime: int) -> list[dict[str, Any]]:
    return _read_jsonl(path, mtime)


def _exists(path: Path, kind: str) -> bool:
    if kind == "probes":
        return path.with_name(path.name + ".json").is_file()
    if kind == "activations":
        return (path / run_artifacts.MANIFEST).is_file()
    return path.exists()


def _missing_message(art: Artifact) -> str:
    make = f" {art.make}." if art.make else ""
    return f"No {art.label} in this run (`{art.rel}`).{make}"


def _fix(art: Artifact) -> str:
    return f"re-run the step that writes it ({art.make})" if art.make else "re-run the step that writes it"


def read(run: Run, art: Artifact) -> Any:
    """The content of ``art`` in ``run`` (cached by path + mtime), or :class:`ArtifactProblem` saying why not.

    Never raises anything else: a missing file is a problem of level ``info``; an unreadable,
    wrong-typed or newer-schema file one of level ``warning``. Treat tensors, directions and
    activations as read-only (they are shared between reruns).
    """
    try:
        path = resolve_inside(run, art.rel)
    except ValueError as e:
        raise ArtifactProblem(art, f"`{art.rel}` is not read: {e}.", "warning") from None
    if not _exists(path, art.kind):
        raise ArtifactProblem(art, _missing_message(art), "info")
    try:
        if art.kind == "json":
            if path.is_dir():
                raise IsADirectoryError(f"{art.rel} is a directory")
            value = cache._json(str(path), cache.mtime_ns(path))
        elif art.kind == "table":
            value = cache._table(str(path), cache.mtime_ns(path))
        elif art.kind == "tensors":
            value = cache._tensors(str(path), cache.mtime_ns(path))
        elif art.kind == "directions":
            value = _directions(str(path), cache.mtime_ns(path))
        elif art.kind == "jsonl":
            value = _jsonl(str(path), cache.mtime_ns(path))
        elif art.kind == "activations":
            value = cache._activations(str(path), cache.mtime_ns(path / run_artifacts.MANIFEST))
        else:  # probes
            meta = path.with_name(path.name + ".json")
            value = _probes(str(path.parent), path.name, cache.mtime_ns(meta) + cache.mtime_ns(path.with_name(path.name + ".safetensors")))
    except Exception as e:  # noqa: BLE001 — the kit is the boundary: any reader error becomes one line
        raise ArtifactProblem(art, f"`{art.rel}` cannot be read ({_short(e)}); {_fix(art)}.", "warning") from None
    if art.kind == "json":
        expect = art.expect if art.expect is not None else dict
        if not isinstance(value, expect):
            names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
            raise ArtifactProblem(
                art, f"`{art.rel}` holds a {type(value).__name__} where a {names} was expected; {_fix(art)}.", "warning"
            )
        if art.schema is not None and isinstance(value, dict) and "schema_version" in value:
            version = value["schema_version"]
            if not isinstance(version, int) or isinstance(version, bool):
                raise ArtifactProblem(art, f"`{art.rel}` has a schema_version that is not a number ({version!r}); {_fix(art)}.")
            if version > art.schema:
                raise ArtifactProblem(
                    art,
                    f"`{art.rel}` was written by a newer psylens (schema {version} > {art.schema}); upgrade psylens.",
                )
    return value


def explain(problem: ArtifactProblem) -> None:
    """Draw ``problem`` as one line: ``st.info`` for a missing file, ``st.warning`` otherwise."""
    (st.info if problem.level == "info" else st.warning)(problem.message)


def load(run: Run, art: Artifact, *, quiet: bool = False) -> Any | None:
    """:func:`read`, or ``None`` after drawing the one-line reason (nothing drawn with ``quiet=True``)."""
    try:
        return read(run, art)
    except ArtifactProblem as p:
        if not quiet:
            explain(p)
        return None


@contextmanager
def guard(art: Artifact | str) -> Iterator[None]:
    """Run a section; if it raises, draw one warning naming the file whose contents it misread.

    Streamlit's own control-flow exceptions (rerun, stop) are ``BaseException`` s and pass through.
    """
    try:
        yield
    except Exception as e:  # noqa: BLE001 — a page section never shows a traceback
        if isinstance(art, Artifact):
            st.warning(f"`{art.rel}` has an unexpected shape ({_short(e)}); {_fix(art)}.")
        else:
            st.warning(f"{art} cannot be shown ({_short(e)}).")


# -- typed access to JSON that may hold anything ----------------------------------------------------
def as_dict(value: Any) -> dict[str, Any]:
    """``value`` when it is a dict, else ``{}``."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` when it is a list, else ``[]``."""
    return value if isinstance(value, list) else []


def num(value: Any) -> float:
    """A JSON number as float; ``nan`` for anything else (bools, strings, None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def interval(container: Any, key: str) -> tuple[float, float] | None:
    """The 95% interval recorded beside ``container[key]``, or ``None`` (old runs have none).

    Looks for ``key + "_ci95"`` (``{"success": 0.19, "success_ci95": [0.11, 0.28]}``), then
    ``ci95[key]`` (``{"ci95": {"success": [lo, hi]}}``), ``key`` itself when it is ``[lo, hi]``
    (a ``baselines_ci95`` block), then, for a block holding one rate, ``ci95`` itself
    (``{"success": 0.19, "ci95": [lo, hi]}``, as ``psylens steer sweep`` writes per emotion).
    """
    d = as_dict(container)
    for cand in (d.get(f"{key}_ci95"), as_dict(d.get("ci95")).get(key), as_dict(d.get(key)).get("ci95"),
                 d.get(key) if isinstance(d.get(key), list) else None,
                 d.get("ci95") if isinstance(d.get("ci95"), list) else None):
        if isinstance(cand, (list, tuple)) and len(cand) == 2:
            lo, hi = num(cand[0]), num(cand[1])
            if not (math.isnan(lo) or math.isnan(hi)):
                return lo, hi
    return None


def fmt_interval(value: Any, ci: tuple[float, float] | None, *, pct: bool = False, digits: int = 2) -> str:
    """``0.19 [0.11, 0.28]`` (``19% [11%, 28%]`` with ``pct``); ``—`` when ``value`` is not a number."""
    v = num(value)
    if math.isnan(v):
        return "—"

    def f(x: float) -> str:
        return f"{x:.{max(digits - 2, 0)}%}" if pct else f"{x:.{digits}f}"

    return f(v) if ci is None else f"{f(v)} [{f(ci[0])}, {f(ci[1])}]"


# -- figures ---------------------------------------------------------------------------------------
EMOTION_COLORS: dict[str, str] = {
    "anger": "#d62728",
    "disgust": "#8c6d31",
    "fear": "#9467bd",
    "joy": "#f2b701",
    "sadness": "#1f77b4",
    "surprise": "#17becf",
    "neutral": "#7f7f7f",
}
REAL = "#1f77b4"  # the measured curve
CONTROL = "#9a9a9a"  # shuffled labels, chance, baselines
SELECT = "#2ca02c"
EVAL = "#d62728"
LEXICAL = "#ff7f0e"  # the bag-of-words baseline
_EXTRA = ("#e377c2", "#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173")
TEMPLATE = "plotly_white"


def emotion_color(name: str) -> str:
    """The colour of emotion ``name`` on every page (a stable fallback for other labels)."""
    if name in EMOTION_COLORS:
        return EMOTION_COLORS[name]
    return _EXTRA[sum(map(ord, str(name))) % len(_EXTRA)]


def style(fig: go.Figure, title: str = "", x: str | None = None, y: str | None = None, *, height: int = 380,
          legend_below: bool = False) -> go.Figure:
    """The explorer's look: one template, margins, a horizontal legend (above, or below the plot)."""
    legend = ({"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0.0} if legend_below
              else {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1.0})
    fig.update_layout(template=TEMPLATE, title=title, height=height, legend=legend,
                      margin={"l": 10, "r": 10, "t": 60 if not legend_below else 40, "b": 10})
    if x is not None:
        fig.update_layout(xaxis_title=x)
    if y is not None:
        fig.update_layout(yaxis_title=y)
    return fig


# -- pages -----------------------------------------------------------------------------------------
class Page(Protocol):
    """What the explorer expects of a page module."""

    TITLE: str

    def available(self, run: Run) -> bool: ...

    def render(self, run: Run) -> None: ...


# Sidebar order. A name is a module of psylens.apps.views; a module object is taken as is (tests, plugins).
PAGE_MODULES: list[str | ModuleType] = ["overview", "probes", "steering", "lens", "validation", "circuits", "saes", "compare"]


def pages() -> list[ModuleType]:
    """The page modules of :data:`PAGE_MODULES`, imported, in order (each checked by :func:`check_page`)."""
    out = []
    for entry in PAGE_MODULES:
        module = importlib.import_module(f"psylens.apps.views.{entry}") if isinstance(entry, str) else entry
        check_page(module)
        out.append(module)
    return out


def check_page(page: ModuleType) -> None:
    """``TypeError`` naming what a page module lacks (TITLE, available, render)."""
    missing = [n for n in ("TITLE", "available", "render") if not hasattr(page, n)]
    if missing:
        raise TypeError(f"page module {page.__name__} lacks {missing}; a page defines TITLE, available(run), render(run)")
    if not isinstance(page.TITLE, str) or not page.TITLE.strip():
        raise TypeError(f"page module {page.__name__}: TITLE must be a non-empty str, got {page.TITLE!r}")


def layer_options(*layer_lists: Sequence[Any]) -> list[int]:
    """The sorted union of integer layers in several lists (non-integers dropped)."""
    out: set[int] = set()
    for layers in layer_lists:
        for v in layers or []:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer():
                out.add(int(v))
    return sorted(out)


def paired(container: Any, name: str) -> dict[str, Any] | None:
    """The paired-difference block for "beats ``name``" (``{"diff", "ci95": [lo, hi], "beats", "n"}``), or ``None``.

    Looked up as ``vs[name]`` (what ``psylens steer sweep`` writes), ``vs_<name>``, ``<name>_diff``, ``beats_<name>`` (when a dict), ``paired[name]``,
    ``diffs[name]``. Old runs have none: their boolean ``beats_<name>`` compares point estimates only.
    """
    d = as_dict(container)
    for cand in (as_dict(d.get("vs")).get(name), d.get(f"vs_{name}"), d.get(f"{name}_diff"), d.get(f"beats_{name}"), as_dict(d.get("paired")).get(name),
                 as_dict(d.get("diffs")).get(name), as_dict(d.get("paired_diff")).get(name)):
        if isinstance(cand, dict) and interval(cand, "diff") is not None:
            return cand
    return None


def beats_text(container: Any, name: str) -> str:
    """``✓ +0.25 [0.05, 0.45]`` when the paired interval excludes zero, ``✗ …`` when not, and for old
    runs without an interval ``(no interval)`` after the point-estimate verdict — never a bare tick."""
    block = paired(container, name)
    if block is not None:
        lo, hi = interval(block, "diff")  # type: ignore[misc]
        diff = num(block.get("diff"))
        mark = "✓" if lo > 0 else "✗"
        return f"{mark} {diff:+.2f} [{lo:+.2f}, {hi:+.2f}]" if not math.isnan(diff) else f"{mark} [{lo:+.2f}, {hi:+.2f}]"
    old = as_dict(container).get(f"beats_{name}")
    if isinstance(old, bool):
        return f"{'higher' if old else 'not higher'} (no interval)"
    return "—"


# -- the one model the explorer may load --------------------------------------------------------------
MODEL_LOCK = threading.Lock()
"""Held around every use of a cached model: steering (attach + generate + remove) and probe reads.

Footgun: the model from :func:`shared_model` is one object for every browser session, and steering
hooks are global state on it. Without this lock one session's steering would leak into another's
generation or probe read. Hold it for the whole ``with sv.apply(model): model.generate(...)``.
"""


def run_model(meta: Any) -> tuple[str, str | None, str | None] | None:
    """``(spec, adapter, dtype)`` of the run's model from ``run.json``'s own record, or ``None``.

    Reads ``models["model"]`` (or the only entry of ``models``), else ``model`` (dict with ``spec``, or a
    str). Never takes a model named by an analysis summary: a summary could name anything. ``dtype`` is the one
    the run was made in (``"float32"``; ``None`` for runs that predate the record, or an unknown name), so that
    the explorer reads the same numbers on a GPU, where the default would be bfloat16.
    """
    from psylens.models import DTYPES

    d = as_dict(meta)
    models = as_dict(d.get("models"))
    entry: Any = models.get("model") if "model" in models else (next(iter(models.values())) if len(models) == 1 else None)
    if entry is None:
        entry = d.get("model")
    if isinstance(entry, str) and entry:
        return entry, None, None
    if isinstance(entry, dict) and isinstance(entry.get("spec"), str) and entry["spec"]:
        adapter = entry.get("adapter")
        dtype = entry.get("dtype")
        return (entry["spec"], adapter if isinstance(adapter, str) and adapter else None,
                dtype if isinstance(dtype, str) and dtype in DTYPES else None)
    return None


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def shared_model(spec: str, adapter: str | None = None, dtype: str | None = None) -> Any:
    """``load_model(spec, adapter=adapter, dtype=dtype, boot_bridge=False)``, once per (spec, adapter, dtype); shared
    by every session — use it only while holding :data:`MODEL_LOCK`."""
    from psylens.models import load_model

    return load_model(spec, adapter=adapter, dtype=dtype, boot_bridge=False)


_NUMBER = (int, float)


def field_problems(obj: Any, spec: dict[str, type | tuple[type, ...]]) -> list[str]:
    """The fields of ``obj`` present with the wrong JSON type, as ``"best_layer is a str (int expected)"``.

    ``spec`` maps field → expected type(s); absent or ``null`` fields are not problems (old runs lack
    new fields). ``bool`` never counts as a number.
    """
    out = []
    for key, expected in spec.items():
        if not isinstance(obj, dict) or obj.get(key) is None:
            continue
        value = obj[key]
        types = expected if isinstance(expected, tuple) else (expected,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            names = " or ".join("number" if t is float else t.__name__ for t in types)
            out.append(f"`{key}` is a {type(value).__name__} ({names} expected)")
    return out


def warn_fields(art: Artifact, obj: Any, spec: dict[str, type | tuple[type, ...]]) -> bool:
    """Draw one warning naming the wrong-typed fields of ``obj`` (the page goes on, showing what it can).
    Returns whether all fields were fine."""
    problems = field_problems(obj, spec)
    if problems:
        shown = "; ".join(problems[:4]) + ("; …" if len(problems) > 4 else "")
        st.warning(f"`{art.rel}` has fields of the wrong type ({shown}); they are not shown — {_fix(art)}.")
    return not problems


def metric(where: Any, label: str, value: Any, ci: tuple[float, float] | None = None, *, pct: bool = False,
           digits: int = 2, help: str | None = None) -> None:
    """``st.metric`` with the point estimate, and its 95% interval in a caption beneath it (a metric's
    big font cuts "0.19 [0.11, 0.28]" in a narrow column). ``where``: ``st`` or a column."""
    where.metric(label, fmt_interval(value, None, pct=pct, digits=digits), help=help)
    if ci is not None:
        where.caption(f"95% interval {fmt_interval(value, ci, pct=pct, digits=digits)}")


def layer_ticks(fig: go.Figure, layers: Sequence[Any], axis: str = "x") -> go.Figure:
    """Whole-number ticks on a layer axis (plotly would label 3 layers 0, 0.5, 1, 1.5, 2)."""
    values = layer_options(list(layers))
    if values:
        step = max(1, len(values) // 15)
        (fig.update_xaxes if axis == "x" else fig.update_yaxes)(tickmode="array", tickvals=values[::step])
    return fig
