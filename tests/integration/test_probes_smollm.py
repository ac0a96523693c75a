"""Emotion probes on the embedded SmolLM2-135M-Instruct: the layer curve, its controls, the held-out file.

Issue targets: best-layer held-out-scenario accuracy over the six emotions ≥ 0.90 with the
shuffled control within 5 points of chance; accuracy at that layer on independently written
texts (tests/data/heldout_emotions.jsonl) ≥ 0.70. Measured on this model (seed 0, logistic
probe, C = 0.1, 5 group folds over 160 scenarios, each text read out as the mean over its tokens):
best 0.904 at layer 16, shuffled 0.158 (chance 0.167), held-out file 0.792 there. With the last
token as read-out the same probes reach 0.87–0.90 but only ~0.55 on the held-out file (see
BENCHMARKS.md); the test prints both curves and asserts the targets on the default read-out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from psylens.probes import emotion_directions, fit_probes
from psylens.probes.classifiers import single_thread
from psylens.stimuli import EMOTIONS, load

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HELDOUT = Path(__file__).resolve().parents[1] / "data" / "heldout_emotions.jsonl"


@pytest.fixture(scope="module")
def per_token(smollm):
    """The emotions set read once, every text token kept: the mean and last-token read-outs both come from it."""
    # one torch thread: on the shared 2-core CI machine it harvests ~2x faster than two (measured)
    with single_thread():
        return smollm.harvest(load("emotions"), sites=["resid_post"], positions="all", progress=False)


@pytest.fixture(scope="module")
def harvested(smollm, per_token):
    with single_thread():
        held = smollm.harvest(load(HELDOUT).filter(labels=EMOTIONS), sites=["resid_post"], positions="mean",
                              progress=False)
    return per_token.reduce("mean"), held


@pytest.fixture(scope="module")
def harvested_last(per_token):
    return per_token.reduce("last")


def test_layer_curve_with_controls(harvested, capsys):
    acts, held = harvested
    assert acts["resid_post"].shape == (1120, 30, 576)
    res = fit_probes(acts, labels=EMOTIONS, seed=0)
    ev = res.evaluate(held)
    chance = res.chance
    with capsys.disabled():
        print(f"\nsix-emotion probes on SmolLM2-135M (mean read-out, group CV over 160 scenarios, chance {chance:.3f})")
        print("layer  acc    shuffled  selectivity  eval-file")
        sel = res.selectivity
        assert sel is not None and res.shuffled_accuracy is not None
        for i, layer in enumerate(res.layers):
            print(f"{layer:5d}  {res.accuracy[i]:.3f}  {res.shuffled_accuracy[i]:.3f}     {sel[i]:+.3f}       "
                  f"{ev.accuracy[i]:.3f}")
        print(f"best layer {res.best_layer}: {res.best_accuracy:.3f} (target 0.90); "
              f"eval file there {ev.accuracy_at_best_layer:.3f} (target 0.70), n={ev.n}")
    # the targets
    assert res.best_accuracy >= 0.90, "six-emotion accuracy on held-out scenarios at the best layer"
    assert ev.accuracy_at_best_layer >= 0.70, "accuracy on independently written texts at the best layer"
    # and what a reader should be able to rely on
    assert 8 <= res.best_layer <= 26, "peaks mid-to-late network"
    assert res.emergence_layer is not None and res.emergence_layer <= 3, "appears early"
    # mean pooling carries word content from layer 0 on: the network must add to it
    assert res.best_accuracy - res.accuracy[0] >= 0.08, "the model's layers add to the lexical (layer-0) read-out"
    shuffled = res.shuffled_accuracy
    assert abs(shuffled[res.best_index] - chance) <= 0.05, "shuffled control within 5 points of chance at the best layer"
    assert np.abs(shuffled - chance).max() <= 0.08, "and near chance at every layer"
    # Selectivity (Hewitt & Liang) is lower with the mean read-out (0.13 at layer 16, vs 0.57 with the
    # last token): the shared context sentence dominates a text's mean, so the scenario-keyed control
    # task is easy to memorise. The last-token read-out is held to the stricter bound below.
    assert sel[res.best_index] > 0.08, "the real task beats the control task at the best layer"
    assert ev.accuracy_at_best_layer >= 2.5 * chance, "transfers to independently written texts, well above chance"


def test_last_token_readout_is_selective(harvested_last, capsys):
    res = fit_probes(harvested_last, labels=EMOTIONS, seed=0)
    sel = res.selectivity
    assert sel is not None and res.shuffled_accuracy is not None
    with capsys.disabled():
        print(f"\nlast-token read-out: best layer {res.best_layer} {res.best_accuracy:.3f}, "
              f"shuffled {res.shuffled_accuracy[res.best_index]:.3f}, selectivity {sel[res.best_index]:+.3f}")
    assert res.best_accuracy >= 0.85
    assert abs(res.shuffled_accuracy[res.best_index] - res.chance) <= 0.05
    assert sel[res.best_index] > 0.2, "probes read emotion, not just memorised scenarios"


def test_directions_are_context_free_and_distinct(harvested):
    acts, _ = harvested
    dirs = emotion_directions(acts)  # mean_diff, centred by scenario
    assert dirs.vectors.shape == (7, 30, 576) and dirs.model == "smollm2-135m-instruct"
    cos = dirs.cosine(16).numpy()
    off = cos[~np.eye(7, dtype=bool)]
    assert off.max() < 0.9, "no two emotions share a direction"
    # every scenario holds every label, so removing scenario means leaves mean differences unchanged
    raw = emotion_directions(acts, center_by=None)
    assert float((dirs.vectors * raw.vectors).sum(-1).min()) > 0.999
