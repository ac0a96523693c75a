"""The RL-tuned model organism: GRPO with a LoRA adapter on ``psych`` reasoning tasks.

:func:`train_organism` fine-tunes a base model (by default the embedded SmolLM2-135M-Instruct,
its dequantized cached checkpoint) with TRL's ``GRPOTrainer`` and a PEFT LoRA adapter on the
``psych`` train split. Each prompt is exactly what ``psylens.tasks.evaluate(method="generate",
chain_of_thought=True)`` shows the model (story, question, lettered choices, the step-by-step
instruction, inside the chat template, then ``Let's think step by step.``); the reward is
verifiable (:class:`psylens.compare.rewards.PsychReward`: the correct letter, plus a small bonus
for an explicit ``Answer: X``). ``shuffle_rewards=True`` trains the control: the same rewards,
permuted across the completions of each batch.

Output directory ``OUT``::

    OUT/adapter_config.json, adapter_model.safetensors   the LoRA adapter (PEFT; load_model(base, adapter=OUT))
    OUT/organism_config.json                              the whole OrganismConfig (+ versions, threads, time)
    OUT/reward_curve.json                                 one record a step: true correct / format / reward, paid
    OUT/checkpoints/checkpoint-N/                         TRL checkpoints (resume from the latest)

Reproducible: the seed fixes the adapter's initialisation, the prompt order and the sampling;
on the CPU two runs with the same config and thread count give the same completions and the same
reward curve (``reward_curve.json`` carries a digest of each step's completions to check it).

.. warning:: Checkpoints hold ``optimizer.pt``, ``scheduler.pt`` and ``rng_state.pth`` (torch
   files); transformers reads them back with ``torch.load(..., weights_only=True)``. The
   ``training_args.bin`` it also writes is a pickle of the arguments that resuming never reads:
   it is deleted from every checkpoint (the config is in ``organism_config.json``).

.. warning:: Resuming checks that the saved config equals the one given, except ``max_steps``, which
   may grow to train a run further (a changed config would silently mix two runs); change ``out``
   to start a new one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from psylens.compare.rewards import PsychReward, RewardRecord
from psylens.io import write_json

__all__ = [
    "OrganismConfig",
    "OrganismResult",
    "train_organism",
    "organism_prompt",
    "build_dataset",
    "read_reward_curve",
    "latest_checkpoint",
    "CONFIG_FILE",
    "CURVE_FILE",
    "CHECKPOINTS",
    "SCHEMA_VERSION",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "organism_config.json"
CURVE_FILE = "reward_curve.json"
CHECKPOINTS = "checkpoints"
REWARD_STATE = "psylens_reward.json"  # inside each checkpoint: reward history + permutation RNG
SCHEMA_VERSION = 1
COT_SUFFIX = "Let's think step by step."  # what psylens.tasks appends to a chain-of-thought prompt


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that decides a GRPO organism run (recorded whole in ``organism_config.json``).

    ``base``: a model spec ``load_model`` accepts (alias, HF id, local directory). One step draws
    ``prompts_per_step`` train prompts and ``num_generations`` completions of each (GRPO compares
    completions of the same prompt). ``target_modules``: the linear layers the LoRA adapts.
    ``shuffle_rewards``: the control. ``beta`` > 0 adds a KL penalty to the base (costs a forward).
    """

    base: str = "smollm2-135m-instruct"
    tasks: str = "psych"
    split: str = "train"
    seed: int = 0
    max_steps: int = 120
    prompts_per_step: int = 1
    num_generations: int = 8
    max_completion_length: int = 48
    temperature: float = 1.0
    learning_rate: float = 3e-4
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    beta: float = 0.0
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    format_weight: float = 0.1
    shuffle_rewards: bool = False
    save_steps: int = 2
    chat_format: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.target_modules, tuple):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        positive = ("max_steps", "prompts_per_step", "max_completion_length", "lora_r", "lora_alpha", "save_steps")
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(self.num_generations, int) or self.num_generations < 2:
            raise ValueError(
                f"num_generations must be at least 2 (GRPO compares completions of one prompt), got {self.num_generations!r}"
            )
        if self.split not in ("train", "test"):
            raise ValueError(f"split {self.split!r} is not 'train' or 'test'; train on 'train' and evaluate on 'test'")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (GRPO samples), got {self.temperature}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.beta < 0 or self.lora_dropout < 0 or self.lora_dropout >= 1 or self.warmup_steps < 0:
            raise ValueError(
                f"beta ({self.beta}) and warmup_steps ({self.warmup_steps}) must be >= 0 and lora_dropout "
                f"({self.lora_dropout}) in [0, 1)"
            )
        if not 0 <= self.format_weight <= 1:
            raise ValueError(f"format_weight must be in [0, 1] (the correct choice is worth 1), got {self.format_weight}")
        if not self.target_modules or not all(isinstance(m, str) and m for m in self.target_modules):
            raise ValueError(f"target_modules must name linear layers, e.g. ('q_proj', 'v_proj'); got {self.target_modules!r}")
        if self.chat_format not in ("auto", "chat", "raw"):
            raise ValueError(f"chat_format {self.chat_format!r} is not one of 'auto', 'chat', 'raw'")
        if self.lr_scheduler not in ("constant", "linear", "cosine", "constant_with_warmup"):
            raise ValueError(
                f"lr_scheduler {self.lr_scheduler!r} is not one of constant, linear, cosine, constant_with_warmup"
            )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OrganismConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown OrganismConfig keys {unknown}; valid keys: {sorted(known)}")
        return cls(**d)


