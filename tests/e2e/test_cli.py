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


def _start(cmd: list[str], cwd: Path) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Traceback" not in out, out
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr  # one line, the last thing printed
    # anything before it can only be the model-loading progress bar (errors that need the model)
    assert all(ln.startswith("Loading weights") for ln in lines[:-1]), r.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def _commands() -> list[list[str]]:
    """Every command path of the CLI (sub-commands of groups included)."""
    import typer

    from psylens.cli import app

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd, prefix: list[str]) -> None:  # typer may vendor its own click: duck-type groups
        paths.append(prefix)
        if isinstance(getattr(cmd, "commands", None), dict):
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])

    walk(root, [])
    return paths


ROWS = [
    {"id": "a", "text": "The kettle clicked off.", "label": "neutral", "group": "g1"},
    {"id": "b", "text": "My train was cancelled again", "label": "anger", "group": "g1"},
    {"id": "c", "text": "She opened the letter", "label": "neutral", "group": "g2"},
    {"id": "d", "text": "The dog ran off with my sandwich", "label": "anger", "group": "g2"},
]

_HELP_ALL = """
import contextlib, io, json, sys
from psylens.cli import main
results = []
for path in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*path, "--help"])
    results.append([path, rc, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


_MAIN_EACH = """
import contextlib, io, json, os, sys
from pathlib import Path
from psylens.cli import main
results, root = {}, Path.cwd().parent
for name, args in json.loads(sys.argv[1]).items():
    (root / name).mkdir(exist_ok=True)
    os.chdir(root / name)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    results[name] = [rc, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with input files; every CLI run gets its own sub-directory as cwd."""
    root = tmp_path_factory.mktemp("cli")
    (root / "four.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    (root / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n', encoding="utf-8")
    (root / "a-file").write_text("x")
    return root


@pytest.fixture(scope="module")
def runs(ws: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every CLI process of this module, started at once (each start-up costs seconds here)."""
    from psylens.models import DEFAULT_MODEL, _resolve

    _resolve(DEFAULT_MODEL)  # build the model cache first: a first-ever load logs its dequantization
    four, bad, blocker = str(ws / "four.jsonl"), str(ws / "bad.jsonl"), str(ws / "a-file")
    harvest = ["harvest", "--stimuli", four, "--out", "run"]
    jobs = {
        "help": [str(EXE), "--help"],
        "help_all": [sys.executable, "-c", _HELP_ALL, json.dumps(_commands())],
        "models": [str(EXE), "models"],
        # one bad input of each kind through the installed script (usage error; ValueError) ...
        "no_such_command": [str(EXE), "nope"],
        "unknown_model": [str(EXE), "harvest", "--model", "nope", "--stimuli", four, "--out", "run"],
        # ... the others through the script's main() in one process, each in its own directory
        "errors": [sys.executable, "-c", _MAIN_EACH, json.dumps({
            "bad_site": [*harvest, "--sites", "resid_psot"],
            "bad_layer": [*harvest, "--layers", "0,99"],
            "malformed": ["harvest", "--stimuli", bad, "--out", "run"],
            "unwritable": ["harvest", "--stimuli", four, "--out", str(Path(blocker) / "run")],
        })],
        "harvest": [str(EXE), *harvest, "--layers", "0,5"],
    }
    procs = {name: _start(cmd, ws / name) for name, cmd in jobs.items()}
    done = {name: _finish(p) for name, p in procs.items()}
    errors = done.pop("errors")
    assert errors.returncode == 0, errors.stderr
    for name, (rc, out, err) in json.loads(errors.stdout.splitlines()[-1]).items():
        done[name] = subprocess.CompletedProcess(name, rc, out, err)
    return done


def test_every_command_has_help(runs, ws: Path) -> None:
    commands = _commands()
    names = {p[0] for p in commands if p}
    assert {"models", "harvest", "demo", "explore"} <= names
    r = runs["help"]  # the installed script itself
    assert r.returncode == 0 and "Usage" in r.stdout and "Traceback" not in r.stdout + r.stderr
    for name in names:
        assert name in r.stdout
    # every command and sub-command, through the script's main() in one process
    r = runs["help_all"]
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout.splitlines()[-1])
    assert [p for p, *_ in results] == commands
    for path, rc, out, err in results:
        assert rc == 0, (path, err)
        assert "Usage" in out and "Traceback" not in out + err, (path, out, err)
    assert list((ws / "help").iterdir()) == [] and list((ws / "help_all").iterdir()) == []  # --help writes nothing


