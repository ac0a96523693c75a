"""The analyses on synthetic activations with a known answer (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psylens.activations import Activations
from psylens.probes import (
    VALENCE,
    cross_format,
    curve_landmarks,
    emotion_directions,
    fit_probes,
    geometry,
    layer_curve,
    persistence_curve,
    persistence_stimuli,
    planted_activations,
    system_prompt_shift,
)
from psylens.probes.analyses import (
    _spearman_perm,
    cut_continuation,
    default_offsets,
    direction_predict,
    shift_summary,
)
from psylens.probes.classifiers import train_logistic_many
from psylens.stimuli import LABELS, Stimuli, Stimulus


def valence_acts(n_groups: int = 12, d: int = 24, seed: int = 0) -> Activations:
    """Seven labels whose centroids lie along one axis in valence order, plus small label-specific parts."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(d, generator=g)
    axis /= axis.norm()
    own = torch.randn(len(LABELS), d, generator=g) * 0.3
    rows, labels, groups = [], [], []
    for gi in range(n_groups):
        ctx = torch.randn(d, generator=g) * 3
        for li, lab in enumerate(LABELS):
            rows.append(ctx + 4 * VALENCE[lab] * axis + own[li] + 0.2 * torch.randn(d, generator=g))
            labels.append(lab)
            groups.append(f"g{gi}")
    x = torch.stack(rows).unsqueeze(1)
    return Activations(tensors={"resid_post": x}, layers=[5], labels=labels, groups=groups,
                       ids=[f"{gr}-{lab}" for gr, lab in zip(groups, labels)], texts=labels)


def test_layer_curve_and_landmarks():
    acts, _ = planted_activations(n_groups=20, n_layers=4, d=32, strength=[0.0, 1.0, 4.0, 2.0])
    res = fit_probes(acts)
    table = layer_curve([res, res])
    assert len(table) == 8 and {"accuracy", "shuffled_accuracy", "selectivity"} <= set(table)
    lm = curve_landmarks(res)
    assert lm["peak_layer"] == 2 and lm["emergence_layer"] in (1, 2)
    assert lm["drop_from_peak"] > 0 and abs(lm["shuffled_at_peak"] - 1 / 6) < 0.12


def test_geometry_finds_the_valence_axis():
    acts = valence_acts()
    geo = geometry(acts)
    assert geo.emotions == tuple(sorted(LABELS)) and geo.cosine.shape == (1, 7, 7)
    assert np.allclose(np.diagonal(geo.cosine[0]), 1.0, atol=1e-5)
    assert geo.valence_rho[0] > 0.9 and geo.valence_p[0] < 0.05
    assert geo.explained[0, 0] > 0.8
    s = geo.summary(5)
    assert s["pc1_order"][0] == "joy" and s["valence_rho"] > 0.9
    tables = geo.tables()
    assert set(tables) == {"cosine", "pca", "valence"} and len(tables["cosine"]) == 49 and len(tables["pca"]) == 7


def test_geometry_valence_can_be_overridden_by_an_order():
    acts = valence_acts()
    reversed_order = ["anger", "disgust", "fear", "sadness", "neutral", "surprise", "joy"]
    geo = geometry(acts, valence=reversed_order)  # a strict order; PC1's sign is arbitrary, so |ρ| is reported
    assert geo.valence_rho[0] > 0.8


