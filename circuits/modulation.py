"""Circuit modulation as control: scale the circuit's units while generating, judged beside steering and prompting.

Three ways to make the model express emotion ``e``, each at a few strengths:

- ``circuit``: ``e``'s :class:`~psylens.circuits.circuit.Circuit` changed at every position (prompt and
  generated tokens), by ``ModulationConfig.circuit_op``: ``"scale"`` (default) multiplies every unit by a
  factor (``factors``); ``"shift"`` adds a multiple (``shift_factors``) of each unit's own emotion contrast
  (:func:`psylens.circuits.signal.unit_contrast`: the unit's mean on ``e``'s stimuli minus the other emotions'
  stimuli of the same scenarios, from the discovery scenarios). Scaling amplifies what the units already write
  on a text, so it adds little to a neutral prompt; shifting writes the emotion's unit-level difference into
  any prompt — activation addition restricted to the circuit's units;
- ``steering``: ``e``'s unit direction × ``scale`` × the read-out layer's mean residual norm added to
  ``resid_post`` at the read-out layer (as :func:`psylens.validation.gates.read_back` steers; the norm is
  the plain, centred or median one, ``ModulationConfig.scale_reference``);
- ``prompting``: the system prompt ``"Always reply in {emotion}."`` (one strength);
- ``random`` (the control, ``n_random`` draws): size-matched random units of the circuit's layers
  (:func:`~psylens.circuits.ablation.random_like`) changed the same way at the circuit's chosen strength — a
  shifted random unit gets its own contrast. Never ``chosen``; the summary reports their mean.

Judges (the validation suite's measures, run on the same prompts for every method):

- ``feels_shift`` / ``row_win``: the "… I feel" next-token log-probability shift of each emotion's words
  (method minus none, mean over contexts); ``feels_shift`` is ``e``'s shift minus the mean shift of the
  others' words, ``row_win`` whether ``e``'s words rise most (the ``feels_matrix`` row);
- ``read_back_win``: share of prompts whose greedy generation, re-read by the unmodified model after the
  *plain* prompt, projects higher on ``e``'s direction at the read-out layer than the unmodified
  generation (Wilson 95% interval beside it);
- ``lexicon_hit_rate``: share of generations whose NRC-lexicon emotion is ``e`` (a text judge);
  ``judge_<name>``: the same share under each further text judge passed (``judges=``: e.g. the probe or
  LLM judge of :mod:`psylens.steering.judges`) — text judges corroborate, the model-internal measures above decide;
- ``fluency``: mean log-probability per generated token under the unmodified model after the plain prompt.

Equal fluency (``ModulationConfig.fluency``). ``"relative"`` (default) is the steering sweep's criterion
(:mod:`psylens.steering.sweep`, issue #10 §3): a method's texts at one strength are fluent when their
perplexity ratio (to the unmodified greedy texts, under the unmodified model after the plain prompt) is at
most that of the model's own unmodified text sampled at T=1 on the same prompts (``n_reference`` draws,
averaged), and their distinct-2 and zlib ratio are at least that text's (columns ``perplexity_ratio``,
``distinct_2``, ``zlib_ratio``, ``n_fluency_failed``; the reference in ``df.attrs["fluency_reference"]``).
``"drop"``: mean log-prob per token at most ``max_fluency_drop`` nats below the unmodified text's.
Per method the strength kept (``chosen``) is the one with the best ``read_back_win`` (then ``feels_shift``,
then the smaller strength) among the fluent ones; when none is fluent, the one failing the fewest checks
(then the best read-back), marked ``fluent`` false — reported, never hidden. Methods are compared at their
chosen strengths.

Paired intervals (:func:`paired_vs`): every method is judged on the same prompts and contexts, so the
per-prompt read-back wins (``read_back_wins``) and the per-context row margins (``feels_margins``) are
kept as list columns, and ``paired_vs(df, "circuit", "steering")`` gives the paired differences
(circuit minus steering, bootstrap over prompts / contexts) at the chosen strengths.

Footgun: generation is greedy; the hooks live only inside each call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from psylens.circuits.circuit import Circuit
from psylens.circuits.signal import Baseline
from psylens.interventions import Intervention
from psylens.models import prompt_special_tokens
from psylens.validation.gates import greedy_new_ids

__all__ = ["ModulationConfig", "modulation", "circuit_interventions", "choose", "paired_vs", "METHODS", "FLUENCY",
           "CIRCUIT_OPS"]

METHODS = ("circuit", "steering", "prompting")
FLUENCY = ("relative", "relative_greedy", "drop")
CIRCUIT_OPS = ("scale", "shift")


@dataclass(frozen=True)
class ModulationConfig:
    """Strengths and budgets of :func:`modulation`.

    ``fluency``: ``"relative"`` (the steering sweep's criterion against ``n_reference`` T=1 draws of the
    unmodified model), ``"relative_greedy"`` (the sweep's option of that name: perplexity as ``relative``,
    distinct-2 and zlib ratio against the unmodified model's own greedy text) or ``"drop"`` (mean log-prob per
    token at most ``max_fluency_drop`` nats below the unmodified text's). ``seed``: the reference's sampling and the paired bootstrap. Strengths:
    ``circuit_op``: how the circuit is modulated (:data:`CIRCUIT_OPS`): ``"scale"`` multiplies its units by each
    of ``factors``; ``"shift"`` adds each of ``shift_factors`` × the units' emotion contrast. ``steer_scales``
    are multiples of the read-out layer's mean residual norm (the sweep's grid and beyond), so each method has
    weak strengths that can pass the criterion.
    ``n_random``: random unit sets (size-matched per layer) judged at the circuit's chosen strength, the control
    (0: none). ``scale_reference``: which norm ``steer_scales`` multiply
    (:data:`psylens.steering.sweep.SCALE_REFERENCES`):
    ``"norm"`` (default), the mean per-token norm; ``"centred"``, the mean per-token norm after subtracting the
    mean token vector; ``"median"``, √d × the median dimension's root-mean-square (for models with massive
    activations such as Gemma-3; see
    :func:`psylens.steering.sweep.residual_norms`).
    """

    factors: tuple[float, ...] = (1.5, 2.0, 4.0)
    circuit_op: str = "scale"
    shift_factors: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    steer_scales: tuple[float, ...] = (0.1, 0.15, 0.2, 0.25, 0.5)  # the sweep's grid (0.1–0.2) and beyond
    max_new_tokens: int = 24
    max_fluency_drop: float = 1.0
    batch_size: int = 16
    fluency: str = "relative"
    n_reference: int = 3
    seed: int = 0
    scale_reference: str = "norm"
    n_random: int = 3

    def __post_init__(self) -> None:
        from psylens.steering.sweep import check_scale_reference

        check_scale_reference(self.scale_reference, "scale_reference")
        object.__setattr__(self, "factors", tuple(float(f) for f in self.factors))
        object.__setattr__(self, "steer_scales", tuple(float(s) for s in self.steer_scales))
        object.__setattr__(self, "shift_factors", tuple(float(s) for s in self.shift_factors))
        if not self.factors or not self.steer_scales or not self.shift_factors:
            raise ValueError("factors, shift_factors and steer_scales need at least one strength each")
        if self.circuit_op not in CIRCUIT_OPS:
            raise ValueError(f"circuit_op {self.circuit_op!r} is not one of {CIRCUIT_OPS}: 'scale' (multiply the circuit's "
                             "units by each of factors) or 'shift' (add shift_factors × each unit's emotion contrast)")
        bad = [x for x in (*self.factors, *self.shift_factors, *self.steer_scales) if not math.isfinite(x)]
        if bad:
            raise ValueError(f"strengths must be finite numbers, got {bad}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        if self.max_fluency_drop < 0:
            raise ValueError(f"max_fluency_drop must be non-negative (nats per token), got {self.max_fluency_drop}")
        if self.fluency not in FLUENCY:
            raise ValueError(f"fluency {self.fluency!r} is not one of {FLUENCY}: 'relative' (the steering sweep's criterion: "
                             "perplexity ratio, distinct-2 and zlib ratio no worse than the model's own T=1 text), "
                             "'relative_greedy' (diversity against the model's own greedy text instead) or 'drop' "
                             "(log-prob per token at most max_fluency_drop below the unmodified text's)")
        if isinstance(self.n_random, bool) or not isinstance(self.n_random, int) or self.n_random < 0:
            raise ValueError(f"n_random must be a non-negative integer (random unit sets judged at the circuit's chosen "
                             f"strength; 0 = none), got {self.n_random!r}")
        if self.n_reference < 1:
            raise ValueError(f"n_reference must be at least 1 (T=1 draws of the unmodified model), got {self.n_reference}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def circuit_interventions(circuit: Circuit, factor: float, shift: Baseline | None = None) -> list[Intervention]:
    """The circuit's units at every position (one intervention per site and layer): scaled by ``factor``, or, with
    ``shift`` (per-unit values, e.g. :func:`~psylens.circuits.signal.unit_contrast`), ``factor × shift`` added —
    ``[n_units, d_head]`` per layer's heads, ``[n_units]`` per layer's neurons."""
    out = []
    for (site, layer), idx in sorted(circuit.units.by_site().items()):
        if shift is None:
            out.append(Intervention(site, layer, "scale", units=tuple(idx), value=float(factor)))
            continue
        table = shift.heads if site == "head_out" else shift.neurons
        if layer >= table.shape[0] or max(idx) >= table.shape[1]:
            raise ValueError(f"the shift has {table.shape[0]} layers × {table.shape[1]} units of {site}; the circuit "
                             f"needs layer {layer}, unit {max(idx)} — compute it on the circuit's model")
        value = float(factor) * table[layer, list(idx)].float()
        out.append(Intervention(site, layer, "add", units=tuple(idx), value=value))
    return out


def _generate(model: Any, formatted: Sequence[str], ivs: Sequence[Intervention], max_new_tokens: int,
              batch_size: int) -> list[list[int]]:
    tok = model.tokenizer
    old = tok.padding_side
    tok.padding_side = "left"
    outs: list[list[int]] = []
    try:
        for s in range(0, len(formatted), batch_size):
            enc = tok(list(formatted[s : s + batch_size]), return_tensors="pt", padding=True,
                      add_special_tokens=prompt_special_tokens(model)).to(model.device)
            outs.extend(greedy_new_ids(model, enc, ivs, max_new_tokens))
    finally:
        tok.padding_side = old
    return outs


def _text_stats(model: Any, prompts: Sequence[str], texts: Sequence[str], batch_size: int) -> dict[str, float]:
    """``fluency`` (mean log-prob per token), ``nll`` and ``tokens`` (for perplexities), ``distinct_2``, ``zlib_ratio``."""
    from psylens.steering.metrics import distinct_n, token_nll, zlib_ratio

    keep = [i for i, t in enumerate(texts) if t.strip()]
    if not keep:
        return {"fluency": float("-inf"), "nll": float("nan"), "tokens": 0.0, "distinct_2": float("nan"),
                "zlib_ratio": float("nan")}
    nll, n = token_nll(model, [prompts[i] for i in keep], [texts[i] for i in keep], batch_size=batch_size)
    tot, cnt = float(nll.sum()), float(n.sum())
    return {"fluency": -tot / max(cnt, 1.0), "nll": tot, "tokens": cnt, "distinct_2": float(distinct_n(list(texts), 2)),
            "zlib_ratio": float(zlib_ratio(list(texts)))}


def _ppl(stats: Mapping[str, float]) -> float:
    return math.exp(stats["nll"] / stats["tokens"]) if stats["tokens"] > 0 and math.isfinite(stats["nll"]) else float("nan")


def choose(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``chosen`` set: ``none``, and per method of :data:`METHODS` its strength of equal fluency.

    Among the method's ``fluent`` rows, the best ``read_back_win``, then ``feels_shift``, then the smaller
    ``strength``; when none is fluent, the fewest ``n_fluency_failed`` checks first (then the same order).
    """
    out = df.copy()
    out["chosen"] = out.method == "none"
    failed = out["n_fluency_failed"] if "n_fluency_failed" in out else (~out["fluent"].astype(bool)).astype(int)
    for m in METHODS:
        sub = out[out.method == m].assign(_failed=failed[out.method == m])
        if sub.empty:
            continue
        ok = sub[sub.fluent.astype(bool)]
        pool, keys, asc = (ok, [], []) if len(ok) else (sub, ["_failed"], [True])
        pick = pool.sort_values(keys + ["read_back_win", "feels_shift", "strength"],
                                ascending=asc + [False, False, True], kind="stable").index[0]
        out.loc[pick, "chosen"] = True
    return out


