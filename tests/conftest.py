"""Shared fixtures: fixed seeds, offline hub, tiny random models, the embedded model.

- ``tiny_model(arch)``: a psylens ``Model`` over a random-weight model built in-process
  from a config (``"llama"``, ``"qwen2"``, ``"gemma3"``), with a real tokenizer
  (the embedded SmolLM2 tokenizer, vocab 49152). Fast.
- ``smollm``: the embedded SmolLM2-135M-Instruct, loaded once per session. Read-only:
  tests must not change its weights or leave hooks on it. Integration tests only.
- ``smollm_tokenizer``: its tokenizer alone (unit tests never load the embedded model).
"""

from __future__ import annotations

import os
from pathlib import Path
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Before torch starts OpenMP: idle threads sleep instead of spinning. On a shared 2-core machine
# spinning threads make every forward pass ~10x slower (and subprocesses inherit the setting).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys

import numpy as np
import pytest
import torch

from psylens.models import DEFAULT_MODEL, Model, load_model

SEED = 0
TINY_VOCAB = 49152


_REAL_MAIN = sys.modules.get("__main__")  # pytest's own, taken when this conftest is imported


def _restore_main() -> None:
    if _REAL_MAIN is not None and sys.modules.get("__main__") is not _REAL_MAIN:
        sys.modules["__main__"] = _REAL_MAIN


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs page scripts as ``__main__`` and leaves them there; multiprocessing's
    spawn would then re-run that script in every child. Put pytest's ``__main__`` back before and after
    each test — before too, because a module- or session-scoped fixture (set up ahead of this one) may
    have rendered pages."""
    _restore_main()
    yield
    _restore_main()


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)


@pytest.fixture(scope="session")
def smollm() -> Model:
    return load_model(DEFAULT_MODEL, device="cpu")


@pytest.fixture(scope="session")
def smollm_tokenizer():
    """The embedded model's tokenizer alone: unit tests never load the embedded model's weights."""
    from transformers import AutoTokenizer

    from psylens.models import REGISTRY, _gguf_cache_path

    gguf = REGISTRY[DEFAULT_MODEL].locate()
    cached = _gguf_cache_path(gguf)
    if (cached / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(str(cached))
    else:  # read it from the GGUF itself (no dequantization)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_tiny_hf(arch: str, vocab_size: int = TINY_VOCAB):
    """A random-weight causal LM of family ``arch`` (2–3 layers, d_model 32)."""
    from transformers import (
        AutoModelForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        Qwen2Config,
    )

    torch.manual_seed(SEED)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    if arch == "llama":
        cfg = LlamaConfig(**common)
    elif arch == "qwen2":
        cfg = Qwen2Config(**common)
    elif arch == "gemma3":
        cfg = Gemma3TextConfig(**common, head_dim=8, sliding_window=16, query_pre_attn_scalar=8)
    else:
        raise ValueError(arch)
    model = AutoModelForCausalLM.from_config(cfg)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model(smollm_tokenizer):
    cache: dict[str, Model] = {}

    def make(arch: str = "llama") -> Model:
        if arch not in cache:
            cache[arch] = Model(build_tiny_hf(arch), smollm_tokenizer, spec=f"tiny-{arch}")
        return cache[arch]

    return make


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, smollm_tokenizer) -> Path:
    """A tiny random Llama saved with the SmolLM2 tokenizer: a local HF model directory. Shared by the
    whole session: read it, never write into it (copy it first)."""
    d = tmp_path_factory.mktemp("tiny-llama")
    build_tiny_hf("llama").save_pretrained(d)
    smollm_tokenizer.save_pretrained(d)
    return d


NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_small_notebook(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, timeout: int = 900,
                       env: dict[str, str] | None = None) -> tuple[list[dict], str]:
    """Execute ``notebooks/<name>`` top to bottom with ``PSYLENS_NOTEBOOK_SMALL=1`` (and ``env``), in ``tmp_path``.

    Returns every code cell's outputs and their text (streams and plain-text results joined); fails the
    test with the exception names and values when any cell raised.
    """
    import nbclient
    import nbformat

    monkeypatch.setenv("PSYLENS_NOTEBOOK_SMALL", "1")  # the kernel inherits the environment
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outs if o.get("output_type") == "error"]
    assert not errors, [(o.get("ename"), o.get("evalue")) for o in errors]
    text = "".join(o.get("text", "") for o in outs) + "".join(str(o.get("data", {}).get("text/plain", "")) for o in outs)
    return outs, text


def pytest_collection_modifyitems(config, items) -> None:
    """Unit tests use tiny random models only: one that asks for the embedded model fails at once."""
    for item in items:
        if "/tests/unit/" in str(item.fspath).replace("\\", "/") and "smollm" in getattr(item, "fixturenames", ()):
            raise pytest.UsageError(
                f"{item.nodeid} is a unit test but asks for the embedded model (fixture 'smollm'); "
                "use tiny_model(arch), or move it to tests/integration"
            )
