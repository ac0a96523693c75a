"""What a tensor file is, said in one line when psylens cannot read it.

psylens stores tensors in safetensors only and never unpickles anything. When a user hands a
loader something else (a ``torch.save`` file, a pickle, a truncated download, a text file), the
loaders call :func:`explain` to say what the file is and why it cannot be read, instead of
safetensors' bare ``incomplete metadata`` or a misleading "needs --emotion".
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

__all__ = ["explain", "parse_json_metadata"]

_MAX_HEADER = 100 << 20  # safetensors caps its JSON header at 100 MB


def explain(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a readable safetensors file, or ``None`` when its header is sound.

    Checks the bytes only (no unpickling, no tensor reads): empty, a ``torch.save`` zip archive,
    a pickle, a header longer than the file (truncated), a header that is not JSON, or data
    shorter than the header promises.
    """
    p = Path(path)
    if not p.is_file():
        return f"{str(p)!r} does not exist or is not a file"
    size = p.stat().st_size
    if size == 0:
        return f"{str(p)!r} is empty (0 bytes): the write was interrupted or the copy failed"
    with open(p, "rb") as f:
        head = f.read(9)
        if zipfile.is_zipfile(p):
            try:
                with zipfile.ZipFile(p) as z:
                    pickled = any(n.endswith("data.pkl") for n in z.namelist())
            except (zipfile.BadZipFile, OSError):
                pickled = False
            what = "a torch.save file (a zip archive holding a pickle)" if pickled else "a zip archive"
            return (f"{str(p)!r} is {what}, not safetensors; psylens never unpickles files. Convert it where you "
                    "trust it: t = torch.load(path, weights_only=True), then save it with "
                    "SteeringVector.from_tensor(t, layers=[...]).save('v.safetensors')")
        # A safetensors header length such as 0x280 also starts with the bytes 80 02: a file whose
        # JSON header begins right after a plausible length is safetensors, never a pickle.
        n_claimed = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else 0
        plausible = 0 < n_claimed <= _MAX_HEADER and head[8:9] == b"{"
        if not plausible and head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            return (f"{str(p)!r} is a Python pickle, not safetensors; psylens never unpickles files "
                    "(they can run code). Save tensors with safetensors instead")
        if len(head) < 8:
            return f"{str(p)!r} is {size} bytes: too short for a safetensors file (truncated?)"
        n = n_claimed
        f.seek(8)
        if n > _MAX_HEADER or n == 0:
            return (f"{str(p)!r} is not a safetensors file (it starts with {head[:8]!r}; a safetensors file starts "
                    "with the length of its JSON header)")
        if 8 + n > size:
            return (f"{str(p)!r} is truncated: its header claims {n} bytes but the file has {size} "
                    "in all; write it again (or copy it again)")
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError):
            return f"{str(p)!r} has a corrupt safetensors header (not JSON)"
    if not isinstance(header, dict):
        return f"{str(p)!r} has a corrupt safetensors header (not a JSON object)"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (TypeError, KeyError, ValueError, IndexError):
        return f"{str(p)!r} has a corrupt safetensors header (bad data_offsets)"
    if 8 + n + end > size:
        return (f"{str(p)!r} is truncated: its tensors need {8 + n + end} bytes but the file has {size}; "
                "write it again (or copy it again)")
    return None


def parse_json_metadata(raw: str, where: str, what: str) -> dict:
    """``json.loads`` for a description stored in a file's metadata, with errors that name the file.

    Raises ``ValueError`` for text that is not JSON, JSON nested too deeply to parse, or JSON that
    is not an object.
    """
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise ValueError(f"{where}: the {what} is JSON nested too deeply to read; the file is corrupt or not "
                         "written by psylens") from None
    except ValueError as e:
        raise ValueError(f"{where}: the {what} is not valid JSON ({e}); the file is corrupt or not written "
                         "by psylens") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: the {what} should be a JSON object, got {type(obj).__name__}; the file is "
                         "corrupt or not written by psylens")
    return obj
