"""``psylens traces``: sampled chain-of-thought traces on a task set, written into a run (resumable).

    psylens traces --model M [--tasks psych|FILE] [--split train] [--samples K] [--max-new-tokens N]
                   [--temperature T] [--seed S] [--batch-size B] --out RUN

Writes ``RUN/traces/traces.jsonl`` (see :mod:`psylens.saes.traces`). Run the same command again
after a kill: the traces already written are kept and the rest are generated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION, model_kwargs

__all__ = ["traces_cmd"]


def traces_cmd(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Alias, HF id, directory or .gguf."),
    tasks: str = typer.Option("psych", "--tasks", "-t", help="Built-in set ('psych') or a JSONL file of tasks."),
    split: Optional[str] = typer.Option("train", "--split", help="train | test | all"),
    samples: int = typer.Option(4, "--samples", "-k", help="Traces per task."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Tokens generated per trace at most."),
    temperature: float = typer.Option(0.7, "--temperature", help="Sampling temperature (0 = greedy)."),
    seed: int = typer.Option(0, "--seed", help="Run seed; each trace's seed is derived from it."),
    batch_size: int = typer.Option(16, "--batch-size", help="Traces per generate call (part of the settings)."),
    format: str = typer.Option("auto", "--format", help="chat | raw | auto"),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created or resumed)."),
) -> None:
    """Generate sampled chain-of-thought traces (RUN/traces/traces.jsonl); re-run to resume after a kill."""
    from rich.console import Console

    from psylens import tasks as T
    from psylens.models import load_model
    from psylens.saes.traces import TraceConfig, generate_traces

    split_arg = None if split in (None, "all") else split
    TraceConfig(tasks=tasks, split=split_arg, samples=samples, max_new_tokens=max_new_tokens,
                temperature=temperature, seed=seed, batch_size=batch_size, format=format)  # validates
    T.load(tasks, split=split_arg)  # a bad task file fails before the model loads
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a run directory")
    m = load_model(model, **model_kwargs(device, dtype, device_map), boot_bridge=False)
    summary = generate_traces(m, tasks, out, split=split_arg, samples=samples, max_new_tokens=max_new_tokens,
                              temperature=temperature, seed=seed, batch_size=batch_size, format=format,
                              progress=True)
    console = Console()
    console.print(
        f"{summary['n']} traces ({summary['written']} new, {summary['skipped']} already there); "
        f"accuracy {summary['accuracy']:.3f}, parsed {summary['parsed']:.2f}; "
        f"{summary['new_tokens']} tokens in {summary['seconds']} s ({summary['tokens_per_second']} tok/s)"
    )
    console.print(f"wrote {out / 'traces' / 'traces.jsonl'}")
