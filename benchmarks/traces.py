"""Trace generation vs a plain batched ``generate`` with the same settings (target ≥ 0.9× the throughput).

    python -m benchmarks.traces [--tasks 8] [--samples 2] [--tokens 64] [--batch-size 16] [--repeats 3] [--threads N]

Same prompts (the chain-of-thought prompts of the first ``--tasks`` train items, formatted as
``psylens traces`` formats them), same batches, same process, interleaved repeats (plain, psylens,
plain, …). Both sample at temperature 0.7 over the full vocabulary (plain: ``do_sample=True,
top_k=0, top_p=1``; psylens: per-trace Gumbel noise + greedy) and both generate exactly ``--tokens``
new tokens (``min_new_tokens``), so an early EOS cannot flatter either side. Reports medians of wall
and process-CPU time and the throughput ratio plain/psylens (≥ 0.9 is the target; on a shared
machine the CPU-time ratio is the stable one). A last line times the whole ``generate_traces``
(files, parsing, EOS allowed) on the same jobs and gives its tokens/s.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def _time(fn) -> tuple[float, float]:
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import psylens
    from psylens import tasks as T
    from psylens.saes.traces import _generate_batch, _jobs, format_trace_prompt, generate_traces

    model = psylens.load_model(args.model, device="cpu")
    tok = model.tokenizer
    items = T.load("psych", split="train")[: args.tasks]
    jobs = _jobs(items, args.samples, 0)
    prompts = [format_trace_prompt(model, T.choice_prompt(t, chain_of_thought=True)) for t, *_ in jobs]
    seeds = [s for *_, s in jobs]
    batches = [list(range(i, min(i + args.batch_size, len(jobs)))) for i in range(0, len(jobs), args.batch_size)]

    def plain() -> None:
        old = tok.padding_side
        tok.padding_side = "left"
        try:
            for b in batches:
                enc = tok([prompts[i] for i in b], return_tensors="pt", padding=True, add_special_tokens=False)
                with torch.no_grad():
                    model.hf_model.generate(**enc, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                                            do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0,
                                            pad_token_id=tok.pad_token_id)
        finally:
            tok.padding_side = old

    def ours() -> None:
        for b in batches:
            _generate_batch(model, [prompts[i] for i in b], [seeds[i] for i in b], args.tokens, args.temperature,
                            min_new_tokens=args.tokens)

    _generate_batch(model, prompts[:2], seeds[:2], 4, args.temperature)  # warm-up
    res: dict[str, list[tuple[float, float]]] = {"plain": [], "psylens": []}
    for _ in range(args.repeats):
        res["plain"].append(_time(plain))
        res["psylens"].append(_time(ours))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in res.items()}
    n_tok = len(jobs) * args.tokens
    print(
        f"trace generation ({args.model}, {len(jobs)} traces in batches of {args.batch_size}, {args.tokens} new tokens "
        f"each, T={args.temperature}, {args.repeats} interleaved repeats, {torch.get_num_threads()} threads): "
        f"plain generate {med['plain'][0]:.1f} s wall / {med['plain'][1]:.1f} s CPU ({n_tok / med['plain'][0]:.1f} tok/s), "
        f"psylens {med['psylens'][0]:.1f} s / {med['psylens'][1]:.1f} s ({n_tok / med['psylens'][0]:.1f} tok/s); "
        f"throughput ratio {med['plain'][0] / med['psylens'][0]:.3f}x wall, {med['plain'][1] / med['psylens'][1]:.3f}x CPU"
    )
    got: dict = {}
    with tempfile.TemporaryDirectory() as d:
        w, c = _time(lambda: got.update(generate_traces(
            model, items, d, samples=args.samples, max_new_tokens=args.tokens, temperature=args.temperature,
            batch_size=args.batch_size, progress=False)))
    print(f"generate_traces end to end (EOS allowed, files written): {w:.1f} s wall / {c:.1f} s CPU for {got['n']} "
          f"traces, {got['new_tokens']} tokens ({got['new_tokens'] / w:.1f} tok/s wall); "
          f"accuracy {got['accuracy']:.2f}, parsed {got['parsed']:.2f}")


if __name__ == "__main__":
    main()
