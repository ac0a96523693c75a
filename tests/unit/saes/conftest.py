"""Shared for the SAE tests: one SAE trained (through SAELens) on planted synthetic steps, once per session."""

from __future__ import annotations

import pytest

# the known-answer setting: 48 planted unit directions in 64 dims, ~3 active a step, 8192 steps
PLANTED = dict(n_steps=8192, d=64, n_features=48, active=3, label_feature={"reflection": 0})
TRAIN = dict(arch="batchtopk", d_sae=64, k=3, epochs=20, batch_size=256, lr=3e-3, dead_window=100)


@pytest.fixture(scope="session")
def planted_sae(tmp_path_factory):
    """``(data, train_ids, held_ids, sae)``: the saved-and-reloaded SAE (a JumpReLU SAE, from BatchTopK)."""
    import torch

    from psylens.saes.data import split_by_trace
    from psylens.saes.synthetic import planted_steps
    from psylens.saes.train import SAETrainConfig, load_sae, save_sae, train_sae

    torch.manual_seed(0)
    data = planted_steps(**PLANTED)
    train_ids, held_ids = split_by_trace(data.steps.trace_ids, held_out=0.2)
    result = train_sae(data.steps.only(train_ids), SAETrainConfig(**TRAIN), exclude_traces=held_ids, progress=False)
    folder = tmp_path_factory.mktemp("planted_sae")
    save_sae(result.sae, folder)
    return data, train_ids, held_ids, load_sae(folder), result


@pytest.fixture
def task_run(tmp_path):
    """A run whose traces came from a two-task file (``traces/config.json``), ready for an SAE folder under
    ``RUN/saes/``."""
    import json

    from psylens.runs import create_run

    run = create_run(tmp_path / "run", command="psylens traces", model="tiny-llama")
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"id": f"t{i}", "kind": "emotion_inference", "story": "Ann lost her keys.",
                                         "question": "How does Ann feel?", "choices": ["calm", "upset", "proud", "bored"],
                                         "answer": "upset", "split": "test"}) + "\n" for i in range(2)))
    (run.path / "traces").mkdir()
    (run.path / "traces" / "config.json").write_text(json.dumps({"tasks": str(tasks), "split": "train"}))
    return run
