"""What the steering criteria allow on a model, before any steering (`python -m benchmarks.steering_ceiling`).

The sweep scores a steered text twice: the judge must name its target emotion, and its perplexity
under the unsteered model must stay within ``1.5×`` that of greedy unsteered text. This measures both
on text the model writes *without* steering, on the built-in neutral prompts:

  greedy         unsteered, greedy (the denominator of every perplexity ratio: 1.00 by definition)
  sampled T=1    unsteered, plain sampling — the model's own fluent text, off its mode
  sampled T=0.7  unsteered, temperature 0.7, top-p 0.9 (the sweep's sampled setting)
  system         greedy with the sweep's prompting baseline as system prompt ("Respond in a way that shows {e}.")
  instructed     greedy with the request in the user turn: "{prompt} Answer in a very {adj} voice, full of {e}."

For the last two, per emotion: the judge's success (its dominant emotion is the target) and the
perplexity ratio, scored like the sweep does (conditioned on the plain prompt, without the instruction).
If the model's own best effort at an emotion, asked for outright, fails the judge or the cap, steering
that must pass both is measured against a bar the model cannot reach by prompting either.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

ADJECTIVES = {"anger": "angry", "disgust": "disgusted", "fear": "afraid", "joy": "joyful", "sadness": "sad",
              "surprise": "surprised"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=40, help="how many built-in neutral prompts (at most 40)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per text (the quick sweep's 32)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    args = parser.parse_args()
    if not 1 <= args.prompts <= 40 or args.tokens < 1:
        parser.error(f"--prompts must be 1–40 (the built-in set) and --tokens at least 1; got {args.prompts} and {args.tokens}")
    if args.threads:
        torch.set_num_threads(args.threads)

    from psylens import stimuli
    from psylens.models import load_model
    from psylens.steering.judges import LexiconJudge, success_rate
    from psylens.steering.metrics import perplexity

    t0 = time.time()
    model = load_model(args.model)
    prompts = stimuli.load("steering_prompts").texts[: args.prompts]
    judge = LexiconJudge()
    gen = dict(max_new_tokens=args.tokens, seed=0)
    greedy = model.generate(prompts, **gen)
    ppl_greedy = perplexity(model, prompts, greedy)

    def ratio(texts: list[str]) -> float:
        return perplexity(model, prompts, texts) / ppl_greedy

    out: dict[str, object] = {"model": args.model, "n_prompts": len(prompts), "tokens": args.tokens,
                              "greedy_perplexity": ppl_greedy}
    out["sampled_t1"] = ratio(model.generate(prompts, do_sample=True, temperature=1.0, top_p=1.0, **gen))
    out["sampled_t07_p09"] = ratio(model.generate(prompts, do_sample=True, temperature=0.7, top_p=0.9, **gen))
    out["none_success"] = {e: success_rate(judge.score(greedy), e) for e in ADJECTIVES}
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for e, adj in ADJECTIVES.items():
        system = model.generate(prompts, system_prompt=f"Respond in a way that shows {e}.", **gen)
        told = model.generate([f"{p} Answer in a very {adj} voice, full of {e}." for p in prompts], **gen)
        rows[e] = {
            "system": {"success": success_rate(judge.score(system), e), "perplexity_ratio": ratio(system)},
            "instructed": {"success": success_rate(judge.score(told), e), "perplexity_ratio": ratio(told)},
        }
    out["emotions"] = rows
    out["seconds"] = round(time.time() - t0, 1)

    print(f"{args.model}: {len(prompts)} prompts, {args.tokens} new tokens, greedy perplexity {ppl_greedy:.2f}")
    print(f"unsteered sampled, T=1: perplexity ratio {out['sampled_t1']:.2f}; T=0.7 top-p 0.9: {out['sampled_t07_p09']:.2f}")
    print("| emotion | none | system prompt: success / ppl× | instructed: success / ppl× |")
    print("|---|---|---|---|")
    for e, r in rows.items():
        print(f"| {e} | {out['none_success'][e]:.3f} | {r['system']['success']:.3f} / {r['system']['perplexity_ratio']:.2f} "
              f"| {r['instructed']['success']:.3f} / {r['instructed']['perplexity_ratio']:.2f} |")
    for kind in ("system", "instructed"):
        s = statistics.mean(r[kind]["success"] for r in rows.values())
        p = statistics.mean(r[kind]["perplexity_ratio"] for r in rows.values())
        out[f"mean_{kind}"] = {"success": s, "perplexity_ratio": p}
        print(f"mean {kind}: success {s:.3f}, perplexity ratio {p:.2f}")
    print(f"{out['seconds']} s")
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=1, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))


if __name__ == "__main__":
    main()
