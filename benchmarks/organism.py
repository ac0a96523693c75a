"""The model organism end to end (`python -m benchmarks.organism`): train, control, evaluate.

    python -m benchmarks.organism train   --out /tmp/organism/tuned                 # the shipped recipe
    python -m benchmarks.organism train   --out /tmp/organism/control --shuffle     # the control
    python -m benchmarks.organism eval    --adapter base=- tuned=/tmp/organism/tuned control=/tmp/organism/control
    python -m benchmarks.organism sft     --out /tmp/organism/sft [--shuffle]       # the supervised ceiling

``train`` is ``psylens organism train`` with the shipped recipe (:data:`RECIPE`); rerunning it
with the same ``--out`` resumes from the latest checkpoint. ``eval`` scores each model on the
``psych`` test split with ``psylens.tasks.evaluate`` (generate, chain of thought) and writes one
JSON a model plus paired differences against the base (same items, bootstrap over items) to
``--out-dir``.

``sft`` is not an organism: it asks how far *any* fine-tuning of the base moves the test split, by training a
LoRA with plain supervised cross-entropy on the train split's gold answers (:data:`SFT`; the prompt is the
organism's chain-of-thought prompt, the completion ``"Answer: X"``). A reward can only carry less than the gold
answer does, so if this does not beat the base by the organism's +10 points, no RL recipe on the same model,
prompt and data is expected to. ``--shuffle`` trains on answers permuted across items: the control.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from psylens.compare.organism import OrganismConfig

RECIPE = OrganismConfig()  # the defaults are the recipe of the shipped smollm2-135m-psy-grpo
# the supervised ceiling, fixed before it ran: recipe 2's adapter (LoRA r 16 / alpha 32 on every linear layer,
# the most capacity any recipe had), 3 epochs of the 288 train items, batch 8, lr 2e-4, seed 0
SFT = {"lora_r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
       "up_proj", "down_proj"], "epochs": 3, "batch_size": 8, "learning_rate": 2e-4, "seed": 0}
# the same ceiling with every weight free (session 21, fixed before it ran): the LoRA ceiling never fitted its own
# training letters (loss ≈ ln 4 on the letter), so it bounds what that adapter learns, not what the model can.
# Full fine-tuning, 6 epochs, lr 5e-5, bfloat16 autocast (the weights and optimiser stay float32).
SFT_FULL = {"full": True, "epochs": 6, "batch_size": 8, "learning_rate": 5e-5, "seed": 0, "bf16": True}


def train(out: str, shuffle: bool, max_steps: int | None, threads: int | None) -> None:
    import dataclasses

    import torch

    from psylens.compare.organism import train_organism

    if threads:
        torch.set_num_threads(threads)
    cfg = dataclasses.replace(RECIPE, shuffle_rewards=shuffle, **({"max_steps": max_steps} if max_steps else {}))
    r = train_organism(cfg, out, progress=True)
    logging.getLogger("benchmarks.organism").info("done: %s steps in %.0f s; final correct %.3f", r.steps, r.seconds,
                                                   r.final_correct)


def sft(out: str, shuffle: bool, threads: int | None, full: bool = False, epochs: int | None = None) -> None:
    """Train the supervised ceiling into ``out``: the LoRA adapter of :data:`SFT` (PEFT files), or with ``full``
    every weight (:data:`SFT_FULL`; a model directory in safetensors that ``load_model`` opens). ``epochs``
    overrides the recipe's (recorded in ``sft.json``). No pickle."""
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs={epochs}: give a whole number of epochs ≥ 1, or None for the recipe's")
    recipe = dict(SFT_FULL if full else SFT, **({"epochs": epochs} if epochs is not None else {}))
    import random

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from psylens import tasks as T
    from psylens.compare.organism import organism_prompt
    from psylens.models import _resolve, load_model

    if threads:
        torch.set_num_threads(threads)
    _, location = _resolve(RECIPE.base)
    base = load_model(location, device="cpu", dtype="float32")
    items = T.load(RECIPE.tasks, split=RECIPE.split)
    answers = [t.answer_index for t in items]
    if shuffle:  # the control: every item keeps a valid letter, but not its own answer's
        random.Random(SFT["seed"]).shuffle(answers)
    rows = [{"prompt": organism_prompt(base, t, RECIPE.chat_format), "completion": f"\nAnswer: {T.LETTERS[a]}"}
            for t, a in zip(items, answers)]
    args = SFTConfig(
        output_dir=str(Path(out) / "trainer"), num_train_epochs=recipe["epochs"],
        per_device_train_batch_size=recipe["batch_size"], learning_rate=recipe["learning_rate"], seed=recipe["seed"],
        data_seed=recipe["seed"], logging_steps=5, save_strategy="no", report_to="none", use_cpu=True,
        bf16=recipe.get("bf16", False), fp16=False, completion_only_loss=True, gradient_checkpointing=False,
        dataloader_num_workers=0,
    )
    peft_config = None if full else LoraConfig(
        r=SFT["lora_r"], lora_alpha=SFT["lora_alpha"], lora_dropout=0.0, target_modules=SFT["target_modules"],
        bias="none", task_type="CAUSAL_LM")
    t0 = time.perf_counter()
    trainer = SFTTrainer(model=base.hf_model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=base.tokenizer, peft_config=peft_config)
    trainer.train()
    # LoRA: adapter_config.json + adapter_model.safetensors; full: config.json + model.safetensors (+ tokenizer)
    trainer.model.save_pretrained(out)
    if full:
        base.tokenizer.save_pretrained(out)
    Path(out, "sft.json").write_text(json.dumps({
        "sft": recipe, "shuffle": shuffle, "base": location, "n_train": len(rows), "seconds": time.perf_counter() - t0,
        "log": [r for r in trainer.state.log_history if "loss" in r or "train_loss" in r]}, indent=1))


