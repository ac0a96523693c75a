"""``psylens organism train``: GRPO-train a LoRA model organism on the ``psych`` reasoning tasks.

    psylens organism train --out DIR [--base smollm2-135m-instruct] [--seed 0] [--max-steps 200]
                           [--shuffle-rewards] [--config organism_config.json] [--no-resume] ...

Writes ``DIR/adapter_config.json`` + ``adapter_model.safetensors`` (the LoRA), ``DIR/organism_config.json``
(the whole config) and ``DIR/reward_curve.json``; checkpoints go to ``DIR/checkpoints`` and a rerun
with the same ``--out`` and settings resumes from the latest. ``--shuffle-rewards`` trains the
control (rewards permuted across completions). Defaults are the recipe of the shipped
``smollm2-135m-psy-grpo``. Bad arguments raise ``ValueError`` before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer

__all__ = ["organism_app"]

organism_app = typer.Typer(
    name="organism",
    help="The RL-tuned model organism: GRPO + LoRA on psychological-reasoning tasks.",
    no_args_is_help=True,
    add_completion=False,
)


@organism_app.callback()
def _group() -> None:
    """The RL-tuned model organism (a group, so ``train`` keeps its name on its own as under ``psylens``)."""


@organism_app.command("train")
def train_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (adapter, config, reward curve, checkpoints)."),
    base: Optional[str] = typer.Option(None, "--base", "-m", help="Base model: alias, HF id or directory."),
    config: Optional[Path] = typer.Option(None, "--config", help="An organism_config.json to start from (options override it)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps (one batch of prompts each)."),
    prompts_per_step: Optional[int] = typer.Option(None, "--prompts-per-step"),
    num_generations: Optional[int] = typer.Option(None, "--num-generations", help="Completions per prompt (the GRPO group)."),
    max_completion_length: Optional[int] = typer.Option(None, "--max-completion-length", help="Tokens per completion."),
    temperature: Optional[float] = typer.Option(None, "--temperature"),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", "--lr"),
    lora_r: Optional[int] = typer.Option(None, "--lora-r"),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha"),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help="Comma-separated, e.g. q_proj,v_proj."),
    format_weight: Optional[float] = typer.Option(None, "--format-weight", help="Bonus for an explicit 'Answer: X'."),
    beta: Optional[float] = typer.Option(None, "--beta", help="KL penalty to the base (0: none)."),
    save_steps: Optional[int] = typer.Option(None, "--save-steps", help="Checkpoint every N steps."),
    shuffle_rewards: bool = typer.Option(False, "--shuffle-rewards", help="The control: rewards permuted across completions."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the latest checkpoint in --out."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads (recorded; results depend on it)."),
    device: str = typer.Option("cpu", "--device"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train a GRPO LoRA organism; rerun the same command to resume it."""
    from rich.console import Console

    from psylens.compare.organism import OrganismConfig, train_organism

    cfg = OrganismConfig()
    if config is not None:
        if not config.is_file():
            raise ValueError(f"--config {str(config)!r} does not exist; give an organism_config.json written by a run")
        raw = json.loads(config.read_text(encoding="utf-8"))
        cfg = OrganismConfig.from_json(raw.get("config", raw))
    given = {
        "base": base, "seed": seed, "max_steps": max_steps, "prompts_per_step": prompts_per_step,
        "num_generations": num_generations, "max_completion_length": max_completion_length,
        "temperature": temperature, "learning_rate": learning_rate, "lora_r": lora_r, "lora_alpha": lora_alpha,
        "format_weight": format_weight, "beta": beta, "save_steps": save_steps,
        "target_modules": tuple(m.strip() for m in target_modules.split(",") if m.strip()) if target_modules else None,
        "shuffle_rewards": True if shuffle_rewards else None,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None})  # validates
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a directory")
    console = Console(stderr=True)
    console.print(f"training {'the control (shuffled rewards)' if cfg.shuffle_rewards else 'the organism'} "
                  f"on {cfg.base}: {cfg.max_steps} steps of {cfg.prompts_per_step}×{cfg.num_generations} completions")
    r = train_organism(cfg, out, resume=resume, device=device, progress=progress)
    if r.resumed_from:
        console.print(f"resumed from {r.resumed_from}")
    console.print(f"{r.steps} steps in {r.seconds:.0f} s; correct over the last steps {r.final_correct:.2f}")
    console.print(f"wrote {out} (load it: psylens.load_model({cfg.base!r}, adapter={str(out)!r}))")
