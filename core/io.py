"""Atomic file writes: temp file in the same directory, fsync, then rename.

Every file psylens writes goes through here, so a crash never leaves a half-written
file under its final name. Tensors are safetensors, tables Parquet, metadata JSON:
nothing is pickled.

Files are created with mode ``0o666 & ~umask`` (like ``open(..., "w")``). Temp files are named
``.<name>.<pid>-<random>.tmp``; a killed write leaves one behind, and the next write into the same
directory removes those whose owner process is gone (or, for unnamed owners, that are older than
``STALE_TMP_SECONDS``). ``exclusive_lock`` gives one writer per output (a lock file holding the pid).
JSON refuses NaN and infinities unless the caller maps them to ``null`` explicitly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "dumps_json",
    "read_json",
    "write_tensors",
    "read_tensors",
    "write_table",
    "read_table",
    "ensure_writable_dir",
    "exclusive_lock",
    "LockedError",
    "finite_or_none",
    "file_sha256",
    "clean_stale_tmp",
    "STALE_TMP_SECONDS",
]

STALE_TMP_SECONDS = 600.0  # temp files without a readable owner pid are removed after this age
_TMP_RE = re.compile(r"^\..+\.(\d+)-[0-9a-f]+\.tmp$")
_cleaned_dirs: set[str] = set()


class LockedError(ValueError):
    """Another live process holds the lock on an output (see :func:`exclusive_lock`)."""


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return False
    return True


def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        text = lock.read_text(encoding="utf-8")
        info = json.loads(text)
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def _lock_is_stale(lock: Path) -> bool:
    info = _read_lock(lock)
    if info is None:  # empty or garbled: its writer died between create and write, or is writing now
        try:
            return time.time() - lock.stat().st_mtime > 10.0
        except OSError:
            return False
    if info.get("host") not in (None, socket.gethostname()):
        return False  # another machine's process: cannot check, never steal
    pid = info.get("pid")
    return not (isinstance(pid, int) and _pid_alive(pid))


@contextmanager
def exclusive_lock(
    path: str | os.PathLike[str], *, timeout: float = 0.0, poll: float = 0.1, what: str | None = None
) -> Iterator[Path]:
    """Hold the lock file ``path`` (created with ``O_CREAT | O_EXCL``, holding this process's pid) for the block.

    A lock whose owner process is dead (same host) is stale and taken over. A live owner makes this
    wait up to ``timeout`` seconds (0: do not wait), then raise :class:`LockedError` naming the owner
    and the lock file. ``what`` names the locked thing in that message (default: the lock's directory).

    Footguns: the lock is advisory (only code that takes it is excluded) and not re-entrant — taking
    it twice in one process waits for itself. Locks on a filesystem shared between machines are
    never treated as stale (the owner's pid cannot be checked from here).
    """
    lock = Path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + max(0.0, timeout)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if _lock_is_stale(lock):
                try:
                    if _lock_is_stale(lock):  # re-checked right before removal
                        lock.unlink()
                except FileNotFoundError:
                    pass
                continue
            if time.monotonic() >= deadline:
                info = _read_lock(lock) or {}
                owner = f"process {info.get('pid')}" + (f" on {info['host']}" if info.get("host") else "")
                raise LockedError(
                    f"{what or str(lock.parent)!r} is in use by {owner} (lock file {str(lock)!r}); wait for it "
                    f"to finish or write elsewhere. If no such process is running, delete the lock file"
                ) from None
            time.sleep(poll)
            continue
        try:
            os.write(fd, json.dumps(me).encode("utf-8"))
        finally:
            os.close(fd)
        break
    try:
        yield lock
    finally:
        info = _read_lock(lock)
        if info is not None and info.get("pid") == me["pid"] and info.get("since") == me["since"]:
            try:
                lock.unlink()
            except FileNotFoundError:
                pass


def clean_stale_tmp(directory: str | os.PathLike[str], *, max_age: float = STALE_TMP_SECONDS) -> list[Path]:
    """Remove temp files left in ``directory`` by killed atomic writes; returns what was removed.

    A ``.<name>.<pid>-<random>.tmp`` file is removed when process ``pid`` is gone (and it is not this
    process); any other ``.*.tmp`` file when it is older than ``max_age`` seconds. Live writers' temp
    files are never touched.
    """
    d = Path(directory)
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(d))
    except OSError:
        return removed
    for e in entries:
        if not (e.name.startswith(".") and e.name.endswith(".tmp")) or not e.is_file(follow_symlinks=False):
            continue
        m = _TMP_RE.match(e.name)
        try:
            if m is not None:
                pid = int(m.group(1))
                stale = pid != os.getpid() and not _pid_alive(pid)
            else:
                stale = now - e.stat(follow_symlinks=False).st_mtime > max_age
            if stale:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


def _tmp_path(p: Path) -> Path:
    """A fresh temp-file name beside ``p`` (``.<name>.<pid>-<random>.tmp``), after cleaning stale ones once."""
    key = str(p.parent.resolve())
    if key not in _cleaned_dirs:
        _cleaned_dirs.add(key)
        clean_stale_tmp(p.parent)
    return p.parent / f".{p.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # no /proc: the classic (briefly process-wide) way
    os.umask(old)
    return old


def _create_tmp(p: Path) -> tuple[int, Path]:
    """Create the temp file exclusively with mode ``0o666`` (the umask applies, as for ``open``)."""
    while True:
        tmp = _tmp_path(p)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def finite_or_none(x: Any) -> Any:
    """``x`` unless it is a non-finite float (NaN, ±inf), which becomes ``None`` (JSON ``null``).

    Use it where a missing value is meaningful (a ratio with an empty denominator), so the mapping
    to ``null`` is explicit: :func:`write_json` refuses NaN otherwise.
    """
    if hasattr(x, "item") and hasattr(x, "shape") and tuple(x.shape) == ():  # numpy / torch scalars
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


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
        os.unlink(probe)  # (mkstemp is fine here: the file never survives)
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
    fd, tmp = _create_tmp(p)
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


def _non_finite(obj: Any, where: str) -> tuple[str, float] | None:
    """The first non-finite float in a JSON-ready object, with its key path (``a.b[3].c``)."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "<top level>", obj)
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = _non_finite(v, f"{where}.{k}" if where else str(k))
            if hit is not None:
                return hit
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            hit = _non_finite(v, f"{where}[{i}]")
            if hit is not None:
                return hit
    return None


def _nulled(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _nulled(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nulled(v) for v in obj]
    return obj


def dumps_json(obj: Any, *, nan: str = "error", indent: int | None = 2, path: str | os.PathLike[str] | None = None) -> str:
    """``obj`` as JSON text (tensors and arrays become lists); see :func:`write_json` for ``nan``."""
    if nan not in ("error", "null"):
        raise ValueError(f"nan={nan!r}: use 'error' (refuse NaN/inf) or 'null' (write them as null)")
    try:
        return json.dumps(obj, indent=indent, default=_json_default, allow_nan=False)
    except ValueError:
        plain = json.loads(json.dumps(obj, default=_json_default, allow_nan=True))  # tensors → lists, NaN kept
        if nan == "null":
            return json.dumps(_nulled(plain), indent=indent, allow_nan=False)
        hit = _non_finite(plain, "")
        if hit is None:
            raise
        target = f"{str(path)!r}: " if path is not None else ""
        raise ValueError(
            f"{target}{hit[0]} is {hit[1]!r}; JSON has no NaN or infinity. Map it to None explicitly "
            "(psylens.io.finite_or_none) or pass nan='null' to write non-finite numbers as null"
        ) from None


def write_json(path: str | os.PathLike[str], obj: Any, *, nan: str = "error") -> Path:
    """Write ``obj`` as indented JSON, atomically. Tensors and arrays become lists.

    ``nan="error"`` (default) refuses NaN and ±inf with a ``ValueError`` naming the key path
    (``emotions.joy.perplexity_ratio``) — strict JSON readers (browsers, ``jq``) reject them, and a
    silent NaN usually hides a bug. ``nan="null"`` writes them as ``null``: only where the caller
    means "no value".
    """
    return atomic_write_text(path, dumps_json(obj, nan=nan, path=path) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a malformed file raises ``json.JSONDecodeError`` naming the file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise json.JSONDecodeError(f"{str(path)!r} is not valid JSON (truncated or corrupt?): {e.msg}", e.doc, e.pos) from None


def write_tensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save a dict of tensors as safetensors, atomically (contiguous CPU copies)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_tmp(p)
    os.close(fd)
    try:
        save_file(
            {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata=dict(metadata) if metadata else None,
        )
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors writes 0600 whatever the umask
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return p


def read_tensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file. Every failure names the file: a missing one raises ``FileNotFoundError``,
    a truncated or foreign one ``ValueError`` (safetensors' own errors say neither)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no tensors file at {str(p)!r}" + (" (it is a directory)" if p.is_dir() else ""))
    try:
        return load_file(str(p), device=str(device))
    except Exception as e:  # SafetensorError (truncated, garbage), OSError, bad device
        raise ValueError(
            f"cannot read tensors from {str(p)!r} ({p.stat().st_size} bytes): {e}. The file is truncated or not "
            "a safetensors file; write it again (a harvest re-run repairs bad shards)"
        ) from None


def write_table(path: str | os.PathLike[str], table: Any) -> Path:
    """Write a pandas DataFrame as Parquet, atomically."""
    import io as _io

    buf = _io.BytesIO()
    table.to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


def read_table(path: str | os.PathLike[str]) -> Any:
    import pandas as pd

    return pd.read_parquet(path)
