"""Model load in a fresh process: ``import psylens; psylens.load_model(...)`` against a plain
``transformers`` load of the same cached checkpoint (`python -m benchmarks.load`).

Each variant runs in its own fresh Python process (imports included, as a user pays them); the
variants alternate round-robin so machine noise hits both alike, and the medians are compared.
Target (issue 9): psylens / transformers ≤ 1.10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 1.10

PSYLENS = "import psylens; psylens.load_model({spec!r}, device='cpu')"
PLAIN = (
    "from transformers import AutoModelForCausalLM, AutoTokenizer; "
    "AutoModelForCausalLM.from_pretrained({loc!r}, dtype='float32').eval(); AutoTokenizer.from_pretrained({loc!r})"
)


def _fresh(code: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")

    from psylens.models import _resolve

    loc = _resolve(args.model)[1]  # dequantizes once if needed, so both variants read the cached checkpoint
    times: dict[str, list[float]] = {"psylens": [], "transformers": []}
    _fresh(PLAIN.format(loc=loc))  # warm the page cache
    for _ in range(args.repeats):
        times["transformers"].append(_fresh(PLAIN.format(loc=loc)))
        times["psylens"].append(_fresh(PSYLENS.format(spec=args.model)))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["psylens"] / med["transformers"]
    res = {
        "date": time.strftime("%Y-%m-%d"),
        "model": args.model,
        "repeats": args.repeats,
        "median_s": {k: round(v, 2) for k, v in med.items()},
        "ratio": round(ratio, 3),
        "target": TARGET,
        "meets_target": ratio <= TARGET,
    }
    print(
        f"fresh-process load ({args.repeats} runs each, median): transformers {med['transformers']:.2f}s, "
        f"psylens {med['psylens']:.2f}s -> ratio {ratio:.3f} (target <= {TARGET})"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
