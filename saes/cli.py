"""``psylens sae``: SAEs on reasoning steps.

    psylens sae train --run RUN --layer L [--site resid_post] [--pooling delimiter|mean]
                      [--arch batchtopk|jumprelu|topk|standard|matryoshka] [--d-sae N] [--k K]
                      [--matryoshka-widths 32,128,512] [--name NAME] [--overwrite]
                      [--segmentation sentence|paragraph] [--tokens] [--epochs E] [--lr LR]
    psylens sae anchors --run RUN [--n-rollouts N] [--max-traces K] [--name SAE] [--max-new-tokens T]
    psylens sae steer --run RUN --name SAE [--label reflection] [--feature F] [--strength -4 ...] [--ablate] [--clamp 0 ...]
                      [--random-feature/--no-random-feature] [--split test] [--samples 2] [--max-new-tokens T]

Writes ``RUN/saes/<name>/`` (see :mod:`psylens.saes.artifacts`): SAELens' own files
(``SAE.load_from_disk`` opens the folder), ``step_sae.json``, ``metrics.json`` (held-out steps)
and ``features.json``; ``sae anchors`` writes ``RUN/saes/anchors.parquet`` and ``anchors.json`` (step
importance by resampling, :mod:`psylens.saes.anchors`); ``sae steer`` writes
``RUN/saes/<name>/steering/`` (feature steering of new traces, :mod:`psylens.saes.steer`). ``sae_app`` is a ``typer.Typer``; the main
CLI registers it as ``sae``. Importing this module is cheap: SAELens is imported when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION

__all__ = ["sae_app"]

sae_app = typer.Typer(
    name="sae",
    help="Sparse autoencoders on reasoning steps (trained through SAELens): `sae train`, `sae anchors`, `sae steer`.",
    no_args_is_help=True,
    add_completion=False,
)


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    """``"32,128,512"`` → ``(32, 128, 512)``, or a ``ValueError`` naming the flag."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a comma-separated list of integers; e.g. {flag} 32,128,512") from None


@sae_app.callback()
def _group() -> None:
    """Sparse autoencoders on reasoning steps (trained through SAELens)."""
    # a callback keeps `sae` a command group (`psylens sae train ...`) even with one command


