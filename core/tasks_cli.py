"""``psylens tasks eval``: evaluate a model on a psychological-reasoning task set.

    psylens tasks eval --model M [--tasks psych|FILE.jsonl] [--method loglik|generate] [--cot]
                       [--split train|test] [--batch-size N] [--max-new-tokens N] [--items] --out result.json

Writes the :func:`psylens.tasks.evaluate` dict as JSON (atomically). ``tasks_app`` is a
``typer.Typer``; the main CLI registers it as ``tasks``. Bad arguments raise ``ValueError``
before the model is loaded (the main CLI prints them as one line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION, model_kwargs

__all__ = ["tasks_app", "register"]

tasks_app = typer.Typer(
    name="tasks",
    help="Psychological-reasoning tasks (theory of mind, emotions, faux pas): evaluate a model.",
    no_args_is_help=True,
    add_completion=False,
)


def _check_out_file(out: Path) -> None:
    if out.exists() and out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give a file name such as result.json")
    p = out.absolute().parent
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK):
        raise ValueError(
            f"--out {str(out)!r} is not writable ({str(p)!r} is not a writable directory); "
            "choose a file in a directory you can write to"
        )


@tasks_app.command("eval")
def eval_cmd(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Alias, HF id, directory or .gguf."),
    tasks: str = typer.Option("psych", "--tasks", "-t", help="Built-in set ('psych') or a JSONL file of tasks."),
    method: str = typer.Option("loglik", "--method", help="loglik | generate"),
    cot: bool = typer.Option(False, "--cot", help="Chain of thought (with --method generate)."),
    split: Optional[str] = typer.Option(None, "--split", help="train | test (default: every item)."),
    format: str = typer.Option("auto", "--format", help="chat | raw | auto"),
    batch_size: int = typer.Option(4, "--batch-size", help="Tasks per forward pass."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="generate: default 8, 256 with --cot."),
    items: bool = typer.Option(False, "--items", help="Also write each item's prediction (per_item)."),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    out: Path = typer.Option(..., "--out", "-o", help="JSON file to write."),
) -> None:
    """Evaluate a model on a task set and write accuracy (overall, by kind, 95% intervals) as JSON."""
    from rich.console import Console

    from psylens import tasks as T
    from psylens.io import write_json
    from psylens.models import load_model

    # Check everything that needs no model first.
    if method not in T.METHODS:
        raise ValueError(f"--method {method!r}: use one of {', '.join(T.METHODS)}")
    if cot and method != "generate":
        raise ValueError("--cot needs --method generate (loglik scores the choices directly)")
    if split is not None and split not in T.SPLITS:
        raise ValueError(f"--split {split!r}: use one of {', '.join(T.SPLITS)}, or leave it out for every item")
    if format not in ("auto", "chat", "raw"):
        raise ValueError(f"--format {format!r}: use one of auto, chat, raw")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    items_list = T.load(tasks, split=split)
    _check_out_file(out)
    m = load_model(model, **model_kwargs(device, dtype, device_map), boot_bridge=False)
    m.resolve_format(format)
    result = T.evaluate(m, items_list, method=method, chain_of_thought=cot, batch_size=batch_size,
                        progress=True, return_items=items, format=format, max_new_tokens=max_new_tokens)
    write_json(out, result)
    console = Console()
    lo, hi = result["ci95"]
    console.print(f"accuracy {result['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] on {result['n']} items "
                  f"(chance {result['chance']:.2f}, parsed {result['parsed']:.2f})")
    for kind, acc in result["by_kind"].items():
        console.print(f"  {kind:<20} {acc:.3f}")
    chosen = " ".join(f"{k} {v:.2f}" for k, v in result["letters"].items())
    answers = " ".join(f"{k} {v:.2f}" for k, v in result["answer_letters"].items())
    console.print(f"chosen by position: {chosen} (answers: {answers})")
    console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add ``tasks`` (with ``tasks eval``) to ``app``."""
    app.add_typer(tasks_app, name="tasks")
