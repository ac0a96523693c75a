"""Atomic writes, the run store, unwritable outputs, and the no-pickle rule."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

import psylens
from psylens import io
from psylens.runs import RUN_FILE, Run, create_run, open_run

ROOT = Path(__file__).resolve().parents[3]
PACKAGE_DIRS = ["core", "probes", "steering", "circuits", "saes", "apps"]


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# ---------------------------------------------------------------- atomic writes
def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    f = io.atomic_write_text(tmp_path / "a.txt", "hello")
    assert f.read_text() == "hello"
    io.atomic_write_text(f, "again")
    assert f.read_text() == "again"
    io.write_json(tmp_path / "sub" / "x.json", {"t": torch.tensor([1.5, 2.0]), "p": Path("/a")})
    assert io.read_json(tmp_path / "sub" / "x.json") == {"t": [1.5, 2.0], "p": "/a"}
    io.write_tensors(tmp_path / "t.safetensors", {"x": torch.arange(6.0).reshape(2, 3).T})  # non-contiguous
    assert torch.equal(io.read_tensors(tmp_path / "t.safetensors")["x"], torch.arange(6.0).reshape(2, 3).T)
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    io.write_table(tmp_path / "t.parquet", df)
    assert io.read_table(tmp_path / "t.parquet").equals(df)
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []


@pytest.mark.parametrize("writer", ["text", "json", "tensors"])
def test_failed_rename_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str) -> None:
    target = tmp_path / "out.bin"
    write = {
        "text": lambda: io.atomic_write_text(target, "new contents"),
        "json": lambda: io.write_json(target, {"new": 1}),
        "tensors": lambda: io.write_tensors(target, {"x": torch.ones(3)}),
    }[writer]
    target.write_bytes(b"old contents")

    def boom(*a: object, **k: object) -> None:
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        write()
    assert target.read_bytes() == b"old contents"
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    write()  # and the control: without the failure the file is replaced
    assert target.read_bytes() != b"old contents"


def test_failure_while_writing_keeps_old_file(tmp_path: Path) -> None:
    target = io.atomic_write_text(tmp_path / "f.json", '{"ok": true}\n')
    with pytest.raises(TypeError):
        io.write_json(target, {"bad": object()})  # fails while serialising
    with pytest.raises(TypeError):
        io.atomic_write_bytes(target, "not bytes")  # type: ignore[arg-type]  # fails inside write()
    assert io.read_json(target) == {"ok": True}
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------- runs
def test_create_run_writes_metadata(tmp_path: Path) -> None:
    run = create_run(tmp_path / "r", command="psylens test", model={"spec": "m"}, config={"k": 1}, seed=7)
    meta = io.read_json(tmp_path / "r" / RUN_FILE)
    for key in ("command", "model", "config", "seed", "versions", "git_commit", "started", "created"):
        assert key in meta, key
    assert meta["command"] == "psylens test" and meta["model"] == {"spec": "m"}
    assert meta["config"] == {"k": 1} and meta["seed"] == 7
    assert meta["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert meta["versions"]["psylens"] == psylens.__version__ and meta["versions"]["python"]
    assert meta["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", meta["git_commit"])
    assert run.meta == meta and isinstance(run, Run)
    assert _leftovers(tmp_path / "r") == []


def test_record_step_and_reopen(tmp_path: Path) -> None:
    run = create_run(tmp_path / "r", command="one", seed=0)
    run.record_step("harvest", n=3, output="activations")
    run.record_step("summary", output="summary/layers.json")
    assert set(run.steps) == {"harvest", "summary"}
    assert run.steps["harvest"]["n"] == 3 and "finished" in run.steps["harvest"]
    assert run.meta["finished"] == run.steps["summary"]["finished"]
    before = io.read_json(tmp_path / "r" / RUN_FILE)
    with pytest.raises(ValueError, match="made by `one`"):  # another command never overwrites the record
        create_run(tmp_path / "r", command="two --flag", seed=5)
    assert io.read_json(tmp_path / "r" / RUN_FILE) == before
    again = create_run(tmp_path / "r", command="one --resume", seed=1)  # the same command resumes, keeps its steps
    assert set(again.steps) == {"harvest", "summary"} and again.meta["command"] == "one --resume"
    assert again.meta["created"] == before["created"]
    with pytest.raises(ValueError, match="exists"):
        create_run(tmp_path / "r", command="three", exist_ok=False)
    opened = open_run(tmp_path / "r")
    assert opened.meta["seed"] == 1
    opened.update_meta(note="x")
    assert open_run(tmp_path / "r").meta["note"] == "x"


def test_run_artefacts_round_trip(tmp_path: Path) -> None:
    run = create_run(tmp_path / "r", command="c")
    run.write_json("a/b.json", {"x": [1, 2]})
    run.write_tensors("t/x.safetensors", {"w": torch.eye(2)})
    run.write_table("tab/t.parquet", pd.DataFrame({"a": [1.0]}))
    assert run.read_json("a/b.json") == {"x": [1, 2]}
    assert torch.equal(run.read_tensors("t/x.safetensors")["w"], torch.eye(2))
    assert run.read_table("tab/t.parquet")["a"].tolist() == [1.0]
    assert run.has("a/b.json") and not run.has("nope")
    assert run.file("a/b.json") == tmp_path / "r" / "a" / "b.json"


def test_open_run_on_a_non_run(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    for p in (tmp_path / "plain", tmp_path / "missing"):
        with pytest.raises(ValueError, match="not a psylens run"):
            open_run(p)
    with pytest.raises(ValueError, match="not a psylens run"):
        Run(tmp_path / "plain").meta  # noqa: B018
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match="no activations"):
        create_run(tmp_path / "r", command="c").activations()


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for target in (blocker / "run", blocker / "deeper" / "run"):
        with pytest.raises(ValueError, match="not writable") as e:
            io.ensure_writable_dir(target)
        assert str(target) in str(e.value)
        with pytest.raises(ValueError, match="not writable"):
            create_run(target, command="c")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert blocker.read_text() == "x"
    ok = io.ensure_writable_dir(tmp_path / "fine" / "run")  # control
    assert ok.is_dir() and _leftovers(ok) == []


# ---------------------------------------------------------------- no pickle
def _package_sources() -> list[Path]:
    files = [p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 10
    return files


def _pickle_uses(src: str) -> list[str]:
    """Pickle imports, torch.load without weights_only=True, and pickle-based loaders in ``src``."""
    bad: list[str] = []
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bad += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in ("pickle", "cloudpickle", "dill", "joblib")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("pickle", "cloudpickle", "dill", "joblib"):
            bad.append(f"from {node.module} import")
        elif isinstance(node, ast.Call):
            fn = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if fn.endswith("torch.load") and kw.get("weights_only") != "True":
                bad.append(f"{fn}(... weights_only={kw.get('weights_only')})")
            elif fn.endswith("read_pickle") or fn.endswith("to_pickle"):
                bad.append(fn)
            elif fn.endswith(("np.load", "numpy.load")) and kw.get("allow_pickle") == "True":
                bad.append(f"{fn}(allow_pickle=True)")
    return bad


def test_pickle_checker_flags_planted_uses() -> None:
    planted = (
        "import pickle\nfrom joblib import dump\nimport torch\n"
        "torch.load('a')\ntorch.load('a', weights_only=False)\npd.read_pickle('x')\nnp.load('x', allow_pickle=True)\n"
    )
    assert len(_pickle_uses(planted)) == 6
    assert _pickle_uses("import torch\ntorch.load('a', weights_only=True)\nnp.load('x')\n") == []


def test_no_pickle_in_the_package() -> None:
    found = {}
    for f in _package_sources():
        bad = _pickle_uses(f.read_text(encoding="utf-8"))
        if bad:
            found[str(f.relative_to(ROOT))] = bad
    assert not found, found
