"""The model organism end to end (`python -m benchmarks.organism`): train, control, evaluate.

    python -m benchmarks.organism train   --out /tmp/organism/tuned                 # the shipped recipe
    python -m benchmarks.organism train   --out /tmp/organism/control --shuffle     # the control
    python -m benchmarks.organism eval    --adapter base=- tuned=/tmp/organism/tuned control=/tmp/organism/control

``train`` is ``psylens organism train`` with the shipped recipe (:data:`RECIPE`); rerunning it
with the same ``--out`` resumes from the latest checkpoint. ``eval`` scores each model on the
``psych`` test split with ``psylens.tasks.evaluate`` (generate, chain of thought) and writes one
JSON a model plus paired differences against the base (same items, bootstrap over items) to
``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from psylens.compare.organism import OrganismConfig

RECIPE = OrganismConfig()  # the defaults are the recipe of the shipped smollm2-135m-psy-grpo


def train(out: str, shuffle: bool, max_steps: int | None, threads: int | None) -> None:
    import dataclasses

    import torch

    from psylens.compare.organism import train_organism

    if threads:
        torch.set_num_threads(threads)
    cfg = dataclasses.replace(RECIPE, shuffle_rewards=shuffle, **({"max_steps": max_steps} if max_steps else {}))
    r = train_organism(cfg, out, progress=True)
    logging.getLogger("benchmarks.organism").info("done: %s steps in %.0f s; final correct %.3f", r.steps, r.seconds,
                                                   r.final_correct)


def evaluate(models: dict[str, str], out_dir: str, max_new_tokens: int, batch_size: int, limit: int | None,
             threads: int | None) -> dict[str, Any]:
    import numpy as np
    import torch

    from psylens import tasks as T
    from psylens.models import DEFAULT_MODEL, load_model
    from psylens.stats import paired_diff_ci

    if threads:
        torch.set_num_threads(threads)
    items = T.load("psych", split="test")
    if limit:
        items = items[:limit]
    outd = Path(out_dir)
    outd.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name, adapter in models.items():
        path = outd / f"{name}.json"
        if path.is_file():  # resumable: one finished model a file
            results[name] = json.loads(path.read_text())
            continue
        t0 = time.perf_counter()
        if adapter in ("-", ""):
            model = load_model(DEFAULT_MODEL, device="cpu")
        elif adapter.startswith("alias:"):
            model = load_model(adapter[6:], device="cpu")
        else:
            model = load_model(DEFAULT_MODEL, adapter=adapter, device="cpu")
        res = T.evaluate(model, items, method="generate", chain_of_thought=True, batch_size=batch_size,
                         max_new_tokens=max_new_tokens, return_items=True)
        res["seconds"] = time.perf_counter() - t0
        res["adapter"] = adapter
        res["max_new_tokens"] = max_new_tokens
        res["date"] = time.strftime("%Y-%m-%d")
        path.write_text(json.dumps(res, indent=1))
        results[name] = res
    if "base" in results:
        base = np.array([it["correct"] for it in results["base"]["per_item"]], float)
        kinds = [it["kind"] for it in results["base"]["per_item"]]
        for name, res in results.items():
            if name == "base":
                continue
            other = np.array([it["correct"] for it in res["per_item"]], float)
            d = paired_diff_ci(other, base, seed=0)
            res["vs_base"] = d if isinstance(d, dict) else {"value": d}
            by_kind = {}
            for k in dict.fromkeys(kinds):
                m = np.array([x == k for x in kinds])
                by_kind[k] = paired_diff_ci(other[m], base[m], seed=0)
            res["vs_base_by_kind"] = by_kind
    (outd / "summary.json").write_text(json.dumps(
        {n: {k: v for k, v in r.items() if k != "per_item"} for n, r in results.items()}, indent=1, default=str))
    return results


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--shuffle", action="store_true")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--threads", type=int, default=None)
    e = sub.add_parser("eval")
    e.add_argument("--models", nargs="+", required=True, help="name=ADAPTER_DIR, name=- (the base), name=alias:SPEC")
    e.add_argument("--out-dir", default="/tmp/organism/eval")
    e.add_argument("--max-new-tokens", type=int, default=256)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--limit", type=int, default=None)
    e.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.cmd == "train":
        train(a.out, a.shuffle, a.max_steps, a.threads)
    else:
        models = dict(m.split("=", 1) for m in a.models)
        evaluate(models, a.out_dir, a.max_new_tokens, a.batch_size, a.limit, a.threads)


if __name__ == "__main__":
    main()
