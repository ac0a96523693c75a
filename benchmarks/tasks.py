"""Accuracy on the built-in psychological-reasoning tasks (`python -m benchmarks.tasks`).

For each model and method (``loglik``; ``generate`` with a letter; ``generate --cot`` if asked),
the model predicts every item of the set once; the numbers are then read off those predictions:

  all       every item (432), accuracy by kind with bootstrap 95% intervals
  test      the held-out-template split (144)
  control   the same predictions scored against answers shuffled among the choices (seeded):
            must sit at chance (0.25) — if it does not, the scoring leaks something

One JSON file per model in ``--out-dir`` (default ``/tmp/tasks_bench``) and a markdown table on stdout.

    python -m benchmarks.tasks                                   # SmolLM2-135M-Instruct and Gemma-3-270M
    python -m benchmarks.tasks --models smollm2-135m-instruct --methods loglik --limit 24
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
METHODS = ("loglik", "generate", "generate-cot")


def _fmt(acc: float, ci: list[float]) -> str:
    return f"{acc:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def run_model(spec: str, methods: list[str], tasks_src: str, limit: int | None, batch_size: int, seed: int,
              split: str | None = None, on_method: Any = None) -> dict:
    from psylens import tasks as T
    from psylens.models import load_model

    items = T.load(tasks_src, split=split)
    if limit:
        items = items[:limit]
    t0 = time.perf_counter()
    model = load_model(spec, device="cpu", boot_bridge=False)
    out: dict = {"model": spec, "format": model.resolve_format("auto"), "n": len(items), "tasks": tasks_src, "split": split,
                 "load_seconds": round(time.perf_counter() - t0, 1), "methods": {}}
    test_idx = [i for i, t in enumerate(items) if t.split == "test"]
    for method in methods:
        cot = method == "generate-cot"
        t0 = time.perf_counter()
        preds = T.predict(model, items, "generate" if cot else method, chain_of_thought=cot,
                          batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - t0
        shuffled = T.shuffle_answers(items, seed=seed + 1)
        row = {
            "seconds": round(seconds, 1),
            "all": T.summarize(items, preds, seed=seed),
            "control_all": T.summarize(shuffled, preds, seed=seed),
        }
        if test_idx:
            sub = [items[i] for i in test_idx]
            sub_preds = [preds[i] for i in test_idx]
            row["test"] = T.summarize(sub, sub_preds, seed=seed)
            row["control_test"] = T.summarize([shuffled[i] for i in test_idx], sub_preds, seed=seed)
        row["examples"] = [  # a few raw outputs, to see what the parser sees
            {"id": p.id, "output": p.output} for p in preds[:5] if p.output is not None
        ]
        out["methods"][method] = row
        if on_method is not None:  # write what is done so far
            on_method(out)
    return out


def table(results: list[dict]) -> str:
    from psylens.tasks import KINDS

    short = {"emotion_inference": "emotion", "false_belief": "false belief", "second_order_belief": "2nd-order",
             "intention": "intention", "faux_pas": "faux pas", "mixed_emotion": "mixed emotion"}
    lines = ["| model | method | set | n | accuracy [95% CI] | " + " | ".join(short[k] for k in KINDS)
             + " | parsed | shuffled-answer control |",
             "|---|---|---|---|---|" + "---|" * len(KINDS) + "---|---|"]
    for r in results:
        for method, row in r["methods"].items():
            for part in ("all", "test"):
                if part not in row or (part == "test" and r.get("split")):  # a one-split run: "all" is it
                    continue
                s, c = row[part], row[f"control_{part}"]
                label = r.get("split") or part
                kinds = " | ".join(f"{s['by_kind'][k]:.2f}" if k in s["by_kind"] else "—" for k in KINDS)
                lines.append(f"| {r['model']} | {method} | {label} | {s['n']} | {_fmt(s['accuracy'], s['ci95'])} | "
                             f"{kinds} | {s['parsed']:.2f} | {_fmt(c['accuracy'], c['ci95'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=["loglik", "generate"], choices=METHODS)
    parser.add_argument("--tasks", default="psych", help="'psych' or a JSONL file of tasks")
    parser.add_argument("--split", default=None, choices=["train", "test"], help="only this split (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N items (smoke runs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--out-dir", type=Path, default=Path("/tmp/tasks_bench"))
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    import torch

    from psylens.io import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    results = []
    for spec in args.models:
        name = f"{Path(spec).name}{'-' + args.split if args.split else ''}.json"

        def save(r: dict, name: str = name) -> None:
            r["date"] = time.strftime("%Y-%m-%d")
            write_json(args.out_dir / name, r)

        r = run_model(spec, args.methods, args.tasks, args.limit, args.batch_size, args.seed, args.split, save)
        results.append(r)
        print(f"{spec}: " + ", ".join(f"{m} {row['seconds']}s" for m, row in r["methods"].items()), flush=True)
    print(table(results))
    write_json(args.out_dir / f"summary{'-' + args.split if args.split else ''}.json",
               {"table": table(results), "models": [r["model"] for r in results]})


if __name__ == "__main__":
    main()
