"""``psylens steer``: generate with a steering vector, and ``psylens steer sweep``.

    psylens steer --model M --vectors RUN/probes/directions.safetensors --emotion joy --layer 12 --alpha 40 \\
                  --prompts "Describe your morning." --out gens.jsonl
    psylens steer --model M --vectors RUN/steering/vectors/joy.safetensors --prompts prompts.jsonl --out gens.jsonl
    psylens steer sweep --model M --run RUN [--prompts FILE.jsonl] [--full] [--source expression|stories|probes]
                        [--layer-band K] [--positions all|prompt|generated] [--max-new-tokens N]
                        [--fluency relative|relative_greedy|absolute] [--max-perplexity-ratio R] [--pick-by model|judge]
                        [--scale-reference norm|centred|median]

``steer_app`` is a ``typer.Typer``; the main CLI registers it as ``steer``. Bad arguments raise
``ValueError`` (the main CLI prints them as one line).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional

import typer

from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION, model_kwargs

__all__ = ["steer_app", "read_prompts", "steer_generate"]

log = logging.getLogger(__name__)

steer_app = typer.Typer(
    name="steer",
    help="Steer generations with an emotion vector; `steer sweep` finds the best layer and scale per emotion.",
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
)


def read_prompts(value: str | None) -> list[str]:
    """Prompts from ``value``: a ``.jsonl`` stimuli file, a text file (one prompt a line), or the text itself.

    ``None`` gives the built-in neutral ``steering_prompts``.
    """
    from psylens import stimuli

    if value is None:
        return stimuli.load("steering_prompts").texts
    if not value.strip():
        raise ValueError("--prompts is empty; give a prompt, a .jsonl file with a 'text' per line, or a .txt file")
    if value in stimuli.builtin_sets():
        return stimuli.load(value).texts
    path = Path(value).expanduser()
    if path.is_file():
        if path.suffix == ".jsonl":
            return stimuli.load(path).texts
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"prompt file {value!r} has no non-empty lines")
        return lines
    if path.suffix in (".jsonl", ".txt") and len(value.split()) == 1:
        raise ValueError(f"prompt file {value!r} does not exist; pass an existing file or the prompt text itself")
    return [value]


def _vector(vectors: str, emotion: str | None, layer: int | None, alpha: float | None, mode: str, positions: str) -> Any:
    from psylens.steering.vector import SteeringVector, is_steering_vector_file

    path = Path(vectors).expanduser()
    if not path.exists():
        raise ValueError(f"--vectors {vectors!r} does not exist; give RUN/probes/directions.safetensors or a saved vector")
    if path.is_file():
        from psylens.tensorfile import explain

        why = explain(path)  # a truncated, garbage, pickle or torch.save file: say so, not "needs --emotion"
        if why is not None:
            raise ValueError(f"--vectors: {why}")
    if path.is_file() and is_steering_vector_file(path):
        sv = SteeringVector.load(path)
        if emotion is not None and sv.label not in (None, emotion):
            raise ValueError(f"--vectors holds a {sv.label!r} vector but --emotion is {emotion!r}; drop --emotion or pick the right file")
        changes: dict[str, Any] = {"mode": mode, "positions": positions}
        if alpha is not None:
            changes["alpha"] = alpha
        if layer is not None:
            if layer not in sv.layers:
                raise ValueError(f"the saved vector steers layers {list(sv.layers)}, not --layer {layer}; drop --layer")
            sv = SteeringVector(layers=(layer,), vectors=sv.vector(layer).unsqueeze(0), alpha=sv.alpha,
                                site=sv.site, label=sv.label, meta=sv.meta)
        return sv.replace(**changes)
    if path.is_file():
        from safetensors import safe_open

        from psylens.steering.vector import FORMAT_KEY

        with safe_open(str(path), framework="pt", device="cpu") as f:
            names, meta = set(f.keys()), f.metadata() or {}
        if FORMAT_KEY in meta:  # a steering vector whose description is broken: say why
            SteeringVector.load(path)
        if not {"vectors", "norms"} <= names:
            raise ValueError(f"--vectors {vectors!r} is a safetensors file holding {sorted(names)[:5]}, neither a "
                             "saved steering vector nor a directions file (vectors and norms)")
    missing = [name for name, v in (("--emotion", emotion), ("--layer", layer), ("--alpha", alpha)) if v is None]
    if missing:
        raise ValueError(f"steering with a directions file needs {', '.join(missing)} (e.g. --emotion joy --layer 12 --alpha 40)")
    return SteeringVector.from_directions(path, emotion, layers=[layer], alpha=alpha, mode=mode, positions=positions)


def steer_generate(
    model: Any,
    sv: Any,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    seed: int = 0,
    batch_size: int = 16,
    judge: Any = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """One record per prompt: ``prompt``, ``baseline`` (unsteered), ``steered``, ``emotion``, ``layer``, ``alpha``.

    With a ``judge`` (``psylens.steering.judges``), each record also has ``judge`` (its name) and
    ``baseline_scores`` / ``steered_scores``: ``{emotion: share}`` of each text. ``on_batch(n)`` is
    called after each batch of ``n`` prompts (a progress bar).
    """
    from psylens.steering.apply import check_compatible

    check_compatible(sv, model)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, seed=seed, batch_size=batch_size)
    baseline: list[str] = []
    steered: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        baseline += model.generate(chunk, **kw)
        with sv.apply(model):
            steered += model.generate(chunk, **kw)
        if on_batch is not None:
            on_batch(len(chunk))
    layer: Any = sv.layers[0] if len(sv.layers) == 1 else list(sv.layers)
    records = [
        {"prompt": p, "baseline": b, "steered": s, "emotion": sv.label, "layer": layer, "alpha": sv.alpha,
         "mode": sv.mode, "positions": sv.positions}
        for p, b, s in zip(prompts, baseline, steered)
    ]
    if judge is not None:
        from psylens.steering.judges import EMOTIONS

        for key, texts in (("baseline_scores", baseline), ("steered_scores", steered)):
            scores = judge.score(texts)  # [n, 6]
            for r, row in zip(records, scores.tolist()):
                r["judge"] = judge.name
                r[key] = {e: round(float(v), 4) for e, v in zip(EMOTIONS, row)}
    return records


def _show(records: list[dict[str, Any]], console: Any) -> None:
    """Each prompt with its unsteered and steered text and the judge's reading of both."""
    from rich.markup import escape

    def reading(scores: dict[str, float] | None, emotion: str | None) -> str:
        if not scores:
            return ""
        top = max(scores, key=scores.__getitem__)
        own = f"{emotion} {scores[emotion]:.3f}, " if emotion in scores else ""
        return f"  [dim]({own}top: {top if scores[top] > 0 else 'none'})[/dim]"

    for i, r in enumerate(records, 1):
        console.print(f"[bold]{i}. {escape(r['prompt'])}[/bold]")
        console.print(f"  [cyan]unsteered[/cyan]{reading(r.get('baseline_scores'), r['emotion'])}")
        console.print(f"    {escape(r['baseline'])}", highlight=False)
        console.print(f"  [magenta]steered[/magenta] ({escape(str(r['emotion']))}, alpha {r['alpha']:g})"
                      f"{reading(r.get('steered_scores'), r['emotion'])}")
        console.print(f"    {escape(r['steered'])}", highlight=False)


