"""The lexical baseline (bag-of-words probe on the same texts and folds) and the intervals on probe accuracies."""

from __future__ import annotations

import numpy as np
import pytest

from psylens.probes import ProbeResults, fit_probes, group_folds, planted_activations
from psylens.probes.fit import lexical_baseline

CLASSES = ["anger", "fear", "joy"]
PLANTED = {"anger": "zebra", "fear": "quartz", "joy": "violin"}  # words unrelated to the labels


def _texts(n_groups: int = 40, seed: int = 0):
    """Scenario texts: shared filler words per scenario, one planted word per label."""
    rng = np.random.default_rng(seed)
    vocab = [f"filler{i}" for i in range(200)]
    texts, y, groups = [], [], []
    for g in range(n_groups):
        context = " ".join(rng.choice(vocab, size=6))
        for k, lab in enumerate(CLASSES):
            noise = " ".join(rng.choice(vocab, size=3))
            texts.append(f"{context} then {noise} {PLANTED[lab]}.")
            y.append(k)
            groups.append(f"s{g}")
    return texts, np.array(y), np.array(groups)


def test_lexical_baseline_reads_a_planted_word_and_is_chance_on_shuffled_labels():
    texts, y, groups = _texts()
    folds = group_folds(groups, y, 5, seed=0)
    res = lexical_baseline(texts, y, folds, CLASSES, groups=groups)
    assert res.accuracy >= 0.98
    lo, hi = res.ci95
    assert lo <= res.accuracy <= hi and hi <= 1.0
    # control: labels shuffled across texts, same folds → chance (1/3)
    y_shuf = np.random.default_rng(1).permutation(y)
    shuf = lexical_baseline(texts, y_shuf, folds, CLASSES, groups=groups)
    assert abs(shuf.accuracy - 1 / 3) < 0.12
    assert shuf.ci95[0] < 1 / 3 + 0.05  # the interval reaches chance
    with pytest.raises(ValueError, match="all empty"):
        lexical_baseline([""] * len(y), y, folds, CLASSES)


def test_fit_probes_reports_the_lexical_baseline_and_the_rise_above_it():
    # planted_activations' texts name their label ("a joy event"): the words alone give ~1.0, so a layer
    # where the direction is planted rises ~0 above them and one without signal falls far below
    acts, _ = planted_activations(n_groups=30, n_layers=2, d=48, strength=[0.0, 4.0], context_scale=3.0)
    res = fit_probes(acts, seed=0, controls=("shuffled",))
    assert res.lexical is not None and res.lexical.accuracy >= 0.98
    rise = res.rise_above_lexical
    assert rise is not None and rise[0] < -0.6 and abs(rise[1]) < 0.05
    s = res.summary()
    assert s["lexical_baseline"]["accuracy"] >= 0.98 and len(s["lexical_baseline"]["ci95"]) == 2
    assert s["beats_lexical_at_best_layer"] is False
    assert len(s["rise_above_lexical_ci95_by_layer"]) == 2
    lo, hi = s["rise_above_lexical_ci95_by_layer"][0]
    assert hi < 0  # layer 0 is significantly below the words
    t = res.table()
    assert {"lexical_accuracy", "rise_above_lexical", "rise_above_lexical_ci95_lo", "rise_above_lexical_ci95_hi",
            "accuracy_ci95_lo", "accuracy_ci95_hi"} <= set(t)
    assert t["rise_above_lexical"].tolist() == pytest.approx(rise.tolist())
    # without texts the baseline is skipped with a note, never an error
    off = fit_probes(acts, seed=0, controls=(), lexical=False)
    assert off.lexical is None and off.summary()["lexical_baseline"] is None and off.info["lexical"] == "off"


def test_probe_accuracies_carry_scenario_intervals_and_the_tied_layers(tmp_path):
    acts, _ = planted_activations(n_groups=30, n_layers=3, d=48, strength=[0.0, 4.0, 4.0], context_scale=3.0)
    res = fit_probes(acts, seed=0, controls=("shuffled",))
    ci = res.accuracy_ci95
    assert ci.shape == (3, 2) and np.all(ci[:, 0] <= res.accuracy) and np.all(res.accuracy <= ci[:, 1])
    assert ci[0, 1] < 0.4  # no signal at layer 0: its interval stays near chance
    s = res.summary()
    assert s["best_accuracy_ci95"] == [round(float(v), 4) for v in ci[res.best_index]]
    # layers 1 and 2 carry the same planted signal: the best cannot be told from the other; layer 0 can
    assert set(s["layers_tied_with_best"]) == {1, 2}
    lo, hi = s["shuffled_accuracy_ci95_at_best_layer"]
    assert lo < 1 / 6 < hi
    assert s["intervals"]["over"].startswith("held-out texts, resampling whole scenarios")
    # grouped intervals are what is saved and loaded back
    res.save(tmp_path)
    back = ProbeResults.load(tmp_path)
    assert np.allclose(back.accuracy_ci95, ci) and back.lexical is not None
    assert back.lexical.accuracy == res.lexical.accuracy  # type: ignore[union-attr]
    assert np.allclose(back.rise_above_lexical, res.rise_above_lexical)  # type: ignore[arg-type]
