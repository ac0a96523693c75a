"""The run store: a run is a directory with ``run.json`` and its artefacts.

Layout (later analyses add their own sub-directories)::

    RUN/
      run.json                 what ran: command, model spec, config, seed, versions, git commit, times, steps
      activations/             harvested activations (see ``psylens.harvest``)
      summary/layers.json      first per-layer summary (the demo)
      probes/ steering/ ...    one directory per analysis

Every write is atomic (``psylens.io``); nothing is pickled.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata as _md
from pathlib import Path
from typing import Any

import torch

from psylens.io import (
    ensure_writable_dir,
    read_json,
    read_table,
    read_tensors,
    write_json,
    write_table,
    write_tensors,
)

__all__ = ["Run", "open_run", "create_run", "package_versions", "git_commit"]

RUN_FILE = "run.json"
_TRACKED = (
    "psylens", "torch", "transformers", "transformer-lens", "nnsight", "sae-lens",
    "safetensors", "scikit-learn", "numpy", "accelerate", "peft",
)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _TRACKED:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the psylens source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        r = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


@dataclass(frozen=True)
class Run:
    """A handle on a run directory. Cheap to create; reads lazily.

    Paths given to the ``read_*``/``write_*`` methods are relative to the run.
    """

    path: Path

    # -- metadata ---------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        f = self.path / RUN_FILE
        if not f.exists():
            raise ValueError(
                f"{str(self.path)!r} is not a psylens run: no {RUN_FILE}. "
                "Create one with `psylens harvest ... --out DIR` or `psylens demo`."
            )
        return read_json(f)

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        meta = self.meta
        meta.update(fields)
        write_json(self.path / RUN_FILE, meta)
        return meta

    def record_step(self, name: str, **info: Any) -> None:
        """Record that analysis step ``name`` ran (config, outputs, time) in ``run.json``."""
        meta = self.meta
        steps = meta.setdefault("steps", {})
        steps[name] = {"finished": _now(), **info}
        meta["finished"] = steps[name]["finished"]
        write_json(self.path / RUN_FILE, meta)

    @property
    def steps(self) -> dict[str, Any]:
        return dict(self.meta.get("steps", {}))

    # -- artefacts --------------------------------------------------------------------------
    def file(self, rel: str | os.PathLike[str]) -> Path:
        return self.path / rel

    def has(self, rel: str | os.PathLike[str]) -> bool:
        return (self.path / rel).exists()

    def write_json(self, rel: str, obj: Any) -> Path:
        return write_json(self.path / rel, obj)

    def read_json(self, rel: str) -> Any:
        return read_json(self.path / rel)

    def write_tensors(self, rel: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
        return write_tensors(self.path / rel, tensors, metadata)

    def read_tensors(self, rel: str) -> dict[str, torch.Tensor]:
        return read_tensors(self.path / rel)

    def write_table(self, rel: str, table: Any) -> Path:
        return write_table(self.path / rel, table)

    def read_table(self, rel: str) -> Any:
        return read_table(self.path / rel)

    def activations(self, rel: str = "activations") -> Any:
        """The ``Activations`` harvested into this run (``RUN/activations`` by default)."""
        from psylens.harvest import Activations

        return Activations.load(self.path / rel)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


def create_run(
    path: str | os.PathLike[str],
    *,
    command: str,
    model: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    exist_ok: bool = True,
) -> Run:
    """Create (or reopen) a run directory and write its ``run.json``.

    Re-creating an existing run keeps its recorded steps (so a resumed harvest or a
    later analysis adds to the same run) and updates command, model, config and seed.
    """
    p = ensure_writable_dir(path)
    f = p / RUN_FILE
    if f.exists():
        if not exist_ok:
            raise ValueError(f"run {str(p)!r} exists already; pass another --out or remove it")
        meta = read_json(f)
    else:
        meta = {"created": _now(), "steps": {}}
    meta.update(
        {
            "psylens_run": 1,
            "command": command,
            "model": model or meta.get("model"),
            "config": config or meta.get("config", {}),
            "seed": seed,
            "versions": package_versions(),
            "git_commit": git_commit(),
            "started": _now(),
            "host": {"platform": platform.platform(), "cuda": torch.cuda.is_available()},
        }
    )
    write_json(f, meta)
    return Run(p)


def open_run(path: str | os.PathLike[str]) -> Run:
    """Open an existing run for reading (notebooks, the explorer).

    >>> run = open_run("runs/demo")            # doctest: +SKIP
    >>> acts = run.activations()               # doctest: +SKIP
    """
    p = Path(path)
    if not (p / RUN_FILE).exists():
        raise ValueError(
            f"{str(p)!r} is not a psylens run (no {RUN_FILE} there). "
            "Runs are written by `psylens demo`, `psylens harvest --out DIR` or `psylens.create_run`."
        )
    return Run(p)
