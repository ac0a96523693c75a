"""``psylens compare``: a base model against its tuned variant, written to ``RUN/compare/``.

    psylens compare --base M --tuned M2 [--tuned-adapter DIR] [--sections weights,activations,emotions,steering,features] --out RUN

``compare_cmd`` is a plain function; the main CLI registers it as ``compare``. Bad arguments raise
``ValueError`` (printed as one line by the main CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["compare_cmd"]


def compare_cmd(
    base: str = typer.Option(..., "--base", help="The base model (alias, HF id, directory or .gguf)."),
    out: Path = typer.Option(..., "--out", help="Run directory (created; RUN/compare/ is written)."),
    tuned: Optional[str] = typer.Option(None, "--tuned", help="The tuned model (default: --base with --tuned-adapter)."),
    tuned_adapter: Optional[Path] = typer.Option(None, "--tuned-adapter", help="A PEFT adapter directory applied on the base (ΔW read exactly)."),
    sections: str = typer.Option(",".join(("weights", "activations", "emotions", "steering", "features")), "--sections",
                                 help="Comma-separated: weights,activations,emotions,steering,features."),
    quick: bool = typer.Option(False, "--quick", help="Fewer texts and tokens (the demo's budget)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="PNG plots beside report.md (needs kaleido)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Compare a base and a tuned model: weights, activations, emotion representations (RUN/compare/report.md)."""
    from rich.console import Console

    from psylens.compare.pair import load_pair
    from psylens.compare.pipeline import CompareConfig, parse_sections, run_compare
    from psylens.runs import now

    started = now()
    make = CompareConfig.quick if quick else CompareConfig
    cfg = make(sections=parse_sections(sections), plots=plots, seed=seed)  # bad settings fail before models load
    pair = load_pair(base, tuned, tuned_adapter=tuned_adapter, device=device)
    summary = run_compare(pair, out, cfg, progress=progress, started=started)
    con = Console()
    for name, sec in summary["sections"].items():
        if sec["status"] == "done":
            con.print(f"[green]{name}[/green]: done")
        else:
            con.print(f"[yellow]{name}[/yellow]: {sec['status']} — {sec['reason']}")
    if summary["plots"]["note"]:
        con.print(f"plots: {summary['plots']['note']}")
    con.print(f"report: {out / 'compare' / 'report.md'}")
