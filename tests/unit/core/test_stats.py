"""psylens.stats: known-answer tests for the bootstrap helpers, the paired difference and the Wilson interval."""

from __future__ import annotations

import numpy as np
import pytest

from psylens.stats import bootstrap_ci, grouped_bootstrap_ci, paired_diff_ci, rate_ci, wilson_ci


def _coverage(interval, p: float = 0.3, n: int = 60, experiments: int = 400, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for k in range(experiments):
        x = (rng.random(n) < p).astype(float)
        lo, hi = interval(x, k)
        hits += lo <= p <= hi
    return hits / experiments


def test_bootstrap_covers_a_known_binomial_rate_about_95_percent():
    cov = _coverage(lambda x, k: bootstrap_ci(x, n_boot=1000, seed=k))
    assert 0.91 <= cov <= 0.98, cov
    # control: a 50% interval must not reach 95% coverage (the check above can fail)
    cov50 = _coverage(lambda x, k: bootstrap_ci(x, n_boot=1000, seed=k, level=0.5))
    assert 0.40 <= cov50 <= 0.60, cov50


def test_wilson_covers_a_known_binomial_rate_and_matches_a_textbook_value():
    cov = _coverage(lambda x, k: wilson_ci(int(x.sum()), len(x)))
    assert 0.92 <= cov <= 0.98, cov
    lo, hi = wilson_ci(0, 8)
    assert lo == 0.0 and hi == pytest.approx(0.3244, abs=1e-3)  # 0 of 8: (0, 0.324)
    lo, hi = wilson_ci(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)


def test_bootstrap_is_seeded_and_takes_other_statistics():
    x = np.random.default_rng(1).normal(size=50)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)
    lo, hi = bootstrap_ci(x, stat=np.median, n_boot=300)
    assert lo <= float(np.median(x)) <= hi


def test_grouped_bootstrap_is_wider_when_groups_share_their_outcome():
    # 20 groups of 10 items; every item of a group has the group's outcome: 20 independent units, not 200
    rng = np.random.default_rng(0)
    per_group = (rng.random(20) < 0.5).astype(float)
    x = np.repeat(per_group, 10)
    groups = np.repeat(np.arange(20), 10)
    lo_i, hi_i = bootstrap_ci(x)
    lo_g, hi_g = grouped_bootstrap_ci(x, groups)
    assert (hi_g - lo_g) > 2 * (hi_i - lo_i)
    assert lo_g <= x.mean() <= hi_g
    # control: with independent items the grouped interval is about the item interval
    y = (rng.random(200) < 0.5).astype(float)
    lo_y, hi_y = bootstrap_ci(y)
    lo_yg, hi_yg = grouped_bootstrap_ci(y, groups)
    assert 0.7 < (hi_yg - lo_yg) / (hi_y - lo_y) < 1.4


def test_paired_difference_identical_planted_and_shuffled():
    rng = np.random.default_rng(0)
    a = (rng.random(40) < 0.5).astype(float)
    same = paired_diff_ci(a, a)
    assert same.diff == 0.0 and same.lo == 0.0 and same.hi == 0.0 and same.beats is False
    # planted: a succeeds on 30 of 40 prompts, b on 3 of them
    a = np.zeros(40)
    a[:30] = 1
    b = np.zeros(40)
    b[:3] = 1
    planted = paired_diff_ci(a, b)
    assert planted.beats and planted.lo > 0.4 and planted.diff == pytest.approx(27 / 40)
    # shuffled: the same two outcome sets, with nothing special about a
    c = (rng.random(40) < 0.4).astype(float)
    d = rng.permutation(c)
    shuffled = paired_diff_ci(c, d)
    assert not shuffled.beats and shuffled.lo <= 0 <= shuffled.hi
    assert planted.to_dict()["beats"] is True and set(planted.to_dict()) == {"diff", "ci95", "beats", "n"}


def test_one_of_eight_against_none_of_eight_is_not_a_beat():
    a = np.array([1, 0, 0, 0, 0, 0, 0, 0], float)
    res = paired_diff_ci(a, np.zeros(8))
    assert res.diff == pytest.approx(0.125) and res.lo == 0.0 and not res.beats


def test_rate_ci_never_claims_certainty():
    assert rate_ci(np.zeros(8)) == wilson_ci(0, 8)
    assert rate_ci(np.ones(8))[0] < 1.0 and rate_ci(np.ones(8))[1] == 1.0
    assert rate_ci(np.ones(180))[1] == 1.0 and rate_ci(np.zeros(180))[0] == 0.0  # exact edges
    x = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 0], float)
    assert rate_ci(x) == bootstrap_ci(x)
    with pytest.raises(ValueError, match="0/1"):
        rate_ci([0.5, 1.0])


def test_errors_name_the_mistake():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="same items"):
        paired_diff_ci([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="one group"):
        grouped_bootstrap_ci([1, 0, 1], ["a", "b"])
    with pytest.raises(ValueError, match=r"k must lie in \[0, n\]"):
        wilson_ci(9, 8)
