"""Atomic file writes: temp file in the same directory, fsync, then rename.

Every file psylens writes goes through here, so a crash never leaves a half-written
file under its final name. Tensors are safetensors, tables Parquet, metadata JSON:
nothing is pickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "read_json",
    "write_tensors",
    "read_tensors",
    "write_table",
    "read_table",
    "ensure_writable_dir",
]


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) and check that files can be written in it.

    Raises ``ValueError`` naming the directory and the cause when it cannot be used,
    before any work starts, so nothing is left half-written.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".psylens-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(
            f"output directory {str(p)!r} is not writable ({e.strerror or e}); "
            "choose a directory you can write to, e.g. --out ./runs/my-run"
        ) from None
    return p


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + ``os.replace``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "tolist"):  # numpy arrays and scalars
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically. Tensors and arrays become lists."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save a dict of tensors as safetensors, atomically (contiguous CPU copies)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(
            {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
            tmp,
            metadata=dict(metadata) if metadata else None,
        )
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def read_tensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(path), device=str(device))


def write_table(path: str | os.PathLike[str], table: Any) -> Path:
    """Write a pandas DataFrame as Parquet, atomically."""
    import io as _io

    buf = _io.BytesIO()
    table.to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


def read_table(path: str | os.PathLike[str]) -> Any:
    import pandas as pd

    return pd.read_parquet(path)