@steer_app.callback()
def steer(
    ctx: typer.Context,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Registry alias, HF id, directory or .gguf (default: the embedded model)."),
    vectors: Optional[str] = typer.Option(None, "--vectors", help="RUN/probes/directions.safetensors, or a saved steering vector."),
    emotion: Optional[str] = typer.Option(None, "--emotion", help="Emotion to steer towards (needed with a directions file)."),
    layer: Optional[int] = typer.Option(None, "--layer", help="Decoder layer to steer (needed with a directions file)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Scale in activation units (needed with a directions file)."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="A prompt, a .txt (one a line) or a .jsonl file; default: built-in neutral prompts."),
    out: Optional[Path] = typer.Option(None, "--out", help="JSONL to write (one object a prompt)."),
    mode: str = typer.Option("add", "--mode", help="add | ablate | clamp"),
    positions: str = typer.Option("all", "--positions", help="all | prompt | generated"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Tokens to generate per prompt."),
    sample: bool = typer.Option(False, "--sample/--greedy", help="Sample instead of greedy decoding."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only write --out: no texts, no progress bar."),
) -> None:
    """Generate unsteered and steered text for each prompt, print both with the judge's scores and write them as JSONL."""
    if ctx.invoked_subcommand is not None:
        return
    if vectors is None or out is None:
        missing = [n for n, v in (("--vectors", vectors), ("--out", out)) if v is None]
        raise ValueError(f"psylens steer needs {' and '.join(missing)}; see `psylens steer --help` (or use `psylens steer sweep`)")
    from psylens.io import atomic_write_text
    from psylens.models import DEFAULT_MODEL, load_model

    if out.suffix != ".jsonl":
        raise ValueError(f"--out must be a .jsonl file, got {str(out)!r}")
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    sv = _vector(vectors, emotion, layer, alpha, mode, positions)
    items = read_prompts(prompts)
    m = load_model(model or DEFAULT_MODEL, **model_kwargs(device, dtype, device_map))
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from psylens.steering.judges import LexiconJudge

    console = Console()
    judge = LexiconJudge()
    gen = dict(max_new_tokens=max_new_tokens, do_sample=sample, seed=seed, judge=judge)
    if quiet:
        records = steer_generate(m, sv, items, **gen)
    else:
        with Progress(TextColumn("steering"), BarColumn(), MofNCompleteColumn(), TextColumn("prompts"),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("steer", total=len(items))
            records = steer_generate(m, sv, items, **gen, on_batch=lambda n: bar.advance(task, n))
        _show(records, console)
    atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in records))
    typer.echo(f"wrote {len(records)} generations to {out}"
               + ("" if quiet else f" (scores: the {judge.name} lexicon judge's share of each emotion)"))


@steer_app.command("sweep")
def sweep(
    run: Path = typer.Option(..., "--run", help="Run directory (with probes/directions.safetensors for --source probes; "
                                "with expression directions a new directory becomes a new run)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the run's model, else the embedded one)."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="JSONL of neutral prompts (default: built-in)."),
    directions: Optional[str] = typer.Option(None, "--directions", help="Directions file (overrides --source)."),
    source: Optional[str] = typer.Option(
        None, "--source",
        help="Where directions come from when --directions is not given: expression (extracted from the model "
             "prompted to express each emotion) | stories (RUN/validation/directions.safetensors, else fitted on the "
             "built-in stories) | probes (RUN/probes/directions.safetensors). Default: the config's.",
    ),
    layer_band: Optional[int] = typer.Option(None, "--layer-band", help="Steer this many consecutive layers per cell (default: the config's)."),
    positions: Optional[str] = typer.Option(None, "--positions", help="all | prompt | generated (default: the config's)."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="Tokens per generation (default: the config's)."),
    fluency: Optional[str] = typer.Option(
        None, "--fluency",
        help="relative (default: perplexity ratio, distinct-2 and zlib ratio no worse than the model's own T=1 text) | "
             "relative_greedy (perplexity ratio as relative; distinct-2 and zlib ratio no worse than the model's own "
             "greedy text) | absolute (perplexity ratio ≤ --max-perplexity-ratio).",
    ),
    max_perplexity_ratio: Optional[float] = typer.Option(
        None, "--max-perplexity-ratio", help="The cap of --fluency absolute (default: the config's, 1.5)."),
    pick_by: Optional[str] = typer.Option(
        None, "--pick-by",
        help="model (default: feels_matrix row + read_back win rate on dev prompts) | judge (the text judge's success).",
    ),
    scale_reference: Optional[str] = typer.Option(
        None, "--scale-reference",
        help="What the scales multiply: norm (the layer's mean per-token residual norm; the config's default) | centred "
             "(the mean norm after subtracting the mean token vector) | median (√d × the median dimension's RMS; for "
             "models with massive activations such as Gemma-3).",
    ),
    full: bool = typer.Option(False, "--full/--quick", help="The thorough grid (greedy + sampled) or the quick one."),
    judge: str = typer.Option("nrc", "--judge", help="nrc (lexicon) | llm (a model judges) | probe (a probe on a model reads the text)"),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Model for --judge llm|probe (default: the steered model, unsteered)."),
    seed: int = typer.Option(0, "--seed"),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
) -> None:
    """Sweep layers × scales per emotion; write RUN/steering/summary.json and vectors/<emotion>.safetensors."""
    from psylens.models import DEFAULT_MODEL, load_model
    from psylens.runs import RUN_FILE, create_run, open_run
    from psylens.steering.sweep import SweepConfig, run_sweep

    # expression and story directions need nothing from an earlier step: a new directory becomes a new run
    fresh = (not (run / RUN_FILE).is_file() and directions is None
             and (source or SweepConfig().directions) in ("expression", "stories"))
    r = None if fresh else open_run(run)
    spec = model
    if spec is None and r is not None:
        meta_model = r.meta.get("model")
        spec = meta_model.get("spec") if isinstance(meta_model, dict) else meta_model
    changes: dict[str, Any] = {"judge": judge}
    for key, value in (("directions", source), ("layer_band", layer_band), ("positions", positions),
                       ("max_new_tokens", max_new_tokens), ("fluency", fluency),
                       ("max_perplexity_ratio", max_perplexity_ratio), ("pick_by", pick_by),
                       ("scale_reference", scale_reference)):
        if value is not None:
            changes[key] = value
    if judge_model is not None and judge == "nrc":
        raise typer.BadParameter("the nrc judge uses no model; add --judge llm or --judge probe", param_hint="--judge-model")
    cfg = (SweepConfig.full if full else SweepConfig.quick)(**changes)
    the_prompts = read_prompts(prompts) if prompts else None  # bad input fails before anything is written
    m = load_model(spec or DEFAULT_MODEL, **model_kwargs(device, dtype, device_map))
    if r is None:
        r = create_run(run, command="psylens steer sweep", model=m.describe(), seed=seed)
    the_judge = None
    if judge_model is not None:
        from psylens.steering.judges import make_judge

        the_judge = make_judge(judge, model=load_model(judge_model, **model_kwargs(device, dtype, device_map)))
    summary = run_sweep(m, r, directions=directions, prompts=the_prompts,
                        config=cfg, seed=seed, progress=True, judge=the_judge)
    for e, v in summary["emotions"].items():
        b = v["baselines"]
        typer.echo(
            f"{e:9s} layer {v['best_layer']:3d}  alpha {v['best_alpha']:8.2f}  success {v['success']:.2f}  "
            f"ppl× {v['perplexity_ratio'] if v['perplexity_ratio'] is not None else float('nan'):.2f}  "
            f"(prompting {b['prompting']:.2f}, random {b['random']:.2f}, none {b['none']:.2f})"
        )
    typer.echo(f"mean success {summary['mean_success']:.2f}; wrote {r.path / 'steering' / 'summary.json'}")
    t = summary.get("target") or {}
    if t.get("success_over_ceiling") is not None:
        typer.echo(
            f"NRC success ÷ ceiling {t['success_over_ceiling']:.2f} (target ≥ {t['min_success_over_ceiling']}; "
            f"over prompting {t['over_prompting']}, over random {t['over_random']}, target ≥ {t['margin']}; "
            f"{t['fluency']} fluency, all fluent: {t['all_fluent']}): target {'met' if t['met'] else 'not met'}"
        )