def test_models_lists_aliases(runs) -> None:
    r = runs["models"]
    assert r.returncode == 0, r.stderr
    assert "smollm2-135m-instruct" in r.stdout and "gemma-3-270m" in r.stdout  # whole, even at 80 columns
    assert "default" in r.stdout


@pytest.mark.parametrize(
    "name, needles",
    [
        ("no_such_command", ["nope"]),
        ("unknown_model", ["nope", "smollm2-135m-instruct", "gemma-3-270m"]),
        ("bad_site", ["resid_psot", "resid_post", "mlp_post"]),
        ("bad_layer", ["99", "0–29"]),
        ("malformed", ["bad.jsonl:2"]),
        ("unwritable", ["not writable", "a-file"]),
    ],
)
def test_errors_are_one_line_and_write_nothing(runs, ws: Path, name: str, needles: list[str]) -> None:
    assert_one_line_error(runs[name], *needles)
    assert runs[name].returncode == (2 if name == "no_such_command" else 1)
    assert list((ws / name).iterdir()) == []  # no run directory, not even an empty one
    assert (ws / "a-file").read_text() == "x"


def run_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """``main(args)`` in this process: the same code path as the script, without its start-up time."""
    from psylens.cli import main

    rc = main(args)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out.out, out.err)


def test_more_errors_in_process(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    four, out = str(ws / "four.jsonl"), str(tmp_path / "run")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    cases = [
        (["harvest", "--no-such-option", "--out", out], ["--no-such-option"], 2),
        (["harvest"], ["--out"], 2),
        (["harvest", "--stimuli", four, "--out", out, "--layers", "zero"], ["--layers"], 1),
        (["harvest", "--stimuli", four, "--out", out, "--positions", "first"], ["first", "last"], 1),
        (["harvest", "--stimuli", four, "--out", out, "--backend", "tl"], ["tl", "nnsight"], 1),
        (["harvest", "--stimuli", str(empty), "--out", out], ["no stimuli"], 1),
        (["harvest", "--stimuli", str(tmp_path / "missing.jsonl"), "--out", out], ["missing.jsonl"], 1),
        (["demo", "--skip", "harvest"], ["--skip"], 1),
        (["explore", str(tmp_path / "missing")], ["not a psylens run"], 1),
    ]
    for args, needles, code in cases:
        r = run_in_process(args, capsys)
        assert_one_line_error(r, *needles)
        assert r.returncode == code, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]


def test_harvest_writes_a_run(runs, ws: Path) -> None:
    r = runs["harvest"]
    out = ws / "harvest" / "run"
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "run: run" in r.stdout and "psylens explore run" in r.stdout

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


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama saved as a model directory (loads in a second; for in-process runs)."""
    from conftest import build_tiny_hf
    from transformers import AutoTokenizer

    from psylens.models import DEFAULT_MODEL, _resolve

    d = tmp_path_factory.mktemp("tiny-model")
    build_tiny_hf("llama").save_pretrained(d)
    AutoTokenizer.from_pretrained(_resolve(DEFAULT_MODEL)[1]).save_pretrained(d)
    return d


def test_rerun_resumes_and_a_refused_rerun_keeps_the_run(
    ws: Path, tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    base = ["harvest", "--model", str(tiny_dir), "--stimuli", str(ws / "four.jsonl"), "--out", str(out)]
    assert run_in_process([*base, "--layers", "0"], capsys).returncode == 0
    import psylens as pl

    first = pl.open_run(out).meta
    assert run_in_process([*base, "--layers", "0"], capsys).returncode == 0  # same harvest: resumes (no-op)
    assert pl.open_run(out).activations().layers == [0]
    r = run_in_process([*base, "--layers", "1"], capsys)  # a different harvest into the same run
    assert_one_line_error(r, "different harvest")
    meta = pl.open_run(out).meta
    assert meta["config"] == first["config"] and meta["config"]["layers"] == [0]  # run.json still true
    assert pl.open_run(out).activations().layers == [0]
