"""``python -m benchmarks.compare``: ``psylens compare`` on SmolLM2-135M at full size.

Three pairs, each written to its own run under ``$BENCH_OUT`` (default ``/tmp/psylens_bench_compare``):

1. ``lora``: SmolLM2 against SmolLM2 + a random LoRA adapter (r=8 on q_proj/v_proj of layers 10–12,
   B drawn so each adapted module changes by ~2% of its norm) — the known answer: exactly those
   6 modules change, activation differences start at layer 10.
2. ``self``: SmolLM2 against itself — the control: every weight difference zero, activations and
   concept changes within float noise.
3. ``organism`` (when ``$ORGANISM_ADAPTER`` names a trained GRPO adapter): the real base-vs-RL pair.

``$BENCH_SECTIONS`` (default ``weights,activations,emotions,steering``) picks the sections. Uses ``CompareConfig.quick()`` (fewer texts; 8 stories a concept for the base directions) unless
``BENCH_FULL=1``. Prints one JSON line per pair with timings and headline numbers (``RESULTS.json`` in ``$BENCH_OUT``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
QUICK = os.environ.get("BENCH_FULL", "0") in ("", "0")  # the quick config unless BENCH_FULL=1


def random_adapter(base_spec: str, out: Path, seed: int = 0, rel: float = 0.02) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model

    from psylens.models import load_model

    m = load_model(base_spec, device="cpu")
    torch.manual_seed(seed)
    peft = get_peft_model(m.hf_model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 layers_to_transform=[10, 11, 12]))
    with torch.no_grad():
        for name, mod in peft.named_modules():
            if hasattr(mod, "lora_B") and "default" in getattr(mod, "lora_B", {}):
                a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
                b.normal_()
                delta = b @ a * mod.scaling["default"]
                b.mul_(rel * mod.base_layer.weight.norm() / delta.norm())
    peft.save_pretrained(str(out))
    return out


def main() -> None:
    from psylens.compare.pair import load_pair
    from psylens.compare.pipeline import CompareConfig, run_compare

    root = Path(os.environ.get("BENCH_OUT", "/tmp/psylens_bench_compare"))
    root.mkdir(parents=True, exist_ok=True)
    base = "smollm2-135m-instruct"
    pairs = sys.argv[1:] or ["lora", "self"]
    results = {}
    res_file = root / "RESULTS.json"
    if res_file.exists():
        results = json.loads(res_file.read_text())
    for name in pairs:
        t0 = time.perf_counter()
        if name == "lora":
            adapter = random_adapter(base, root / "random_lora")
            pair = load_pair(base, tuned_adapter=adapter, device="cpu")
        elif name == "self":
            pair = load_pair(base, base, device="cpu")
        elif name == "organism":
            pair = load_pair(base, tuned_adapter=os.environ["ORGANISM_ADAPTER"], device="cpu")
        else:
            raise ValueError(f"unknown pair {name!r}; valid: lora, self, organism")
        t_load = time.perf_counter() - t0
        out = root / name
        times = {}
        summary = None
        wanted = tuple(os.environ.get("BENCH_SECTIONS", "weights,activations,emotions,steering").split(","))
        for sections in [(s,) for s in wanted] + [("report",)]:
            t = time.perf_counter()
            if sections == ("report",):  # the report alone, from the section files already written
                from psylens.compare.pipeline import _features_reason, _skip
                from psylens.compare.report import write_report
                from psylens.runs import open_run

                run = open_run(out)
                status = {s: {"status": "done", "reason": None, "headline": results.get(name, {}).get("headlines", {}).get(s)}
                          for s in wanted}
                for s in ("weights", "activations", "emotions", "steering"):
                    status.setdefault(s, _skip("not run in this benchmark (BENCH_SECTIONS)"))
                status["features"] = _skip(_features_reason(run))
                summary = write_report(run, status, plots=True)
                times["report"] = time.perf_counter() - t
                continue
            cfg = CompareConfig.quick(sections=sections, plots=False) if QUICK else CompareConfig(sections=sections, plots=False)
            s = run_compare(pair, out, cfg, progress=False)
            times[sections[0]] = time.perf_counter() - t
            results.setdefault(name, {}).setdefault("headlines", {})[sections[0]] = s["sections"][sections[0]]["headline"]
        results[name]["seconds"] = {"load": t_load, **times}
        results[name]["plots"] = summary["plots"] if summary else None
        res_file.write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps({name: results[name]["seconds"]}), flush=True)
        del pair


if __name__ == "__main__":
    main()
