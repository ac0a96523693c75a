"""`--device`, `--dtype` and `--device-map`: one definition, on every command that loads a model, and they reach it.

On a GPU every command loads in bfloat16 unless told otherwise; before these options a user could not ask for
float32 there, and the `sae` commands loaded their model on the CPU whatever the machine had.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import typer

from psylens import io
from psylens.cli import app
from psylens.model_options import DEVICE_MAP_OPTION, DEVICE_OPTION, DTYPE_OPTION, model_kwargs
from tests.unit.core.test_runs_cli import _cli, _stimuli

# Commands that load a model with options of their own, and why.
OWN_OPTIONS = {
    "organism train": "trains the LoRA adapter in float32 on --device (default cpu), recorded in its config",
    "doctor": "its --device/--dtype/--device-map are the target's, beside a float32 CPU reference",
}
SHARED = {"--device": DEVICE_OPTION, "--dtype": DTYPE_OPTION, "--device-map": DEVICE_MAP_OPTION}


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    yield " ".join(path), group
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def missing_shared_options(typer_app: typer.Typer) -> dict[str, list[str]]:
    """Commands taking --model or --base whose --device/--dtype/--device-map are absent or not the shared ones."""
    out: dict[str, list[str]] = {}
    for name, cmd in _commands(typer.main.get_command(typer_app)):
        params = {o: p for p in getattr(cmd, "params", []) for o in getattr(p, "opts", [])}
        if name in OWN_OPTIONS or not ({"--model", "--base"} & set(params)):
            continue
        bad = [flag for flag, shared in SHARED.items()
               if flag not in params or params[flag].help != shared.help or params[flag].default != shared.default]
        if bad:
            out[name] = bad
    return out


def test_every_command_that_loads_a_model_takes_the_shared_options() -> None:
    assert missing_shared_options(app) == {}
    names = {n for n, _ in _commands(typer.main.get_command(app))}
    # the commands this test is about are really there (a walk that found nothing would pass)
    assert {"harvest", "probe", "validate", "circuits", "compare", "traces", "sae train", "sae steer", "sae anchors",
            "steer", "steer sweep", "tasks eval", "demo"} <= names
    assert set(OWN_OPTIONS) <= names


def test_a_command_without_them_is_found() -> None:
    """Control: the check flags a command that has --model but only a --device of its own."""
    other = typer.Typer()

    @other.command()
    def fine(model: str = typer.Option("m", "--model"), device: str = DEVICE_OPTION,
             dtype: str | None = DTYPE_OPTION, device_map: str | None = DEVICE_MAP_OPTION) -> None:
        pass

    @other.command()
    def stale(model: str = typer.Option("m", "--model"), device: str = typer.Option("auto", "--device")) -> None:
        pass

    assert missing_shared_options(other) == {"stale": ["--device", "--dtype", "--device-map"]}


def test_model_kwargs_checks_before_loading() -> None:
    assert model_kwargs() == {"device": "auto", "dtype": None}
    assert model_kwargs("cpu", "bf16") == {"device": "cpu", "dtype": "bf16"}
    assert model_kwargs(dtype="float32", device_map="auto") == {"device_map": "auto", "dtype": "float32"}
    with pytest.raises(ValueError, match=r"--dtype 'float8'.*bfloat16"):
        model_kwargs(dtype="float8")
    with pytest.raises(ValueError, match="both given"):
        model_kwargs("cpu", device_map="auto")
    with pytest.raises(ValueError, match="--device-map is empty"):
        model_kwargs(device_map=" ")
    with pytest.raises(ValueError, match="unknown device"):
        model_kwargs("tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            model_kwargs("cuda")
    from psylens.models import resolve_dtype  # what load_model will pick, known before loading

    assert resolve_dtype("cpu") == torch.float32 and resolve_dtype("cpu", "bf16") == torch.bfloat16
    assert resolve_dtype(**model_kwargs(dtype="float16", device_map="auto")) == torch.float16


def test_dtype_reaches_the_model_and_its_record(tiny_llama_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    stim = _stimuli(tmp_path / "stim.jsonl")
    run_dir = tmp_path / "R"
    assert _cli(monkeypatch, ["harvest", "--model", str(tiny_llama_dir), "--stimuli", str(stim), "--out", str(run_dir),
                              "--positions", "last", "--device", "cpu", "--dtype", "bfloat16"]) == 0
    rec = io.read_json(run_dir / "run.json")["models"]["model"]
    assert rec["dtype"] == "bfloat16" and rec["device"] == "cpu", rec
    from psylens.activations import Activations

    a = Activations.load(run_dir / "activations")
    assert torch.isfinite(a["resid_post"]).all()
    # float32 weights are another model for this run: refused, not mixed in
    capsys.readouterr()
    assert _cli(monkeypatch, ["probe", "--model", str(tiny_llama_dir), "--stimuli", str(stim), "--out", str(run_dir),
                              "--device", "cpu", "--dtype", "float32", "--no-geometry", "--no-cross-format",
                              "--no-persistence", "--no-system-prompt"]) == 1
    err = capsys.readouterr().err
    assert "the same weights in dtype 'float32', the run's are 'bfloat16'" in err and "Use --dtype bfloat16" in err, err
    # a bad value is refused before anything is written
    assert _cli(monkeypatch, ["harvest", "--model", str(tiny_llama_dir), "--stimuli", str(stim),
                              "--out", str(tmp_path / "R2"), "--dtype", "float8"]) == 1
    assert "--dtype 'float8'" in capsys.readouterr().err and not (tmp_path / "R2").exists()


def test_the_sae_commands_load_where_they_are_told(tiny_llama_dir: Path) -> None:
    """`sae train/steer/anchors` used to load on the CPU whatever was asked; their step cache is kept per dtype."""
    from psylens.saes.pipeline import _LazyModel

    lazy = _LazyModel(None, str(tiny_llama_dir), device="cpu", dtype="bfloat16")
    assert lazy.dtype == "bfloat16"  # known before loading: the step cache is checked first
    m = lazy.get()
    assert m.dtype == torch.bfloat16 and m.device.type == "cpu"
    assert _LazyModel(None, str(tiny_llama_dir), device="cpu").dtype == "float32"
    assert _LazyModel(m, m.spec).dtype == "bfloat16"  # a loaded model is used as it is
    with pytest.raises(ValueError, match="--dtype"):
        _LazyModel(None, str(tiny_llama_dir), dtype="int3")


def test_the_step_cache_is_kept_per_dtype(tiny_llama_dir: Path, tmp_path: Path) -> None:
    """Step vectors read in float32 are not served to a bfloat16 request (nor the reverse); the same dtype reuses them."""
    from types import SimpleNamespace

    from psylens.saes.pipeline import _LazyModel, _step_set

    run = SimpleNamespace(file=lambda rel: tmp_path / rel)
    traces = [{"id": f"t{i}", "prompt": "Why is Ana sad?", "text": f"She lost her dog {i}. She misses it. So the answer is A."}
              for i in range(3)]
    kw = dict(site="resid_post", layer=1, pooling="delimiter", segmentation="sentence", progress=False)
    loads: list[str] = []

    def lazy(dtype: str) -> _LazyModel:
        lz = _LazyModel(None, str(tiny_llama_dir), device="cpu", dtype=dtype)
        get = lz.get
        lz.get = lambda: (loads.append(dtype), get())[1]  # type: ignore[method-assign]
        return lz

    f32 = _step_set(run, lazy("float32"), traces, **kw)
    again = _step_set(run, lazy("float32"), traces, **kw)
    assert loads == ["float32"] and torch.equal(f32.acts, again.acts)  # the cache served the second call
    bf16 = _step_set(run, lazy("bfloat16"), traces, **kw)
    assert loads == ["float32", "bfloat16"]  # not the float32 cache
    assert bf16.acts.shape == f32.acts.shape and not torch.equal(bf16.acts, f32.acts)
    assert torch.allclose(bf16.acts, f32.acts, rtol=0.1, atol=0.1)


def test_the_dtype_benchmark_reads_two_runs_side_by_side(tiny_llama_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.dtypes import runs

    stim = _stimuli(tmp_path / "stim.jsonl")
    for dt in ("bfloat16", "float32"):
        assert _cli(monkeypatch, ["harvest", "--model", str(tiny_llama_dir), "--stimuli", str(stim),
                                  "--out", str(tmp_path / dt), "--device", "cpu", "--dtype", dt]) == 0
    res = runs(tmp_path / "bfloat16", tmp_path / "float32")
    assert (res["a"]["dtype"], res["b"]["dtype"]) == ("bfloat16", "float32")
    assert set(res["a"]["steps_seconds"]) >= {"load", "harvest"} and res["a"]["gates"] == {} == res["a"]["circuits"]
