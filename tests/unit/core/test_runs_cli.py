"""The README's flow in one run: `psylens harvest --out R` then `psylens probe --out R` keep both records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from psylens import io
from psylens.cli import main
from psylens.runs import open_run
from psylens.stimuli import load


def _stimuli(path: Path, n_groups: int = 4) -> Path:
    stim = load("emotions")
    groups = list(dict.fromkeys(stim.groups))[:n_groups]
    sub = stim.filter(groups=groups)
    path.write_text("".join(json.dumps({"id": s.id, "text": s.text, "label": s.label, "group": s.group}) + "\n"
                            for s in sub))
    return path


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory, smollm_tokenizer) -> tuple[Path, Path]:
    from conftest import build_tiny_hf

    root = tmp_path_factory.mktemp("models")
    out = []
    for arch in ("llama", "qwen2"):
        d = root / arch
        build_tiny_hf(arch).save_pretrained(d)
        smollm_tokenizer.save_pretrained(d)
        out.append(d)
    return out[0], out[1]


def _cli(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> int:
    monkeypatch.setattr(sys, "argv", ["psylens", *args])
    return main(args)


def test_harvest_then_probe_in_one_run(model_dirs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    llama, qwen = model_dirs
    stim = _stimuli(tmp_path / "stim.jsonl")
    run_dir = tmp_path / "R"
    assert _cli(monkeypatch, ["harvest", "--model", str(llama), "--stimuli", str(stim), "--out", str(run_dir),
                              "--positions", "last", "--device", "cpu"]) == 0
    run = open_run(run_dir)
    first = io.read_json(run_dir / "run.json")
    assert first["command"].startswith("psylens harvest") and first["started"] <= run.steps["load"]["finished"]
    assert {"load", "harvest", "summary"} <= set(run.steps)
    assert run.steps["harvest"]["outputs"] == ["activations"] and run.models["model"]["fingerprint"]
    assert io.read_json(run_dir / "summary" / "layers.json")["schema_version"] == 1

    # another model is refused before anything is written
    before = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    assert _cli(monkeypatch, ["probe", "--model", str(qwen), "--stimuli", str(stim), "--out", str(run_dir),
                              "--device", "cpu", "--no-geometry", "--no-cross-format", "--no-persistence",
                              "--no-system-prompt"]) == 1
    assert "another model" in capsys.readouterr().err
    assert {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before

    # the same model: the probes are added to the run, whose record stays the harvest's
    assert _cli(monkeypatch, ["probe", "--model", str(llama), "--stimuli", str(stim), "--out", str(run_dir),
                              "--device", "cpu", "--no-geometry", "--no-cross-format", "--no-persistence",
                              "--no-system-prompt"]) == 0
    meta = open_run(run_dir).meta
    for key in ("command", "config", "created", "started", "seed"):
        assert meta[key] == first[key], key
    assert {"load", "harvest", "summary", "probes"} <= set(meta["steps"])
    assert "probes/summary.json" in meta["steps"]["probes"]["outputs"]
    assert meta["steps"]["probes"]["config"]["positions"] == "mean"
    assert run.activation_sets() == ["default", "probes"]  # the harvest's read-out kept, the probes' beside it
    assert run.activations().positions == "last" and run.activations("probes").positions == "mean"
    assert run.read_json("probes/summary.json")["schema_version"] == 1
    assert not [p for p in run_dir.rglob(".*")]  # no lock or temp files left


def test_probe_does_not_overwrite_a_refused_runs_record(model_dirs, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A harvest re-run that differs from the harvest already there is refused before run.json changes."""
    llama, _ = model_dirs
    stim = _stimuli(tmp_path / "stim.jsonl", n_groups=2)
    run_dir = tmp_path / "R"
    args = ["harvest", "--model", str(llama), "--stimuli", str(stim), "--out", str(run_dir), "--device", "cpu"]
    assert _cli(monkeypatch, [*args, "--positions", "last"]) == 0
    before = (run_dir / "run.json").read_bytes()
    assert _cli(monkeypatch, [*args, "--positions", "mean"]) == 1
    assert (run_dir / "run.json").read_bytes() == before
    assert _cli(monkeypatch, [*args, "--positions", "last"]) == 0  # control: the same harvest resumes
    assert io.read_json(run_dir / "run.json")["created"] == json.loads(before)["created"]