def test_spearman_permutation_test():
    rho, p = _spearman_perm(np.arange(7.0), np.arange(7.0))
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 5040)  # exact: only the two perfect orders
    rho, p = _spearman_perm(np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    assert -1 <= rho <= 1 and 0 < p <= 1


def shifted_copy(acts: Activations, shift: torch.Tensor, scale: float = 0.3) -> Activations:
    """The same labelled structure at another place of activation space and a smaller scale (a 'format')."""
    return Activations(tensors={"resid_post": acts["resid_post"] * scale + shift}, layers=acts.layers,
                       labels=acts.labels, groups=["explicit"] * len(acts), ids=[f"x-{i}" for i in acts.ids],
                       texts=acts.texts)


def test_cross_format_transfers_both_ways_and_control_fails():
    acts, _ = planted_activations(n_groups=20, n_layers=2, d=32, strength=[0.0, 4.0], context_scale=2.0)
    fresh, _ = planted_activations(n_groups=10, n_layers=2, d=32, strength=[0.0, 4.0], context_scale=2.0, sample_seed=9)
    other = shifted_copy(fresh, torch.full((32,), 7.0))  # same planted directions, new texts, another place
    table = cross_format(acts, other, names=("implicit", "explicit"))
    assert set(table["method"]) == {"directions", "probe"} and set(table["train"]) == {"implicit", "explicit"}
    strong = table[table["layer"] == 1]
    assert strong["accuracy"].min() > 0.9, strong
    assert (strong["shuffled_accuracy"] < 0.45).all(), strong
    weak = table[table["layer"] == 0]
    assert weak["accuracy"].max() < 0.5


def test_direction_predict_centres_on_the_scored_set():
    acts, _ = planted_activations(n_groups=10, n_layers=1, d=16, strength=5.0, context_scale=0.5)
    dirs = emotion_directions(acts)
    y = np.array([dirs.emotions.index(lab) for lab in acts.labels])
    far = acts["resid_post"][:, 0] + 100.0  # a large common offset changes nothing
    assert (direction_predict(dirs, far, 0) == y).mean() > 0.95


def test_persistence_curve_follows_a_fading_signal():
    by_offset = {}
    for off, strength in ((0, 4.0), (10, 2.0), (100, 0.0)):
        acts, _ = planted_activations(n_groups=10, n_layers=1, d=32, strength=strength, context_scale=1.0, seed=0)
        by_offset[off] = Activations(tensors=acts.tensors, layers=[7], labels=acts.labels, groups=acts.groups,
                                     ids=acts.ids, texts=acts.texts)
    x0 = by_offset[0]["resid_post"][:, 0]
    y0 = np.array([by_offset[0].classes.index(lab) for lab in by_offset[0].labels])
    real, shuf = train_logistic_many([x0, x0], [y0, np.random.default_rng(0).permutation(y0)], by_offset[0].classes)
    table = persistence_curve(by_offset, transfer={7: (real, shuf)})
    acc = table.set_index("offset")["accuracy"]
    assert acc[0] > 0.9 and acc[100] < 0.4 and acc[0] >= acc[10] >= acc[100] - 0.05
    tr = table.set_index("offset")["transfer_accuracy"]
    assert tr[0] > 0.95 and tr[100] < 0.4
    assert (table["shuffled_accuracy"] < 0.4).all() and (table["transfer_shuffled_accuracy"] < 0.4).all()


def test_persistence_stimuli_and_offsets():
    items = [Stimulus(text=f"{g} {lab} event.", label=lab, group=g, id=f"{g}-{lab}")
             for g in ("s1", "s2", "s3") for lab in ("joy", "fear", "neutral")]
    stim = persistence_stimuli(Stimuli(items), "Then I sat down.", labels=["joy", "fear"], n_groups=2)
    assert len(stim) == 4 and stim[0].text == "s1 joy event. Then I sat down." and stim[0].meta["event"] == "s1 joy event."
    with pytest.raises(ValueError, match="at least two groups"):
        persistence_stimuli(Stimuli(items[:3]), "x", labels=["joy", "fear"])
    offs = default_offsets(200)
    assert offs[:11] == list(range(11)) and offs[-1] == 200 and 150 in offs


class WordTokenizer:
    """Whitespace 'tokenizer' with offsets, enough for cut_continuation."""

    def __call__(self, text: str, add_special_tokens: bool = False, return_offsets_mapping: bool = False):
        spans, pos = [], 0
        for word in text.split():
            start = text.index(word, pos)
            spans.append((start, start + len(word)))
            pos = start + len(word)
        return {"input_ids": list(range(len(spans))), "offset_mapping": spans}


def test_cut_continuation():
    text = "one two three four five six"
    assert cut_continuation(WordTokenizer(), text, 3) == "one two three"
    with pytest.raises(ValueError, match="has 6 tokens but 9 offsets"):
        cut_continuation(WordTokenizer(), text, 9)


def test_system_prompt_shift_measures_known_shifts():
    acts, _ = planted_activations(n_groups=10, n_layers=1, d=32, strength=3.0)
    dirs = emotion_directions(acts)
    g = torch.Generator().manual_seed(2)
    base_x = torch.randn(40, 1, 32, generator=g)
    base = Activations(tensors={"resid_post": base_x}, layers=[0], labels=["neutral"] * 40, groups=[None] * 40,
                       ids=[f"n{i}" for i in range(40)], texts=["x"] * 40)
    sd = float((base_x[:, 0] @ dirs["joy", 0]).std())
    moved = base_x + 2.0 * sd * dirs["joy", 0]  # exactly two standard deviations along joy
    prompted = {"joy": Activations(tensors={"resid_post": moved}, layers=[0], labels=base.labels,
                                   groups=base.groups, ids=base.ids, texts=base.texts)}
    table = system_prompt_shift(dirs, base, prompted)
    row = table[(table["prompt"] == "joy") & (table["direction"] == "joy")]
    assert float(row["shift_sd"].iloc[0]) == pytest.approx(2.0, abs=1e-4)
    s = shift_summary(table, 0)
    assert s["matched_shift_sd"] == {"joy": pytest.approx(2.0, abs=1e-3)}
    with pytest.raises(ValueError, match="other texts"):
        system_prompt_shift(dirs, base, {"joy": base.select(list(range(39)))})
