"""Steering overhead: steered vs unsteered ``generate`` on the embedded model (target ≤ 1.05×).

    python -m benchmarks.steering [--tokens 64] [--repeats 5] [--threads N]

Same prompt, same process, interleaved repeats (unsteered, steered, unsteered, …) after a warm-up;
both runs generate exactly ``--tokens`` new tokens (``min_new_tokens``) so an early EOS cannot flatter
either side. Reports the ratio of median wall-clock times and of median process CPU times (on a
shared machine the CPU-time ratio is the stable one; with one thread it is the cost of the work).
Steering: one ``add`` vector at the middle layer, every position, through the psylens hooks — on
``transformers``' ``generate`` (what ``Model.generate`` and the sweep use) and on the TransformerBridge's
own ``generate`` loop (KV cache on).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def _time(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def measure(model, sv, *, tokens: int, repeats: int, prompt: str, bridge: bool = False) -> dict[str, float]:
    tok = model.tokenizer
    enc = tok([model.format_prompt(prompt)], return_tensors="pt", add_special_tokens=False).to(model.device)
    kw = dict(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id,
              temperature=None, top_p=None, top_k=None)

    def run() -> None:
        with torch.no_grad():
            if bridge:
                model.bridge.generate(enc["input_ids"], max_new_tokens=tokens, stop_at_eos=False, do_sample=False,
                                      use_past_kv_cache=True, verbose=False)
            else:
                model.hf_model.generate(**enc, **kw)

    def plain() -> None:
        run()

    def steered() -> None:
        with sv.apply(model.bridge if bridge else model):
            run()

    plain()
    steered()  # warm-up both paths
    a, b = [], []
    for _ in range(repeats):
        a.append(_time(plain))
        b.append(_time(steered))
    wall_a, cpu_a = [x[0] for x in a], [x[1] for x in a]
    wall_b, cpu_b = [x[0] for x in b], [x[1] for x in b]
    return {
        "unsteered_median_s": statistics.median(wall_a),
        "steered_median_s": statistics.median(wall_b),
        "ratio_median": statistics.median(wall_b) / statistics.median(wall_a),
        "ratio_cpu": statistics.median(cpu_b) / statistics.median(cpu_a),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import psylens
    from psylens.steering import SteeringVector

    prompt = "Describe what you did this morning."
    model = psylens.load_model(args.model, device="cpu")
    g = torch.Generator().manual_seed(0)
    v = torch.randn(model.d_model, generator=g)
    sv = SteeringVector.from_tensor(v / v.norm(), layers=[model.n_layers // 2], alpha=8.0)
    for bridge in (False, True):
        r = measure(model, sv, tokens=args.tokens, repeats=args.repeats, prompt=prompt, bridge=bridge)
        label = "TransformerBridge.generate" if bridge else "transformers generate"
        print(
            f"steering overhead ({label}, {args.model}, {args.tokens} new tokens, {args.repeats} interleaved repeats, "
            f"{torch.get_num_threads()} threads): unsteered {r['unsteered_median_s']:.3f} s, "
            f"steered {r['steered_median_s']:.3f} s, ratio {r['ratio_median']:.3f}x wall, {r['ratio_cpu']:.3f}x CPU time"
        )


if __name__ == "__main__":
    main()
