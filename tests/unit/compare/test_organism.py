"""GRPO organism on a tiny random model: steps run and write the adapter; same seed, same curve; resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from psylens.compare.organism import (
    CONFIG_FILE,
    CURVE_FILE,
    OrganismConfig,
    latest_checkpoint,
    organism_prompt,
    read_reward_curve,
    train_organism,
)

SHORT_TASKS = [
    {"id": f"t{i}", "kind": "emotion_inference", "story": s, "question": "How does she feel?",
     "choices": ["sad", "happy", "angry", "calm"], "answer": a, "split": "train"}
    for i, (s, a) in enumerate([("Ana won.", "happy"), ("Ana lost.", "sad"), ("Ana was hit.", "angry"),
                                ("Ana rests.", "calm")])
]


LETTER_IDS = (49, 50, 51, 52, 330, 389, 340, 422)  # "A".."D" and " A".." D" in the SmolLM2 tokenizer


def _letter_model():
    """A tiny random Llama planted to answer in letters: a huge bias on residual dim 0 in the last MLP,
    and an unembedding that reads dim 0 as "letter" — so sampled completions are letters, the reward
    varies across a group, and GRPO has a gradient (a random model's completions all score 0)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, mlp_bias=True)
    m = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for layer in m.model.layers:
            for lin in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                lin.bias.zero_()
        m.model.layers[-1].mlp.down_proj.bias[0] = 1000.0
        m.lm_head.weight[:, 0] = -10.0
        m.lm_head.weight[list(LETTER_IDS), 0] = 10.0
    return m


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm_tokenizer) -> Path:
    d = tmp_path_factory.mktemp("tiny_llama")
    _letter_model().save_pretrained(d)
    smollm_tokenizer.save_pretrained(d)
    tasks = d / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(t) + "\n" for t in SHORT_TASKS))
    return d


def _cfg(tiny_dir: Path, **kw) -> OrganismConfig:
    base = dict(base=str(tiny_dir), tasks=str(tiny_dir / "tasks.jsonl"), max_steps=2, num_generations=4,
                max_completion_length=4, save_steps=1, learning_rate=1e-2)
    base.update(kw)
    return OrganismConfig(**base)


def _run(cfg: OrganismConfig, out: Path) -> dict:
    torch.set_num_threads(1)
    train_organism(cfg, out, progress=False)
    return read_reward_curve(out)


def test_config_validates_and_round_trips() -> None:
    cfg = OrganismConfig(target_modules=["q_proj", "o_proj"], shuffle_rewards=True)
    assert cfg.target_modules == ("q_proj", "o_proj")
    assert OrganismConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    with pytest.raises(ValueError, match="num_generations"):
        OrganismConfig(num_generations=1)
    with pytest.raises(ValueError, match="split"):
        OrganismConfig(split="dev")
    with pytest.raises(ValueError, match="unknown OrganismConfig keys"):
        OrganismConfig.from_json({"lr": 1.0})


def test_prompt_is_what_tasks_evaluate_shows(tiny_model) -> None:
    from psylens import tasks as T

    m = tiny_model("llama")
    t = T.load("psych", split="train")[0]
    p = organism_prompt(m, t)
    assert p == T._full_prompt(m, T.choice_prompt(t, chain_of_thought=True), "chat", "Let's think step by step.")
    assert t.answer not in p.split("Question:")[0]  # the answer is never told (only listed as a choice)


@pytest.mark.slow
def test_steps_write_adapter_same_seed_same_curve_and_resume(tiny_dir: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file

    cfg = _cfg(tiny_dir)
    out = tmp_path / "a"
    a = _run(cfg, out)
    for name in ("adapter_config.json", "adapter_model.safetensors", CONFIG_FILE, CURVE_FILE):
        assert (out / name).is_file(), name
    w = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in w.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0  # it trained (B starts at zero)
    saved = json.loads((out / CONFIG_FILE).read_text())
    assert OrganismConfig.from_json(saved["config"]) == cfg and "trl" in saved["versions"]
    assert a["complete"] and [s["step"] for s in a["steps"]] == [0, 1]
    assert all(s["n"] == 4 and "digest" in s for s in a["steps"])
    assert any(0 < s["correct"] < 1 for s in a["steps"])  # the planted letter model gives a reward signal
    ck = latest_checkpoint(out)
    assert ck is not None and ck.name == "checkpoint-2" and not (ck / "training_args.bin").exists()

    b = _run(cfg, tmp_path / "b")  # same seed: the same completions and rewards, also after an update
    assert [s["digest"] for s in b["steps"]] == [s["digest"] for s in a["steps"]]
    assert [s["reward"] for s in b["steps"]] == [s["reward"] for s in a["steps"]]
    c = _run(dataclasses.replace(cfg, seed=1, max_steps=1), tmp_path / "c")  # control: another seed differs
    assert c["steps"][0]["digest"] != a["steps"][0]["digest"]

    # resume: a copy of the run stopped after step 1 continues from checkpoint-1 and ends where a did
    e = tmp_path / "e"
    (e / "checkpoints").mkdir(parents=True)
    shutil.copytree(out / "checkpoints" / "checkpoint-1", e / "checkpoints" / "checkpoint-1")
    shutil.copy2(out / CONFIG_FILE, e / CONFIG_FILE)
    r = train_organism(cfg, e, progress=False)
    assert r.resumed_from is not None and r.resumed_from.endswith("checkpoint-1") and r.steps == 2
    resumed = read_reward_curve(e)
    assert [s["step"] for s in resumed["steps"]] == [0, 1]
    assert [s["digest"] for s in resumed["steps"]] == [s["digest"] for s in a["steps"]]
    with pytest.raises(ValueError, match="another config"):
        train_organism(dataclasses.replace(cfg, learning_rate=1e-3), out, progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_organism(cfg, out, resume=False, progress=False)


def test_cli_checks_arguments_before_loading_a_model(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import psylens.compare.organism as O
    from psylens.compare.organism_cli import organism_app

    calls = []
    def fake(cfg, out, **k):
        calls.append((cfg, out))
        return O.OrganismResult(out=Path(out), config=cfg, steps=0, seconds=0.0, resumed_from=None, final_correct=0.0)

    monkeypatch.setattr(O, "train_organism", fake)
    runner = CliRunner()
    r = runner.invoke(organism_app, ["train", "--out", str(tmp_path / "o"), "--num-generations", "1"])
    assert isinstance(r.exception, ValueError) and "num_generations" in str(r.exception)
    r = runner.invoke(organism_app, ["train", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "nope.json")])
    assert isinstance(r.exception, ValueError) and "does not exist" in str(r.exception)
    assert not calls
    # a saved config is the starting point; options override it; --shuffle-rewards makes the control
    (tmp_path / "c.json").write_text(json.dumps({"config": OrganismConfig(seed=5, max_steps=7).to_json()}))
    r = runner.invoke(organism_app, ["train", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "c.json"),
                                     "--max-steps", "9", "--shuffle-rewards", "--target-modules", "q_proj,o_proj"])
    assert r.exit_code == 0, r.output
    cfg, _ = calls[0]
    assert (cfg.seed, cfg.max_steps, cfg.shuffle_rewards, cfg.target_modules) == (5, 9, True, ("q_proj", "o_proj"))
