"""Does the circuit carry the signal? Ablation curves, enhancement, faithfulness and completeness.

- :func:`random_like`: size-matched random sets — the same number of heads and of neurons *per layer*
  as the circuit, drawn from the other units of those layers (a control that keeps the layer profile).
- :func:`ablation_curve`: drop (``1 − S_after / S_before``) vs the number of top units ablated (zero or
  mean ablation), the circuit against ``n_random`` (≥ 5) size-matched random sets at each size.
- :func:`drop_ci`: the scenario-bootstrap interval of a drop.
- :func:`smallest_prefix`: the circuit cut to its fewest top units whose ablation removes a given share
  of the signal — optionally with confidence: the interval's lower end must reach it (selection mode
  ``drop``; run on the discovery stimuli, never on the held-out ones).
- :func:`enhancement`: gain (``S_after / S_before − 1``) when the circuit's units are scaled by
  ``factor``, and the same for random sets.
- :func:`faithfulness_completeness`: faithfulness = the share of the signal kept when every *other*
  head and neuron at layers ``0..L`` is mean-ablated (``S(C) / S``; ``faithfulness_normalized``:
  ``(S(C) − S(∅)) / (S − S(∅))`` with ``S(∅)`` everything ablated); completeness = the share removed
  when the circuit is mean-ablated (``1 − S(M∖C) / S``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from psylens.circuits.circuit import Circuit
from psylens.circuits.signal import Baseline, Edit, Prepared, Units, drop, projections, signal

__all__ = ["random_like", "curve_sizes", "ablation_curve", "drop_ci", "smallest_prefix", "enhancement",
           "faithfulness_completeness"]


def random_like(units: Units, n_heads: int, d_mlp: int, seed: int) -> Units:
    """Per layer, as many random heads / neurons as ``units`` has there, avoiding ``units`` when the layer
    has enough others (else drawing from the whole layer)."""
    rng = np.random.default_rng(seed)
    out_h: list[tuple[int, int]] = []
    out_n: list[tuple[int, int]] = []
    for kind, width, src, dst in (("h", n_heads, units.heads, out_h), ("n", d_mlp, units.neurons, out_n)):
        per: dict[int, set[int]] = {}
        for layer, i in src:
            per.setdefault(layer, set()).add(i)
        for layer, own in sorted(per.items()):
            pool = [i for i in range(width) if i not in own]
            if len(pool) < len(own):
                pool = list(range(width))
            pick = rng.choice(len(pool), size=len(own), replace=False)
            dst.extend((layer, int(pool[j])) for j in pick)
    return Units(tuple(out_h), tuple(out_n))


def curve_sizes(n: int, points: int = 5) -> list[int]:
    """About ``points`` sizes from 1 to ``n`` on a log scale (always ending at ``n``)."""
    if n <= 0:
        return []
    sizes = sorted(set(int(round(x)) for x in np.geomspace(1, n, num=max(points, 1))) | {n})
    return [s for s in sizes if s >= 1]


def _geometry(baseline: Baseline) -> tuple[int, int]:
    return int(baseline.heads.shape[1]), int(baseline.neurons.shape[1])


def ablation_curve(
    model: Any,
    data: Prepared,
    weights: np.ndarray,
    direction: Any,
    circuit: Circuit,
    baseline: Baseline,
    *,
    methods: Sequence[str] = ("mean", "zero"),
    sizes: Sequence[int] | None = None,
    n_random: int = 5,
    seed: int = 0,
    split: str = "heldout",
    before: float | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Rows of :data:`psylens.circuits.artifacts.ABLATION_COLUMNS`: the circuit's top-``n`` units ablated
    for each ``n`` in ``sizes`` (default :func:`curve_sizes` of the circuit), and ``n_random`` random sets
    of the same per-layer make-up."""
    if n_random < 5:
        raise ValueError(f"n_random must be at least 5 (the spread of random sets needs draws), got {n_random}")
    L = circuit.readout_layer
    s0 = before if before is not None else signal(model, data, weights, direction, L)
    sizes = list(sizes) if sizes is not None else curve_sizes(len(circuit.units))
    n_heads, d_mlp = _geometry(baseline)
    rows = []
    jobs = [(m, n) for m in methods for n in sizes]
    it: Any = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc=f"ablation {circuit.emotion} ({split})", leave=False)
    for method, n in it:
        top = circuit.top(n)
        sets = [("circuit", -1, top)] + [("random", k, random_like(top, n_heads, d_mlp, seed + 1000 * n + k)) for k in range(n_random)]
        for kind, draw, units in sets:
            after = signal(model, data, weights, direction, L, Edit(units, method), baseline)
            rows.append({"emotion": circuit.emotion, "split": split, "method": method, "kind": kind, "draw": draw,
                         "n_units": len(units), "drop": drop(s0, after), "signal_before": s0, "signal_after": after})
    return pd.DataFrame(rows)


