"""Fixtures of the circuits tests (helpers in circuits_planted.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # circuits_planted sits beside this file

from circuits_planted import plant, tiny_llama  # noqa: E402
from psylens.models import Model  # noqa: E402


@pytest.fixture(scope="module")
def planted(smollm_tokenizer):
    """(model, direction): a fresh tiny Llama (not the shared fixture) with the planted units."""
    torch.manual_seed(1)
    v = torch.randn(32)
    v = v / v.norm()
    hf = tiny_llama()
    plant(hf, smollm_tokenizer, v)
    return Model(hf, smollm_tokenizer, spec="tiny-planted"), v
