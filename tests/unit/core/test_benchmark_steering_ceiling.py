"""`python -m benchmarks.steering_ceiling` runs end to end (a tiny model saved to a directory) and writes its JSON."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import build_tiny_hf


def test_steering_ceiling_writes_every_number(tmp_path, smollm_tokenizer, monkeypatch, capsys):
    from benchmarks import steering_ceiling

    model_dir = tmp_path / "tiny-llama"
    build_tiny_hf("llama").save_pretrained(model_dir)
    smollm_tokenizer.save_pretrained(model_dir)
    out = tmp_path / "ceiling.json"
    monkeypatch.setattr(sys, "argv", ["steering_ceiling", "--model", str(model_dir), "--prompts", "2", "--tokens", "3",
                                      "--out", str(out)])
    steering_ceiling.main()
    r = json.loads(out.read_text())
    assert r["n_prompts"] == 2 and r["tokens"] == 3
    assert set(r["emotions"]) == set(steering_ceiling.ADJECTIVES)
    for row in r["emotions"].values():
        for kind in ("system", "instructed"):
            assert 0.0 <= row[kind]["success"] <= 1.0 and row[kind]["perplexity_ratio"] > 0
    assert r["sampled_t1"] > 0 and r["mean_instructed"]["perplexity_ratio"] > 0
    assert "| anger |" in capsys.readouterr().out  # the markdown table
    for bad in (["--tokens", "x"], ["--prompts", "0"], ["--prompts", "41"], ["--tokens", "0"]):
        monkeypatch.setattr(sys, "argv", ["steering_ceiling", *bad])
        with pytest.raises(SystemExit):  # argparse refuses before any model is loaded
            steering_ceiling.main()
