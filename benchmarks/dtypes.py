"""bfloat16 against float32: what a GPU user's default dtype does to psylens' speed and to its conclusions.

On CUDA every command loads in bfloat16 unless given ``--dtype float32``; this machine has no GPU, but its CPU has
bfloat16 matrix units (AMX), so the same question can be asked here.

    python -m benchmarks.dtypes speed [--model M] [--repeats 5] [--threads 2]
        one forward pass of a 16 × 64-token batch and a 32-token greedy generation of 8 prompts, in float32 and
        bfloat16 on the same machine, repeats interleaved: medians and the bfloat16 ÷ float32 ratio.
    python -m benchmarks.dtypes runs RUN_BF16 RUN_FP32
        the headline numbers of two runs of the same commands (``psylens demo --dtype ...``, ``psylens circuits``)
        side by side: probes, validation gates, the base-vs-tuned comparison and circuits.

No target: the ratios and differences say whether a bfloat16 run can be read like a float32 one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any


def speed(model_spec: str, repeats: int) -> dict[str, Any]:
    import torch

    import psylens

    models = {dt: psylens.load_model(model_spec, device="cpu", dtype=dt, boot_bridge=False) for dt in ("float32", "bfloat16")}
    tok = models["float32"].tokenizer
    ids = torch.randint(0, tok.vocab_size, (16, 64), generator=torch.Generator().manual_seed(0))
    prompts = [f"Tell me about day {i} of the trip." for i in range(8)]
    times: dict[str, dict[str, list[float]]] = {dt: {"forward": [], "generate": []} for dt in models}
    for _ in range(repeats):
        for dt, m in models.items():  # interleaved: both dtypes see the same machine state
            t0 = time.perf_counter()
            with torch.no_grad():
                m.hf_model(input_ids=ids)
            times[dt]["forward"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m.generate(prompts, max_new_tokens=32)
            times[dt]["generate"].append(time.perf_counter() - t0)
    med = {dt: {k: statistics.median(v) for k, v in t.items()} for dt, t in times.items()}
    return {"model": model_spec, "repeats": repeats, "threads": torch.get_num_threads(), "median_seconds": med,
            "ratio_bf16_over_fp32": {k: med["bfloat16"][k] / med["float32"][k] for k in ("forward", "generate")}}


def _gates(run: Path) -> dict[str, Any]:
    p = run / "validation" / "summary.json"
    if not p.is_file():
        return {}
    g = json.loads(p.read_text()).get("gates", {})
    return {k: (v.get("value"), v.get("control"), v.get("passed")) for k, v in g.items()}


def _circuits(run: Path) -> dict[str, Any]:
    p = run / "circuits" / "summary.json"
    if not p.is_file():
        return {}
    out = {}
    for e, s in json.loads(p.read_text()).get("emotions", {}).items():
        a, en = s.get("ablation") or {}, s.get("enhancement") or {}
        out[e] = {"units": (s.get("n_heads"), s.get("n_neurons")), "drop": a.get("drop"), "random_drop": a.get("random_drop"),
                  "gain": en.get("gain"), "atp_vs_patching": s.get("atp_vs_patching_spearman"),
                  "eval_drop": (s.get("eval") or {}).get("drop")}
    return out


def runs(a: Path, b: Path) -> dict[str, Any]:
    from psylens.demo import headlines

    out: dict[str, Any] = {}
    for name, run in (("a", a), ("b", b)):
        meta = json.loads((run / "run.json").read_text())
        rec = (meta.get("models") or {}).get("model") or {}
        h = headlines(run)
        p = h.get("probes") or {}
        c = h.get("compare") or {}
        out[name] = {"run": str(run), "dtype": rec.get("dtype", "float32 (not recorded)"),
                     "steps_seconds": {k: v.get("seconds") for k, v in (meta.get("steps") or {}).items()},
                     "probes": {k: p.get(k) for k in ("best_layer", "accuracy", "ci95", "shuffled", "lexical")},
                     "gates": _gates(run), "compare": c, "circuits": _circuits(run)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, default=None, help="also write the results here")
    sub = ap.add_subparsers(dest="what", required=True)
    sp = sub.add_parser("speed", parents=[common])
    sp.add_argument("--model", default="smollm2-135m-instruct")
    sp.add_argument("--repeats", type=int, default=5)
    sp.add_argument("--threads", type=int, default=None)
    rp = sub.add_parser("runs", parents=[common])
    rp.add_argument("a", type=Path)
    rp.add_argument("b", type=Path)
    args = ap.parse_args()
    if args.what == "speed":
        if args.repeats < 1:
            raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        res = speed(args.model, args.repeats)
    else:
        for r in (args.a, args.b):
            if not (r / "run.json").is_file():
                raise SystemExit(f"{r} is not a psylens run (no run.json)")
        res = runs(args.a, args.b)
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