@sae_app.command("train")
def train_cmd(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory holding traces/traces.jsonl (psylens traces --out)."),
    layer: int = typer.Option(..., "--layer", "-l", help="Decoder layer to read."),
    site: str = typer.Option("resid_post", "--site", help="Site to read (psylens.SITES)."),
    pooling: str = typer.Option("delimiter", "--pooling", help="delimiter (the step's last token) | mean"),
    arch: str = typer.Option("batchtopk", "--arch", help="batchtopk | jumprelu | topk | standard | matryoshka"),
    d_sae: int = typer.Option(1024, "--d-sae", help="Number of SAE latents."),
    k: int = typer.Option(16, "--k", help="Active latents (topk: per step; batchtopk, matryoshka: on average)."),
    matryoshka_widths: Optional[str] = typer.Option(
        None, "--matryoshka-widths",
        help="matryoshka: nested prefix sizes, comma-separated, ending at --d-sae (default: ×4 ladder, e.g. 32,128,512).",
    ),
    name: Optional[str] = typer.Option(None, "--name", help="Folder name under RUN/saes (default from the settings)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an SAE already saved under that name."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the run's model)."),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    segmentation: str = typer.Option("sentence", "--segmentation", help="sentence | paragraph"),
    tokens: bool = typer.Option(False, "--tokens", help="Train on every reasoning token; adds CE loss recovered."),
    held_out: float = typer.Option(0.2, "--held-out", help="Fraction of traces kept out of training."),
    epochs: float = typer.Option(30.0, "--epochs", help="Passes over the training steps."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate."),
    batch_size: int = typer.Option(256, "--batch-size", help="Steps per training batch."),
    sparsity: float = typer.Option(1.0, "--sparsity", help="L1 (standard) / L0 (jumprelu) coefficient."),
    seed: int = typer.Option(0, "--seed"),
    features: bool = typer.Option(True, "--features/--no-features", help="Also write features.json."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train an SAE on a run's step activations and write RUN/saes/<name>/."""
    from rich.console import Console

    from psylens.saes.pipeline import train_step_sae
    from psylens.saes.train import SAETrainConfig

    if pooling not in ("delimiter", "mean"):
        raise ValueError(f"--pooling {pooling!r} is not one of delimiter, mean")
    overrides: dict[str, Any] = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "sparsity_coefficient": sparsity}
    if matryoshka_widths is not None:
        overrides["matryoshka_widths"] = _int_list(matryoshka_widths, "--matryoshka-widths")
    SAETrainConfig(arch=arch, d_sae=d_sae, k=k, seed=seed, **overrides)  # validates before any model loads
    folder = train_step_sae(run, layer=layer, site=site, pooling=pooling, arch=arch, d_sae=d_sae, k=k, name=name,
                            model=model, segmentation=segmentation, held_out=held_out, seed=seed, tokens=tokens,
                            features=features, train_overrides=overrides, overwrite=overwrite, progress=progress,
                            device=device, dtype=dtype, device_map=device_map)
    import json

    m = json.loads((folder / "metrics.json").read_text())
    console = Console()
    console.print(
        f"held-out: explained variance {m['explained_variance']:.3f} "
        f"[{m['explained_variance_ci'][0]:.3f}, {m['explained_variance_ci'][1]:.3f}], L0 {m['l0']:.1f}, "
        f"dead {m['dead_fraction']:.3f}, mse {m['mse']:.4g}"
        + (f", CE loss recovered {m['ce_loss_recovered']:.3f}" if m.get("ce_loss_recovered") is not None else "")
    )
    fpath = folder / "features.json"
    if fpath.is_file():
        labels = json.loads(fpath.read_text()).get("labels", {})
        for lab, rec in labels.items():
            if rec.get("auroc") is not None:
                console.print(f"  {lab}: feature {rec['feature']} AUROC {rec['auroc']:.3f} (control {rec['control_auroc']:.3f})")
    console.print(f"wrote {folder}")


@sae_app.command("anchors")
def anchors_cmd(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory holding traces/traces.jsonl (psylens traces --out)."),
    n_rollouts: int = typer.Option(4, "--n-rollouts", "-n", help="Rollouts from each prefix."),
    max_traces: Optional[int] = typer.Option(6, "--max-traces", "-k", help="Traces to score (the first K with steps); 0 = all."),
    name: Optional[str] = typer.Option(None, "--name", help="An SAE of the run (RUN/saes/NAME): correlate its features with importance."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Tokens a rollout at most (unfinished ones are asked 'Answer:')."),
    temperature: float = typer.Option(0.7, "--temperature", help="Rollout sampling temperature (> 0)."),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(16, "--batch-size", help="Rollouts a generate call."),
    segmentation: Optional[str] = typer.Option(None, "--segmentation", help="sentence | paragraph (default: the SAE's, else sentence)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the run's model)."),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Step importance by counterfactual resampling (Thought Anchors): RUN/saes/anchors.parquet + anchors.json."""
    from rich.console import Console

    from psylens.saes.anchors import run_anchors

    if n_rollouts < 1:
        raise ValueError(f"--n-rollouts must be at least 1, got {n_rollouts}")
    if temperature <= 0:
        raise ValueError(f"--temperature must be > 0 (greedy rollouts are all the same), got {temperature}")
    summary = run_anchors(run, n_rollouts=n_rollouts, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                          max_traces=max_traces or None, name=name, model=model, mode=segmentation,
                          batch_size=batch_size, progress=progress, device=device, dtype=dtype,
                          device_map=device_map)
    console = Console()
    c = summary["cost"]
    console.print(f"{summary['n_steps']} steps of {summary['n_traces']} traces, {c['rollouts']} rollouts "
                  f"({c['forced']} answered on the cue) in {c['seconds']} s ({c['seconds_per_trace']} s a trace); "
                  f"mean importance {summary['mean_importance']:.3f}")
    for rec in summary["by_label"]:
        if rec["n_steps"]:
            console.print(f"  {rec['label']}: {rec['mean']:.3f} [{rec['ci_low']:.3f}, {rec['ci_high']:.3f}] "
                          f"over {rec['n_steps']} steps (rest {rec['mean_rest']:.3f})")
    f = summary.get("features")
    if f and f.get("top"):
        t = f["top"][0]
        console.print(f"  top feature {t['feature']}: Spearman {t['spearman']:.3f} (control {t['control_spearman']:.3f}; "
                      f"max |rho| {f['max_abs_spearman']:.3f} vs shuffled {f['control_max_abs_spearman']:.3f})")
    console.print(f"wrote {run / 'saes' / 'anchors.parquet'}")


@sae_app.command("steer")
def steer_cmd(
    run: Path = typer.Option(..., "--run", "-r", help="Run directory holding the SAE (RUN/saes/NAME)."),
    name: str = typer.Option(..., "--name", help="The SAE to steer with (a folder under RUN/saes)."),
    label: str = typer.Option("reflection", "--label", help="The behaviour to count (psylens.saes.LABELS)."),
    feature: Optional[int] = typer.Option(None, "--feature", help="Latent index (default: the label's best feature)."),
    strength: list[float] = typer.Option([-4.0], "--strength", "-s",
                                         help="In units of the feature's mean activation; < 0 suppresses. Repeatable."),
    split: str = typer.Option("test", "--split", help="Task split to generate on: train | test | all."),
    samples: int = typer.Option(2, "--samples", "-k", help="Traces per task and condition."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Tokens a trace at most."),
    temperature: float = typer.Option(0.7, "--temperature"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(16, "--batch-size", help="Traces a generate call."),
    ablate: bool = typer.Option(False, "--ablate", help="Also project the feature's direction out (beside a random "
                                                        "direction and the random feature's)."),
    clamp: list[float] = typer.Option([], "--clamp",
                                      help="Also hold the latent at this value through the SAE (units of its mean "
                                           "activation; 0 switches it off), beside a latent of similar frequency. Repeatable."),
    random_feature: bool = typer.Option(
        True, "--random-feature/--no-random-feature",
        help="Also steer, at each strength, with another latent of the SAE rescaled to the feature's norm, and with "
             "--ablate project that latent's direction out (a control).",
    ),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model (default: the run's model)."),
    device: str = DEVICE_OPTION,
    dtype: Optional[str] = DTYPE_OPTION,
    device_map: Optional[str] = DEVICE_MAP_OPTION,
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Steer new traces with an SAE feature, beside a random direction, a random feature (same norm) and no steering."""
    from rich.console import Console
    from rich.table import Table

    from psylens.saes.steer import run_feature_steering

    rep = run_feature_steering(run, name, label, feature=feature, strengths=strength, model=model,
                               split=None if split == "all" else split, samples=samples,
                               max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                               batch_size=batch_size, ablate=ablate, clamps=clamp, random_feature=random_feature,
                               progress=progress, device=device, dtype=dtype, device_map=device_map)
    console = Console()
    table = Table(title=f"{label}: feature {rep['feature']} of {name} at layer {rep['layer']}")
    for col in ("condition", f"{label} steps/trace", "ratio vs none", "accuracy", "Δ accuracy", "distinct-2",
                "perplexity ratio"):
        table.add_column(col)
    for cond, c in rep["conditions"].items():
        e = rep["effects"].get(cond)
        ratio = "—" if not e or e["label_steps_ratio"] is None else (
            f"{e['label_steps_ratio']:.2f} [{e['label_steps_ratio_ci'][0]:.2f}, {e['label_steps_ratio_ci'][1]:.2f}]")
        dacc = "—" if not e else f"{e['accuracy_diff']['diff']:+.3f} [{e['accuracy_diff']['ci95'][0]:+.3f}, {e['accuracy_diff']['ci95'][1]:+.3f}]"
        ppl = e.get("perplexity_ratio") if e else None
        table.add_row(cond, f"{c['label_steps_per_trace']:.3f}", ratio, f"{c['accuracy']:.3f}", dacc,
                      f"{c['distinct_2']:.3f}" if c["distinct_2"] is not None else "—",
                      "—" if ppl is None else f"{ppl:.2f}")
    console.print(table)
    if rep.get("control_feature") is not None:
        console.print(f"control latent (random_feature@…, random@clamp…): {rep['control_feature']}")
    for t in (rep.get("target"), rep.get("target_ablate"), rep.get("target_clamp")):
        if t:
            console.print(f"target, {t['condition']} (≤ {t['threshold_ratio']} of the steps, accuracy within "
                          f"{t['threshold_accuracy']}, perplexity ratio ≤ {t['max_perplexity_ratio']}): "
                          f"{'met' if t['met'] else 'not met'}"
                          + (" (steps and accuracy alone: met; the text is not fluent)"
                             if t["met_ignoring_fluency"] and not t["met"] else "")
                          + ("" if t["control_fails"] else
                             f" (a control halves it too: random direction {t['random_ratio']}, "
                             f"random feature {t.get('random_feature_ratio')})"))
    console.print(f"wrote {run / 'saes' / name / 'steering' / 'summary.json'}")