def drop_ci(p_before: Tensor, p_after: Tensor, weights: np.ndarray, groups: Sequence[Any], *,
            strata: Sequence[Any] | None = None, seed: int = 0, level: float = 0.95,
            n_boot: int = 1000) -> tuple[float, float]:
    """Bootstrap interval (two-sided, ``level``) of ``1 − S_after / S_before`` over the units of ``groups``
    with a non-zero weight (scenarios; each contributes its weighted sums before and after).

    ``strata`` (one per stimulus, e.g. the labels) resamples within each stratum, keeping its count: use it
    when each stimulus is its own group (a pooled set, :func:`~psylens.circuits.signal.contrast_weights`
    ``pooled=True``). Resampling such a set freely changes how many texts of the emotion are drawn, and with
    fixed weights ``S`` then swings with the projections' overall level rather than the contrast — the
    interval comes out meaninglessly wide."""
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"level must be in (0, 1) and n_boot positive, got level={level}, n_boot={n_boot}")
    w = np.asarray(weights, float)
    g = np.asarray([str(x) for x in groups])
    if len(g) != len(w) or (strata is not None and len(strata) != len(w)):
        raise ValueError(f"groups ({len(g)}) and strata ({'none' if strata is None else len(strata)}) must have one "
                         f"entry per stimulus ({len(w)})")
    names = sorted(set(g[w != 0]))
    if not names:
        raise ValueError("no stimulus has a non-zero weight: the signal is empty, so its drop has no interval")
    cb = np.array([float((w[g == n] * p_before.double().numpy()[g == n]).sum()) for n in names])
    ca = np.array([float((w[g == n] * p_after.double().numpy()[g == n]).sum()) for n in names])
    st = np.zeros(len(names), dtype=int)
    if strata is not None:
        s_of = np.asarray([str(x) for x in strata])
        for n in names:
            own = set(s_of[g == n])
            if len(own) != 1:
                raise ValueError(f"group {n!r} spans strata {sorted(own)}; each group must sit inside one stratum")
        st = np.unique([s_of[g == n][0] for n in names], return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    pick = np.concatenate([m[rng.integers(0, len(m), size=(n_boot, len(m)))]
                           for m in (np.nonzero(st == k)[0] for k in range(int(st.max()) + 1))], axis=1)
    den = cb[pick].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = np.where(den != 0, 1 - ca[pick].sum(axis=1) / den, np.nan)
    lo, hi = np.quantile(samples, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def smallest_prefix(
    model: Any,
    data: Prepared,
    weights: np.ndarray,
    direction: Any,
    circuit: Circuit,
    baseline: Baseline,
    *,
    target: float = 0.5,
    method: str = "mean",
    before: float | None = None,
    confidence: float | None = None,
    seed: int = 0,
) -> tuple[Circuit, dict[str, Any]]:
    """The fewest of ``circuit``'s top units (heads and neurons merged by score) whose ``method`` ablation
    drops the signal on ``data`` by at least ``target``, and a record of the search.

    With ``confidence`` (e.g. 0.95) the cut asks more: the *lower end* of the two-sided ``confidence``
    scenario-bootstrap interval of the drop (:func:`drop_ci` over ``data.groups``) must reach ``target``,
    so a circuit cut on a few discovery scenarios clears the bar with a margin instead of on the nose
    (a cut that lands exactly on ``target`` lands below it on new scenarios about half the time). ``before``
    is ignored then (the interval needs the per-stimulus projections).

    Bisection on the prefix size, so it assumes the criterion grows with the size (the record lists every
    size it evaluated; the chosen size always meets the criterion). When the whole circuit does not, the
    circuit comes back whole with ``"reached": False``. Use the *discovery* stimuli: cutting on held-out
    data would tune the circuit to the numbers that then judge it.

    Returns ``(circuit, {"target", "method", "confidence", "n_candidates", "n", "drop", "drop_lower", "reached",
    "evaluated": [[n, drop], …], "evaluated_lower": [[n, lower end], …]})`` (the ``lower`` entries are NaN /
    empty without ``confidence``).
    """
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1) (a share of the signal), got {target}")
    if method not in ("mean", "zero"):
        raise ValueError(f"method {method!r} is not 'mean' or 'zero'")
    if confidence is not None and not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1) (the level of the interval whose lower end must reach "
                         f"the target, e.g. 0.95) or None, got {confidence}")
    L = circuit.readout_layer
    w = torch.from_numpy(np.asarray(weights, dtype=np.float64))
    p0 = projections(model, data, direction, L) if confidence is not None else None
    if p0 is not None:
        s0 = float(w @ p0.double())
    else:
        s0 = before if before is not None else signal(model, data, weights, direction, L)
    if not s0 > 0:
        raise ValueError(f"the signal before ablation is {s0:.4g}; a share of it is only defined for a positive signal "
                         "(check the direction's sign and the stimuli's labels)")
    seen: dict[int, float] = {0: 0.0}
    lower: dict[int, float] = {0: 0.0}

    def meets(n: int) -> bool:
        if n not in seen:
            edit = Edit(circuit.top(n), method)
            if p0 is None:
                seen[n] = drop(s0, signal(model, data, weights, direction, L, edit, baseline))
            else:
                p1 = projections(model, data, direction, L, edit, baseline)
                seen[n] = drop(s0, float(w @ p1.double()))
                lower[n] = drop_ci(p0, p1, weights, data.groups, seed=seed, level=confidence)[0]
        return (seen[n] if p0 is None else lower[n]) >= target

    n_all = len(circuit.units)
    record: dict[str, Any] = {"target": float(target), "method": method, "confidence": confidence, "n_candidates": n_all}

    def done(n: int, reached: bool) -> dict[str, Any]:
        return {**record, "n": n, "drop": seen.get(n, float("nan")), "drop_lower": lower.get(n, float("nan")),
                "reached": reached, "evaluated": [[k, v] for k, v in sorted(seen.items()) if k],
                "evaluated_lower": [[k, v] for k, v in sorted(lower.items()) if k]}

    if n_all == 0 or not meets(n_all):
        return circuit, done(n_all, False)
    lo, hi = 0, n_all  # not meets(lo), meets(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return circuit.prefix(hi), done(hi, True)


