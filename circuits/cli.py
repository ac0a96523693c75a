"""``psylens circuits``: each emotion's heads and neurons, proven by ablation and enhancement.

    psylens circuits --model M --run RUN [--emotions joy,anger] [--source probes|expression|stories]
                     [--layer L] [--eval FILE.jsonl] [--selection threshold|top_k|drop] [--drop 0.5]
                     [--confidence 0.95]
                     [--modulation] [--modulation-op scale|shift] [--modulation-factors 0.5,1,2]
                     [--scale-reference norm|centred|median] [--quick]

Writes ``RUN/circuits/summary.json``, ``RUN/circuits/<emotion>.json``, ``directions.safetensors``,
``scores.safetensors`` and the tables of :mod:`psylens.circuits.artifacts` (see
:mod:`psylens.circuits.pipeline`). A new directory becomes a new run; an existing run must be of the
same model. ``circuits_app`` is a ``typer.Typer``; the main CLI registers it as ``circuits``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION, model_kwargs

__all__ = ["circuits_app"]

circuits_app = typer.Typer(
    name="circuits",
    help="Emotion circuits: heads and neurons scored by direct write, attribution patching and patching; "
         "ablation and enhancement against size-matched random sets.",
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
)


@circuits_app.callback(invoke_without_command=True)
def circuits(
    run: Path = typer.Option(..., "--run", help="Run directory (created if absent; RUN/circuits/ is written)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the run's model, else the embedded one)."),
    emotions: Optional[str] = typer.Option(None, "--emotions", help="Comma-separated emotions (default: all six)."),
    source: Optional[str] = typer.Option(None, "--source", help="probes | expression | stories (default: probes when the run has them, else expression)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Read-out layer (default: the probes' best layer, else 0.45 of the depth)."),
    eval_file: Optional[Path] = typer.Option(None, "--eval", help="Held-out stimuli JSONL (default: the built-in stories' test split)."),
    selection: str = typer.Option("threshold", "--selection", help="threshold (cumulative attribution) | top_k | drop "
                                  "(the fewest threshold candidates whose ablation removes --drop of the discovery signal)."),
    drop: float = typer.Option(0.5, "--drop", help="With --selection drop: the share of the discovery signal to remove."),
    confidence: Optional[float] = typer.Option(None, "--confidence", help="With --selection drop: the lower end of the "
                                               "drop's scenario-bootstrap interval at this level (e.g. 0.95) must reach "
                                               "--drop, not only the point drop."),
    readout: Optional[str] = typer.Option(None, "--readout", help="Where each stimulus' projection is read: mean (over "
                                          "its text tokens) | last (its last token); default: the probes' --positions "
                                          "with probe directions, else mean."),
    baseline: str = typer.Option("neutral", "--baseline", help="What atp and patching patch a unit to: neutral (the mean "
                                 "over the discovery scenarios' neutral events) | scenario (each stimulus' own "
                                 "scenario's neutral event)."),
    modulation: bool = typer.Option(False, "--modulation", help="Also judge circuit modulation vs steering vs prompting while generating (slow)."),
    modulation_op: str = typer.Option("scale", "--modulation-op", help="With --modulation: scale (multiply the circuit's "
                                      "units by 1.5/2/4) | shift (add 1/2/4/8 × each unit's emotion contrast)."),
    modulation_factors: Optional[str] = typer.Option(None, "--modulation-factors", help="With --modulation: the "
                                                     "circuit's strengths, comma-separated (default: the op's grid)."),
    modulation_steer_scales: Optional[str] = typer.Option(None, "--modulation-steer-scales", help="With --modulation: "
                                                          "steering's strengths, multiples of the read-out layer's "
                                                          "residual norm, comma-separated (default: 0.1,0.15,0.2,0.25,0.5)."),
    modulation_judges: Optional[str] = typer.Option(None, "--modulation-judges", help="With --modulation: text judges "
                                                    "beside the NRC lexicon, comma-separated: probe | llm (built on the "
                                                    "model itself)."),
    scale_reference: str = typer.Option("norm", "--scale-reference", help="With --modulation: what steering's scales multiply: "
                                        "norm | centred | median (for models with massive activations such as Gemma-3)."),
    quick: bool = typer.Option(False, "--quick", help="Fewer scenarios, patched units and sublayer strengths (a smoke run)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
) -> None:
    """Find each emotion's circuit and test it; write RUN/circuits/summary.json and the tables behind it."""
    from rich.console import Console
    from rich.table import Table

    from psylens.circuits.circuit import Selection
    from psylens.circuits.pipeline import CircuitsConfig, run_circuits
    from psylens.models import DEFAULT_MODEL, load_model
    from psylens.runs import RUN_FILE, now, open_or_create_run, open_run
    from psylens.stimuli import EMOTIONS

    started = now()
    emos = tuple(e.strip() for e in emotions.split(",") if e.strip()) if emotions else EMOTIONS
    if eval_file is not None and not eval_file.is_file():
        raise ValueError(f"--eval {str(eval_file)!r} does not exist; give a stimuli JSONL file (text, label, group per line)")
    factors = _numbers(modulation_factors, "--modulation-factors")
    steer_scales = _numbers(modulation_steer_scales, "--modulation-steer-scales")
    extra = dict(n_discovery=12, n_heldout=8, patch_heads=12, patch_neurons=12, alphas=(1.0,), curve_points=3) if quick else {}
    cfg = CircuitsConfig(emotions=emos, source=source, layer=layer, eval_file=str(eval_file) if eval_file else None,
                         seed=seed, modulation=modulation, selection=Selection(mode=selection, drop=drop, confidence=confidence),
                         baseline=baseline, readout=readout,
                         modulation_scale_reference=scale_reference, modulation_op=modulation_op,
                         modulation_factors=factors, modulation_steer_scales=steer_scales,
                         modulation_judges=tuple(j.strip() for j in (modulation_judges or "").split(",") if j.strip()),
                         **extra)  # bad settings fail before a model loads
    spec = model
    if spec is None and (run / RUN_FILE).is_file():
        meta_model = open_run(run).meta.get("model")
        spec = meta_model.get("spec") if isinstance(meta_model, dict) else meta_model
    m = load_model(spec or DEFAULT_MODEL, **model_kwargs(device, dtype, device_map))
    r = open_or_create_run(run, command="psylens circuits", model=m, seed=seed, started=started)
    summary = run_circuits(m, r, cfg, progress=True)
    table = Table(title=f"circuits: {summary['source']} directions, read-out layer {summary['readout_layer']}")
    for col in ("emotion", "heads", "neurons", "drop", "random drop", "gain", "random gain", "ρ atp~patch", "eval drop"):
        table.add_column(col)

    def f(x: object) -> str:
        return "—" if x is None else (f"{x:.3g}" if isinstance(x, float) else str(x))

    for e, s in summary["emotions"].items():
        a, g = s["ablation"], s["enhancement"]
        table.add_row(e, str(s["n_heads"]), str(s["n_neurons"]), f(a["drop"]),
                      f"{f(a['random_drop'])} ± {f(a.get('random_drop_std'))}", f(g["gain"]), f(g["random_gain"]),
                      f(s["atp_vs_patching_spearman"]), f(s["eval"]["drop"]))
    Console().print(table)
    typer.echo(f"cost ratio (atp / forward): {f(summary['cost_ratio'])}; wrote {r.path / 'circuits' / 'summary.json'}")


def _numbers(text: str | None, flag: str) -> tuple[float, ...] | None:
    """``"0.5,1,2"`` → ``(0.5, 1.0, 2.0)``; ``None`` stays ``None`` (the default grid)."""
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{flag} {text!r} must be comma-separated numbers, e.g. 0.5,1,2") from None