@dataclass(frozen=True)
class OrganismResult:
    """Where a finished run wrote its adapter, config and reward curve, and how it went."""

    out: Path
    config: OrganismConfig
    steps: int
    seconds: float
    resumed_from: str | None
    final_correct: float  # mean true correct fraction over the last 10% of steps (at least one)


def organism_prompt(model: Any, task: Any, chat_format: str = "auto") -> str:
    """The prompt ``psylens.tasks.evaluate(method="generate", chain_of_thought=True)`` gives ``task``.

    ``model``: a :class:`psylens.models.Model` (for its chat template).
    """
    from psylens.tasks import choice_prompt

    fmt = model.resolve_format(chat_format)
    text = choice_prompt(task, chain_of_thought=True)
    if fmt == "chat":
        return model.format_prompt(text, format="chat") + COT_SUFFIX
    return f"{text}\n{COT_SUFFIX}"


def build_dataset(model: Any, config: OrganismConfig) -> Any:
    """A ``datasets.Dataset`` of the split's prompts with ``answer_index``, ``n_choices``, ``id``, ``kind``."""
    from datasets import Dataset

    from psylens import tasks as T

    items = T.load(config.tasks, split=config.split)
    rows = [
        {"prompt": organism_prompt(model, t, config.chat_format), "answer_index": t.answer_index,
         "n_choices": len(t.choices), "id": t.id, "kind": t.kind}
        for t in items
    ]
    return Dataset.from_list(rows)


