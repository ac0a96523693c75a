"""``python -m benchmarks.circuits --model M --dtype D``: the benchmark loads the model it is told to, in the dtype it
is told to (it was hard-wired to the embedded SmolLM2). Control: without the flags it loads SmolLM2 in
``load_model``'s default dtype. A stand-in for ``load_model`` and for the modulation stage records what they get."""

from __future__ import annotations

import sys

import pytest

from benchmarks import circuits as bench


@pytest.mark.parametrize(("flags", "model", "dtype"), [([], bench.MODEL, None),
                                                        (["--model", "/m/q.gguf", "--dtype", "bfloat16"], "/m/q.gguf", "bfloat16")])
def test_model_and_dtype_reach_load_model(tmp_path, monkeypatch, flags, model, dtype):
    import psylens.models

    seen = {}
    monkeypatch.setattr(psylens.models, "load_model", lambda spec, **k: seen.update(spec=spec, **k) or "MODEL")
    monkeypatch.setattr(bench, "bench_modulation", lambda m, *a, **k: seen.update(model=m) or {})
    monkeypatch.setattr(sys, "argv", ["circuits", "--only", "modulation", "--run", str(tmp_path),
                                      "--out-dir", str(tmp_path / "out"), *flags])
    bench.main()
    assert seen["spec"] == model and seen["dtype"] == dtype and seen["model"] == "MODEL"
