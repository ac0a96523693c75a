"""One writer per harvest output (a pid lock file), and shards verified on resume."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from psylens import io
from psylens.activations import Activations
from psylens.harvest import LOCK_FILE, check_output

TEXTS = [f"Sentence number {i} is about {w}." for i, w in enumerate(
    ["rain", "a party", "a lost dog", "the exam", "a gift", "the storm", "a letter", "the train", "dinner", "work",
     "the sea", "a song"])]


def _hold_lock(path: str, ready: str, seconds: float) -> None:
    from psylens.io import exclusive_lock

    with exclusive_lock(path):
        Path(ready).write_text("x")
        time.sleep(seconds)


def _wait_for(p: Path, seconds: float = 60) -> None:
    for _ in range(int(seconds / 0.05)):
        if p.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{p} never appeared")


def test_a_second_writer_gets_a_clear_error_and_writes_nothing(tiny_model, tmp_path: Path) -> None:
    m = tiny_model("llama")
    out, ready = tmp_path / "acts", tmp_path / "ready"
    out.mkdir()
    proc = mp.get_context("spawn").Process(target=_hold_lock, args=(str(out / LOCK_FILE), str(ready), 20.0))
    proc.start()
    try:
        _wait_for(ready)
        with pytest.raises(io.LockedError, match=rf"harvest output .*in use by process {proc.pid}"):
            m.harvest(TEXTS[:4], out=out, progress=False)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing of ours was written
    finally:
        proc.terminate()
        proc.join(30)
    # the holder was killed: its lock is stale and the next harvest takes it over (control: it succeeds)
    assert (out / LOCK_FILE).exists()
    acts = m.harvest(TEXTS[:4], out=out, progress=False)
    assert len(acts) == 4 and not (out / LOCK_FILE).exists()


_SCRIPT = textwrap.dedent(
    """
    import sys
    from psylens.models import load_model
    model_dir, out, positions, texts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    m = load_model(model_dir, device="cpu")
    try:
        m.harvest(texts, out=out, positions=positions, batch_size=1, shard_size=2, progress=False)
    except ValueError as e:
        print("REFUSED", e)
        sys.exit(3)
    print("OK")
    """
)


def test_two_processes_harvesting_into_one_output_never_mix(tiny_model, tmp_path: Path) -> None:
    m = tiny_model("llama")
    model_dir = tmp_path / "model"
    m.hf_model.save_pretrained(model_dir)
    m.tokenizer.save_pretrained(model_dir)
    script = tmp_path / "harvest_one.py"
    script.write_text(_SCRIPT)
    out = tmp_path / "shared-out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {pos: subprocess.Popen([sys.executable, str(script), str(model_dir), str(out), pos, *TEXTS],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for pos in ("last", "mean")}
    results = {pos: (p.wait(300), p.stdout.read(), p.stderr.read()) for pos, p in procs.items()}  # type: ignore[union-attr]
    ok = [pos for pos, (code, _, _) in results.items() if code == 0]
    assert ok, results
    for pos, (code, stdout, stderr) in results.items():
        assert code in (0, 3), (pos, stderr[-2000:])
        if code == 3:  # a clear one-line reason: locked by the other, or the other's (different) harvest is there
            assert "in use by process" in stdout or "already holds a different harvest" in stdout, stdout
    acts = Activations.load(out)
    assert acts.positions in ok
    ref = m.harvest(TEXTS, positions=acts.positions, batch_size=1, progress=False)
    assert torch.allclose(acts["resid_post"], ref["resid_post"], atol=1e-5)  # every row from one harvest
    other = "mean" if acts.positions == "last" else "last"
    assert not torch.allclose(acts["resid_post"], m.harvest(TEXTS, positions=other, progress=False)["resid_post"],
                              atol=1e-3)  # control: the two read-outs do differ, so a mix would show
    assert not (out / LOCK_FILE).exists()


def test_bad_shards_are_detected_and_harvested_again(tiny_model, tmp_path: Path) -> None:
    m = tiny_model("llama")
    out = tmp_path / "acts"
    ref = m.harvest(TEXTS[:6], out=out, shard_size=2, batch_size=2, progress=False)
    man = io.read_json(out / "manifest.json")
    assert all(len(s["sha256"]) == 64 and s["bytes"] == (out / s["file"]).stat().st_size for s in man["shards"])

    # control: an intact run resumes without touching a shard
    mtimes = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in man["shards"]}
    m.harvest(TEXTS[:6], out=out, shard_size=2, batch_size=2, progress=False)
    assert {f: (out / f).stat().st_mtime_ns for f in mtimes} == mtimes

    truncated, flipped = out / "shard-00000.safetensors", out / "shard-00002.safetensors"
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    raw = bytearray(flipped.read_bytes())
    raw[-3] ^= 0xFF  # same size, different content
    flipped.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="shard-00000.safetensors"):
        Activations.load(out)  # the load error names the file
    repaired = m.harvest(TEXTS[:6], out=out, shard_size=2, batch_size=2, progress=False)
    assert torch.equal(repaired["resid_post"], ref["resid_post"])
    assert (out / "shard-00001.safetensors").stat().st_mtime_ns == mtimes["shard-00001.safetensors"]  # kept
    assert truncated.stat().st_mtime_ns != mtimes["shard-00000.safetensors"]
    assert flipped.stat().st_mtime_ns != mtimes["shard-00002.safetensors"]


def test_check_output_refuses_a_different_harvest_without_writing(tiny_model, tmp_path: Path) -> None:
    m = tiny_model("llama")
    out = tmp_path / "acts"
    check_output(m, TEXTS[:2], out)  # nothing there yet: fine
    m.harvest(TEXTS[:2], out=out, progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    check_output(m, TEXTS[:2], out)  # the same harvest: fine (a resume)
    with pytest.raises(ValueError, match="different harvest"):
        check_output(m, TEXTS[:2], out, positions="mean")
    with pytest.raises(ValueError, match="different harvest"):
        check_output(m, TEXTS[:3], out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