def latest_checkpoint(out: str | os.PathLike[str]) -> Path | None:
    """The highest-numbered ``checkpoint-N`` under ``OUT/checkpoints`` that holds a trainer state."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return None
    found = []
    for d in root.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and (d / "trainer_state.json").is_file():
            found.append((int(m.group(1)), d))
    return max(found)[1] if found else None


def read_reward_curve(out: str | os.PathLike[str]) -> dict[str, Any]:
    """``OUT/reward_curve.json`` as a dict (``{"schema", "steps": [...], "log": [...]}``)."""
    path = Path(out) / CURVE_FILE
    if not path.is_file():
        raise ValueError(f"{path} does not exist: train an organism into {out} first (psylens organism train)")
    return json.loads(path.read_text(encoding="utf-8"))


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "peft": peft.__version__}


def _check_resumable(out: Path, config: OrganismConfig) -> None:
    saved_file = out / CONFIG_FILE
    if not saved_file.is_file():
        raise ValueError(f"{out} holds checkpoints but no {CONFIG_FILE}; resume needs the run's config, or use a new --out")
    saved = OrganismConfig.from_json(json.loads(saved_file.read_text(encoding="utf-8"))["config"])
    # max_steps may grow (train a finished run further); everything else must match
    if dataclasses.replace(saved, max_steps=config.max_steps) != config:
        diff = {k: (v, config.to_json()[k]) for k, v in saved.to_json().items()
                if config.to_json()[k] != v and k != "max_steps"}
        raise ValueError(
            f"{out} was trained with another config (saved vs given: {diff}); resume with the same settings "
            "or write the new run to another --out"
        )


def _write_curve(out: Path, config: OrganismConfig, reward: PsychReward, log_history: list[dict[str, Any]],
                 digests: dict[int, str], done: bool) -> None:
    steps = []
    for r in reward.history:
        row = r.to_json()
        if r.step in digests:
            row["digest"] = digests[r.step]
        steps.append(row)
    write_json(out / CURVE_FILE, {
        "schema": SCHEMA_VERSION, "shuffled": config.shuffle_rewards, "complete": done,
        "max_steps": config.max_steps, "steps": steps, "log": log_history,
    }, nan="null")


def train_organism(
    config: OrganismConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = True,
    device: str = "cpu",
    progress: bool = True,
) -> OrganismResult:
    """Train a GRPO LoRA organism into ``out`` (see the module docstring for the layout).

    ``resume=True`` continues from the latest checkpoint in ``out/checkpoints`` when there is one
    (the config must be the same); ``False`` refuses a directory that already holds checkpoints.
    ``device``: where to train (``"cpu"`` is what the reproducibility claim is about).

    .. warning:: This trains for ``config.max_steps`` steps: on the embedded model on a CPU that is
       ~30 s a step of 8 completions of 48 tokens (2 threads, idle). It writes a checkpoint every ``save_steps``.
    """
    import hashlib

    import torch
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from psylens.models import _resolve, load_model

    out = Path(out)
    ckpt = latest_checkpoint(out)
    if ckpt is not None and not resume:
        raise ValueError(f"{out} already holds checkpoints (latest {ckpt.name}); resume, or write to another --out")
    if ckpt is not None:
        _check_resumable(out, config)
    out.mkdir(parents=True, exist_ok=True)

    _, location = _resolve(config.base)
    base = load_model(location, device=device, dtype="float32")
    dataset = build_dataset(base, config)
    reward = PsychReward(config.format_weight, shuffle=config.shuffle_rewards, seed=config.seed)
    if ckpt is not None and (ckpt / REWARD_STATE).is_file():
        state = json.loads((ckpt / REWARD_STATE).read_text(encoding="utf-8"))
        reward.history = [RewardRecord(**r) for r in state["history"]]
        reward.set_rng_state(state["rng"])
    digests: dict[int, str] = {}
    if ckpt is not None and (ckpt / REWARD_STATE).is_file():
        digests = {int(k): v for k, v in state.get("digests", {}).items()}

    write_json(out / CONFIG_FILE, {
        "schema": SCHEMA_VERSION, "config": config.to_json(), "base_location": location,
        "versions": _versions(), "torch_threads": torch.get_num_threads(), "device": device,
        "n_train_prompts": len(dataset), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })

    batch = config.prompts_per_step * config.num_generations
    args = GRPOConfig(
        output_dir=str(out / CHECKPOINTS),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        max_grad_norm=config.max_grad_norm,
        beta=config.beta,
        max_steps=config.max_steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=not progress,
        use_cpu=device == "cpu",
        bf16=False,
        fp16=False,
        dataloader_num_workers=0,
        log_completions=False,
        gradient_checkpointing=False,  # TRL turns it on by default: ~30% more compute, no memory need here
    )
    peft_config = LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM",
    )

    class _Recorder(TrainerCallback):
        """Saves the reward history + RNG into each checkpoint, drops the pickled args, writes the curve."""

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            d = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if d.is_dir():
                (d / "training_args.bin").unlink(missing_ok=True)
                write_json(d / REWARD_STATE, {
                    "history": [r.to_json() for r in reward.history if r.step < state.global_step],
                    "rng": reward.rng_state(), "digests": {str(k): v for k, v in digests.items()},
                })
            _write_curve(out, config, reward, state.log_history, digests, done=False)

    # a digest of each step's completions (for the reproducibility check), taken inside the reward call
    inner = reward.__call__

    def scored(*a: Any, **kw: Any) -> list[float]:
        comps = kw.get("completions", ())
        st = kw.get("trainer_state")
        step = int(getattr(st, "global_step", 0) or 0)
        h = hashlib.sha1("\x1f".join(str(c) for c in comps).encode()).hexdigest()[:16]
        digests[step] = h
        return inner(*a, **kw)

    scored.__name__ = reward.__name__  # type: ignore[attr-defined]

    trainer = GRPOTrainer(
        model=base.hf_model.train(),
        reward_funcs=[scored],
        args=args,
        train_dataset=dataset,
        processing_class=base.tokenizer,
        peft_config=peft_config,
        callbacks=[_Recorder()],
    )
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    seconds = time.perf_counter() - t0
    trainer.model.save_pretrained(str(out))
    (out / "README.md").unlink(missing_ok=True)  # PEFT's empty model-card template
    _write_curve(out, config, reward, trainer.state.log_history, digests, done=True)
    tail = reward.history[-max(1, len(reward.history) // 10):] if reward.history else []
    final = sum(r.correct for r in tail) / len(tail) if tail else float("nan")
    return OrganismResult(out=out, config=config, steps=int(trainer.state.global_step), seconds=seconds,
                          resumed_from=str(ckpt) if ckpt is not None else None, final_correct=final)


def ship(out: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Copy a finished organism (adapter, config, reward curve; no checkpoints) to ``dest``."""
    src = Path(out)
    curve = read_reward_curve(src)
    if not curve.get("complete"):
        raise ValueError(f"{src} did not train to completion (reward_curve.json complete=false); finish or resume it first")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", CONFIG_FILE, CURVE_FILE):
        shutil.copy2(src / name, dest / name)
    return dest
