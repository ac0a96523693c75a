"""Fixtures of the circuits tests (helpers in circuits_planted.py)."""

from __future__ import annotations

import pytest
import torch

from psylens.models import Model
from tests.unit.circuits.circuits_planted import plant, tiny_llama


@pytest.fixture(scope="module")
def planted(smollm_tokenizer):
    """(model, direction): a fresh tiny Llama (not the shared fixture) with the planted units."""
    torch.manual_seed(1)
    v = torch.randn(32)
    v = v / v.norm()
    hf = tiny_llama()
    plant(hf, smollm_tokenizer, v)
    return Model(hf, smollm_tokenizer, spec="tiny-planted"), v
