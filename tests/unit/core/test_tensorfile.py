"""psylens.tensorfile.explain: a sound safetensors file is never taken for a pickle, whatever its header length."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from psylens.tensorfile import explain


def _with_header_length(path: Path, n: int) -> Path:
    """A real safetensors file whose JSON header is padded (with spaces, as the format allows) to ``n`` bytes."""
    save_file({"v": torch.arange(4, dtype=torch.float32)}, str(path))
    raw = path.read_bytes()
    (m,) = struct.unpack("<Q", raw[:8])
    header = raw[8:8 + m].rstrip(b" ")
    assert len(header) <= n
    path.write_bytes(struct.pack("<Q", n) + header + b" " * (n - len(header)) + raw[8 + m:])
    return path


@pytest.mark.parametrize("n", [0x280, 0x380, 0x480, 0x580])
def test_header_lengths_that_start_like_a_pickle_are_safetensors(tmp_path: Path, n: int) -> None:
    p = _with_header_length(tmp_path / "v.safetensors", n)
    assert p.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # the trap
    assert torch.equal(load_file(str(p))["v"], torch.arange(4, dtype=torch.float32))
    assert explain(p) is None


def test_a_real_pickle_is_still_named(tmp_path: Path) -> None:
    """Control: the same first bytes in an actual pickle are reported as one."""
    for protocol in (2, 3, 4, 5):
        p = tmp_path / f"v{protocol}.pkl"
        p.write_bytes(pickle.dumps({"v": [1.0, 2.0]}, protocol=protocol))
        assert "pickle" in (explain(p) or ""), protocol


def test_a_truncated_padded_file_is_still_truncated(tmp_path: Path) -> None:
    p = _with_header_length(tmp_path / "v.safetensors", 0x280)
    p.write_bytes(p.read_bytes()[:-4])
    assert "truncated" in (explain(p) or "")
    assert json.loads(p.read_bytes()[8:8 + 0x280])  # the header itself is intact
