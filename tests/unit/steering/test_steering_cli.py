"""`psylens steer sweep` on a directory that is not a run yet."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from psylens.steering.cli import steer_app
from conftest import build_tiny_hf


def _tiny_dir(tmp_path, smollm_tokenizer):
    d = tmp_path / "tiny-llama"
    build_tiny_hf("llama").save_pretrained(d)
    smollm_tokenizer.save_pretrained(d)
    return d


def test_sweep_with_expression_directions_makes_a_new_run(tmp_path, smollm_tokenizer):
    model_dir = _tiny_dir(tmp_path, smollm_tokenizer)
    out = tmp_path / "new-run"
    res = CliRunner().invoke(
        steer_app, ["sweep", "--run", str(out), "--model", str(model_dir), "--max-new-tokens", "3", "--device", "cpu"],
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "run.json").read_text())
    assert meta["command"] == "psylens steer sweep" and "steering" in meta["steps"]
    summary = json.loads((out / "steering" / "summary.json").read_text())
    assert summary["directions"]["source"] == "expression" and summary["max_new_tokens"] == 3


def test_sweep_with_probe_directions_still_needs_a_run(tmp_path):
    out = tmp_path / "no-run"
    res = CliRunner().invoke(steer_app, ["sweep", "--run", str(out), "--source", "probes"])
    assert res.exit_code != 0 and "not a psylens run" in str(res.exception or res.output)
    assert not out.exists()  # nothing written