def enhancement(
    model: Any,
    data: Prepared,
    weights: np.ndarray,
    direction: Any,
    circuit: Circuit,
    baseline: Baseline,
    *,
    factors: Sequence[float] = (2.0,),
    n_random: int = 5,
    seed: int = 0,
    split: str = "heldout",
    before: float | None = None,
) -> pd.DataFrame:
    """Rows of :data:`psylens.circuits.artifacts.ENHANCEMENT_COLUMNS`: the circuit's units scaled by each
    factor, and ``n_random`` size-matched random sets scaled alike."""
    if n_random < 5:
        raise ValueError(f"n_random must be at least 5, got {n_random}")
    L = circuit.readout_layer
    s0 = before if before is not None else signal(model, data, weights, direction, L)
    n_heads, d_mlp = _geometry(baseline)
    rows = []
    units = circuit.units
    sets = [("circuit", -1, units)] + [("random", k, random_like(units, n_heads, d_mlp, seed + 7919 + k)) for k in range(n_random)]
    for f in factors:
        for kind, draw, u in sets:
            after = signal(model, data, weights, direction, L, Edit(u, "scale", float(f)))
            rows.append({"emotion": circuit.emotion, "split": split, "kind": kind, "draw": draw, "factor": float(f),
                         "gain": (after / s0 - 1.0) if s0 != 0 else float("nan"), "signal_before": s0, "signal_after": after})
    return pd.DataFrame(rows)


def _complement(units: Units, layers: int, n_heads: int, d_mlp: int) -> Units:
    hs, ns = set(units.heads), set(units.neurons)
    return Units(tuple((la, h) for la in range(layers) for h in range(n_heads) if (la, h) not in hs),
                 tuple((la, n) for la in range(layers) for n in range(d_mlp) if (la, n) not in ns))


def faithfulness_completeness(
    model: Any,
    data: Prepared,
    weights: np.ndarray,
    direction: Any,
    circuit: Circuit,
    baseline: Baseline,
    *,
    before: float | None = None,
) -> dict[str, float]:
    """``{"faithfulness", "faithfulness_normalized", "completeness", "signal", "signal_circuit_only",
    "signal_all_ablated", "signal_without_circuit"}`` (mean ablation at the text tokens, layers ``0..L``)."""
    L = circuit.readout_layer
    n_heads, d_mlp = _geometry(baseline)
    s = before if before is not None else signal(model, data, weights, direction, L)
    everything = _complement(Units(), L + 1, n_heads, d_mlp)
    rest = _complement(circuit.units, L + 1, n_heads, d_mlp)
    s_c = signal(model, data, weights, direction, L, Edit(rest, "mean"), baseline)
    s_0 = signal(model, data, weights, direction, L, Edit(everything, "mean"), baseline)
    s_wo = signal(model, data, weights, direction, L, Edit(circuit.units, "mean"), baseline)
    norm = (s_c - s_0) / (s - s_0) if s != s_0 else float("nan")
    return {"faithfulness": s_c / s if s else float("nan"), "faithfulness_normalized": norm,
            "completeness": drop(s, s_wo), "signal": s, "signal_circuit_only": s_c, "signal_all_ablated": s_0,
            "signal_without_circuit": s_wo}
