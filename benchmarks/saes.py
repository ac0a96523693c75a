"""Reasoning-step SAEs: training throughput (psylens vs SAELens alone) and a layer × size sweep on a run.

    python -m benchmarks.saes throughput [--steps RUN/saes/steps/FILE.safetensors] [--repeats 3]
    python -m benchmarks.saes sweep --run RUN --layers 6 12 18 24 --sizes 512 2048 [--k 16] [--json OUT]
    python -m benchmarks.saes ceiling --run RUN --name SAE [--name SAE ...]

throughput: the same activations (cached SmolLM2 step vectors if given, else 10,000 synthetic
576-dim planted steps) and the same SAE settings, trained by
  psylens   psylens.saes.train_sae (StepDataProvider, SAETrainConfig → SAELens' SAETrainer)
  saelens   SAELens alone: its BatchTopK training SAE and SAETrainer fed by a plain random-batch
            generator over the same tensor
After an untimed warm-up of each, repeats are interleaved (order alternating) so machine noise hits both alike; the median samples/s and the ratio
psylens / saelens are reported (target ≥ 0.9).

sweep: ``psylens.saes.pipeline.train_step_sae`` for every layer × size on the run's traces (step
activations are cached per layer), then one table row per SAE: held-out explained variance, L0,
dead fraction (each with the training-time dead fraction beside it) and each label's best-feature
AUROC against its shuffled-label control. Results are appended to the JSON after every SAE.

ceiling: what a *dense* reading of the same step vectors reaches — per label, a logistic-regression
probe (scikit-learn, standardised inputs, balanced classes) fitted on the SAE's training traces and
scored by AUROC on its held-out traces, beside the SAE's best single latent and a probe fitted on
shuffled training labels (the control: the mean of 5 shuffles); and the held-out EV of 16 and 32 principal components of the
training steps (the linear baseline for the SAE's EV). A single latent rarely beats the dense probe; where the
probe itself stays below a target, the labels (the rule labeller, docs/saes.md) are the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _saelens_alone(acts, cfg) -> float:
    """Train with SAELens only (no psylens code in the loop); returns seconds."""
    import torch
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    n, d = acts.shape
    total = cfg.total_samples(n)
    gen = torch.Generator().manual_seed(cfg.seed)

    def batches():
        while True:
            yield acts[torch.randint(0, n, (cfg.batch_size,), generator=gen)]

    t = time.perf_counter()  # everything from here: building the SAE and training it
    torch.manual_seed(cfg.seed)
    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=d, d_sae=cfg.d_sae, k=float(cfg.k),
                                                          normalize_activations=cfg.normalize))
    tcfg = SAETrainerConfig(total_training_samples=total, train_batch_size_samples=cfg.batch_size, lr=cfg.lr,
                            lr_end=cfg.lr, lr_decay_steps=int(cfg.lr_decay * total // cfg.batch_size),
                            dead_feature_window=cfg.dead_window, feature_sampling_window=max(1, total // cfg.batch_size),
                            n_batches_for_norm_estimate=max(1, min(100, -(-n // cfg.batch_size))),
                            logger=LoggingConfig(log_to_wandb=False))
    SAETrainer(cfg=tcfg, sae=sae, data_provider=batches()).fit()
    return time.perf_counter() - t


def throughput(args: argparse.Namespace) -> dict:
    from psylens.saes.data import StepSet
    from psylens.saes.synthetic import planted_steps
    from psylens.saes.train import SAETrainConfig, train_sae

    if args.steps:
        steps, meta = StepSet.load(args.steps)
        source = f"{args.steps} ({meta.get('model')}, layer {meta.get('layer')})"
    else:
        steps = planted_steps(n_steps=10_000, d=576, n_features=2048, active=16).steps
        source = "synthetic planted steps (10,000 × 576)"
    cfg = SAETrainConfig(arch="batchtopk", d_sae=args.d_sae, k=16, epochs=args.epochs, batch_size=256)
    times: dict[str, list[float]] = {"psylens": [], "saelens": []}

    def run_psylens() -> float:
        t = time.perf_counter()  # the whole call: provider, SAE, trainer
        train_sae(steps, cfg, progress=False)
        return time.perf_counter() - t

    warm = SAETrainConfig(arch="batchtopk", d_sae=64, k=4, n_samples=1024, batch_size=256)
    train_sae(steps, warm, progress=False)  # warm-up, untimed: imports, allocator, first-call costs
    _saelens_alone(steps.acts, warm)
    for i in range(args.repeats):  # interleaved, order alternating
        pair = [("psylens", run_psylens), ("saelens", lambda: _saelens_alone(steps.acts, cfg))]
        for name, fn in pair if i % 2 == 0 else pair[::-1]:
            times[name].append(fn())
    samples = cfg.total_samples(len(steps))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        "date": time.strftime("%Y-%m-%d"), "source": source, "n_steps": len(steps), "d_in": steps.d,
        "d_sae": cfg.d_sae, "epochs": cfg.epochs, "samples": samples, "repeats": args.repeats,
        "seconds": times, "samples_per_s": {k: samples / v for k, v in med.items()},
        "ratio_psylens_over_saelens": med["saelens"] / med["psylens"],
    }
    import numpy as np

    from psylens.stats import bootstrap_ci

    pairs = [b / a for a, b in zip(times["psylens"], times["saelens"])]  # per repeat: throughput ratio
    out["pair_ratios"] = pairs
    out["pair_ratio_median_ci"] = list(bootstrap_ci(pairs, np.median)) if len(pairs) > 1 else None
    print(f"{source}: {samples} samples, d_sae {cfg.d_sae}, median of {args.repeats} (interleaved)")
    for k in ("psylens", "saelens"):
        print(f"  {k:8s} {med[k]:.2f} s  {samples / med[k]:,.0f} samples/s  runs {[round(x, 2) for x in times[k]]}")
    print(f"  ratio psylens / saelens (throughput): {out['ratio_psylens_over_saelens']:.3f} (target >= 0.9); "
          f"per repeat {[round(x, 3) for x in pairs]}, median's 95% CI {out['pair_ratio_median_ci']}")
    return out


def sweep(args: argparse.Namespace) -> list[dict]:
    from psylens.saes.pipeline import train_step_sae

    rows: list[dict] = []
    if args.json and args.json.exists():
        rows = json.loads(args.json.read_text())
    done = {r["name"] for r in rows}
    for size in args.sizes:  # every layer at the first size before the next size
        for layer in args.layers:
            # the read-out settings are part of the name: another pooling must not overwrite an SAE
            extra = "".join(f"-{v}" for v, d in ((args.pooling, "delimiter"), (args.segmentation, "sentence")) if v != d)
            name = f"sweep-L{layer}-{args.arch}-{size}-k{args.k}{extra}"
            if name in done:
                continue
            t = time.perf_counter()
            folder = train_step_sae(args.run, layer=layer, arch=args.arch, d_sae=size, k=args.k, name=name,
                                    pooling=args.pooling, segmentation=args.segmentation,
                                    train_overrides={"epochs": args.epochs, "batch_size": args.batch_size},
                                    overwrite=True, progress=False)  # not in --json: a leftover of a stopped sweep
            m = json.loads((folder / "metrics.json").read_text())
            info = json.loads((folder / "step_sae.json").read_text())
            feats = json.loads((folder / "features.json").read_text())
            row = {"name": name, "layer": layer, "d_sae": size, "k": args.k, "seconds": round(time.perf_counter() - t, 1),
                   "n_train_steps": info["n_train_steps"], "n_held_out_steps": info["n_held_out_steps"],
                   **{key: m[key] for key in ("explained_variance", "explained_variance_ci", "l0", "l0_ci",
                                              "dead_fraction", "train_dead_fraction", "mse")},
                   "labels": feats["labels"]}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "labels"}), flush=True)
            if args.json:
                args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return rows


def ceiling(args: argparse.Namespace) -> list[dict]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from psylens.runs import open_run
    from psylens.saes import artifacts as art
    from psylens.saes.data import StepSet
    from psylens.saes.pipeline import _step_texts, step_labels
    from psylens.saes.traces import read_traces

    run = open_run(args.run)
    traces = read_traces(run.path)
    prompts = {str(t.get("id", i)): t.get("prompt") for i, t in enumerate(traces)}
    rows = []
    for name in args.name:
        info = run.read_json(art.sae_file(name, art.STEP_SAE))
        held = set(run.read_json(art.sae_file(name, art.HELD_OUT))["held_out"])
        feats = run.read_json(art.sae_file(name, art.FEATURES))["labels"]
        steps, _ = StepSet.load(run.file(art.steps_file(info["site"], info["layer"],
                                                         f"{info['pooling']}-{info['segmentation']}")))
        texts = _step_texts(traces, info["segmentation"])
        labels = step_labels([texts.get((t, s), "") for t, s in zip(steps.trace_ids, steps.steps)],
                             [prompts.get(t) for t in steps.trace_ids])
        x = steps.acts.numpy()
        is_held = np.array([t in held for t in steps.trace_ids])
        rng = np.random.default_rng(0)
        row = {"name": name, "layer": info["layer"], "labels": {}, "pca_explained_variance": {}}
        # the linear baseline for the EV: principal components of the training steps, EV on held-out ones
        mu = x[~is_held].mean(0)
        _, _, vt = np.linalg.svd(x[~is_held] - mu, full_matrices=False)
        xc = x[is_held] - mu
        for n_pc in (16, 32):
            rec = xc @ vt[:n_pc].T @ vt[:n_pc]
            ev = 1 - float(((xc - rec) ** 2).sum() / ((x[is_held] - x[is_held].mean(0)) ** 2).sum())
            row["pca_explained_variance"][n_pc] = ev
            print(f"{name}: PCA {n_pc} components, held-out EV {ev:.3f}", flush=True)
        for lab, y_t in labels.items():
            y = y_t.numpy().astype(bool)
            if y[~is_held].sum() < 5 or y[is_held].sum() < 5:
                continue
            def fit_score(y_train: np.ndarray) -> float:
                clf = make_pipeline(StandardScaler(), LogisticRegression(C=args.c, max_iter=2000, class_weight="balanced"))
                clf.fit(x[~is_held], y_train)
                return float(roc_auc_score(y[is_held], clf.decision_function(x[is_held])))

            probe = fit_score(y[~is_held])
            controls = [fit_score(rng.permutation(y[~is_held])) for _ in range(args.shuffles)]
            aucs = {"probe": probe, "control": float(np.mean(controls))}
            row["labels"][lab] = {"probe_auroc": aucs["probe"], "control_auroc": aucs["control"],
                                  "control_aurocs": controls,
                                  "sae_feature_auroc": (feats.get(lab) or {}).get("auroc"),
                                  "n_positive_held_out": int(y[is_held].sum())}
            print(f"{name} {lab}: probe {aucs['probe']:.3f} (shuffled {aucs['control']:.3f}), "
                  f"SAE latent {row['labels'][lab]['sae_feature_auroc']}", flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


def table(rows: list[dict]) -> str:
    labels = sorted({k for r in rows for k in r["labels"]})
    head = "| layer | d_sae | k | EV [95% CI] | L0 | dead (held-out / training) | " + " | ".join(labels) + " |"
    lines = [head, "|" + "---|" * (6 + len(labels))]
    for r in rows:
        ev = f"{r['explained_variance']:.3f} [{r['explained_variance_ci'][0]:.3f}, {r['explained_variance_ci'][1]:.3f}]"
        cells = []
        for lab in labels:
            rec = r["labels"].get(lab) or {}
            if rec.get("auroc") is None:
                cells.append("—")
            else:
                ci = rec.get("auroc_ci") or [float("nan")] * 2
                cells.append(f"{rec['auroc']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] (ctl {rec['control_auroc']:.2f}; n+ {rec['n_positive']})")
        lines.append(f"| {r['layer']} | {r['d_sae']} | {r['k']} | {ev} | {r['l0']:.1f} | "
                     f"{r['dead_fraction']:.3f} / {r['train_dead_fraction']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    tp = sub.add_parser("throughput")
    tp.add_argument("--steps", type=Path, default=None, help="a cached step-activation file (RUN/saes/steps/...)")
    tp.add_argument("--repeats", type=int, default=3)
    tp.add_argument("--d-sae", type=int, default=2048)
    tp.add_argument("--epochs", type=float, default=3.0)
    tp.add_argument("--json", type=Path, default=None)
    sw = sub.add_parser("sweep")
    sw.add_argument("--run", type=Path, required=True)
    sw.add_argument("--layers", type=int, nargs="+", default=[6, 12, 18, 24])
    sw.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    sw.add_argument("--k", type=int, default=16)
    sw.add_argument("--arch", default="batchtopk")
    sw.add_argument("--pooling", default="delimiter")
    sw.add_argument("--segmentation", default="sentence")
    sw.add_argument("--epochs", type=float, default=30.0)
    sw.add_argument("--batch-size", type=int, default=256)
    sw.add_argument("--json", type=Path, default=None)
    cp = sub.add_parser("ceiling")
    cp.add_argument("--run", type=Path, required=True)
    cp.add_argument("--name", nargs="+", required=True, help="SAEs of the run (their split and step cache)")
    cp.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the probe")
    cp.add_argument("--shuffles", type=int, default=5, help="probes on shuffled training labels (the control's mean)")
    cp.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    torch.manual_seed(0)
    if args.cmd == "sweep":
        sweep(args)
        return
    if args.cmd == "ceiling":
        ceiling(args)
        return
    if args.cmd is None:
        args = ap.parse_args(["throughput", *(argv or [])])
    out = throughput(args)
    if getattr(args, "json", None):
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
