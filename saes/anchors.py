"""Step importance by counterfactual resampling (Thought Anchors): which reasoning steps decide the answer.

>>> from psylens.saes.anchors import step_importance, importance_by_label
>>> table = step_importance(model, read_traces("runs/traces"), n_rollouts=4, max_traces=6)   # doctest: +SKIP
>>> importance_by_label(table)          # mean importance per behaviour label, trace-bootstrap CIs   # doctest: +SKIP

**Prefixes.** A trace (``prompt`` + ``text``) is cut into steps by :func:`psylens.saes.trace_steps`
(sentences by default). Cut ``j`` is the assistant text up to the end of step ``j - 1``
(cut 0 is the empty text, right after ``Let's think step by step.``): ``text[:end of step j-1]``.
From each cut the model writes ``n_rollouts`` continuations (temperature ``temperature``, at most
``max_new_tokens`` tokens, each rollout with its own seed, as :mod:`psylens.saes.traces` samples);
the answer of a rollout is :func:`psylens.tasks.parse_letter` of *prefix + rollout* (so an
``Answer: X`` already in the prefix counts unless the rollout writes another). When nothing parses
and ``force_answer`` is on, ``"\\nAnswer:"`` is appended and a few greedy tokens are parsed (a
rollout cut short by ``max_new_tokens`` still gets the answer the model leans to); an answer that
still does not parse is the category ``"none"``.

**Importance of step i** compares the answers *with* step i (rollouts from cut ``i + 1``, the
prefix including the step: distribution ``P_with``) and *without* it (rollouts from cut ``i``,
the step itself resampled: ``P_without``). Both are empirical distributions over letters and
``"none"`` from ``n_rollouts`` answers each; the rollouts of cut ``i + 1`` serve as ``P_with`` of
step ``i`` and ``P_without`` of step ``i + 1`` (one set of rollouts a cut: ``(steps + 1) × N``
rollouts a trace). Columns of the table:

``tv``            total variation ``½ Σ_a |P_with(a) − P_without(a)|`` (Thought Anchors' counterfactual
                  importance, with TV in place of their KL: bounded in [0, 1] and defined for any N).
``tv_null``       the mean of the same TV over every split of the pooled ``2N`` answers into two
                  groups of N (exact for C(2N, N) ≤ 5000, else 2000 seeded random splits): what TV
                  is when the step changes nothing. Two small samples of one distribution differ
                  by chance, so raw TV is biased upward (N = 4: 0.47 on average for a uniform
                  4-way answer).
``importance``    ``tv − tv_null``: **the step importance**. Zero in expectation when the step does
                  not matter (the observed split is exchangeable with the permuted ones), up to
                  ``1 − tv_null`` when it fixes the answer; can be negative by chance.
``p_value``       share of the pooled splits whose TV is ≥ the observed one (permutation test).
``kl``            ``KL(P_with ‖ P_without)`` with ½ added to every count of the categories seen
                  (Jeffreys smoothing), in nats — Thought Anchors' measure, for comparison.
``resampling``    ``P_with(a*) − P_without(a*)`` with ``a*`` the original trace's answer: how much
                  keeping the step moves the model toward the answer it gave (signed; the sum over
                  a trace's steps telescopes to ``P_cut_last(a*) − P_cut_0(a*)``).
``change_without`` / ``change_with``  ``1 − P(a*)``: how often the answer changes vs the original
                  one when resampling from before / after the step (the simple reading).

Not done (Thought Anchors does it): the paper drops resampled steps that are semantically close
to the original (cosine of sentence embeddings) before comparing; here every rollout counts, so a
step the model would rewrite almost verbatim scores low even when its content matters.

Cost: ``Σ_traces (steps + 1) × N`` rollouts of ≤ ``max_new_tokens`` tokens, plus a short greedy
answer for each rollout that did not finish. The table's ``attrs["cost"]`` (and ``anchors.json``)
records seconds, rollouts and tokens; docs/saes.md gives a measured example.

Footguns: rollouts re-tokenize the decoded trace text, which may differ from the generated ids by a
token at a merge; small N gives coarse distributions (``importance`` is unbiased but noisy: read
the per-label CIs, not single steps); the answer parser falls back to the last standalone letter,
so a rollout that stops mid-sentence after ``option B`` counts as B.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jaxtyping import Float
from torch import Tensor

from psylens.models import prompt_special_tokens

if TYPE_CHECKING:
    import pandas as pd

    from psylens.models import Model

__all__ = [
    "NONE",
    "ANSWER_CUE",
    "Generator",
    "answer_stats",
    "step_importance",
    "importance_by_label",
    "feature_importance_correlation",
    "run_anchors",
]

log = logging.getLogger(__name__)

NONE = "none"  # the answer category of a rollout whose answer does not parse
ANSWER_CUE = "\nAnswer:"  # appended to an unfinished rollout when force_answer is on
_EXACT_SPLITS = 5000
_RANDOM_SPLITS = 2000
_FORCE_TOKENS = 4

# generator(formatted prompts, per-row seeds, max_new_tokens, temperature) -> continuations
Generator = Callable[[list[str], list[int], int, float], list[str]]


# --------------------------------------------------------------------------------------------
# comparing two answer samples
# --------------------------------------------------------------------------------------------
def _splits(n1: int, n2: int, rng: np.random.Generator) -> np.ndarray:
    """``[S, n1 + n2]`` bool: rows mark which pooled answers go to the first group."""
    n = n1 + n2
    if math.comb(n, n1) <= _EXACT_SPLITS:
        rows = list(itertools.combinations(range(n), n1))
        out = np.zeros((len(rows), n), dtype=bool)
        for r, idx in enumerate(rows):
            out[r, list(idx)] = True
        return out
    out = np.zeros((_RANDOM_SPLITS, n), dtype=bool)
    first = rng.random((_RANDOM_SPLITS, n)).argsort(axis=1)[:, :n1]  # a random n1-subset a row
    np.put_along_axis(out, first, True, axis=1)
    return out


def answer_stats(with_step: Sequence[str], without_step: Sequence[str], original: str | None = None,
                 *, seed: int = 0) -> dict[str, float]:
    """Compare two samples of answers (``P_with``, ``P_without``): ``tv``, ``tv_null``, ``importance``,
    ``p_value``, ``kl`` and, when ``original`` is given, ``resampling``, ``change_with``, ``change_without``.

    See the module docstring for the definitions. Answers are any hashable labels (letters, ``"none"``).
    """
    a, b = list(with_step), list(without_step)
    if not a or not b:
        raise ValueError(f"need at least one answer on each side, got {len(a)} with and {len(b)} without the step")
    cats = sorted(set(a) | set(b))
    code = {c: i for i, c in enumerate(cats)}
    pooled = np.array([code[x] for x in a + b])
    onehot = np.eye(len(cats))[pooled]  # [n, C]
    n1, n2 = len(a), len(b)
    pa, pb = onehot[:n1].mean(0), onehot[n1:].mean(0)
    tv = 0.5 * float(np.abs(pa - pb).sum())
    split = _splits(n1, n2, np.random.default_rng(seed)).astype(float)  # [S, n]
    c1 = split @ onehot  # [S, C]
    c2 = onehot.sum(0)[None, :] - c1
    tv_perm = 0.5 * np.abs(c1 / n1 - c2 / n2).sum(1)  # [S]
    tv_null = float(tv_perm.mean())
    ka, kb = onehot[:n1].sum(0) + 0.5, onehot[n1:].sum(0) + 0.5
    qa, qb = ka / ka.sum(), kb / kb.sum()
    out = {
        "tv": tv,
        "tv_null": tv_null,
        "importance": tv - tv_null,
        "p_value": float((tv_perm >= tv - 1e-12).mean()),
        "kl": float((qa * np.log(qa / qb)).sum()),
    }
    if original is not None:
        p_with = sum(x == original for x in a) / n1
        p_without = sum(x == original for x in b) / n2
        out.update(resampling=p_with - p_without, change_with=1.0 - p_with, change_without=1.0 - p_without,
                   p_orig_with=p_with, p_orig_without=p_without)
    return out


def _summary(answers: Sequence[str]) -> str:
    """``"A:3 B:1"``: counts, most frequent first."""
    return " ".join(f"{k}:{v}" for k, v in sorted(Counter(answers).items(), key=lambda kv: (-kv[1], kv[0])))


# --------------------------------------------------------------------------------------------
# rollouts
# --------------------------------------------------------------------------------------------
def _n_choices(prompt: str) -> int:
    """How many lettered choices (``A. ...``) the task prompt lists (psylens.tasks.choice_prompt's layout)."""
    from psylens.tasks import LETTERS, N_CHOICES

    found = set(re.findall(r"^([A-J])\. ", prompt, re.M))
    n = 0
    while n < len(LETTERS) and LETTERS[n] in found:
        n += 1
    return n if n >= 2 else N_CHOICES


def _parse(text: str, n_choices: int) -> str | None:
    from psylens.tasks import LETTERS, parse_letter

    i = parse_letter(text, n_choices)
    return LETTERS[i] if i is not None else None


def _rollout_seed(seed: int, trace_id: str, cut: int, k: int) -> int:
    from psylens.saes.traces import trace_seed

    return trace_seed(seed, f"{trace_id}\x00anchor-cut{cut}", k)


def step_importance(
    model: Model,
    traces: Sequence[Mapping[str, Any]],
    *,
    n_rollouts: int = 4,
    max_new_tokens: int = 48,
    temperature: float = 0.7,
    seed: int = 0,
    max_traces: int | None = None,
    progress: bool = False,
    mode: str = "sentence",
    format: str = "auto",
    batch_size: int = 16,
    force_answer: bool = True,
    generator: Generator | None = None,
) -> pd.DataFrame:
    """Counterfactual importance of every step of ``traces`` (one row a step; see the module docstring).

    ``traces``: records of ``psylens traces`` (``id``, ``prompt``, ``text``, ``answer``, ...) or
    dicts ``{"prompt", "steps"}``; the first ``max_traces`` with at least one step are used.
    ``mode``: ``"sentence"`` or ``"paragraph"`` steps. ``generator(prompts, seeds, max_new_tokens,
    temperature)``: another way to continue the formatted prompts (tests; default: the model, sampled
    with one seed a row exactly as :mod:`psylens.saes.traces` does, batched ``batch_size`` rows).

    Columns: ``trace_id``, ``task_id``, ``kind``, ``step``, ``n_steps``, ``position`` (step / (n_steps − 1)),
    ``text``, ``labels`` (behaviour labels of the step by :func:`psylens.saes.label_step`, with the
    task as context), ``original_answer``, ``importance``, ``tv``, ``tv_null``, ``p_value``, ``kl``,
    ``resampling``, ``change_without``, ``change_with``, ``p_orig_without``, ``p_orig_with``,
    ``answers_without`` / ``answers_with`` (counts, e.g. ``"A:3 none:1"``), ``forced_without`` /
    ``forced_with`` (share of rollouts whose answer came from the ``Answer:`` cue).
    ``table.attrs["cost"]``: ``seconds``, ``seconds_per_trace``, ``rollouts``, ``forced``,
    ``new_tokens``, ``n_traces``, ``n_steps``, ``n_prefixes``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from psylens.saes.labels import label_step
    from psylens.saes.steps import trace_steps
    from psylens.saes.traces import _generate_batch, format_trace_prompt

    if isinstance(n_rollouts, bool) or not isinstance(n_rollouts, int) or n_rollouts < 1:
        raise ValueError(f"n_rollouts must be a positive integer, got {n_rollouts!r}; 4 is a small start")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy, then every rollout is the same), got {temperature}")
    if max_traces is not None and max_traces < 1:
        raise ValueError(f"max_traces must be at least 1 or None (every trace), got {max_traces}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if mode not in ("sentence", "paragraph"):
        raise ValueError(f"mode {mode!r} is not one of 'sentence', 'paragraph'")
    if generator is None:
        def generator(prompts: list[str], seeds: list[int], n: int, t: float) -> list[str]:
            return _generate_batch(model, prompts, seeds, n, t, special=prompt_special_tokens(model, format))

    # the traces: steps, cut points, formatted prompts
    items: list[dict[str, Any]] = []
    for pos, t in enumerate(traces):
        ts = trace_steps(t, mode)
        if not ts.spans:
            continue
        tid = str(t.get("id", pos))
        head = format_trace_prompt(model, ts.prompt, format)
        cuts = [0] + [b for _a, b in ts.spans]
        n_ch = int(t["n_choices"]) if t.get("n_choices") else _n_choices(ts.prompt)
        original = t.get("answer") if "answer" in t else _parse(ts.text, n_ch)
        items.append({"pos": pos, "id": tid, "trace": t, "ts": ts, "head": head, "cuts": cuts, "n_choices": n_ch,
                      "original": original if original is not None else NONE})
        if max_traces is not None and len(items) >= max_traces:
            break
    if not items:
        raise ValueError("no trace with at least one step; give psylens traces records with a non-empty 'text'")

    # every (trace, cut, rollout), longest prompt first (less padding), in fixed batches
    jobs = [(ti, j, k) for ti, it in enumerate(items) for j in range(len(it["cuts"])) for k in range(n_rollouts)]

    def prefix(ti: int, j: int) -> str:
        it = items[ti]
        return it["ts"].text[: it["cuts"][j]]

    prompt_of = {(ti, j): items[ti]["head"] + prefix(ti, j) for ti, it in enumerate(items) for j in range(len(it["cuts"]))}
    jobs.sort(key=lambda x: (-len(prompt_of[x[:2]]), x))
    seeds = {x: _rollout_seed(seed, items[x[0]]["id"], x[1], x[2]) for x in jobs}
    rollouts: dict[tuple[int, int, int], str] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="anchor rollouts", disable=not progress)
    try:
        for b in range(0, len(jobs), batch_size):
            batch = jobs[b : b + batch_size]
            texts = generator([prompt_of[x[:2]] for x in batch], [seeds[x] for x in batch], max_new_tokens,
                              float(temperature))
            if len(texts) != len(batch):
                raise ValueError(f"the generator returned {len(texts)} texts for {len(batch)} prompts")
            rollouts.update(zip(batch, texts))
            bar.update(len(batch))
    finally:
        bar.close()
    answers: dict[tuple[int, int, int], str] = {}
    todo = []
    for x in jobs:
        a = _parse(prefix(x[0], x[1]) + rollouts[x], items[x[0]]["n_choices"])
        if a is None:
            todo.append(x)
        else:
            answers[x] = a
    forced: set[tuple[int, int, int]] = set()
    if todo and force_answer:
        for b in tqdm(range(0, len(todo), batch_size), desc="answers of unfinished rollouts", disable=not progress,
                      leave=False):
            batch = todo[b : b + batch_size]
            outs = generator([prompt_of[x[:2]] + rollouts[x] + ANSWER_CUE for x in batch], [seeds[x] for x in batch],
                             _FORCE_TOKENS, 0.0)
            for x, o in zip(batch, outs):
                a = _parse("Answer:" + o, items[x[0]]["n_choices"])
                if a is not None:
                    answers[x] = a
                    forced.add(x)
    for x in jobs:
        answers.setdefault(x, NONE)
    seconds = time.perf_counter() - t0
    tok = getattr(model, "tokenizer", None)
    new_tokens = sum(len(tok(r, add_special_tokens=False)["input_ids"]) for r in rollouts.values()) if tok else None

    rows = []
    for ti, it in enumerate(items):
        ts, t = it["ts"], it["trace"]
        per_cut = [[answers[(ti, j, k)] for k in range(n_rollouts)] for j in range(len(it["cuts"]))]
        per_forced = [sum((ti, j, k) in forced for k in range(n_rollouts)) / n_rollouts for j in range(len(it["cuts"]))]
        n_steps = len(ts.spans)
        for i, text in enumerate(ts.steps):
            st = answer_stats(per_cut[i + 1], per_cut[i], it["original"], seed=seed + i)
            rows.append({
                "trace_id": it["id"], "task_id": t.get("task_id"), "kind": t.get("kind"), "step": i,
                "n_steps": n_steps, "position": i / (n_steps - 1) if n_steps > 1 else 0.0, "text": text.strip(),
                "labels": list(label_step(text, ts.prompt)), "original_answer": it["original"],
                "importance": st["importance"], "tv": st["tv"], "tv_null": st["tv_null"], "p_value": st["p_value"],
                "kl": st["kl"], "resampling": st["resampling"], "change_without": st["change_without"],
                "change_with": st["change_with"], "p_orig_without": st["p_orig_without"],
                "p_orig_with": st["p_orig_with"], "answers_without": _summary(per_cut[i]),
                "answers_with": _summary(per_cut[i + 1]), "forced_without": per_forced[i],
                "forced_with": per_forced[i + 1],
            })
    table = pd.DataFrame(rows)
    table.attrs["cost"] = {
        "seconds": round(seconds, 2),
        "seconds_per_trace": round(seconds / len(items), 2),
        "rollouts": len(jobs),
        "forced": len(forced),
        "unparsed": sum(a == NONE for a in answers.values()),
        "new_tokens": new_tokens,
        "n_traces": len(items),
        "n_steps": len(rows),
        "n_prefixes": sum(len(it["cuts"]) for it in items),
        "n_rollouts": n_rollouts,
        "max_new_tokens": max_new_tokens,
    }
    return table


# --------------------------------------------------------------------------------------------
# which behaviours are anchors
# --------------------------------------------------------------------------------------------
UNLABELLED = "unlabelled"


def importance_by_label(
    table: pd.DataFrame,
    *,
    column: str = "importance",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean ``column`` of the steps with each behaviour label, with a bootstrap CI over traces.

    A step with several labels counts for each; steps with none form ``"unlabelled"``. Columns:
    ``label``, ``n_steps``, ``n_traces``, ``mean``, ``ci_low``, ``ci_high``, ``mean_rest`` (the
    other steps), ``diff`` (mean − mean_rest) with ``diff_ci_low`` / ``diff_ci_high``. The
    bootstrap resamples whole traces (steps of one trace are not independent); NaN where a label
    has no step. Rows follow :data:`psylens.saes.LABELS`, then ``"unlabelled"``.

    Footgun: with a label on steps of only a few traces (fewer than ~10) the bootstrap interval is
    too narrow — it cannot see the variation between traces it never drew; check ``n_traces``.
    """
    import pandas as pd

    from psylens.saes.labels import LABELS

    for c in ("trace_id", "labels", column):
        if c not in table.columns:
            raise ValueError(f"the table has no column {c!r} (columns: {list(table.columns)}); give step_importance's table")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tids = table["trace_id"].astype(str).to_numpy()
    uniq, inv = np.unique(tids, return_inverse=True)
    vals = table[column].to_numpy(dtype=float)
    ok = np.isfinite(vals)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=n_boot).astype(float)  # [B, T]
    alpha = (1 - level) / 2
    label_sets = [set(x) for x in table["labels"]]

    def per_trace(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = mask & ok
        s = np.bincount(inv, weights=np.where(m, vals, 0.0), minlength=len(uniq))
        c = np.bincount(inv, weights=m.astype(float), minlength=len(uniq))
        return s, c

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den

    rows = []
    for lab in (*LABELS, UNLABELLED):
        mask = np.array([(lab in ls) if lab != UNLABELLED else not ls for ls in label_sets], dtype=bool)
        s, c = per_trace(mask)
        rs, rc = per_trace(~mask)
        mean = ratio(s.sum(), c.sum())
        rest = ratio(rs.sum(), rc.sum())
        bm, br = ratio(w @ s, w @ c), ratio(w @ rs, w @ rc)
        bd = bm - br

        def ci(x: np.ndarray) -> tuple[float, float]:
            x = x[np.isfinite(x)]
            if len(x) == 0:
                return float("nan"), float("nan")
            return float(np.quantile(x, alpha)), float(np.quantile(x, 1 - alpha))

        lo, hi = ci(bm) if c.sum() else (float("nan"), float("nan"))
        dlo, dhi = ci(bd) if c.sum() and rc.sum() else (float("nan"), float("nan"))
        rows.append({"label": lab, "n_steps": int((mask & ok).sum()), "n_traces": int((c > 0).sum()),
                     "mean": float(mean), "ci_low": lo, "ci_high": hi, "mean_rest": float(rest),
                     "diff": float(mean - rest), "diff_ci_low": dlo, "diff_ci_high": dhi})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# features vs importance
# --------------------------------------------------------------------------------------------
def _spearman_columns(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of every column of ``z`` [n, f] with ``y`` [n] (average ranks; NaN for a constant column)."""
    from scipy.stats import rankdata

    rz = rankdata(z, axis=0)
    ry = rankdata(y)
    rz = rz - rz.mean(0)
    ry = ry - ry.mean()
    den = np.sqrt((rz**2).sum(0) * (ry**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rz * ry[:, None]).sum(0) / den
    r[den == 0] = np.nan
    return r


def feature_importance_correlation(
    z: Float[Tensor, "n_steps f"] | np.ndarray,
    importance: Float[Tensor, " n_steps"] | np.ndarray | Sequence[float],
    *,
    top: int = 10,
    min_active: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Spearman correlation between each SAE feature's step activations and the steps' importance.

    ``z``: ``[n_steps, f]`` latent activations of the steps (rows aligned with ``importance``).
    Features active (> 0) on fewer than ``min_active`` steps are not tested (NaN). The control is
    the same correlation with ``importance`` shuffled among the steps (seeded): its largest
    ``|ρ|`` is how high a correlation gets by chance with this many steps and features.

    Returns ``{"n_steps", "n_features", "n_tested", "spearman" [f] (NaN = not tested),
    "control_spearman" [f], "max_abs_spearman", "control_max_abs_spearman", "mean_abs_spearman",
    "control_mean_abs_spearman", "top": [{"feature", "spearman", "p_value", "control_spearman",
    "n_active"}, ...] by |ρ|, "control": description}``. ``p_value`` is the two-sided t
    approximation, uncorrected for the number of features.
    """
    from scipy.stats import t as t_dist

    Z = z.detach().float().cpu().numpy() if isinstance(z, Tensor) else np.asarray(z, dtype=np.float64)
    y = importance.detach().float().cpu().numpy() if isinstance(importance, Tensor) else np.asarray(importance, dtype=np.float64)
    if Z.ndim != 2:
        raise ValueError(f"z must be [n_steps, n_features], got shape {Z.shape}")
    if y.ndim != 1 or y.shape[0] != Z.shape[0]:
        raise ValueError(f"{Z.shape[0]} rows of features but importance has shape {y.shape}; give one importance per step")
    keep = np.isfinite(y)
    Z, y = Z[keep], y[keep]
    n, f = Z.shape
    if n < 3:
        raise ValueError(f"need at least 3 steps with a finite importance to correlate, got {n}")
    n_active = (Z > 0).sum(0)
    tested = n_active >= min_active
    rho = np.full(f, np.nan)
    ctrl = np.full(f, np.nan)
    if tested.any():
        rho[tested] = _spearman_columns(Z[:, tested], y)
        ctrl[tested] = _spearman_columns(Z[:, tested], np.random.default_rng(seed).permutation(y))

    def pval(r: float) -> float:
        if not np.isfinite(r):
            return float("nan")
        if abs(r) >= 1:
            return 0.0
        tt = r * math.sqrt((n - 2) / (1 - r * r))
        return float(2 * t_dist.sf(abs(tt), n - 2))

    order = [int(i) for i in np.argsort(-np.nan_to_num(np.abs(rho), nan=-1.0)) if np.isfinite(rho[i])][:top]

    def nanmax_abs(x: np.ndarray) -> float | None:
        x = x[np.isfinite(x)]
        return float(np.abs(x).max()) if len(x) else None

    def nanmean_abs(x: np.ndarray) -> float | None:
        x = x[np.isfinite(x)]
        return float(np.abs(x).mean()) if len(x) else None

    return {
        "n_steps": int(n),
        "n_features": int(f),
        "n_tested": int(tested.sum()),
        "min_active": int(min_active),
        "spearman": [None if not np.isfinite(r) else float(r) for r in rho],
        "control_spearman": [None if not np.isfinite(r) else float(r) for r in ctrl],
        "max_abs_spearman": nanmax_abs(rho),
        "control_max_abs_spearman": nanmax_abs(ctrl),
        "mean_abs_spearman": nanmean_abs(rho),
        "control_mean_abs_spearman": nanmean_abs(ctrl),
        "top": [{"feature": i, "spearman": float(rho[i]), "p_value": pval(float(rho[i])),
                 "control_spearman": float(ctrl[i]), "n_active": int(n_active[i])} for i in order],
        "control": "the same Spearman correlation with the importances shuffled among the steps (seeded)",
    }


# --------------------------------------------------------------------------------------------
# the run step: RUN/saes/anchors.parquet + anchors.json
# --------------------------------------------------------------------------------------------
def _sae_step_features(model: Model, folder: Path, traces: list[Mapping[str, Any]], ids: list[str],
                       table: pd.DataFrame, mode: str, progress: bool) -> np.ndarray:
    """``[n_rows, d_sae]``: the SAE's latents of every row of ``table`` (same steps, same order)."""
    import json

    from psylens.saes import artifacts as art
    from psylens.saes.steps import step_activations
    from psylens.saes.train import encode, load_sae

    info = json.loads((folder / art.STEP_SAE).read_text())
    if info.get("pooling") == "tokens":
        raise ValueError(f"SAE {folder.name!r} was trained on tokens; step importance needs a step SAE (--pooling delimiter|mean)")
    sae = load_sae(folder)
    acts, index = step_activations(model, traces, site=info["site"], layer=int(info["layer"]),
                                   pooling=info.get("pooling", "delimiter"), mode=mode, progress=progress)
    z, _ = encode(sae, acts)
    row_of = {(ids[int(p)], int(s)): r for r, (p, s) in enumerate(index.tolist())}
    missing = [(t, s) for t, s in zip(table["trace_id"], table["step"]) if (t, int(s)) not in row_of]
    if missing:
        raise ValueError(f"{len(missing)} steps have no activation row (first {missing[0]}); the segmentation differs")
    return z.numpy()[[row_of[(t, int(s))] for t, s in zip(table["trace_id"], table["step"])]]


def run_anchors(
    run: Any,
    *,
    n_rollouts: int = 4,
    max_new_tokens: int = 48,
    temperature: float = 0.7,
    seed: int = 0,
    max_traces: int | None = 6,
    name: str | None = None,
    model: Any = None,
    mode: str | None = None,
    batch_size: int = 16,
    force_answer: bool = True,
    progress: bool = True,
    device: str = "auto",
    dtype: str | None = None,
    device_map: str | None = None,
) -> dict[str, Any]:
    """``psylens sae anchors`` as a function: step importance on a run's traces → ``RUN/saes/anchors.parquet``
    and ``RUN/saes/anchors.json``; returns the summary (the JSON).

    ``name``: an SAE of the run (``RUN/saes/<name>``): its features' step activations are
    correlated with the importances; the steps are then cut with the SAE's segmentation (a
    different ``mode`` raises). ``model``: a loaded ``Model``, a spec, or ``None`` (the run's model), loaded with
    ``device``, ``dtype`` and ``device_map`` (:func:`psylens.load_model`'s).
    Recorded as step ``sae-anchors`` (a re-run replaces it).
    """
    from psylens.runs import Run, open_run
    from psylens.saes import artifacts as art
    from psylens.saes.pipeline import _LazyModel, _model_spec
    from psylens.saes.traces import read_traces

    r = run if isinstance(run, Run) else open_run(run)
    if not r.has(art.TRACES):
        raise ValueError(f"run {str(r.path)!r} has no {art.TRACES}; generate traces first: psylens traces --out {r.path}")
    folder = None
    if name is not None:
        folder = r.file(art.sae_dir(name))
        if not (folder / art.STEP_SAE).is_file():
            have = sorted(p.name for p in r.file(art.DIR).glob("*") if (p / art.STEP_SAE).is_file()) if r.has(art.DIR) else []
            raise ValueError(f"no SAE {name!r} in {str(r.path)!r} (SAEs there: {have or 'none'}); train one with `psylens sae train`")
        seg = r.read_json(f"{art.sae_dir(name)}/{art.STEP_SAE}").get("segmentation", "sentence")
        if mode is not None and mode != seg:
            raise ValueError(f"SAE {name!r} was trained on {seg} steps but mode={mode!r}; drop the mode or use {seg!r}")
        mode = seg
    mode = mode or "sentence"
    spec = _model_spec(r, model)
    lazy = _LazyModel(model, spec, device=device, dtype=dtype, device_map=device_map)
    traces = read_traces(r.path)
    config = {"n_rollouts": n_rollouts, "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed,
              "max_traces": max_traces, "sae": name, "mode": mode, "batch_size": batch_size,
              "force_answer": force_answer}
    with r.step("sae-anchors", config) as step:
        m = lazy.get()
        table = step_importance(m, traces, n_rollouts=n_rollouts, max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=seed, max_traces=max_traces, progress=progress,
                                mode=mode, batch_size=batch_size, force_answer=force_answer)
        cost = dict(table.attrs.get("cost", {}))
        by_label = importance_by_label(table, seed=seed)
        features = None
        if folder is not None:
            scored = set(table["trace_id"])
            used = [(str(t.get("id", i)), t) for i, t in enumerate(traces) if str(t.get("id", i)) in scored]
            z = _sae_step_features(m, folder, [t for _, t in used], [i for i, _ in used], table, mode, progress)
            features = {"sae": name, **feature_importance_correlation(z, table["importance"].to_numpy(), seed=seed)}
            features.pop("spearman")
            features.pop("control_spearman")
        ranked = by_label[by_label["n_steps"] > 0].sort_values("mean", ascending=False)
        top = table.sort_values("importance", ascending=False).head(10)
        summary = {
            "schema_version": art.SCHEMA_VERSION,
            "model": spec,
            "config": config,
            "definition": "importance = TV(P_with, P_without) − mean TV over splits of the pooled answers "
                          "(P_with: rollouts from the prefix including the step; P_without: from the prefix "
                          "before it); see psylens.saes.anchors",
            "n_traces": int(table["trace_id"].nunique()),
            "n_steps": int(len(table)),
            "mean_importance": float(table["importance"].mean()),
            "cost": cost,
            "by_label": by_label.to_dict(orient="records"),
            "anchors": [x for x in ranked["label"].tolist()],
            "top_steps": top[["trace_id", "step", "text", "labels", "importance", "p_value", "answers_without",
                              "answers_with"]].to_dict(orient="records"),
            "features": features,
        }
        table.attrs = {}
        r.write_table(art.ANCHORS, table)
        r.write_json(art.ANCHORS_SUMMARY, summary, nan="null")
        step.output(art.ANCHORS)
        step.output(art.ANCHORS_SUMMARY)
        step.note(n_traces=summary["n_traces"], n_steps=summary["n_steps"], rollouts=cost.get("rollouts"),
                  seconds_per_trace=cost.get("seconds_per_trace"),
                  anchors=summary["anchors"][:3])
    return summary
