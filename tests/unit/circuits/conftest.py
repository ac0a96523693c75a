"""Fixtures of the circuits tests (helpers in circuits_planted.py)."""

from __future__ import annotations

import pytest

from tests.unit.circuits.circuits_planted import planted_model


@pytest.fixture(scope="module")
def planted(smollm_tokenizer):
    """(model, direction): a fresh tiny Llama (not the shared fixture) with the planted units."""
    return planted_model(smollm_tokenizer)
