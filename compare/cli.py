"""``psylens compare``: a base model against its tuned variant, written to ``RUN/compare/``.

    psylens compare --base M --tuned M2 [--tuned-adapter DIR] [--sections weights,activations,emotions,steering,features]
                    [--sae DIR | --without-sae] [--base-run RUN] --out RUN

``compare_cmd`` is a plain function; the main CLI registers it as ``compare``. Bad arguments raise
``ValueError`` (printed as one line by the main CLI) before any model loads.

The features section's flags mirror :class:`~psylens.compare.features.FeaturesConfig`: ``--sae`` is its
``sae`` (a step-SAE folder written by ``psylens sae train`` — any path, e.g. another run's
``runs/base/saes/step-l15`` — or the name of one in ``RUN/saes/``), ``--without-sae`` its ``without_sae``
(the behaviour labels and the crosscoder alone, no SAE needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION, model_kwargs

__all__ = ["compare_cmd", "features_options"]


def features_options(sae: str | None, without_sae: bool, sections: tuple[str, ...], out: Path) -> dict[str, Any]:
    """``--sae`` / ``--without-sae`` checked, as :class:`~psylens.compare.features.FeaturesConfig` fields (``{}``
    when neither is given). ``ValueError`` (what was given, what is valid, how to fix) for: both flags; either
    flag without the features section; an ``--sae`` that is neither a step-SAE folder nor the name of one in
    ``OUT/saes/``. A folder given by path is returned as an absolute path."""
    from psylens.compare.features import check_sae_folder, is_sae_path
    from psylens.saes import artifacts as sart

    if sae is None and not without_sae:
        return {}
    given = " and ".join(x for x in (f"--sae {sae!r}" if sae is not None else "", "--without-sae" if without_sae else "") if x)
    if sae is not None and without_sae:
        raise ValueError(f"{given}: the two exclude each other; give --sae DIR to read that step SAE, or --without-sae "
                         "for the behaviour labels and the crosscoder alone")
    if "features" not in sections:
        raise ValueError(f"{given} only applies to the features section, which --sections {','.join(sections)!r} leaves "
                         "out; add features to --sections or drop the flag")
    if without_sae or sae is None:
        return {"without_sae": True}
    if not sae.strip():
        raise ValueError("--sae '' is empty; give a step-SAE folder written by `psylens sae train` (holding "
                         f"{sart.STEP_SAE}) or the name of one in {out / sart.DIR}/")
    folder = Path(sae).expanduser()
    if folder.is_dir():  # an existing folder wins over a name (./step-l15 as well as runs/base/saes/step-l15)
        check_sae_folder(folder)
        return {"sae": str(folder.resolve())}
    if is_sae_path(sae):
        raise ValueError(f"--sae {sae!r}: no such folder; give a step-SAE folder written by `psylens sae train` "
                         f"(RUN/saes/<name>/, holding {sart.STEP_SAE}) or the name of one in {out / sart.DIR}/")
    root = out / sart.DIR
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and (d / sart.STEP_SAE).is_file()) if root.is_dir() else []
    if sae not in names:
        raise ValueError(f"--sae {sae!r} is neither a folder nor a step SAE in {root}/ (it has {', '.join(names) or 'none'}); "
                         "give the folder `psylens sae train` wrote (e.g. runs/base/saes/step-l15), the name of one in "
                         "that list, or --without-sae")
    check_sae_folder(root / sae)
    return {"sae": sae}


def compare_cmd(
    base: str = typer.Option(..., "--base", help="The base model (alias, HF id, directory or .gguf)."),
    out: Path = typer.Option(..., "--out", help="Run directory (created; RUN/compare/ is written)."),
    tuned: Optional[str] = typer.Option(None, "--tuned", help="The tuned model (default: --base with --tuned-adapter)."),
    tuned_adapter: Optional[Path] = typer.Option(None, "--tuned-adapter", help="A PEFT adapter directory applied on the base (ΔW read exactly)."),
    sections: str = typer.Option(",".join(("weights", "activations", "emotions", "steering", "features")), "--sections",
                                 help="Comma-separated: weights,activations,emotions,steering,features."),
    sae: Optional[str] = typer.Option(None, "--sae", help="Features section: a step-SAE folder written by `psylens sae "
                                      "train` (e.g. runs/base/saes/step-l15), or the name of one in OUT/saes/."),
    without_sae: bool = typer.Option(False, "--without-sae", help="Features section without a step SAE: the behaviour "
                                     "labels and the crosscoder alone."),
    base_run: Optional[Path] = typer.Option(None, "--base-run", help="Steering section: a run of the base model whose "
                                            "steering sweep's picked vectors (steering/vectors/) to transfer "
                                            "(default: look in --out)."),
    quick: bool = typer.Option(False, "--quick", help="Fewer texts and tokens (the demo's budget)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="PNG plots beside report.md (needs kaleido)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Compare a base and a tuned model: weights, activations, emotion representations (RUN/compare/report.md)."""
    from dataclasses import replace

    from rich.console import Console

    from psylens.compare.pair import load_pair
    from psylens.compare.pipeline import CompareConfig, parse_sections, run_compare
    from psylens.runs import now

    started = now()
    make = CompareConfig.quick if quick else CompareConfig
    cfg = make(sections=parse_sections(sections), plots=plots, seed=seed)  # bad settings fail before models load
    feats = features_options(sae, without_sae, cfg.sections, out)
    if feats:
        cfg = replace(cfg, features=replace(cfg.features, **feats))
    if base_run is not None:
        if "steering" not in cfg.sections:
            raise ValueError(f"--base-run only applies to the steering section, which --sections {sections!r} leaves "
                             "out; add steering to --sections or drop the flag")
        if not (base_run / "run.json").is_file():
            raise ValueError(f"--base-run {str(base_run)!r} is not a run directory (no run.json); give the run where "
                             "`psylens steer sweep` wrote the base model's vectors")
        cfg = replace(cfg, steering=replace(cfg.steering, base_run=str(base_run)))
    pair = load_pair(base, tuned, tuned_adapter=tuned_adapter, **model_kwargs(device, dtype, device_map))
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
