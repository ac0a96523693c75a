"""Emotion circuits on the embedded model (`python -m benchmarks.circuits`).

Two measurements, each written as JSON to ``--out-dir`` (default ``/tmp/circuits_bench``):

  cost      ``direct`` + ``atp`` for every head and neuron of every layer over one batch vs one plain
            forward pass of that batch (best of 3, same process, same inputs): the ratio the issue
            targets at ≤ 4× (nnbench: 3.4×).
  run       ``psylens.circuits.pipeline.run_circuits`` on a new run whose probe directions are copied
            from ``--probes-from`` (a run of the same model made by ``psylens probe``), read-out layer
            ``--layer``, ``--eval`` a held-out stimuli file (the first ``--eval-per-label`` texts per label).
            Per-emotion checkpoints land in ``RUN/circuits/partial/`` as each emotion finishes.

  modulation  circuit modulation vs steering vs prompting re-judged on the circuits of a finished run
            (``--run``, e.g. ``OUT/run`` of an earlier ``--only run``) under the fluency criterion
            ``--config '{"modulation_fluency": ...}'`` (also ``n_modulation_prompts``, ``n_modulation_contexts``,
            ``seed``, ``modulation_op``: ``"shift"`` adds each unit's emotion contrast instead of scaling;
            ``modulation_factors`` / ``modulation_steer_scales``: the circuit's / steering's strengths;
            ``modulation_judges``: text judges beside the NRC lexicon, e.g. ``["probe", "llm"]``);
            writes ``modulation_<criterion>.json`` (``modulation_<criterion>_shift.json`` for the shift op).

    python -m benchmarks.circuits --only cost
    python -m benchmarks.circuits --probes-from RUN --layer 16 --emotions joy,anger
    python -m benchmarks.circuits --only modulation --run OUT/run --config '{"modulation_fluency": "relative_greedy"}'

``--model`` (default: the embedded SmolLM2) and ``--dtype`` run any of them on another model, e.g. a ``.gguf`` path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"


def bench_cost(model: Any, n: int = 16, repeats: int = 3) -> dict[str, Any]:
    from psylens import stimuli
    from psylens.circuits.pipeline import attribution_cost

    texts = [s.text for s in stimuli.load("emotions")][: n]
    return attribution_cost(model, texts, repeats=repeats, batch_size=n)


def eval_subset(src: str, per_label: int, out: Path) -> Path:
    """The first ``per_label`` texts of each label of ``src`` (file order, not chosen by any result)."""
    rows, seen = [], {}
    for line in Path(src).read_text().splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        k = r.get("label")
        if seen.get(k, 0) < per_label:
            rows.append(r)
            seen[k] = seen.get(k, 0) + 1
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def bench_run(model: Any, out_dir: Path, probes_from: str, layer: int, emotions: tuple[str, ...], eval_file: str,
              per_label: int, config: dict[str, Any]) -> dict[str, Any]:
    from psylens.circuits.pipeline import CircuitsConfig, run_circuits
    from psylens.probes import artifacts as pa
    from psylens.runs import open_or_create_run

    run = open_or_create_run(out_dir / "run", command="benchmarks.circuits", model=model)
    (run.path / "probes").mkdir(exist_ok=True)
    for rel in (pa.DIRECTIONS, pa.DIRECTIONS.replace(".safetensors", ".json")):
        shutil.copyfile(Path(probes_from) / rel, run.file(rel))
    ev = eval_subset(eval_file, per_label, out_dir / "eval.jsonl")
    cfg = CircuitsConfig(emotions=emotions, source="probes", layer=layer, eval_file=str(ev), **config)
    return run_circuits(model, run, cfg, progress=True)


def bench_modulation(model: Any, out_dir: Path, run_dir: str | None, emotions: str, config: dict[str, Any]) -> dict[str, Any]:
    from psylens.circuits.pipeline import CircuitsConfig, modulate_run, modulation_judges
    from psylens.runs import open_run

    if not run_dir:
        raise ValueError("run_dir is needed: a finished `psylens circuits` run")
    cfg = CircuitsConfig(**config)  # validates the fluency criterion and the sizes
    t0 = time.time()
    res = modulate_run(model, open_run(run_dir), emotions.split(","), n_prompts=cfg.n_modulation_prompts,
                       n_contexts=cfg.n_modulation_contexts, fluency=cfg.modulation_fluency, seed=cfg.seed,
                       progress=True, scale_reference=cfg.modulation_scale_reference, op=cfg.modulation_op,
                       batch_size=cfg.batch_size, factors=cfg.modulation_factors,
                       steer_scales=cfg.modulation_steer_scales,
                       judges=modulation_judges(model, cfg.modulation_judges) if cfg.modulation_judges else None)
    out = {"run": str(run_dir), "fluency": cfg.modulation_fluency, "circuit_op": cfg.modulation_op,
           "seconds": round(time.time() - t0, 1),
           "circuit_at_least_steering": sum(bool(m["circuit_at_least_steering"]) for m in res.values()),
           "emotions": res}
    suffix = "" if cfg.modulation_op == "scale" else f"_{cfg.modulation_op}"
    if cfg.modulation_factors is not None:
        suffix += "_" + "-".join(f"{f:g}" for f in cfg.modulation_factors)
    if cfg.modulation_steer_scales is not None:
        suffix += "_steer" + "-".join(f"{s:g}" for s in cfg.modulation_steer_scales)
    if cfg.modulation_judges:
        suffix += "_judges-" + "-".join(cfg.modulation_judges)
    (out_dir / f"modulation_{cfg.modulation_fluency}{suffix}.json").write_text(json.dumps(out, indent=2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", default="/tmp/circuits_bench")
    ap.add_argument("--only", choices=("cost", "run", "modulation", "all"), default="all")
    ap.add_argument("--run", default=None, help="with --only modulation: a finished circuits run")
    ap.add_argument("--probes-from", default=None, help="a run of the model with probes/directions.safetensors")
    ap.add_argument("--layer", type=int, default=16)
    ap.add_argument("--emotions", default="joy,anger,fear,sadness,disgust,surprise")
    ap.add_argument("--eval", default="tests/data/heldout_emotions.jsonl")
    ap.add_argument("--eval-per-label", type=int, default=8)
    ap.add_argument("--config", default="{}", help="JSON of CircuitsConfig fields")
    ap.add_argument("--model", default=MODEL, help="alias, HF id, directory or .gguf (the run's model, for modulation)")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: load_model's for the device)")
    a = ap.parse_args()
    if a.only == "modulation" and not a.run:
        raise SystemExit("--run RUN is needed for --only modulation (a finished `psylens circuits` run)")
    from psylens.models import load_model

    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(a.model, device="auto", dtype=a.dtype)
    if a.only in ("cost", "all"):
        t0 = time.time()
        cost = bench_cost(model)
        cost["date"] = time.strftime("%Y-%m-%d")
        (out / "cost.json").write_text(json.dumps(cost, indent=2))
        print(f"cost: atp {cost['attribution_seconds']:.2f} s vs forward {cost['forward_seconds']:.2f} s "
              f"= {cost['ratio']:.2f}x ({cost['batch']} texts, {cost['tokens']} tokens; {time.time() - t0:.0f} s)", flush=True)
    if a.only in ("run", "all"):
        if not a.probes_from:
            raise SystemExit("--probes-from RUN is needed for the run (a run of the model with probe directions)")
        s = bench_run(model, out, a.probes_from, a.layer, tuple(a.emotions.split(",")), a.eval, a.eval_per_label,
                      json.loads(a.config))
        print(json.dumps(s["emotions"], indent=1)[:4000], flush=True)
    if a.only == "modulation":
        print(json.dumps(bench_modulation(model, out, a.run, a.emotions, json.loads(a.config)), indent=1)[:4000], flush=True)


if __name__ == "__main__":
    main()
