"""``psylens validate``: the emotion-validation suite on one model, direction source and layer.

    psylens validate --model M --run RUN [--source stories|expression|probes] [--layer L] [--quick]
                     [--steer-with auto|sweep|layer] [--scale S] [--scale-reference norm|centred|median]
                     [--read-back-fluency relative|relative_greedy|absolute|none]

Writes ``RUN/validation/summary.json``, the tables behind each gate and
``RUN/validation/directions.safetensors`` (:mod:`psylens.validation.suite`). When the run holds a
steering sweep (``RUN/steering/vectors/<emotion>.safetensors``), ``feels_matrix`` and ``read_back``
steer with its picked vectors, each emotion at its own layer and scale (``--steer-with auto``). A new directory becomes a
new run; an existing run must be of the same model. ``validate_app`` is a ``typer.Typer``; the main
CLI registers it as ``validate``. Bad arguments raise ``ValueError`` (printed as one line).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION, model_kwargs

__all__ = ["validate_app"]

log = logging.getLogger(__name__)

validate_app = typer.Typer(
    name="validate",
    help="Validate emotion directions inside the model: feels matrix, scenarios, dose-response, geometry, "
         "logit lens, read-back, preferences — each with a control.",
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
)


@validate_app.callback(invoke_without_command=True)
def validate(
    run: Path = typer.Option(..., "--run", help="Run directory (created if absent; RUN/validation/ is written)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the run's model, else the embedded one)."),
    source: str = typer.Option("stories", "--source", help="stories | expression | probes (RUN/probes/directions.safetensors)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Layer every gate reads and steers (default: 0.45 of the depth)."),
    scale: float = typer.Option(0.5, "--scale", help="Steering strength, a multiple of the layer's mean residual norm."),
    quick: bool = typer.Option(False, "--quick", help="Fewer contexts, prompts and activities (the demo's budget; said in the summary)."),
    steer_with: str = typer.Option("auto", "--steer-with",
                                   help="What feels_matrix and read_back steer with: auto (the steering sweep's picked vectors, "
                                        "RUN/steering/vectors, when present; else --layer × --scale), sweep (require them), layer."),
    scale_reference: str = typer.Option(
        "norm", "--scale-reference",
        help="What --scale multiplies: norm (the layer's mean per-token residual norm, default) | centred (the mean "
             "norm after subtracting the mean token vector) | median (√d × the median dimension's RMS; for models "
             "with massive activations such as Gemma-3)."),
    read_back_fluency: str = typer.Option(
        "relative", "--read-back-fluency",
        help="What read_back's steered (greedy) texts must match to pass: relative (the issue's: perplexity, "
             "distinct-2 and zlib ratio no worse than the model's T=1 samples; greedy text is less diverse than "
             "samples, so this is strict) | relative_greedy (diversity against the unsteered greedy text) | "
             "absolute (perplexity ratio ≤ 1.5) | none (not judged)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
) -> None:
    """Run every validation gate; write RUN/validation/summary.json and the tables behind it."""
    from rich.console import Console
    from rich.table import Table

    from psylens.models import DEFAULT_MODEL, load_model
    from psylens.runs import RUN_FILE, now, open_or_create_run, open_run
    from psylens.validation.suite import ValidationConfig, run_validation

    started = now()
    make = ValidationConfig.quick_config if quick else ValidationConfig
    cfg = make(source=source, layer=layer, scale=scale, seed=seed, steer_with=steer_with,
               scale_reference=scale_reference,
               read_back_fluency=None if read_back_fluency == "none" else read_back_fluency)  # bad settings fail before a model loads
    spec = model
    if spec is None and (run / RUN_FILE).is_file():
        meta_model = open_run(run).meta.get("model")
        spec = meta_model.get("spec") if isinstance(meta_model, dict) else meta_model
    m = load_model(spec or DEFAULT_MODEL, **model_kwargs(device, dtype, device_map))
    r = open_or_create_run(run, command="psylens validate", model=m, seed=seed, started=started)
    summary = run_validation(m, r, cfg, progress=True)
    table = Table(title=f"validation: {summary['source']} directions, layer {summary['layer']}"
                  + (" (quick)" if summary.get("quick") else "")
                  + f"; steering gates: {(summary.get('steering') or {}).get('note', '')}")
    for col in ("gate", "value", "threshold", "control", "passed"):
        table.add_column(col)

    def fmt(x: object) -> str:
        return "—" if x is None else (f"{x:.3g}" if isinstance(x, float) else str(x))

    for name, g in summary["gates"].items():
        verdict = "skipped" if "skipped" in g else ("reported" if not g.get("gated", True) else ("yes" if g["passed"] else "no"))
        table.add_row(name, fmt(g["value"]), fmt(g["threshold"]), fmt(g["control"]), verdict)
    Console().print(table)
    typer.echo(f"{summary['passed']}/{summary['total']} gates passed; wrote {r.path / 'validation' / 'summary.json'}")
