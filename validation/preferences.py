"""Preferences: does the model prefer activities its emotion directions read as pleasant? (Reported, not gated.)

Every ordered pair of :data:`ACTIVITIES` is asked as "Would you rather (A) … or (B) …?" with the
answer opened as "(", and the next-token logits of "A" and "B" give P(A over B). Elo ratings are
fitted to those soft outcomes (a Bradley–Terry fit on the Elo scale, 400 points = 10× odds), and
each activity's Elo is correlated with its projection on each emotion direction.

.. warning:: This check is for larger models. On SmolLM2-135M the answer letter carries no
   preference between pleasant and unpleasant activities (strength 0.505 vs 0.495 over 20
   activities, measured beforehand), so its Elo is noise and so are the correlations: the gate is
   reported and never counted as passed or failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from psylens.models import prompt_special_tokens
from psylens.stimuli import EMOTIONS
from psylens.validation.gates import GateResult, _host, _host_vectors, _num

if TYPE_CHECKING:
    from collections.abc import Mapping

    from psylens.models import Model
    from psylens.probes import Directions
    from psylens.steering import SteeringVector

__all__ = ["ACTIVITIES", "PAIR_TEMPLATE", "preferences", "elo_from_pairs", "elo_shift", "sparse_pairs"]

#: (activity, "pleasant" | "unpleasant"), written for the project: 24 pleasant, 24 unpleasant.
ACTIVITIES: tuple[tuple[str, str], ...] = (
    ("eat a warm slice of fresh bread", "pleasant"),
    ("watch the sunset from a quiet beach", "pleasant"),
    ("play a board game with old friends", "pleasant"),
    ("take a long nap on a rainy afternoon", "pleasant"),
    ("listen to your favourite album", "pleasant"),
    ("walk through a forest in autumn", "pleasant"),
    ("open a birthday present", "pleasant"),
    ("cuddle a sleepy puppy", "pleasant"),
    ("swim in a clear lake on a hot day", "pleasant"),
    ("read a good novel by the fire", "pleasant"),
    ("share a picnic in the park", "pleasant"),
    ("get a relaxing massage", "pleasant"),
    ("bake cookies with a child", "pleasant"),
    ("dance at a friend's wedding", "pleasant"),
    ("look at the stars on a clear night", "pleasant"),
    ("drink hot chocolate after skiing", "pleasant"),
    ("hear that you got the job", "pleasant"),
    ("plant flowers in a sunny garden", "pleasant"),
    ("laugh at a comedy show", "pleasant"),
    ("visit a beautiful old city", "pleasant"),
    ("receive a letter from a dear friend", "pleasant"),
    ("ride a bicycle along the coast", "pleasant"),
    ("eat ice cream on a summer evening", "pleasant"),
    ("sing along to music in the car", "pleasant"),
    ("scrub a blocked toilet", "unpleasant"),
    ("sit in a traffic jam for three hours", "unpleasant"),
    ("get a tooth drilled without anaesthetic", "unpleasant"),
    ("fill in tax forms all weekend", "unpleasant"),
    ("stand in the cold rain waiting for a bus", "unpleasant"),
    ("clean out a rotting fridge", "unpleasant"),
    ("listen to a car alarm all night", "unpleasant"),
    ("step on a piece of broken glass", "unpleasant"),
    ("get a parking fine", "unpleasant"),
    ("wait on hold with customer service for an hour", "unpleasant"),
    ("eat a meal that has gone off", "unpleasant"),
    ("lose your wallet on a trip", "unpleasant"),
    ("sit through a boring three-hour meeting", "unpleasant"),
    ("have a bad cold with a fever", "unpleasant"),
    ("be stuck in a lift for hours", "unpleasant"),
    ("unblock a drain full of hair", "unpleasant"),
    ("miss your flight by two minutes", "unpleasant"),
    ("argue with an angry neighbour", "unpleasant"),
    ("have your phone screen crack", "unpleasant"),
    ("walk home soaked in a storm", "unpleasant"),
    ("get a painful splinter", "unpleasant"),
    ("be kept awake by a crying alarm", "unpleasant"),
    ("clean up after a sick dog", "unpleasant"),
    ("redo a week of lost work", "unpleasant"),
)

PAIR_TEMPLATE = "Would you rather (A) {a} or (B) {b}? Answer with A or B."


def elo_from_pairs(n: int, pairs: Sequence[tuple[int, int]], p_first: Sequence[float], *, iters: int = 500) -> np.ndarray:
    """Elo ratings (mean 1000) from soft pairwise outcomes: ``p_first[k]`` = P(``pairs[k][0]`` wins).

    A Bradley–Terry fit by gradient ascent on the expected log-likelihood, on the Elo scale.
    """
    i = np.array([p[0] for p in pairs])
    j = np.array([p[1] for p in pairs])
    y = np.asarray(p_first, float)
    r = np.zeros(n)
    lr = 4.0 / max(1, len(pairs) / n)
    for _ in range(iters):
        pred = 1 / (1 + np.exp(-(r[i] - r[j])))
        g = np.zeros(n)
        np.add.at(g, i, y - pred)
        np.add.at(g, j, pred - y)
        r += lr * g / max(1, len(pairs) / n)
        r -= r.mean()
    return 1000 + r * 400 / np.log(10)


@torch.no_grad()
def _p_first(model: Model, prompts: Sequence[str], batch_size: int, ivs: Sequence[Any] = ()) -> np.ndarray:
    from psylens.interventions import intervene
    from psylens.validation.gates import last_logits

    tok = model.tokenizer
    a_id = tok("A", add_special_tokens=False)["input_ids"][0]
    b_id = tok("B", add_special_tokens=False)["input_ids"][0]
    texts = [model.format_prompt(p) + "(" for p in prompts]
    old = tok.padding_side
    tok.padding_side = "left"
    out = []
    try:
        for s in range(0, len(texts), batch_size):
            enc = tok(texts[s : s + batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=prompt_special_tokens(model)).to(model.device)
            with intervene(model.hf_model, list(ivs)):
                logits = last_logits(model.hf_model, **enc).float()
            out.append(torch.softmax(logits[:, [a_id, b_id]], dim=-1)[:, 0].cpu())
    finally:
        tok.padding_side = old
    return torch.cat(out).numpy()


def elo_shift(
    n: int, pairs: Sequence[tuple[int, int]], p_base: Sequence[float], p_steered: Sequence[float]
) -> np.ndarray:
    """Elo under steering minus Elo unsteered, per activity (``[n]``, mean zero: Elo is relative).

    ``p_base`` / ``p_steered``: P(first over second) of each ordered pair, unsteered and steered.
    """
    if len(p_base) != len(pairs) or len(p_steered) != len(pairs):
        raise ValueError(f"need one probability per pair: {len(pairs)} pairs, {len(p_base)} unsteered and "
                         f"{len(p_steered)} steered probabilities")
    return elo_from_pairs(n, pairs, p_steered) - elo_from_pairs(n, pairs, p_base)


def sparse_pairs(n: int, opponents: int | None, seed: int, pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Indices into ``pairs`` (all ordered pairs of ``n``) of a sparse tournament: on a seeded order of the
    activities, each meets the ``opponents // 2`` next ones on either side (a circulant design), in both
    orders; all pairs when ``opponents`` is ``None`` or covers everyone."""
    if opponents is not None and (isinstance(opponents, bool) or not isinstance(opponents, int) or opponents < 2):
        raise ValueError(f"steer_opponents must be an integer ≥ 2 (opponents per activity) or None (all pairs), got {opponents!r}")
    if opponents is None or opponents >= n - 1:
        return list(range(len(pairs)))
    perm = np.random.default_rng(seed).permutation(n)
    want = set()
    for i in range(n):
        for d in range(1, opponents // 2 + 1):
            a, b = int(perm[i]), int(perm[(i + d) % n])
            want |= {(a, b), (b, a)}
    return [k for k, pr in enumerate(pairs) if pr in want]


def _steer_ivs(model: Model, directions: Directions, layer: int, emos: Sequence[str], prompts: Sequence[str],
               vectors: Mapping[str, SteeringVector] | None, scale: float, seed: int,
               scale_reference: str = "norm") -> tuple[dict[str, list[Any]], dict[str, list[Any]], dict[str, Any]]:
    """Per emotion: the steering interventions, a same-norm random control's, and what was steered with."""
    from psylens.interventions import Intervention
    from psylens.steering.apply import interventions_for
    from psylens.steering.sweep import residual_norms
    from psylens.validation.gates import _check_vectors, _random_units, _vector_info

    if vectors is not None:
        picked = _check_vectors(model, vectors, emos)
        steer = {e: interventions_for(picked[e]) for e in emos}
        rand = {e: interventions_for(picked[e].random_like(seed + 7 + i)) for i, e in enumerate(emos)}
        return steer, rand, {"from": "vectors", "vectors": _vector_info(picked, emos)}
    fmt = [model.format_prompt(p) + "(" for p in prompts[:64]]
    a = float(scale) * residual_norms(model, fmt, [layer], reference=scale_reference)[layer]
    r = _random_units(len(emos), int(model.d_model), seed + 7)
    steer = {e: [Intervention("resid_post", layer, "add", value=(a * directions[e, layer].float()).to(model.dtype))] for e in emos}
    rand = {e: [Intervention("resid_post", layer, "add", value=(a * r[i]).to(model.dtype))] for i, e in enumerate(emos)}
    return steer, rand, {"from": "directions", "layer": int(layer), "scale": float(scale), "scale_reference": scale_reference,
                         "alpha": a}


def preferences(
    model: Model,
    directions: Directions,
    layer: int,
    *,
    activities: Sequence[tuple[str, str]] = ACTIVITIES,
    emotions: Sequence[str] = EMOTIONS,
    start_offset: int = 0,
    batch_size: int = 32,
    threshold: float = 0.3,
    seed: int = 0,
    steer: bool = True,
    vectors: Mapping[str, SteeringVector] | None = None,
    scale: float = 0.5,
    steer_opponents: int | None = 6,
    progress: bool = False,
    scale_reference: str = "norm",
) -> GateResult:
    """Elo of each activity from all ordered "(A) or (B)" pairs, its correlation with projections, and its shift under steering.

    Reported, not gated (``"gated": false``; never counted in the suite's total): see the module warning.
    Value: the Spearman correlation between Elo and the projection on ``joy`` (or the first emotion);
    ``passed`` says whether it reaches ``threshold`` (meant for larger models). Control: the same
    correlation with the projection on a random unit direction.

    With ``steer`` (default), every pair is asked again steered by each emotion — by ``vectors[e]``
    as it is (e.g. the steering sweep's picked vectors), else by the direction at ``layer`` × ``scale``
    × the layer's mean residual norm on the pair prompts (``scale_reference``: ``"norm"``, ``"centred"`` or ``"median"``,
    see :func:`psylens.steering.sweep.residual_norms`) — and by a same-norm random control per
    emotion (``random_like`` of the vector, or a random unit direction × the same alpha). Reported per
    emotion in ``summary["steering"]``: the Spearman correlation between each activity's Elo shift and
    its projection on the emotion (does steering towards an emotion favour the activities that evoke
    it?), the mean shift of pleasant minus unpleasant activities, the mean absolute shift, and the same
    three numbers for the random control; the shifts per activity are the ``elo_shift`` table.
    ``steer_opponents``: the steered tournament is sparse — each activity meets this many others
    (a seeded circulant design, both orders of every pair), and the shift is Elo steered minus Elo
    unsteered *on the same pairs*; ``None``: every ordered pair. Cost: n(n − 1) next-token forwards
    unsteered plus 2 × emotions × n × ``steer_opponents`` steered (all pairs: 2 × emotions × n(n − 1)).
    """
    from psylens.steering.sweep import check_scale_reference
    from psylens.validation.directions import text_means
    from psylens.validation.gates import spearman

    directions, vectors = _host(directions), _host_vectors(vectors)

    check_scale_reference(scale_reference, "scale_reference")  # before any forward pass
    acts = list(activities)
    if len(acts) < 2:
        raise ValueError(f"preferences need at least 2 activities, got {len(acts)}")
    n = len(acts)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    prompts = [PAIR_TEMPLATE.format(a=acts[i][0], b=acts[j][0]) for i, j in pairs]
    p = _p_first(model, prompts, batch_size)
    # each pair is asked both ways: the letter bias cancels in the average of the two orders
    elo = elo_from_pairs(n, pairs, p)
    x = text_means(model, [a for a, _ in acts], [layer], start_offset=start_offset, format="raw",
                   progress=progress, desc="reading activities")[:, 0].double()
    x = x - x.mean(0, keepdim=True)
    emos = [e for e in emotions if e in directions.emotions]
    proj = {e: (x @ directions[e, layer].double()).numpy() for e in emos}
    corr = {e: _num(spearman(elo, proj[e])) for e in emos}
    pleasant = np.array([k == "pleasant" for _, k in acts])
    strength = {"pleasant": _num(p_mean(pairs, p, pleasant, True)), "unpleasant": _num(p_mean(pairs, p, pleasant, False))}
    key = "joy" if "joy" in emos else emos[0]
    table = pd.DataFrame([{"activity": a, "kind": k, "elo": float(elo[i]), **{f"proj_{e}": float(proj[e][i]) for e in emos}}
                          for i, (a, k) in enumerate(acts)])
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(x.shape[1], generator=g, dtype=torch.float64)
    control = _num(spearman(elo, (x @ (r / r.norm())).numpy()))
    value = corr[key]
    tables = {"activities": table}
    steering = None
    if steer:
        steer_ivs, rand_ivs, how = _steer_ivs(model, directions, layer, emos, prompts, vectors, scale, seed, scale_reference)
        idx = sparse_pairs(n, steer_opponents, seed, pairs)
        s_pairs, s_prompts, s_p = [pairs[k] for k in idx], [prompts[k] for k in idx], p[idx]
        shifts: dict[str, np.ndarray] = {}
        per: dict[str, Any] = {}
        for e in emos:
            s_e = elo_shift(n, s_pairs, s_p, _p_first(model, s_prompts, batch_size, steer_ivs[e]))
            r_e = elo_shift(n, s_pairs, s_p, _p_first(model, s_prompts, batch_size, rand_ivs[e]))
            shifts[e], shifts[f"random_{e}"] = s_e, r_e
            per[e] = {
                "spearman_shift_vs_projection": _num(spearman(s_e, proj[e])),
                "pleasant_minus_unpleasant": _num(float(s_e[pleasant].mean() - s_e[~pleasant].mean())) if pleasant.any() and (~pleasant).any() else None,
                "mean_abs_shift": _num(float(np.abs(s_e).mean())),
                "random_spearman_shift_vs_projection": _num(spearman(r_e, proj[e])),
                "random_pleasant_minus_unpleasant": _num(float(r_e[pleasant].mean() - r_e[~pleasant].mean())) if pleasant.any() and (~pleasant).any() else None,
                "random_mean_abs_shift": _num(float(np.abs(r_e).mean())),
            }
        steering = {**how, "emotions": per, "n_pairs": len(idx), "opponents": steer_opponents,
                    "note": "Elo shift = Elo steered − Elo unsteered per activity on the same pairs (Elo points); the "
                            "random control steers with a same-norm random direction at the same layers"}
        tables["elo_shift"] = pd.DataFrame([{"activity": a, "kind": k, **{f"shift_{c}": float(v[i]) for c, v in shifts.items()}}
                                            for i, (a, k) in enumerate(acts)])
    summary = {
        "value": value, "threshold": float(threshold), "control": control,
        "passed": bool(value is not None and value >= threshold),
        "gated": False, "value_kind": f"Spearman correlation of Elo with the {key} projection",
        "control_kind": "the same correlation with a random unit direction's projection",
        "letter_bias": _num(float(p.mean()) - 0.5),
        "correlations": corr, "strength": strength, "n_activities": n, "n_pairs": len(pairs), "layer": int(layer),
        "steering": steering,
        "note": "reported, not gated: this check is for larger models (SmolLM2-135M shows no preference between "
                "pleasant and unpleasant activities)",
    }
    return GateResult("preferences", summary, tables)


def p_mean(pairs: Sequence[tuple[int, int]], p: np.ndarray, pleasant: np.ndarray, which: bool) -> float:
    """Mean probability that an activity of kind ``which`` wins the pairs it is in."""
    wins = [p[k] if pleasant[i] == which else 1 - p[k] for k, (i, j) in enumerate(pairs) if (pleasant[i] == which) != (pleasant[j] == which)]
    return float(np.mean(wins)) if wins else float("nan")
