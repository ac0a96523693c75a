"""``psylens probe``: emotion directions, probes with controls, and the analyses, into ``RUN/probes/``.

A plain function with Typer annotations; ``psylens.cli`` registers it. Bad arguments raise
``typer.BadParameter`` or ``ValueError`` (one line, non-zero exit), checked before the model loads.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION, model_kwargs

__all__ = ["probe"]


def _split(values: list[str]) -> list[str]:
    return [v for item in values for v in item.replace(",", " ").split() if v]


def probe(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Alias, HF id, directory or .gguf."),
    stimuli: str = typer.Option("emotions", "--stimuli", "-s", help="Built-in set name or a labelled JSONL file."),
    sites: list[str] = typer.Option(["resid_post"], "--sites", help="Sites, comma-separated or repeated; the first is the headline."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory (created, or added to if it is a run)."),
    eval: Optional[Path] = typer.Option(None, "--eval", help="Labelled JSONL never used in training: accuracy per layer on it."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="PEFT/LoRA adapter directory applied to the model."),
    seed: int = typer.Option(0, "--seed", help="Folds, label shuffles and the control task."),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    kind: str = typer.Option("logistic", "--kind", help="logistic (default) | mlp"),
    positions: str = typer.Option("mean", "--positions", help="Read-out of each text: mean over its tokens (default) | last token."),
    geometry: bool = typer.Option(True, "--geometry/--no-geometry", help="Cosines, centroid PCA, valence ordering."),
    cross_format: bool = typer.Option(True, "--cross-format/--no-cross-format", help="Implicit events ↔ explicit statements."),
    persistence: bool = typer.Option(True, "--persistence/--no-persistence", help="Decode the emotion N tokens after the event."),
    persistence_tokens: int = typer.Option(200, "--persistence-tokens", help="Largest token offset decoded after the event."),
    system_prompt: bool = typer.Option(True, "--system-prompt/--no-system-prompt", help="Shift of neutral texts under mood prompts."),
    valence: Optional[str] = typer.Option(
        None, "--valence", help="Valence order for the geometry, '>' ranks and '=' ties "
        "\\[default: joy>surprise>neutral>fear=sadness=disgust=anger]."),  # \\[: not rich markup
    batch_size: int = typer.Option(16, "--batch-size"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads (1 is ~2x faster on a busy 2-core CPU)."),
) -> None:
    """Fit emotion directions and probes (held-out scenarios, shuffled and selectivity controls) at every layer; write RUN/probes/."""
    from rich.console import Console

    from psylens.io import ensure_writable_dir
    from psylens.probes.classifiers import KINDS
    from psylens.probes.pipeline import ANALYSES, READOUTS, parse_valence, run_probes
    from psylens.runs import now
    from psylens.sites import validate_sites
    from psylens.stimuli import load

    started = now()  # a new run records when the command started
    # everything that needs no model is checked first
    site_list = validate_sites(_split(sites))
    if kind not in KINDS:
        raise typer.BadParameter(f"{kind!r} is not one of {', '.join(KINDS)}", param_hint="--kind")
    if positions not in READOUTS:
        raise typer.BadParameter(f"{positions!r} is not one of {', '.join(READOUTS)}", param_hint="--positions")
    if persistence_tokens < 1:
        raise typer.BadParameter(f"must be at least 1, got {persistence_tokens}", param_hint="--persistence-tokens")
    if batch_size < 1:
        raise typer.BadParameter(f"must be at least 1, got {batch_size}", param_hint="--batch-size")
    if threads is not None and threads < 1:
        raise typer.BadParameter(f"must be at least 1, got {threads}", param_hint="--threads")
    stim = load(stimuli)
    try:
        valence_scores = parse_valence(valence) if valence is not None else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--valence") from None
    if eval is not None and not eval.is_file():
        raise typer.BadParameter(f"{str(eval)!r} is not a file; give a labelled JSONL", param_hint="--eval")
    if adapter is not None and not adapter.is_dir():
        raise typer.BadParameter(f"{str(adapter)!r} is not a directory; give a PEFT adapter directory",
                                 param_hint="--adapter")
    flags = {"geometry": geometry, "cross_format": cross_format, "persistence": persistence,
             "system_prompt": system_prompt}
    analyses = [a for a in ANALYSES if flags[a]]
    ensure_writable_dir(out)

    import torch

    from psylens.models import load_model
    from psylens.runs import open_or_create_run

    console = Console()
    torch.manual_seed(seed)
    m = load_model(model, adapter=adapter, **model_kwargs(device, dtype, device_map))
    config = {"stimuli": stimuli, "sites": site_list, "eval": str(eval) if eval else None, "kind": kind,
              "positions": positions, "valence": valence_scores,
              "analyses": analyses, "persistence_tokens": persistence_tokens, "batch_size": batch_size}
    # an existing run (e.g. from `psylens harvest --out R`) keeps its record; this command's settings go to
    # steps/probes.json. Another model than the run's is refused here, before anything is written.
    run = open_or_create_run(out, command=" ".join(["psylens", *sys.argv[1:]]), model=m, config=config, seed=seed,
                             started=started)
    summary = run_probes(m, run, stimuli=stim, sites=site_list, eval_path=eval, seed=seed, kind=kind,
                         analyses=analyses, persistence_tokens=persistence_tokens, batch_size=batch_size,
                         valence=valence_scores, threads=threads, positions=positions)
    s = summary
    console.print(
        f"[green]probes[/green] {len(s['labels'])} labels on {s['site']}: best layer {s['best_layer']} "
        f"accuracy {s['best_accuracy']:.3f} (shuffled control {s['shuffled_accuracy_at_best_layer']:.3f}, "
        f"chance {s['chance']:.3f}); emerges at layer {s['emergence_layer']}"
    )
    if s.get("eval"):
        console.print(f"eval {s['eval']['file']}: {s['eval']['accuracy_at_best_layer']:.3f} at layer {s['best_layer']} "
                      f"(n={s['eval']['n']})")
    for note in s.get("notes", []):
        console.print(f"[yellow]note[/yellow] {note}")
    from psylens.cli import psylens_command

    console.print(f"run: {out}\nexplore: {psylens_command()} explore {out}", highlight=False)