def paired_vs(df: pd.DataFrame, a: str = "circuit", b: str = "steering", *, seed: int = 0) -> dict[str, Any]:
    """``a`` minus ``b`` at their ``chosen`` strengths, paired over the same items (one emotion's table).

    ``read_back_win``: per-prompt wins (:func:`psylens.stats.paired_diff_ci` over prompts); ``feels_shift``:
    per-context row margins (over contexts); ``row_win``: the difference of the two verdicts (-1, 0, 1);
    ``equal_fluency``: both chosen strengths fluent. ``{diff, ci95, beats, n}`` per measure.
    """
    from psylens.stats import paired_diff_ci

    rows = {}
    for m in (a, b):
        sel = df[(df.method == m) & df.chosen.astype(bool)]
        if len(sel) != 1:
            raise ValueError(f"the modulation table has {len(sel)} chosen rows of method {m!r}; need exactly one "
                             f"(run choose(df) first; methods present: {sorted(set(df.method))})")
        rows[m] = sel.iloc[0]
    ra, rb = rows[a], rows[b]
    out: dict[str, Any] = {"a": a, "b": b, "strength_a": float(ra.strength), "strength_b": float(rb.strength)}
    for measure, col in (("read_back_win", "read_back_wins"), ("feels_shift", "feels_margins")):
        out[measure] = paired_diff_ci(np.asarray(ra[col], float), np.asarray(rb[col], float), seed=seed).to_dict()
    out["row_win"] = int(bool(ra.row_win)) - int(bool(rb.row_win))
    out["equal_fluency"] = bool(ra.fluent) and bool(rb.fluent)
    return out


