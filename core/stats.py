"""Intervals beside every number: seeded bootstrap helpers and the Wilson interval.

Every success rate, accuracy and "beats X" verdict psylens writes carries a 95% interval from here:

- :func:`bootstrap_ci` — percentile bootstrap over items (prompts, stimuli): resample the items with
  replacement ``n_boot`` times, recompute the statistic, take the ``(1-level)/2`` quantiles.
- :func:`grouped_bootstrap_ci` — the same, resampling whole *groups* (scenarios). Use it when items
  of one group are not independent, e.g. probe accuracy under folds that hold out whole scenarios.
- :func:`rate_ci` — a rate from per-item 0/1 outcomes: the bootstrap, except where every outcome is
  the same (the bootstrap then collapses to a point and would claim certainty; the Wilson interval
  is returned instead).
- :func:`paired_diff_ci` — paired per-item outcomes ``a[i]``, ``b[i]`` on the *same* items: the mean
  difference, its bootstrap interval, and ``beats = lo > 0`` (the interval excludes zero on the
  positive side). Never compare two separately computed intervals instead: that ignores the pairing.
- :func:`wilson_ci` — a plain rate ``k / n`` where no per-item vector exists.

All are deterministic given ``seed`` (NumPy ``default_rng``).

.. warning:: A percentile bootstrap is only as good as the number of items: with few items (say
   under 20) it under-covers, and a vector of identical values gives an interval of zero width.
   For rates prefer :func:`rate_ci`; for paired differences a zero-width interval at 0 is the honest
   answer (no item differs) and gives ``beats=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LEVEL",
    "N_BOOT",
    "PairedDiff",
    "bootstrap_ci",
    "grouped_bootstrap_ci",
    "paired_diff_ci",
    "rate_ci",
    "wilson_ci",
]

LEVEL = 0.95
N_BOOT = 2000

Stat = Callable[[np.ndarray], float]


def _check(n_boot: int, level: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer (bootstrap resamples, e.g. 2000), got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1 (0.95 for a 95% interval), got {level!r}")


def _vector(values: Sequence[float] | np.ndarray, what: str = "values") -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} must be one number per item (1-D), got shape {list(x.shape)}")
    if len(x) == 0:
        raise ValueError(f"{what} is empty: an interval needs at least one item")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contains NaN or infinite entries; drop the items that have no outcome first")
    return x


def _quantiles(samples: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(samples, [a, 1 - a])
    return float(lo), float(hi)


def _is_mean(stat: Stat | None) -> bool:
    return stat is None or stat is np.mean or stat is np.average


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Stat | None = np.mean,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile bootstrap interval ``(lo, hi)`` of ``stat`` over items (one value per item).

    ``stat`` is any function of a 1-D array (default the mean, computed vectorised). Seeded: the
    same inputs and ``seed`` give the same interval. See the module warning about few items.
    """
    _check(n_boot, level)
    x = _vector(values)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    if _is_mean(stat):
        samples = x[idx].mean(axis=1)
    else:
        samples = np.array([float(stat(x[row])) for row in idx])  # type: ignore[misc]
    return _quantiles(samples, level)


def _group_index(groups: Sequence[Any] | np.ndarray, n: int) -> tuple[np.ndarray, int]:
    g = np.asarray(groups, dtype=object).reshape(-1)
    if len(g) != n:
        raise ValueError(f"got {len(g)} groups for {n} values; give one group (e.g. scenario) per item")
    if any(v is None for v in g.tolist()):
        raise ValueError("some items have no group (None); give every item a group or use bootstrap_ci")
    _, inv = np.unique(g.astype(str), return_inverse=True)
    return inv.reshape(-1), int(inv.max()) + 1


def grouped_bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    stat: Stat | None = np.mean,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Cluster bootstrap: resample whole groups with replacement; ``stat`` over the pooled items.

    Use when items of a group share something (texts of one scenario share its context sentence):
    resampling items would treat them as independent and give too narrow an interval. With the
    mean (default) the statistic is the item-weighted mean over the resampled groups.
    """
    _check(n_boot, level)
    x = _vector(values)
    inv, n_groups = _group_index(groups, len(x))
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n_groups, size=(n_boot, n_groups))  # [B, G] resampled group ids
    if _is_mean(stat):
        sums = np.bincount(inv, weights=x, minlength=n_groups)
        counts = np.bincount(inv, minlength=n_groups).astype(np.float64)
        samples = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    else:
        members = [np.nonzero(inv == k)[0] for k in range(n_groups)]
        samples = np.array([float(stat(x[np.concatenate([members[k] for k in row])])) for row in pick])  # type: ignore[misc]
    return _quantiles(samples, level)


def wilson_ci(k: int | float, n: int, *, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval for a rate ``k / n`` (no per-item vector needed; never leaves [0, 1])."""
    if n < 1:
        raise ValueError(f"n must be at least 1 (the number of trials), got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n] = [0, {n}] (successes out of n trials), got {k}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1 (0.95 for a 95% interval), got {level!r}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)  # exact at the edges (no rounding below 1)
    return lo, hi


def rate_ci(
    outcomes: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Interval of a rate from per-item 0/1 outcomes: bootstrap over items (or ``groups``).

    When every outcome is identical (0 of 8, 8 of 8) the bootstrap has zero width and would claim
    certainty; the Wilson interval of ``k / n`` is returned instead (0 of 8 → about (0, 0.32)).
    """
    x = _vector(outcomes, "outcomes")
    if not np.all((x == 0) | (x == 1)):
        raise ValueError("outcomes must be 0/1 per item (success or not); for other values use bootstrap_ci")
    if np.all(x == x[0]):
        return wilson_ci(int(x.sum()), len(x), level=level)
    if groups is not None:
        return grouped_bootstrap_ci(x, groups, n_boot=n_boot, seed=seed, level=level)
    return bootstrap_ci(x, n_boot=n_boot, seed=seed, level=level)


@dataclass(frozen=True)
class PairedDiff:
    """Mean of ``a - b`` over paired items, its interval, and whether ``a`` beats ``b``.

    ``beats`` is ``lo > 0``: the interval excludes zero on the positive side. A tie (identical
    outcomes) gives an interval of zero width at 0 and ``beats=False``.
    """

    diff: float
    lo: float
    hi: float
    n: int
    level: float = LEVEL

    @property
    def beats(self) -> bool:
        return self.lo > 0

    @property
    def ci95(self) -> list[float]:
        """``[lo, hi]`` (named for the default level; it is the interval at ``level``)."""
        return [self.lo, self.hi]

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        return {"diff": round(self.diff, digits), "ci95": [round(self.lo, digits), round(self.hi, digits)],
                "beats": self.beats, "n": self.n}


def paired_diff_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = LEVEL,
) -> PairedDiff:
    """Paired difference ``mean(a - b)`` over the same items, with a bootstrap interval over items.

    ``a[i]`` and ``b[i]`` must be outcomes on the same item (prompt, stimulus): resampling pairs
    keeps what the two conditions share. With ``groups`` whole groups are resampled.
    """
    xa, xb = _vector(a, "a"), _vector(b, "b")
    if len(xa) != len(xb):
        raise ValueError(
            f"a has {len(xa)} items and b {len(xb)}; a paired difference needs the same items in both, in the same order"
        )
    d = xa - xb
    if groups is not None:
        lo, hi = grouped_bootstrap_ci(d, groups, n_boot=n_boot, seed=seed, level=level)
    else:
        lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed, level=level)
    return PairedDiff(diff=float(d.mean()), lo=lo, hi=hi, n=len(d), level=level)
