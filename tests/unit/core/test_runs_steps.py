"""Runs with several models, named activation sets and per-step records; locks, leftovers and NaN."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from psylens import artifacts, io
from psylens.activations import Activations
from psylens.runs import RUN_FILE, Run, create_run, model_fingerprint, open_or_create_run, open_run


def _acts(n: int = 4, seed: int = 0) -> Activations:
    g = torch.Generator().manual_seed(seed)
    return Activations(
        tensors={"resid_post": torch.randn(n, 2, 3, generator=g)}, layers=[0, 1], labels=["a", "b"] * (n // 2),
        groups=[None] * n, ids=[f"s{i}" for i in range(n)], texts=[f"text {i}" for i in range(n)], positions="last",
    )


# ---------------------------------------------------------------- step records
def test_step_is_recorded_only_after_its_outputs_exist(tmp_path: Path) -> None:
    run = create_run(tmp_path / "r", command="psylens test")
    with run.step("analysis", {"k": 1}) as step:
        run.write_json("analysis/out.json", {"x": 1})
        step.output("analysis/out.json")
        step.note(best=3)
    rec = io.read_json(tmp_path / "r" / "steps" / "analysis.json")
    assert rec["config"] == {"k": 1} and rec["outputs"] == ["analysis/out.json"] and rec["best"] == 3
    assert rec["schema_version"] == artifacts.SCHEMA_VERSION and rec["started"] <= rec["finished"]
    assert run.steps["analysis"]["best"] == 3 and run.meta["steps"]["analysis"]["outputs"] == ["analysis/out.json"]

    # a declared output that was never written: nothing recorded
    with pytest.raises(ValueError, match="not written.*missing.json"):
        with run.step("broken", {}) as step:
            step.output("analysis/missing.json")
    assert "broken" not in run.steps and not (tmp_path / "r" / "steps" / "broken.json").exists()

    # an exception inside the block: nothing recorded, the exception propagates
    with pytest.raises(RuntimeError, match="boom"):
        with run.step("crashed", {}) as step:
            run.write_json("analysis/partial.json", {})
            step.output("analysis/partial.json")
            raise RuntimeError("boom")
    assert "crashed" not in run.steps

    # outputs outside the run are refused
    with run.step("bad-out", {}) as step:
        with pytest.raises(ValueError, match="leaves the run"):
            step.output("../elsewhere.json")
    with pytest.raises(ValueError, match="file name"):
        with run.step("../evil", {}):
            pass


def test_a_config_that_cannot_be_recorded_fails_before_the_work(tmp_path: Path) -> None:
    run = create_run(tmp_path / "r", command="c")
    ran = []
    with pytest.raises(ValueError, match="alpha is nan"):
        with run.step("s", {"alpha": float("nan")}):
            ran.append(1)
    assert ran == []


def _record_steps(path: str, prefix: str, n: int) -> None:
    from psylens.runs import open_run

    run = open_run(path)
    for i in range(n):
        run.record_step(f"{prefix}-{i:02d}", i=i)


def test_two_processes_recording_steps_lose_nothing(tmp_path: Path) -> None:
    run = create_run(tmp_path / "r", command="c")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_record_steps, args=(str(run.path), p, 20)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    files = sorted(f.name for f in (run.path / "steps").glob("*.json"))
    assert len(files) == 40
    assert len(run.steps) == 40
    assert len(io.read_json(run.path / RUN_FILE)["steps"]) == 40  # the locked mirror lost nothing either
    assert not list(run.path.glob(".*"))  # no lock or temp file left


def test_legacy_steps_in_run_json_still_read(tmp_path: Path) -> None:
    d = tmp_path / "old"
    d.mkdir()
    io.write_json(d / RUN_FILE, {"psylens_run": 1, "command": "psylens demo", "model": {"spec": "m", "n_layers": 2},
                                 "steps": {"harvest": {"finished": "2026-01-01T00:00:00+00:00", "n": 3}}})
    run = open_run(d)
    assert run.steps["harvest"]["n"] == 3
    assert run.models == {"model": {"spec": "m", "adapter": None, "fingerprint": None, "n_layers": 2}}
    run.record_step("summary", output="summary/layers.json")
    assert set(run.steps) == {"harvest", "summary"} and run.meta["finished"] == run.steps["summary"]["finished"]


# ---------------------------------------------------------------- models
def test_models_are_named_and_checked(tmp_path: Path) -> None:
    from conftest import build_tiny_hf

    base, other = build_tiny_hf("llama"), build_tiny_hf("llama")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    fp = model_fingerprint(base)
    assert fp == model_fingerprint(base) and fp != model_fingerprint(other)

    run = create_run(tmp_path / "r", command="psylens compare", model={"spec": "base-model"})
    assert run.models["model"]["spec"] == "base-model" and run.models["model"]["fingerprint"] is None
    run.add_model("model", {"spec": "base-model", "fingerprint": fp})
    run.add_model("tuned", {"spec": "tuned-model", "adapter": "lora/", "fingerprint": model_fingerprint(other)})
    assert set(run.models) == {"model", "tuned"} and run.models["model"]["fingerprint"] == fp
    assert run.meta["models"]["tuned"]["adapter"] == "lora/"
    with pytest.raises(ValueError, match="already has a model 'tuned'"):
        run.add_model("tuned", "some-other-model")
    with pytest.raises(ValueError, match="already has a model 'model'.*fingerprint"):
        run.add_model("model", {"spec": "base-model", "fingerprint": model_fingerprint(other)})
    assert io.read_json(run.path / RUN_FILE)["models"]["model"]["fingerprint"] == fp


def test_fingerprint_sees_every_weight() -> None:
    """Known answer: one changed entry anywhere (v1 sampled 16 values a tensor and missed most) changes it."""
    from conftest import build_tiny_hf

    from psylens.runs import FINGERPRINT_VERSION, _sampled_fingerprint, fingerprint_matches

    base = build_tiny_hf("llama")
    fp = model_fingerprint(base)
    assert fp.startswith(f"{FINGERPRINT_VERSION}-") and fp == model_fingerprint(base)
    name, p = max(base.named_parameters(), key=lambda kv: kv[1].numel())
    legacy = _sampled_fingerprint(base)
    flat = p.data.view(-1)
    i = 1 + flat.numel() // 16  # between two of v1's samples
    with torch.no_grad():
        flat[i] += 1e-3
    assert model_fingerprint(base) != fp, f"a change to {name}[{i}] must change the fingerprint"
    assert _sampled_fingerprint(base) == legacy  # the defect v2 fixes: v1 did not see it
    # control: swapping two different entries keeps the plain sum, not the weighted one
    with torch.no_grad():
        flat[i] -= 1e-3
        assert model_fingerprint(base) == fp
        a, b = flat[3].clone(), flat[7].clone()
        assert a != b
        flat[3], flat[7] = b, a
    assert model_fingerprint(base) != fp
    with torch.no_grad():
        flat[3], flat[7] = a, b
    # records written by either version are compared the way they were made
    assert fingerprint_matches(fp, base) and fingerprint_matches(legacy, base)
    other = build_tiny_hf("llama")
    with torch.no_grad():
        for q in other.parameters():
            q.add_(1.0)
    assert not fingerprint_matches(fp, other) and not fingerprint_matches(legacy, other)
    with pytest.raises(ValueError, match="unknown fingerprint version 'v9'"):
        fingerprint_matches("v9-0123456789abcdef", base)


def test_fingerprint_reads_every_dtype() -> None:
    """bf16, uint8 and complex128 weights: an imaginary part changed in one entry changes the fingerprint."""
    m = torch.nn.Module()
    m.a = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.complex128))
    m.b = torch.nn.Parameter(torch.randn(5).bfloat16())
    m.c = torch.nn.Parameter(torch.zeros(4, dtype=torch.uint8), requires_grad=False)
    fp = model_fingerprint(m)
    with torch.no_grad():
        m.a[1, 2] += 1j
    assert model_fingerprint(m) != fp
    with torch.no_grad():
        m.a[1, 2] -= 1j
        m.c[3] = 1
    assert model_fingerprint(m) != fp


def test_fingerprints_of_different_versions_fall_back_to_spec(tmp_path: Path) -> None:
    from conftest import build_tiny_hf

    base = build_tiny_hf("llama")
    run = create_run(tmp_path / "r", command="psylens compare", model={"spec": "m", "fingerprint": "0123456789abcdef"})
    run.add_model("model", {"spec": "m", "fingerprint": model_fingerprint(base)})  # v1 vs v2: the spec decides
    assert run.models["model"]["fingerprint"] == model_fingerprint(base)  # and the newer one is kept
    old = create_run(tmp_path / "o", command="psylens compare", model={"spec": "m", "fingerprint": "0123456789abcdef"})
    with pytest.raises(ValueError, match="spec 'm' vs 'n'"):
        old.add_model("model", {"spec": "n", "fingerprint": model_fingerprint(base)})


# ---------------------------------------------------------------- create / open
def test_create_run_never_overwrites_another_commands_record(tmp_path: Path) -> None:
    run = create_run(tmp_path / "r", command="psylens harvest --out r", model={"spec": "m"}, config={"a": 1})
    run.record_step("harvest", n=4)
    before = (run.path / RUN_FILE).read_bytes()
    with pytest.raises(ValueError, match="made by `psylens harvest`"):
        create_run(run.path, command="psylens probe --out r", model={"spec": "m"}, config={"b": 2})
    with pytest.raises(ValueError, match="another model"):
        create_run(run.path, command="psylens harvest --out r", model={"spec": "other"})
    assert (run.path / RUN_FILE).read_bytes() == before
    # adding to it keeps the record and checks the model
    with pytest.raises(ValueError, match="another model"):
        open_or_create_run(run.path, command="psylens probe", model={"spec": "other"})
    added = open_or_create_run(run.path, command="psylens probe", model={"spec": "m"})
    added.record_step("probes", best_layer=1)
    meta = open_run(run.path).meta
    assert meta["command"] == "psylens harvest --out r" and meta["config"] == {"a": 1}
    assert set(meta["steps"]) == {"harvest", "probes"}
    # a fresh directory is created
    assert open_or_create_run(tmp_path / "new", command="psylens probe", model={"spec": "m"}).meta["command"] == "psylens probe"


def test_created_and_started_are_the_command_start(tmp_path: Path) -> None:
    t0 = time.time()
    run = create_run(tmp_path / "r", command="c")
    created = run.meta["created"]
    from datetime import datetime

    assert abs(datetime.fromisoformat(created).timestamp() - t0) < 5


def test_killed_first_harvest_says_incomplete(tmp_path: Path) -> None:
    d = tmp_path / "r" / "activations"
    d.mkdir(parents=True)
    io.write_json(d / "manifest.json", {"n": 10, "shards": [{"file": "shard-00000.safetensors", "start": 0, "stop": 4}],
                                        "complete": False, "sites": ["resid_post"], "layers": [0], "positions": "last"})
    with pytest.raises(ValueError, match="incomplete — run the same command again to resume"):
        open_run(tmp_path / "r")
    run = create_run(tmp_path / "r", command="psylens harvest")
    with pytest.raises(ValueError, match="incomplete — run the same command again to resume"):
        run.activations()


# ---------------------------------------------------------------- activation sets
def test_named_activation_sets(tmp_path: Path) -> None:
    run = create_run(tmp_path / "r", command="c")
    assert run.activation_sets() == []
    legacy = _acts(4, seed=0)
    legacy.save(run.file("activations"))  # today's layout: the manifest directly in activations/
    named = _acts(6, seed=1)
    named.save(run.activations_path("base"))
    assert run.activations_path("base") == run.path / "activations" / "base"
    assert run.activation_sets() == ["default", "base"]
    assert torch.equal(run.activations()["resid_post"], legacy["resid_post"])
    assert torch.equal(run.activations("default")["resid_post"], legacy["resid_post"])
    assert torch.equal(run.activations("base")["resid_post"], named["resid_post"])
    assert torch.equal(run.activations("activations")["resid_post"], legacy["resid_post"])  # old rel-path form
    with pytest.raises(ValueError, match="no activation set 'tuned'.*default"):
        run.activations("tuned")
    with pytest.raises(ValueError, match="file name"):
        run.activations_path("../x")


# ---------------------------------------------------------------- io: locks
def _hold_lock(path: str, ready: str, seconds: float) -> None:
    from psylens.io import exclusive_lock

    with exclusive_lock(path):
        Path(ready).write_text("x")
        time.sleep(seconds)


def test_exclusive_lock_excludes_waits_and_recovers_stale(tmp_path: Path) -> None:
    lock, ready = tmp_path / ".out.lock", tmp_path / "ready"
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_hold_lock, args=(str(lock), str(ready), 3.0))
    p.start()
    try:
        for _ in range(300):
            if ready.exists():
                break
            time.sleep(0.05)
        with pytest.raises(io.LockedError, match=f"process {p.pid}"):
            with io.exclusive_lock(lock, what="the output"):
                pass
        with io.exclusive_lock(lock, timeout=60):  # waits for the holder to finish
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        p.join(30)
    assert not lock.exists()

    # a lock whose owner is dead is stale and taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": __import__("socket").gethostname()}))
    with io.exclusive_lock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    # control: a lock held by a live process (this one) is not stale
    lock.write_text(json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname()}))
    with pytest.raises(io.LockedError):
        with io.exclusive_lock(lock):
            pass
    lock.unlink()


# ---------------------------------------------------------------- io: leftovers and modes
def test_stale_tmp_files_are_cleaned_and_live_ones_kept(tmp_path: Path) -> None:
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    stale = tmp_path / f".shard-00000.safetensors.{dead}-abcd1234.tmp"
    live = tmp_path / f".shard-00001.safetensors.{os.getppid()}-abcd1234.tmp"
    old_unnamed = tmp_path / ".manifest.json.k3j4h5.tmp"  # the old mkstemp naming, from a killed write
    new_unnamed = tmp_path / ".rows.json.zzzz.tmp"
    for f in (stale, live, old_unnamed, new_unnamed):
        f.write_bytes(b"x" * 10)
    past = time.time() - 2 * io.STALE_TMP_SECONDS
    os.utime(old_unnamed, (past, past))
    io._cleaned_dirs.discard(str(tmp_path.resolve()))
    io.write_json(tmp_path / "next.json", {"a": 1})  # the next write into the directory cleans up
    left = sorted(p.name for p in tmp_path.iterdir())
    assert stale.name not in left and old_unnamed.name not in left
    assert live.name in left and new_unnamed.name in left and "next.json" in left


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_respect_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        files = [io.write_json(tmp_path / "a.json", {}), io.atomic_write_text(tmp_path / "b.txt", "x"),
                 io.write_tensors(tmp_path / "c.safetensors", {"x": torch.ones(2)})]
    finally:
        os.umask(old)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f


# ---------------------------------------------------------------- io: NaN and load errors
def test_write_json_refuses_nan_unless_mapped(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    for bad, where in (({"a": {"b": [1.0, float("nan")]}}, r"a\.b\[1\] is nan"),
                       ({"x": float("inf")}, "x is inf"),
                       ({"t": torch.tensor([1.0, float("-inf")])}, r"t\[1\] is -inf"),
                       ({"n": np.float64("nan")}, "n is nan")):
        with pytest.raises(ValueError, match=where):
            io.write_json(f, bad)
        assert not f.exists()
    io.write_json(f, {"a": [1.0, float("nan")], "t": torch.tensor([float("inf")])}, nan="null")
    assert json.loads(f.read_text()) == {"a": [1.0, None], "t": [None]}
    assert io.finite_or_none(float("nan")) is None and io.finite_or_none(np.float32("inf")) is None
    assert io.finite_or_none(2.5) == 2.5 and io.finite_or_none(torch.tensor(3.0)) == 3.0
    assert math.isnan(float("nan"))  # control: plain floats are untouched by json's default strictness
    io.write_json(f, {"ok": 1.5})
    assert json.loads(f.read_text()) == {"ok": 1.5}


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    good = io.write_tensors(tmp_path / "t.safetensors", {"x": torch.ones(100)})
    data = good.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.safetensors"):
        io.read_tensors(bad)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        io.read_tensors(tmp_path / "missing.safetensors")
    j = tmp_path / "cut.json"
    j.write_text('{"a": [1, 2')
    with pytest.raises(json.JSONDecodeError, match="cut.json"):
        io.read_json(j)
    assert torch.equal(io.read_tensors(good)["x"], torch.ones(100))  # control
