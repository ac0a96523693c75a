"""Directions and steering vectors that a user moved to an accelerator (or to bfloat16) still go through every gate.

This machine has no accelerator, so "on the GPU" is played by a proxy: its tensors report the ``meta`` device, and
reading anything from it except a move to the CPU fails — as mixing a CUDA tensor into CPU arithmetic, or calling
``.numpy()`` on it, would. Each gate must give the same result as with the same directions on the CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from psylens.probes import Directions
from psylens.steering.vector import SteeringVector
from psylens.stimuli import EMOTIONS
from psylens.validation.gates import feels_matrix, geometry, implicit_scenarios, logit_lens, read_back
from psylens.validation.preferences import preferences
from tests.unit.validation.test_preferences import ACTS
from tests.unit.validation.test_validation_gates import CONTEXTS, _circumplex, _planted, _planted_acts, _random_dirs


class Elsewhere:
    """A ``Directions`` or ``SteeringVector`` as if on an accelerator: only ``.to("cpu", ...)`` may read it."""

    def __init__(self, real: Any) -> None:
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "moves", [])

    @property
    def vectors(self) -> torch.Tensor:
        return torch.empty(self._real.vectors.shape, device="meta")

    def to(self, device: Any = None, dtype: Any = None) -> Any:
        if torch.device(device).type != "cpu":
            raise AssertionError(f"moved to {device!r}, not to the CPU")
        self.moves.append((device, dtype))
        return self._real.to(device, dtype)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"read {name!r} on another device: move it to the CPU first")

    def __getitem__(self, key: Any) -> Any:
        raise AssertionError(f"indexed {key!r} on another device: move it to the CPU first")


def _same(a: Any, b: Any) -> None:
    for key in ("value", "control", "passed"):
        assert a[key] == b[key] or (isinstance(a[key], float) and np.isclose(a[key], b[key], atol=1e-5)), key


def test_the_proxy_fails_when_read_in_place() -> None:
    """Control: a gate that reads the directions before moving them fails on the proxy."""
    dirs = _random_dirs()
    x, labels = _planted_acts(dirs, 0)
    with pytest.raises(AssertionError, match="another device"):
        torch.stack([Elsewhere(dirs)[e, 0] for e in EMOTIONS])  # what the gates did before
    assert implicit_scenarios(dirs, 0, x, labels)["value"] == 1.0


def test_implicit_scenarios_and_geometry_off_host() -> None:
    dirs = _random_dirs()
    x, labels = _planted_acts(dirs, 0)
    control = _random_dirs(seed=5)
    x16 = x.to(torch.bfloat16)  # activations read from a bfloat16 model
    here = implicit_scenarios(dirs, 0, x16.float(), labels, control=control)
    away_d, away_c = Elsewhere(dirs), Elsewhere(control)
    _same(implicit_scenarios(away_d, 0, x16, labels, control=away_c), here)
    assert away_d.moves and away_c.moves
    circ, info = _circumplex()
    _same(geometry(Elsewhere(circ), 4, info), geometry(circ, 4, info))
    # bfloat16 directions on the CPU: read as float32, not refused
    g16 = geometry(circ.to(dtype=torch.bfloat16), 4, info)
    assert g16["passed"] is True and np.isclose(g16["valence_auroc"], geometry(circ, 4, info)["valence_auroc"], atol=0.05)


def test_model_gates_off_host(smollm_tokenizer) -> None:
    model, dirs, words = _planted(smollm_tokenizer, n_words=3)
    last = model.n_layers - 1
    _same(logit_lens(model, Elsewhere(dirs), 1, words=words), logit_lens(model, dirs, 1, words=words))
    one = {e: w[:1] for e, w in words.items()}
    _same(feels_matrix(model, Elsewhere(dirs), last, words=one, contexts=CONTEXTS, alpha=50.0),
          feels_matrix(model, dirs, last, words=one, contexts=CONTEXTS, alpha=50.0))
    vecs = {e: SteeringVector.from_directions(dirs, e, layers=[last], alpha=50.0, meta={"layer": last}) for e in EMOTIONS}
    away = {e: Elsewhere(v) for e, v in vecs.items()}
    prompts = ["Describe your morning.", "Tell me about a chair.", "What is a calendar?"]
    here = read_back(model, dirs, 0, prompts, max_new_tokens=4, vectors=vecs, fluency=None)
    _same(read_back(model, Elsewhere(dirs), 0, prompts, max_new_tokens=4, vectors=away, fluency=None), here)
    assert all(v.moves for v in away.values())


def test_preferences_off_host(tiny_model) -> None:
    m = tiny_model("llama")
    g = torch.Generator().manual_seed(0)
    dirs = Directions.from_raw(torch.randn(6, m.n_layers, m.d_model, generator=g), EMOTIONS, list(range(m.n_layers)))
    live = {e: SteeringVector(vectors=200.0 * dirs[e, 1].float().unsqueeze(0), layers=(1,), alpha=1.0) for e in ("joy", "anger")}
    here = preferences(m, dirs, 1, activities=ACTS, emotions=["joy", "anger"], vectors=live)
    away = preferences(m, Elsewhere(dirs), 1, activities=ACTS, emotions=["joy", "anger"],
                       vectors={e: Elsewhere(v) for e, v in live.items()})
    _same(away, here)
    assert np.allclose(away.tables["elo_shift"]["shift_joy"], here.tables["elo_shift"]["shift_joy"])
