"""The emotion-concepts validation suite (issue 10) per direction source (`python -m benchmarks.validation_sources`).

For each model and each source (``stories``, ``expression``, ``probes``) runs ``psylens validate``'s
full suite (:func:`psylens.validation.suite.run_validation`, default config: every context, prompt
and activity) into ``--out-dir/<model>-<source>/`` and prints every gate's value, control and
verdict as a markdown table; one ``summary.json`` per run.

The model is loaded once per model, and texts read at a set of layers are reused between sources
(the stories, neutral texts, scenarios and dose templates are the same for every source; a read at
every layer serves later reads of one layer): the numbers are those of separate runs.

``probes`` needs ``probes/directions.safetensors`` of the same model: ``--probes-from RUN`` copies it
(and its ``.json``) from a ``psylens demo`` / ``psylens probe`` run into the probes run directory.

    python -m benchmarks.validation_sources --probes-from runs/demo
    python -m benchmarks.validation_sources --models gemma-3-270m --sources stories
    python -m benchmarks.validation_sources --models gemma-3-270m --sources stories --scale-reference median

``--scale-reference centred`` scales the steered gates by the residual norm after subtracting the mean
token vector, ``median`` by √d × the median dimension's root-mean-square (for models with massive
activations such as Gemma-3; ``ValidationConfig.scale_reference``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

MODELS = ("smollm2-135m-instruct",)
SOURCES = ("stories", "expression", "probes")


def _memo_text_means() -> None:
    """Reuse text reads between runs in this process (same texts, same settings, a subset of layers)."""
    import psylens.validation.suite as suite

    orig = suite.text_means
    cache: dict[Any, tuple[list[int], Any]] = {}

    def cached(model: Any, texts: Any, layers: Any = None, **kw: Any) -> Any:
        kw.pop("progress", None)
        kw.pop("desc", None)
        key = (id(model), tuple(texts), tuple(sorted(kw.items())))
        want = list(layers) if layers is not None else list(range(int(model.n_layers)))
        hit = cache.get(key)
        if hit is not None and set(want) <= set(hit[0]):
            got_layers, x = hit
            return x[:, [got_layers.index(v) for v in want]].clone()
        x = orig(model, texts, want, progress=True, **kw)
        cache[key] = (sorted(want), x[:, sorted(range(len(want)), key=want.__getitem__)])
        return x

    suite.text_means = cached


def _row(name: str, g: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))

    verdict = "skipped" if "skipped" in g else ("reported" if not g.get("gated", True) else ("yes" if g["passed"] else "no"))
    return f"| {name} | {f(g.get('value'))} | {f(g.get('control'))} | {f(g.get('threshold'))} | {verdict} |"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES)
    ap.add_argument("--out-dir", default="/tmp/validation_bench")
    ap.add_argument("--probes-from", default=None, help="a run with probes/directions.safetensors of the same model")
    ap.add_argument("--quick", action="store_true", help="ValidationConfig.quick_config() instead of the full suite")
    ap.add_argument("--config", default="{}", help='JSON of ValidationConfig fields to change, e.g. {"n_activities": 20}')
    ap.add_argument("--scale-reference", default=None,
                    help="what the steered gates' scale multiplies: norm (default) | centred (the residual norm after "
                         "subtracting the mean token vector) | median (√d × the median dimension's RMS; for models "
                         "with massive activations such as Gemma-3)")
    args = ap.parse_args(argv)

    from psylens.models import load_model
    from psylens.runs import open_or_create_run
    from psylens.validation.suite import ValidationConfig, run_validation

    changes: dict[str, Any] = json.loads(args.config)
    if args.scale_reference is not None:
        changes["scale_reference"] = args.scale_reference
    make = ValidationConfig.quick_config if args.quick else ValidationConfig
    for source in args.sources:
        make(source=source, **changes)  # bad settings fail before a model loads

    _memo_text_means()
    out = Path(args.out_dir)
    for spec in args.models:
        model = load_model(spec)
        for source in args.sources:
            path = out / f"{spec}-{source}"
            if source == "probes":
                if args.probes_from is None:
                    print(f"skip {spec} probes: give --probes-from RUN (a run with probes/directions.safetensors)")
                    continue
                (path / "probes").mkdir(parents=True, exist_ok=True)
                for name in ("directions.safetensors", "directions.json"):
                    src = Path(args.probes_from) / "probes" / name
                    if src.is_file():
                        shutil.copy(src, path / "probes" / name)
            run = open_or_create_run(path, command="benchmarks.validation_sources", model=model, seed=0)
            cfg = make(source=source, **changes)
            t0 = time.time()
            summary = run_validation(model, run, cfg, progress=True)
            print(f"\n### {spec}, {source} directions, layer {summary['layer']} ({time.time() - t0:.0f} s): "
                  f"{summary['passed']}/{summary['total']} gates passed")
            print("| gate | value | control | threshold | passed |\n|---|---|---|---|---|")
            for name, g in summary["gates"].items():
                print(_row(name, g))
            print(json.dumps({"model": spec, "source": source, "summary": str(path / "validation" / "summary.json")}),
                  flush=True)


if __name__ == "__main__":
    main()