def _round_robin(items: list[Any]) -> list[Any]:
    """Items interleaved by kind, so that any prefix covers every kind about equally (partial runs stay usable)."""
    by: dict[str, list[Any]] = {}
    for t in items:
        by.setdefault(t.kind, []).append(t)
    out = []
    while any(by.values()):
        for k in list(by):
            if by[k]:
                out.append(by[k].pop(0))
    return out


def evaluate(models: dict[str, str], out_dir: str, max_new_tokens: int, batch_size: int, limit: int | None,
             threads: int | None, split: str = "test") -> dict[str, Any]:
    """Each model on a split (``test``; ``train`` reads how well a ceiling fitted its own items), chunk by chunk
    (one JSONL line an item, resumable), then summarised."""
    import numpy as np
    import torch

    from psylens import tasks as T
    from psylens.models import DEFAULT_MODEL, load_model
    from psylens.stats import paired_diff_ci

    if threads:
        torch.set_num_threads(threads)
    items = _round_robin(T.load("psych", split=split))
    if limit:
        items = items[:limit]
    outd = Path(out_dir)
    outd.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name, adapter in models.items():
        path = outd / f"{name}.jsonl"
        done: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    done[r["id"]] = r
        todo = [t for t in items if t.id not in done]
        if todo:
            t0 = time.perf_counter()
            if adapter in ("-", ""):
                model = load_model(DEFAULT_MODEL, device="cpu")
            elif adapter.startswith("alias:"):
                model = load_model(adapter[6:], device="cpu")
            else:
                model = load_model(DEFAULT_MODEL, adapter=adapter, device="cpu")
            for i in range(0, len(todo), batch_size):
                chunk = todo[i : i + batch_size]
                preds = T.predict(model, chunk, "generate", chain_of_thought=True, batch_size=batch_size,
                                  max_new_tokens=max_new_tokens, progress=False)
                with open(path, "a") as f:
                    for p in preds:
                        f.write(json.dumps({"id": p.id, "choice": p.choice, "output": p.output,
                                            "seconds": time.perf_counter() - t0}) + "\n")
                        done[p.id] = {"id": p.id, "choice": p.choice, "output": p.output}
                logging.getLogger("benchmarks.organism").info("%s: %d/%d items", name, len(done), len(items))
        scored = [t for t in items if t.id in done]
        preds = [T.Prediction(id=t.id, choice=done[t.id]["choice"], output=done[t.id]["output"]) for t in scored]
        res = T.summarize(scored, preds, return_items=True)
        res.update(adapter=adapter, split=split, max_new_tokens=max_new_tokens, date=time.strftime("%Y-%m-%d"))
        results[name] = res
    if "base" in results:
        base_items = {it["id"]: it for it in results["base"]["per_item"]}
        for name, res in results.items():
            if name == "base":
                continue
            common = [it for it in res["per_item"] if it["id"] in base_items]
            other = np.array([it["correct"] for it in common], float)
            base = np.array([base_items[it["id"]]["correct"] for it in common], float)
            res["vs_base"] = asdict(paired_diff_ci(other, base, seed=0))
            res["vs_base_n"] = len(common)
            kinds = [it["kind"] for it in common]
            res["vs_base_by_kind"] = {
                k: asdict(paired_diff_ci(other[np.array([x == k for x in kinds])],
                                         base[np.array([x == k for x in kinds])], seed=0))
                for k in dict.fromkeys(kinds)
            }
    (outd / "summary.json").write_text(json.dumps(
        {n: {k: v for k, v in r.items() if k != "per_item"} for n, r in results.items()}, indent=1, default=str))
    return results


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--shuffle", action="store_true")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--threads", type=int, default=None)
    f = sub.add_parser("sft")
    f.add_argument("--out", required=True)
    f.add_argument("--shuffle", action="store_true")
    f.add_argument("--full", action="store_true", help="every weight (SFT_FULL) instead of the LoRA adapter (SFT)")
    f.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    f.add_argument("--threads", type=int, default=None)
    e = sub.add_parser("eval")
    e.add_argument("--models", nargs="+", required=True, help="name=ADAPTER_DIR, name=- (the base), name=alias:SPEC")
    e.add_argument("--out-dir", default="/tmp/organism/eval")
    e.add_argument("--max-new-tokens", type=int, default=256)  # tasks.evaluate's chain-of-thought default
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--split", default="test", choices=["test", "train"])
    e.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.cmd == "train":
        train(a.out, a.shuffle, a.max_steps, a.threads)
    elif a.cmd == "sft":
        sft(a.out, a.shuffle, a.threads, full=a.full, epochs=a.epochs)
    else:
        models = dict(m.split("=", 1) for m in a.models)
        evaluate(models, a.out_dir, a.max_new_tokens, a.batch_size, a.limit, a.threads, split=a.split)


if __name__ == "__main__":
    main()