def modulation(
    model: Any,
    circuit: Circuit,
    direction: Tensor,
    prompts: Sequence[str],
    *,
    emotions: Sequence[str],
    words: Mapping[str, Sequence[str]],
    contexts: Sequence[str],
    config: ModulationConfig | None = None,
    shift: Baseline | None = None,
    judges: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Rows of :data:`psylens.circuits.artifacts.MODULATION_COLUMNS` for ``circuit.emotion``: ``none``, then
    each method at each strength (see the module doc); then ``perplexity_ratio``, ``distinct_2``,
    ``zlib_ratio``, ``read_back_wins`` (per prompt), ``feels_margins`` (per context), ``n_fluency_failed``,
    ``fluent`` and ``chosen``; last, ``n_random`` ``random`` rows (the control, at the circuit's chosen strength,
    never chosen). ``df.attrs``: ``fluency_criterion``, ``fluency_reference``, ``scale_reference``
    and ``residual_norm`` (the norm the steering strengths multiply), ``circuit_op``.

    ``shift``: per-unit values the ``"shift"`` circuit op adds (needed then, e.g.
    :func:`~psylens.circuits.signal.unit_contrast` of the emotion on its discovery stimuli). ``judges``: more
    text judges beside the NRC lexicon (``{name: judge}``, :class:`psylens.steering.judges.Judge`; e.g.
    ``make_judge("probe", model)``), each adding a column ``judge_<name>``: the share of generations it
    names ``e``. They score the texts after generation, with no intervention attached."""
    from psylens.stats import wilson_ci
    from psylens.steering.expression import SYSTEM_TEMPLATE
    from psylens.steering.judges import LexiconJudge, success_rate
    from psylens.steering.sweep import residual_norms
    from psylens.validation.gates import _reread, _word_logprobs, feel_prompt, word_token_ids

    cfg = config or ModulationConfig()
    extra_judges = dict(judges or {})
    bad = [k for k, j in extra_judges.items() if not str(k).isidentifier() or not callable(getattr(j, "score", None))]
    if bad:
        raise ValueError(f"judges must map plain names (letters, digits, _) to objects with score(texts) -> [n, 6]; "
                         f"got {bad}; build them with psylens.steering.judges.make_judge")
    e = circuit.emotion
    emos = list(emotions)
    if e not in emos:
        raise ValueError(f"the circuit's emotion {e!r} is not among the judged emotions {emos}")
    if not prompts or not contexts:
        raise ValueError("modulation needs prompts (to generate from) and '… I feel' contexts")
    if cfg.circuit_op == "shift" and shift is None:
        raise ValueError("circuit_op 'shift' adds each unit's emotion contrast: pass shift= (e.g. "
                         "psylens.circuits.signal.unit_contrast(model, discovery, contrast_weights(...), layers))")
    layer = circuit.readout_layer
    v = direction.detach().float()
    plain = [model.format_prompt(p) for p in prompts]
    system = SYSTEM_TEMPLATE.format(emotion=e)
    prompted = [model.format_prompt(p, system_prompt=system) for p in prompts]
    feel = [feel_prompt(c) for c in contexts]
    ids = word_token_ids(model.tokenizer, {x: words[x] for x in emos})
    token_ids = [ids[x] for x in emos]
    norm = residual_norms(model, plain, [layer], reference=cfg.scale_reference)[layer]
    lp_none, _ = _word_logprobs(model, feel, token_ids, [], cfg.batch_size)
    gens_none = _generate(model, plain, [], cfg.max_new_tokens, cfg.batch_size)
    x_none = _reread(model, plain, gens_none, layer, cfg.batch_size).double() @ v.cpu().double()

    trials: list[tuple[str, float, list[Intervention], list[str], list[str]]] = [("none", 0.0, [], plain, feel)]
    strengths, unit_shift = (cfg.shift_factors, shift) if cfg.circuit_op == "shift" else (cfg.factors, None)
    trials += [("circuit", f, circuit_interventions(circuit, f, unit_shift), plain, feel) for f in strengths]
    trials += [("steering", s, [Intervention("resid_post", layer, "add", value=(s * norm * v))], plain, feel)
               for s in cfg.steer_scales]
    trials.append(("prompting", 1.0, [], prompted, [f"{system}\n{p}" for p in feel]))
    tok = model.tokenizer
    i = emos.index(e)
    others = [j for j in range(len(emos)) if j != i]
    state: dict[str, Any] = {}

    def judge(method: str, strength: float, ivs: Sequence[Intervention], fmt: Sequence[str],
              fprompts: Sequence[str]) -> dict[str, Any]:
        lp, _ = _word_logprobs(model, list(fprompts), token_ids, list(ivs), cfg.batch_size)
        shift_c = lp - lp_none  # [context, E]
        margins = (shift_c[:, i] - shift_c[:, others].mean(1)) if others else shift_c[:, i]  # [context]
        shift_e = shift_c.mean(0)  # [E]
        gens = gens_none if method == "none" else _generate(model, fmt, ivs, cfg.max_new_tokens, cfg.batch_size)
        texts = [tok.decode(g, skip_special_tokens=True) for g in gens]
        x = x_none if method == "none" else _reread(model, plain, gens, layer, cfg.batch_size).double() @ v.cpu().double()
        wins = np.nan_to_num((x > x_none).numpy().astype(float))
        lo, hi = wilson_ci(int(wins.sum()), len(wins))
        st = _text_stats(model, prompts, texts, cfg.batch_size)
        if method == "none":
            state["none"] = st
        ref = state.get("none")
        ppl_ratio = _ppl(st) / _ppl(ref) if ref and _ppl(ref) > 0 else float("nan")
        return {"emotion": e, "method": method, "strength": float(strength),
                "feels_shift": float(margins.mean()),
                # strictly the row's largest: a tie (no shift at all) is not a win
                "row_win": bool(method != "none" and shift_e[i] > (shift_e[others].max() if others else 0.0)),
                "read_back_win": float(wins.mean()), "read_back_win_ci_low": float(lo), "read_back_win_ci_high": float(hi),
                "fluency": st["fluency"],
                "lexicon_hit_rate": float(success_rate(judge_text.score(texts), e)), "n_prompts": len(prompts),
                "perplexity_ratio": float(ppl_ratio), "distinct_2": st["distinct_2"], "zlib_ratio": st["zlib_ratio"],
                "read_back_wins": [float(w) for w in wins], "feels_margins": [float(m) for m in margins],
                **{f"judge_{k}": float(success_rate(j.score(texts), e)) for k, j in extra_judges.items()}}

    from tqdm.auto import tqdm

    judge_text = LexiconJudge()
    rows = [judge(*t) for t in tqdm(trials, desc=f"modulation {e}", disable=not progress, leave=False)]
    df = pd.DataFrame(rows)
    stats_none = state["none"]
    if cfg.fluency in ("relative", "relative_greedy"):
        from psylens.steering.sweep import SweepConfig, _fluency_checks, _fluency_reference

        sweep_cfg = SweepConfig(max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, fluency=cfg.fluency)
        reference = _fluency_reference(model, plain, list(prompts), sweep_cfg, cfg.seed, _ppl(stats_none),
                                       draws=cfg.n_reference)
        none_row = df[df.method == "none"].iloc[0]
        reference["unsteered_greedy"] = {"distinct_2": float(none_row["distinct_2"]), "zlib_ratio": float(none_row["zlib_ratio"])}

        def failed(d: pd.DataFrame) -> list[int]:
            return [sum(not c for c in _fluency_checks(r, reference, sweep_cfg).values())
                    for r in d.to_dict(orient="records")]

        attrs_ref = {k: reference[k] for k in ("perplexity_ratio", "distinct_2", "zlib_ratio", "temperature", "draws",
                                               "n", "unsteered_greedy")}
    else:
        floor = float(df[df.method == "none"]["fluency"].iloc[0]) - cfg.max_fluency_drop

        def failed(d: pd.DataFrame) -> list[int]:
            return (d.fluency < floor).astype(int).tolist()

        attrs_ref = {"fluency_floor": floor}
    df["n_fluency_failed"] = failed(df)
    df["fluent"] = df.n_fluency_failed == 0
    df = choose(df)
    if cfg.n_random:
        # the control: size-matched random units of the same layers, changed the same way at the circuit's chosen
        # strength (a shifted random unit gets its own contrast)
        from psylens.circuits.ablation import random_like
        from psylens.circuits.signal import unit_widths

        _, n_heads, _, d_mlp = unit_widths(model)
        f = float(df[(df.method == "circuit") & df.chosen].strength.iloc[0])
        rnd = []
        for d in range(cfg.n_random):
            units = random_like(circuit.units, n_heads, d_mlp, seed=cfg.seed + 1 + d)
            rc = Circuit(e, "random", layer, heads=units.heads, neurons=units.neurons)
            rnd.append(judge("random", f, circuit_interventions(rc, f, unit_shift), plain, feel))
        extra = pd.DataFrame(rnd)
        extra["n_fluency_failed"] = failed(extra)
        extra["fluent"] = extra.n_fluency_failed == 0
        extra["chosen"] = False
        df = pd.concat([df, extra], ignore_index=True)
    df.attrs["fluency_reference"] = attrs_ref
    df.attrs["fluency_criterion"] = cfg.fluency
    df.attrs["scale_reference"] = cfg.scale_reference
    df.attrs["residual_norm"] = float(norm)
    df.attrs["circuit_op"] = cfg.circuit_op
    return df
