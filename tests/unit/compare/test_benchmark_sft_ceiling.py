"""``benchmarks.organism sft``: the supervised ceiling trains on the gold answers; its control on permuted ones.

Known answer: every training row's completion is ``"\\nAnswer: X"`` with X the item's own answer letter, after
the organism's chain-of-thought prompt. Control: ``--shuffle`` keeps the same letters (a permutation across items)
but most items lose their own. A stand-in trainer records the rows, so nothing is trained here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import organism as bench
from psylens import tasks as T
from psylens.compare.organism import COT_SUFFIX


class _Trainer:
    seen: dict = {}

    def __init__(self, model, args, train_dataset, processing_class, peft_config):
        _Trainer.seen = {"rows": list(train_dataset), "args": args, "peft": peft_config}
        self.model = self
        self.state = type("S", (), {"log_history": [{"loss": 1.0, "epoch": 1.0}]})()

    def train(self):
        return None

    def save_pretrained(self, out):
        Path(out).mkdir(parents=True, exist_ok=True)  # as PEFT does
        Path(out, "adapter_config.json").write_text("{}")


@pytest.fixture()
def rows_of(tiny_model, monkeypatch, tmp_path):
    import psylens.models
    import trl

    monkeypatch.setattr(psylens.models, "_resolve", lambda spec: ("alias", "somewhere"))
    monkeypatch.setattr(psylens.models, "load_model", lambda *a, **k: tiny_model("llama"))
    monkeypatch.setattr(trl, "SFTTrainer", _Trainer)

    def run(shuffle: bool, full: bool = False, epochs: int | None = None):
        out = tmp_path / (("control" if shuffle else "gold") + ("-full" if full else "") + f"-{epochs}")
        bench.sft(str(out), shuffle, threads=None, full=full, epochs=epochs)
        return _Trainer.seen, out

    return run


def test_gold_rows_carry_each_items_own_answer(rows_of):
    seen, out = rows_of(False)
    items = T.load(bench.RECIPE.tasks, split=bench.RECIPE.split)
    assert len(seen["rows"]) == len(items) > 0
    for row, t in zip(seen["rows"], items):
        assert row["completion"] == f"\nAnswer: {T.LETTERS[t.answer_index]}"
        assert row["prompt"].endswith(COT_SUFFIX) and t.question in row["prompt"]
    assert seen["peft"].r == bench.SFT["lora_r"] and set(seen["peft"].target_modules) == set(bench.SFT["target_modules"])
    assert seen["args"].save_strategy == "no"  # no trainer checkpoints (they hold pickles)
    record = json.loads((out / "sft.json").read_text())
    assert record["shuffle"] is False and record["n_train"] == len(items)


def test_control_permutes_the_letters_across_items(rows_of):
    gold = [r["completion"] for r in rows_of(False)[0]["rows"]]
    shuffled = [r["completion"] for r in rows_of(True)[0]["rows"]]
    assert Counter(shuffled) == Counter(gold)  # the same letters …
    assert sum(a != b for a, b in zip(gold, shuffled)) > 0.5 * len(gold)  # … mostly on other items


def test_full_recipe_frees_every_weight_and_saves_a_loadable_directory(rows_of):
    lora, _ = rows_of(False)
    seen, out = rows_of(False, full=True)
    assert seen["peft"] is None  # no adapter: the trainer updates the model's own weights
    assert seen["args"].num_train_epochs == bench.SFT_FULL["epochs"] != bench.SFT["epochs"]
    assert seen["args"].learning_rate == bench.SFT_FULL["learning_rate"] and seen["args"].bf16 is True
    assert [r["completion"] for r in seen["rows"]] == [r["completion"] for r in lora["rows"]]  # the same gold rows
    assert any(p.name.startswith("tokenizer") for p in out.iterdir())  # load_model(out) needs the tokenizer too
    assert json.loads((out / "sft.json").read_text())["sft"] == bench.SFT_FULL


def test_epochs_override_reaches_the_trainer_and_the_record(rows_of):
    seen, out = rows_of(False, full=True, epochs=1)
    assert seen["args"].num_train_epochs == 1
    assert json.loads((out / "sft.json").read_text())["sft"]["epochs"] == 1
    assert bench.SFT_FULL["epochs"] == 6  # the recipe itself is not changed
    with pytest.raises(ValueError, match="epochs=0"):
        rows_of(False, full=True, epochs=0)


def test_eval_split_train_scores_the_training_items(tmp_path, monkeypatch):
    """``eval --split train`` reads a ceiling's fit: every train item is scored (known answer: a stand-in model that
    answers each train item right gets accuracy 1.0) and the summary names the split. Control: the default split
    scores the test items, which the same stand-in does not know (it answers "A" there)."""
    import psylens.models

    train = {t.id: t.answer_index for t in T.load("psych", split="train")}
    monkeypatch.setattr(psylens.models, "load_model", lambda *a, **k: object())
    monkeypatch.setattr(T, "predict", lambda model, chunk, *a, **k: [
        T.Prediction(id=t.id, choice=train.get(t.id, 0), output="") for t in chunk])
    res = bench.evaluate({"sft": "alias:somewhere"}, str(tmp_path / "train"), 8, 64, None, None, split="train")
    assert res["sft"]["n"] == len(train) and res["sft"]["accuracy"] == 1.0 and res["sft"]["split"] == "train"
    test = bench.evaluate({"sft": "alias:somewhere"}, str(tmp_path / "test"), 8, 64, None, None)
    assert test["sft"]["split"] == "test" and test["sft"]["n"] == len(T.load("psych", split="test"))
    assert test["sft"]["accuracy"] < 0.5
    assert json.loads((tmp_path / "train" / "summary.json").read_text())["sft"]["split"] == "train"
