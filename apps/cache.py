"""Cached reads of run files, underneath the explorer kit.

Pages do not call this module: they read through ``psylens.apps.views.kit.load`` (load-or-explain,
paths kept inside the run), which uses these caches.

Every cache is keyed by the file's absolute path *and* its mtime, so a file that an
analysis rewrites (atomically, hence with a new mtime) is read again on the next rerun,
while reruns that only move a widget cost nothing.

JSON and tables go through ``st.cache_data`` (each caller gets its own copy, so a page may
mutate what it reads); tensors and ``Activations`` through ``st.cache_resource`` (one
shared object, not copied): **treat those as read-only**.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from psylens.io import read_json, read_table, read_tensors
from psylens.runs import Run

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor

    from psylens.activations import Activations

__all__ = ["mtime_ns", "run_meta", "json_file", "table_file", "tensors_file", "activations"]


def mtime_ns(path: Path) -> int:
    """Modification time of ``path`` in ns (0 when it is missing): the second half of every cache key."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@st.cache_data(show_spinner=False, max_entries=256)
def _json(path: str, mtime: int) -> Any:
    return read_json(path)


@st.cache_data(show_spinner=False, max_entries=64)
def _table(path: str, mtime: int) -> pd.DataFrame:
    return read_table(path)


@st.cache_resource(show_spinner=False, max_entries=16)
def _tensors(path: str, mtime: int) -> dict[str, Tensor]:
    return read_tensors(path)


@st.cache_resource(show_spinner="Loading activations…", max_entries=4)
def _activations(path: str, mtime: int) -> Activations:
    from psylens.activations import Activations

    return Activations.load(path)


def _key(run: Run, rel: str) -> tuple[str, int]:
    p = (run.path / rel).resolve()
    return str(p), mtime_ns(p)


def json_file(run: Run, rel: str) -> Any:
    """``run.read_json(rel)``, cached by path + mtime."""
    return _json(*_key(run, rel))


def run_meta(run: Run) -> dict[str, Any]:
    """``run.meta`` (run.json), cached; ``ValueError`` when run.json is not a JSON object."""
    meta = json_file(run, "run.json")
    if not isinstance(meta, dict):
        raise ValueError(f"run.json in {str(run.path)!r} holds a {type(meta).__name__}, not a JSON object")
    return meta


def table_file(run: Run, rel: str) -> pd.DataFrame:
    """``run.read_table(rel)`` (Parquet → DataFrame), cached by path + mtime."""
    return _table(*_key(run, rel))


def tensors_file(run: Run, rel: str) -> dict[str, Tensor]:
    """``run.read_tensors(rel)``, cached by path + mtime. Shared: do not modify the tensors."""
    return _tensors(*_key(run, rel))


def activations(run: Run, rel: str = "activations") -> Activations:
    """``run.activations(rel)``, cached by path + mtime of its manifest. Shared: read-only."""
    path, _ = _key(run, rel)
    return _activations(path, mtime_ns(Path(path) / "manifest.json"))
