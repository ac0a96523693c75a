"""The ``psylens`` command line, run as a user would: a subprocess of ``.venv/bin/psylens``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "psylens"
if not EXE.exists():
    EXE = ROOT / ".venv" / "bin" / "psylens"
TIMEOUT = 300


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", NO_COLOR="1")
    return env


def psylens(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def assert_one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _commands() -> list[list[str]]:
    """Every command path of the CLI (sub-commands of groups included)."""
    import click
    import typer

    from psylens.cli import app

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: click.Command, prefix: list[str]) -> None:
        paths.append(prefix)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


def test_every_command_has_help(tmp_path: Path) -> None:
    commands = _commands()
    names = {p[0] for p in commands if p}
    assert {"models", "harvest", "demo", "explore"} <= names
    # all at once: each start-up imports the package, and the machine is slow
    procs = [
        (p, subprocess.Popen([str(EXE), *p, "--help"], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True))
        for p in commands
    ]
    for path, proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, (path, err)
        assert "Usage" in out and "Traceback" not in out + err, (path, out, err)
    assert list(tmp_path.iterdir()) == []  # --help writes nothing


def test_models_lists_aliases(tmp_path: Path) -> None:
    r = psylens("models", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "smollm2-135m-instruct" in r.stdout and "gemma-3-270m" in r.stdout
    assert "default" in r.stdout


def test_unknown_command_and_option(tmp_path: Path) -> None:
    for args in (["nope"], ["harvest", "--no-such-option"], ["harvest"]):  # harvest needs --out
        r = psylens(*args, cwd=tmp_path)
        assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr, args
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def stimuli_file(tmp_path: Path) -> Path:
    f = tmp_path / "four.jsonl"
    rows = [
        {"id": "a", "text": "The kettle clicked off.", "label": "neutral", "group": "g1"},
        {"id": "b", "text": "My train was cancelled again", "label": "anger", "group": "g1"},
        {"id": "c", "text": "She opened the letter", "label": "neutral", "group": "g2"},
        {"id": "d", "text": "The dog ran off with my sandwich", "label": "anger", "group": "g2"},
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return f


def test_unknown_model(tmp_path: Path, stimuli_file: Path) -> None:
    r = psylens("harvest", "--model", "nope", "--stimuli", str(stimuli_file), "--out", "run", cwd=tmp_path)
    assert_one_line_error(r, "nope", "smollm2-135m-instruct")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--sites", "resid_psot"], ["resid_psot", "resid_post"]),
        (["--layers", "0,99"], ["99", "0–29"]),
        (["--layers", "zero"], ["--layers"]),
        (["--positions", "first"], ["first"]),
        (["--backend", "tl"], ["tl"]),
    ],
)
def test_bad_arguments(tmp_path: Path, stimuli_file: Path, args: list[str], needles: list[str]) -> None:
    r = psylens("harvest", "--stimuli", str(stimuli_file), "--out", "run", *args, cwd=tmp_path)
    assert_one_line_error(r, *needles)
    assert not (tmp_path / "run").exists()


def test_malformed_stimuli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    r = psylens("harvest", "--stimuli", str(bad), "--out", "run", cwd=tmp_path)
    assert_one_line_error(r, f"{bad}:2")
    assert not (tmp_path / "run").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert_one_line_error(psylens("harvest", "--stimuli", str(empty), "--out", "run", cwd=tmp_path), "no stimuli")
    assert_one_line_error(psylens("harvest", "--stimuli", "missing.jsonl", "--out", "run", cwd=tmp_path), "missing.jsonl")
    assert not (tmp_path / "run").exists()


def test_unwritable_out(tmp_path: Path, stimuli_file: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = psylens("harvest", "--stimuli", str(stimuli_file), "--out", str(blocker / "run"), cwd=tmp_path)
    assert_one_line_error(r, "not writable")
    assert blocker.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "four.jsonl"]


def test_open_non_run(tmp_path: Path) -> None:
    r = psylens("explore", str(tmp_path / "missing"), cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stdout + r.stderr


def test_harvest_writes_a_run(tmp_path: Path, stimuli_file: Path) -> None:
    out = tmp_path / "run"
    r = psylens("harvest", "--stimuli", str(stimuli_file), "--layers", "0,5", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert str(out) in r.stdout and "psylens explore" in r.stdout

    import psylens as pl

    run = pl.open_run(out)
    acts = run.activations()
    assert tuple(acts["resid_post"].shape) == (4, 2, 576)
    assert acts.layers == [0, 5] and acts.ids == ["a", "b", "c", "d"]
    assert acts.labels == ["neutral", "anger", "neutral", "anger"]
    meta = run.meta
    assert meta["command"].startswith("psylens harvest") and meta["model"]["n_layers"] == 30
    assert meta["config"]["layers"] == [0, 5] and meta["seed"] == 0
    assert "harvest" in meta["steps"] and "summary" in meta["steps"]
    summary = run.read_json("summary/layers.json")
    assert summary["sites"]["resid_post"]["layers"] == [0, 5]
    assert not [p for p in out.rglob(".*")]  # no temp files
