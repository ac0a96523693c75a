"""Model fingerprints (`python -m benchmarks.fingerprint`): v2 (every weight) against v1 (16 sampled values a
tensor) and against one forward pass of a 16 × 64-token batch, on the same loaded model, repeats interleaved.

A fingerprint is taken whenever a command records its model in a run, so its cost is paid once per command.
No target: the ratios say what the exactness of v2 costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    import torch

    import psylens
    from psylens.runs import _sampled_fingerprint, model_fingerprint

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = psylens.load_model(args.model, device="cpu")
    n = sum(p.numel() for p in model.hf_model.parameters())
    ids = torch.randint(0, model.tokenizer.vocab_size, (16, 64))

    def forward() -> None:
        with torch.no_grad():
            model.hf_model(input_ids=ids)

    runs = {"v2": lambda: model_fingerprint(model), "v1": lambda: _sampled_fingerprint(model), "forward": forward}
    for f in runs.values():  # warm-up: the v2 weights are built once per device
        f()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, f in runs.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"model": args.model, "parameters": n, "threads": torch.get_num_threads(), "repeats": args.repeats,
           "median_seconds": med, "v2_over_v1": med["v2"] / med["v1"], "v2_over_forward": med["v2"] / med["forward"],
           "seconds": times}
    print(json.dumps({k: v for k, v in out.items() if k != "seconds"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
