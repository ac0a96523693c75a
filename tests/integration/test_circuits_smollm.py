"""Emotion circuits on the embedded model, at the smallest size that still checks the behaviour.

A joy direction is fitted on a few scenarios (group-centred mean difference at layer 13, as the probes
do); its circuit (top 20 units by atp on those scenarios) must drop the signal on *other* scenarios
more than size-matched random sets do, and atp must rank the top heads like real patching.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psylens import stimuli
from psylens.circuits.ablation import ablation_curve
from psylens.circuits.circuit import Selection, select
from psylens.circuits.scores import attribution, patching, spearman
from psylens.circuits.signal import contrast_weights, prepare, projections, unit_baseline
from psylens.stimuli import EMOTIONS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LAYER = 13


def _prep(model, items):
    return prepare(model, [s.text for s in items], labels=[s.label for s in items], groups=[s.group for s in items],
                   batch_size=18)


def test_joy_circuit_beats_random_sets_on_smollm(smollm) -> None:
    every = stimuli.load("emotions")
    groups = sorted({s.group for s in every})
    disc_g, held_g = set(groups[:3]), set(groups[3:5])
    disc = _prep(smollm, [s for s in every if s.group in disc_g and s.label in EMOTIONS])
    held = _prep(smollm, [s for s in every if s.group in held_g and s.label in EMOTIONS])
    neutral = _prep(smollm, [s for s in every if s.group in disc_g and s.label == "neutral"])
    # a joy direction from the discovery scenarios: group-centred mean difference of resid_post
    from psylens.interventions import record

    means = torch.zeros(len(disc), smollm.d_model)
    for b in disc.batches:
        with torch.no_grad(), record(smollm, ["resid_post"], [LAYER]) as rec:
            smollm.hf_model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)
        m = b.text_mask.float().unsqueeze(-1)
        means[list(b.rows)] = (rec["resid_post", LAYER].float() * m).sum(1) / m.sum(1)
    w_d = contrast_weights(disc.labels, disc.groups, "joy", EMOTIONS)
    v = torch.from_numpy(w_d).float() @ means
    v = v / v.norm()
    base = unit_baseline(smollm, neutral, range(LAYER + 1))
    sc = attribution(smollm, disc, w_d, v, LAYER, base)
    assert sc.signal > 0
    sc = patching(smollm, disc, w_d, v, sc, base, top_heads=8, top_neurons=0)
    ok = ~torch.isnan(sc.patching_heads)
    assert spearman(sc.atp_heads[ok], sc.patching_heads[ok]) > 0.3
    circ = select("joy", "test", sc, Selection(mode="top_k", k_heads=8, k_neurons=12))
    w_h = contrast_weights(held.labels, held.groups, "joy", EMOTIONS)
    s0 = float(torch.from_numpy(w_h) @ projections(smollm, held, v, LAYER).double())
    assert s0 > 0  # the direction carries joy on scenarios it was not fitted on
    df = ablation_curve(smollm, held, w_h, v, circ, base, methods=("mean",), sizes=[20], n_random=5, before=s0)
    circuit_drop = float(df[df.kind == "circuit"]["drop"].iloc[0])
    random_drops = df[df.kind == "random"]["drop"].to_numpy()
    assert circuit_drop > float(np.max(random_drops))
