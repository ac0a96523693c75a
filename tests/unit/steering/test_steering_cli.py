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


def _saved_vector(tmp_path, d_model: int):
    import torch

    from psylens.steering.vector import SteeringVector

    sv = SteeringVector.from_tensor(torch.ones(d_model), layers=[1], alpha=2.0, label="joy")
    return sv.save(tmp_path / "joy.safetensors")


def test_steer_prints_texts_with_scores_unless_quiet(tmp_path, smollm_tokenizer):
    from transformers import AutoConfig

    model_dir = _tiny_dir(tmp_path, smollm_tokenizer)
    vec = _saved_vector(tmp_path, AutoConfig.from_pretrained(model_dir).hidden_size)
    out = tmp_path / "gens.jsonl"
    args = ["--model", str(model_dir), "--vectors", str(vec), "--prompts", "Describe your morning.",
            "--out", str(out), "--max-new-tokens", "4", "--device", "cpu"]
    res = CliRunner().invoke(steer_app, args)
    assert res.exit_code == 0, res.output
    [rec] = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["judge"] == "nrc" and set(rec["baseline_scores"]) == set(rec["steered_scores"])
    assert "joy" in rec["steered_scores"]
    text = " ".join(res.output.split())
    assert "Describe your morning." in text and "unsteered" in text and "steered (joy, alpha 2)" in text
    assert "joy 0." in text  # the judge's score of the steered emotion
    for t in (rec["baseline"], rec["steered"]):
        assert " ".join(t.split())[:20] in text
    quiet = CliRunner().invoke(steer_app, [*args, "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert "unsteered" not in quiet.output and "wrote 1 generations" in quiet.output


def test_steer_generate_reports_progress_per_batch(tmp_path, smollm_tokenizer):
    from psylens.models import load_model
    from psylens.steering.cli import steer_generate
    from psylens.steering.judges import LexiconJudge
    from psylens.steering.vector import SteeringVector
    import torch

    m = load_model(str(_tiny_dir(tmp_path, smollm_tokenizer)), device="cpu")
    sv = SteeringVector.from_tensor(torch.ones(m.d_model), layers=[0], alpha=1.0, label="joy")
    seen: list[int] = []
    recs = steer_generate(m, sv, ["a", "b", "c"], max_new_tokens=2, batch_size=2, judge=LexiconJudge(),
                          on_batch=seen.append)
    assert seen == [2, 1] and len(recs) == 3 and all("steered_scores" in r for r in recs)
