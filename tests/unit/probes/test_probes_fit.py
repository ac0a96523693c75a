"""Probes on planted activations: ~100% where a direction is planted, chance where not and under shuffled labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from psylens.activations import Activations
from psylens.probes import ProbeResults, fit_probes, group_folds, planted_activations
from psylens.probes.classifiers import train_logistic_many, train_probe
from psylens.probes.fit import control_labels, scores, text_folds


@pytest.fixture(scope="module")
def planted():
    # layer 0: nothing planted; layer 1: a strong planted direction per label
    return planted_activations(n_groups=30, n_layers=2, d=48, strength=[0.0, 4.0], context_scale=3.0)


@pytest.fixture(scope="module")
def results(planted) -> ProbeResults:
    return fit_probes(planted[0], seed=0)


def test_planted_probe_is_near_perfect_and_controls_at_chance(results):
    assert results.chance == pytest.approx(1 / 6)
    assert results.accuracy[1] >= 0.98 and results.macro_f1[1] >= 0.98
    assert results.best_layer == 1 and results.best_accuracy == results.accuracy[1]
    assert abs(results.accuracy[0] - 1 / 6) < 0.1  # no signal planted: chance
    assert results.shuffled_accuracy is not None
    assert np.all(np.abs(results.shuffled_accuracy - 1 / 6) < 0.1)  # shuffled control: chance everywhere
    assert results.confusion.shape == (2, 6, 6) and results.confusion[1].sum() == 180
    assert results.emergence_layer == 1


def test_selectivity_separates_signal_from_memorisation(results):
    # the control task (one random label per scenario) is learnable from the scenario context at
    # every layer; only where emotion is planted does the real task beat it
    assert results.control_accuracy is not None and results.selectivity is not None
    assert results.control_accuracy.min() > 0.5
    assert results.selectivity[0] < -0.3  # nothing to read but scenario identity
    assert results.selectivity[1] - results.selectivity[0] > 0.5


def test_summary_and_table(results):
    s = results.summary()
    for key in ("labels", "layers", "accuracy_by_layer", "shuffled_accuracy_by_layer", "best_layer",
                "best_accuracy", "chance", "selectivity"):
        assert key in s
    assert s["layers"] == [0, 1] and len(s["accuracy_by_layer"]) == 2
    t = results.table()
    assert list(t["layer"]) == [0, 1] and {"shuffled_accuracy", "selectivity", "control_task_accuracy"} <= set(t)


def test_evaluate_on_held_out_scenarios(planted):
    acts, _ = planted
    train_idx = [i for i, g in enumerate(acts.groups) if int(g[1:]) < 20]
    test_idx = [i for i, g in enumerate(acts.groups) if int(g[1:]) >= 20]
    res = fit_probes(acts.select(train_idx), controls=())
    ev = res.evaluate(acts.select(test_idx))
    assert ev.n == 60 and ev.accuracy[1] >= 0.95 and ev.accuracy_at_best_layer == ev.accuracy[1]
    assert ev.summary()["n"] == 60
    assert res.predict(acts.select(test_idx[:3]), 1) == [acts.labels[i] for i in test_idx[:3]]


def test_evaluate_rejects_missing_and_unknown_labels(planted):
    acts, _ = planted
    res = fit_probes(acts, labels=["joy", "fear"], controls=())
    unlabelled = Activations(tensors=acts.tensors, layers=acts.layers, labels=[None] * len(acts),
                             groups=acts.groups, ids=acts.ids, texts=acts.texts)
    with pytest.raises(ValueError, match="have no label.*every evaluation text needs one of \\['joy', 'fear'\\]"):
        res.evaluate(unlabelled)
    with pytest.raises(ValueError, match="labels \\['anger', .*not trained on"):
        res.evaluate(acts)


def test_bad_input_errors(planted):
    acts, _ = planted
    with pytest.raises(ValueError, match="at least two labels.*'joy'"):
        fit_probes(acts.where(label="joy"))
    no_groups = Activations(tensors=acts.tensors, layers=acts.layers, labels=acts.labels,
                            groups=[None] * len(acts), ids=acts.ids, texts=acts.texts)
    with pytest.raises(ValueError, match="cv='group' needs a group.*cv='text'"):
        fit_probes(no_groups)
    res = fit_probes(no_groups, cv="text", controls=("shuffled", "selectivity"))
    assert res.accuracy[1] > 0.95 and res.selectivity is None  # the control task needs groups
    with pytest.raises(ValueError, match="cv 'loo' is not one of"):
        fit_probes(acts, cv="loo")
    with pytest.raises(ValueError, match="kind 'svm' is not one of"):
        fit_probes(acts, kind="svm")
    with pytest.raises(ValueError, match="layer 5 was not harvested"):
        fit_probes(acts, layers=[5])
    one_group = Activations(tensors=acts.tensors, layers=acts.layers, labels=acts.labels,
                            groups=["g"] * len(acts), ids=acts.ids, texts=acts.texts)
    with pytest.raises(ValueError, match="at least two groups"):
        fit_probes(one_group)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 11), st.integers(0, 3)), min_size=4, max_size=60),
    st.integers(2, 6),
    st.integers(0, 10_000),
)
def test_group_folds_never_split_a_group(rows, n_splits, seed):
    groups = [f"g{g}" for g, _ in rows]
    labels = [f"l{lab}" for _, lab in rows]
    if len(set(groups)) < 2:
        with pytest.raises(ValueError, match="at least two groups"):
            group_folds(groups, labels, n_splits, seed)
        return
    folds = group_folds(groups, labels, n_splits, seed)
    seen = np.zeros(len(rows), dtype=int)
    for train, test in folds:
        assert not {groups[i] for i in train} & {groups[i] for i in test}
        assert len(set(train) | set(test)) == len(rows)
        seen[test] += 1
    assert np.all(seen == 1)  # every text is scored exactly once


def test_control_labels_are_consistent_and_balanced():
    groups = np.repeat(np.arange(12), 5)
    y = control_labels(groups, 4, seed=3)
    for g in range(12):
        assert len(set(y[groups == g])) == 1  # one label per group
    assert sorted(np.bincount(y[::5]).tolist()) == [3, 3, 3, 3]


def test_scores_and_text_folds():
    acc, f1, conf = scores(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    assert acc == 0.75 and conf.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert f1 == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    with pytest.raises(ValueError, match="at least two texts of every label"):
        text_folds(["a", "a", "b"])


def test_batched_solver_matches_scikit_learn(planted):
    # same objective, same optimum: coefficients and predictions agree with LogisticRegression
    acts, _ = planted
    x = acts["resid_post"][:, 1]
    y = np.array([acts.classes.index(lab) for lab in acts.labels])
    tr, te = np.arange(0, 150), np.arange(150, 180)
    ref = train_probe(x[tr].numpy(), y[tr], acts.classes, solver="sklearn")
    x_noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    ref_noisy = train_probe(x_noisy[tr].numpy(), y[tr], acts.classes, solver="sklearn")
    got, got_noisy = train_logistic_many([x, x_noisy], [y[tr], y[tr]], acts.classes, rows=[tr, tr])
    for a, b, xx in ((ref, got, x), (ref_noisy, got_noisy, x_noisy)):
        rel = (a.params["weight"] - b.params["weight"]).abs().max() / a.params["weight"].abs().max()
        assert rel < 0.02
        assert torch.equal(a.predict(xx[te]), b.predict(xx[te]))


def test_mlp_probe_learns_the_planted_task(planted):
    res = fit_probes(planted[0], kind="mlp", layers=[1], controls=())
    assert res.accuracy[0] >= 0.95
    assert res.probes[0].kind == "mlp"


def test_save_and_load(results, planted, tmp_path: Path):
    results.save(tmp_path)
    back = ProbeResults.load(tmp_path)
    assert back.classes == results.classes and back.layers == results.layers
    assert np.allclose(back.accuracy, results.accuracy) and np.allclose(back.selectivity, results.selectivity)
    acts = planted[0]
    assert back.predict(acts, 1) == results.predict(acts, 1)


def test_few_texts_are_solved_in_their_span_with_the_same_optimum():
    # n ≪ d takes the span path (W = M Vᵀ); scikit-learn on the full features finds the same probe
    acts, _ = planted_activations(n_groups=4, n_layers=1, d=96, strength=2.0)
    x = acts["resid_post"][:, 0]
    y = np.array([acts.classes.index(lab) for lab in acts.labels])
    (got,) = train_logistic_many([x], [y], acts.classes)
    assert got.info.get("solved_in_span") is True
    ref = train_probe(x.numpy(), y, acts.classes, solver="sklearn")
    rel = (ref.params["weight"] - got.params["weight"]).abs().max() / ref.params["weight"].abs().max()
    assert rel < 0.02
    probe_x = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ref.predict(probe_x), got.predict(probe_x))
