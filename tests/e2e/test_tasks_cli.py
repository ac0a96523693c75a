"""``psylens tasks eval`` and ``python -m benchmarks.tasks`` on a tiny random model saved to a directory."""

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

KEYS = {"accuracy", "by_kind", "chance", "n", "parsed", "ci95", "by_kind_ci95", "letters", "answer_letters"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import build_tiny_hf
    from transformers import AutoTokenizer

    from psylens.models import DEFAULT_MODEL, _resolve

    d = tmp_path_factory.mktemp("tiny-model")
    build_tiny_hf("llama").save_pretrained(d)
    AutoTokenizer.from_pretrained(_resolve(DEFAULT_MODEL)[1]).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def small_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six items of the built-in set (one a kind), with their splits."""
    from psylens.tasks import KINDS, load

    items = load("psych")
    rows = [next(t for t in items if t.kind == k and t.split == ("test" if i % 2 else "train")).to_json()
            for i, k in enumerate(KINDS)]
    path = tmp_path_factory.mktemp("tasks") / "six.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from psylens.cli import main

    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_tasks_eval_writes_the_result(tiny_dir: Path, small_tasks: Path, tmp_path: Path) -> None:
    out = tmp_path / "res" / "loglik.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_COLOR": "1"}
    r = subprocess.run([str(EXE), "tasks", "eval", "--model", str(tiny_dir), "--tasks", str(small_tasks),
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "accuracy" in r.stdout
    res = json.loads(out.read_text(encoding="utf-8"))
    assert set(res) == KEYS
    assert res["n"] == 6 and res["chance"] == 0.25 and res["parsed"] == 1.0 and len(res["by_kind"]) == 6
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # atomic: no temp files left


def test_tasks_eval_generate_split_items(tiny_dir: Path, small_tasks: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "gen.json"
    rc, stdout, err = _main(["tasks", "eval", "--model", str(tiny_dir), "--tasks", str(small_tasks), "--method",
                             "generate", "--cot", "--max-new-tokens", "6", "--split", "test", "--items", "--out", str(out)],
                            capsys)
    assert rc == 0, err
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["n"] == 3 and set(res) == KEYS | {"per_item"} and len(res["per_item"]) == 3
    assert all("output" in row for row in res["per_item"])


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--method", "rank"], ["rank", "loglik"]),
        (["--cot"], ["--cot", "generate"]),
        (["--split", "dev"], ["dev", "train"]),
        (["--tasks", "nope.jsonl"], ["nope.jsonl", "psych"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--max-new-tokens", "0"], ["--max-new-tokens"]),
    ],
)
def test_tasks_eval_errors_are_one_line(tiny_dir: Path, tmp_path: Path, capsys, extra, needles) -> None:
    out = tmp_path / "x.json"
    rc, stdout, err = _main(["tasks", "eval", "--model", str(tiny_dir), "--out", str(out), *extra], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 1 and len(lines) == 1 and lines[0].startswith("error:"), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not out.exists()


def test_tasks_eval_split_on_a_file_without_splits(tiny_dir: Path, small_tasks: Path, tmp_path: Path, capsys) -> None:
    plain = tmp_path / "plain.jsonl"
    rows = [json.loads(line) for line in small_tasks.read_text(encoding="utf-8").splitlines()]
    plain.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "split"}) + "\n" for r in rows))
    rc, _, err = _main(["tasks", "eval", "--model", str(tiny_dir), "--tasks", str(plain), "--split", "test",
                        "--out", str(tmp_path / "x.json")], capsys)
    assert rc == 1 and "no 'split' keys" in err


def test_benchmark_script_runs(tiny_dir: Path, small_tasks: Path, tmp_path: Path, capsys) -> None:
    from benchmarks import tasks as bench

    bench.main(["--models", str(tiny_dir), "--tasks", str(small_tasks), "--methods", "loglik", "generate",
                "--out-dir", str(tmp_path)])
    res = json.loads((tmp_path / f"{tiny_dir.name}.json").read_text())
    for method in ("loglik", "generate"):
        row = res["methods"][method]
        assert row["all"]["n"] == 6 and row["test"]["n"] == 3 and set(row["control_all"]) >= KEYS
    assert "| loglik | test |" in capsys.readouterr().out
