"""Harvest throughput, side by side in one process on identical batches (`python -m benchmarks.harvest`).

Compares, on the embedded model, for the same batches of the built-in emotions set:
  raw        plain HF forward of an unwrapped copy of the model (logits computed) — the ceiling
  raw-base   plain HF forward of the base model only (no lm_head)
  psylens    model.harvest(resid_post, all layers, last position)
  bridge     TransformerBridge.run_with_cache(names_filter=resid_post hooks)
  nnsight    an nnsight trace saving the same layers' outputs
Repeats are interleaved (round-robin) so machine noise hits every variant alike; the
median time per variant is reported with tokens/s and the ratio to `raw`.
Also: cold (dequantize GGUF) vs cached model load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-load", action="store_true", help="skip the cold-vs-cached load measurement")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    import psylens
    from psylens.harvest import _batches, encode
    from psylens.models import DEFAULT_MODEL, _resolve
    from psylens.stimuli import load

    torch.manual_seed(0)
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d"), "texts": args.texts, "batch_size": args.batch_size}

    if not args.skip_load:
        with tempfile.TemporaryDirectory() as tmp:
            old = os.environ.get("PSYLENS_CACHE")
            os.environ["PSYLENS_CACHE"] = tmp
            cold = _time(lambda: psylens.load_model(DEFAULT_MODEL, device="cpu", boot_bridge=False))
            cached = _time(lambda: psylens.load_model(DEFAULT_MODEL, device="cpu", boot_bridge=False))
            if old is None:
                del os.environ["PSYLENS_CACHE"]
            else:
                os.environ["PSYLENS_CACHE"] = old
        results["load_cold_s"] = round(cold, 2)
        results["load_cached_s"] = round(cached, 2)
        print(f"model load: cold {cold:.1f}s, cached {cached:.2f}s ({cold / cached:.0f}x faster)")

    model = psylens.load_model(DEFAULT_MODEL, device="cpu")
    raw = AutoModelForCausalLM.from_pretrained(_resolve(DEFAULT_MODEL)[1], dtype=torch.float32).eval()
    stim = load("emotions")[: args.texts]
    encs = [encode(model, s.text) for s in stim]
    batches = _batches(encs, args.batch_size, model.tokenizer.pad_token_id, "right")
    n_tokens = sum(int(b.attention_mask.sum()) for b in batches)
    L = model.n_layers
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(L)]
    bridge = model.bridge

    def run_raw() -> None:
        with torch.no_grad():
            for b in batches:
                raw(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids, use_cache=False)

    def run_raw_base() -> None:
        with torch.no_grad():
            for b in batches:
                raw.model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids, use_cache=False)

    def run_psylens() -> None:
        model.harvest(stim, sites=["resid_post"], positions="last", batch_size=args.batch_size, progress=False,
                      padding_side="right")

    def run_bridge() -> None:
        with torch.no_grad():
            for b in batches:
                bridge.run_with_cache(b.input_ids, attention_mask=b.attention_mask, names_filter=lambda n: n in names,
                                      return_type=None)

    from psylens._nnsight import trace_outputs

    paths = {id(m): n for n, m in bridge.original_model.named_modules()}
    nn_paths = [paths[id(bridge.hook_dict[n])] for n in names]

    def run_nnsight() -> None:
        for b in batches:
            trace_outputs(bridge.original_model, nn_paths, input_ids=b.input_ids, attention_mask=b.attention_mask,
                          position_ids=b.position_ids)

    variants = {"raw": run_raw, "raw-base": run_raw_base, "psylens": run_psylens, "bridge": run_bridge,
                "nnsight": run_nnsight}
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for k, fn in variants.items():
            times[k].append(_time(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{len(stim)} texts, {n_tokens} tokens, batch {args.batch_size}, {args.repeats} interleaved repeats")
    print(f"{'variant':<10} {'median s':>9} {'tokens/s':>9} {'vs raw':>7} {'vs raw-base':>12}")
    table = {}
    for k, t in med.items():
        ratio, base = med["raw"] / t, med["raw-base"] / t
        table[k] = {"median_s": round(t, 3), "tokens_per_s": round(n_tokens / t, 1), "speed_vs_raw": round(ratio, 3),
                    "speed_vs_raw_base": round(base, 3)}
        print(f"{k:<10} {t:9.3f} {n_tokens / t:9.1f} {ratio:6.2f}x {base:11.2f}x")
    target = table["psylens"]["speed_vs_raw_base"]
    print(f"psylens harvest vs raw-base: {target:.3f}x (target >= 0.98; includes tokenizing and locating the texts)")
    results["harvest"] = table
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
