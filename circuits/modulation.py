"""Circuit modulation as control: scale the circuit's units while generating, judged beside steering and prompting.

Three ways to make the model express emotion ``e``, each at a few strengths:

- ``circuit``: every unit of ``e``'s :class:`~psylens.circuits.circuit.Circuit` multiplied by a factor
  (``op="scale"`` at every position, prompt and generated tokens);
- ``steering``: ``e``'s unit direction × ``scale`` × the read-out layer's mean residual norm added to
  ``resid_post`` at the read-out layer (as :func:`psylens.validation.gates.read_back` steers);
- ``prompting``: the system prompt ``"Always reply in {emotion}."`` (one strength).

Judges (the validation suite's measures, run on the same prompts for every method):

- ``feels_shift`` / ``row_win``: the "… I feel" next-token log-probability shift of each emotion's words
  (method minus none, mean over contexts); ``feels_shift`` is ``e``'s shift minus the mean shift of the
  others' words, ``row_win`` whether ``e``'s words rise most (the ``feels_matrix`` row);
- ``read_back_win``: share of prompts whose greedy generation, re-read by the unmodified model after the
  *plain* prompt, projects higher on ``e``'s direction at the read-out layer than the unmodified
  generation (Wilson 95% interval beside it);
- ``lexicon_hit_rate``: share of generations whose NRC-lexicon emotion is ``e`` (a text judge);
- ``fluency``: mean log-probability per generated token under the unmodified model after the plain prompt.

Equal fluency: per method, the strength kept (``chosen``) is the one with the best ``read_back_win``
among those whose fluency is at most ``max_fluency_drop`` nats/token below the unmodified text's
(``fluent``: whether any was); methods are compared at their chosen strengths.

Footgun: generation is greedy; the hooks live only inside each call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from psylens.circuits.circuit import Circuit
from psylens.interventions import Intervention
from psylens.validation.gates import greedy_new_ids

__all__ = ["ModulationConfig", "modulation", "circuit_interventions", "METHODS"]

METHODS = ("circuit", "steering", "prompting")


@dataclass(frozen=True)
class ModulationConfig:
    """Strengths and budgets of :func:`modulation`."""

    factors: tuple[float, ...] = (2.0, 4.0)
    steer_scales: tuple[float, ...] = (0.25, 0.5)
    max_new_tokens: int = 24
    max_fluency_drop: float = 1.0
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "factors", tuple(float(f) for f in self.factors))
        object.__setattr__(self, "steer_scales", tuple(float(s) for s in self.steer_scales))
        if not self.factors or not self.steer_scales:
            raise ValueError("factors and steer_scales need at least one strength each")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        if self.max_fluency_drop < 0:
            raise ValueError(f"max_fluency_drop must be non-negative (nats per token), got {self.max_fluency_drop}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def circuit_interventions(circuit: Circuit, factor: float) -> list[Intervention]:
    """The circuit's units scaled by ``factor`` at every position (one intervention per site and layer)."""
    return [Intervention(site, layer, "scale", units=tuple(idx), value=float(factor))
            for (site, layer), idx in sorted(circuit.units.by_site().items())]


def _generate(model: Any, formatted: Sequence[str], ivs: Sequence[Intervention], max_new_tokens: int,
              batch_size: int) -> list[list[int]]:
    tok = model.tokenizer
    old = tok.padding_side
    tok.padding_side = "left"
    outs: list[list[int]] = []
    try:
        for s in range(0, len(formatted), batch_size):
            enc = tok(list(formatted[s : s + batch_size]), return_tensors="pt", padding=True,
                      add_special_tokens=False).to(model.device)
            outs.extend(greedy_new_ids(model, enc, ivs, max_new_tokens))
    finally:
        tok.padding_side = old
    return outs


def _fluency(model: Any, prompts: Sequence[str], texts: Sequence[str], batch_size: int) -> float:
    from psylens.steering.metrics import token_nll

    keep = [i for i, t in enumerate(texts) if t.strip()]
    if not keep:
        return float("-inf")
    nll, n = token_nll(model, [prompts[i] for i in keep], [texts[i] for i in keep], batch_size=batch_size)
    return float(-nll.sum() / n.sum().clamp(min=1))


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
) -> pd.DataFrame:
    """Rows of :data:`psylens.circuits.artifacts.MODULATION_COLUMNS` (+ ``chosen``, ``fluent``) for
    ``circuit.emotion``: ``none``, then each method at each strength (see the module doc)."""
    from psylens.stats import wilson_ci
    from psylens.steering.expression import SYSTEM_TEMPLATE
    from psylens.steering.judges import LexiconJudge, success_rate
    from psylens.steering.sweep import residual_norms
    from psylens.validation.gates import _reread, _word_logprobs, feel_prompt, word_token_ids

    cfg = config or ModulationConfig()
    e = circuit.emotion
    emos = list(emotions)
    if e not in emos:
        raise ValueError(f"the circuit's emotion {e!r} is not among the judged emotions {emos}")
    if not prompts or not contexts:
        raise ValueError("modulation needs prompts (to generate from) and '… I feel' contexts")
    layer = circuit.readout_layer
    v = direction.detach().float()
    plain = [model.format_prompt(p) for p in prompts]
    system = SYSTEM_TEMPLATE.format(emotion=e)
    prompted = [model.format_prompt(p, system_prompt=system) for p in prompts]
    feel = [feel_prompt(c) for c in contexts]
    ids = word_token_ids(model.tokenizer, {x: words[x] for x in emos})
    token_ids = [ids[x] for x in emos]
    norm = residual_norms(model, plain, [layer])[layer]
    judge = LexiconJudge()
    lp_none, _ = _word_logprobs(model, feel, token_ids, [], cfg.batch_size)
    gens_none = _generate(model, plain, [], cfg.max_new_tokens, cfg.batch_size)
    x_none = _reread(model, plain, gens_none, layer, cfg.batch_size).double() @ v.double()

    trials: list[tuple[str, float, list[Intervention], list[str], list[str]]] = [("none", 0.0, [], plain, feel)]
    trials += [("circuit", f, circuit_interventions(circuit, f), plain, feel) for f in cfg.factors]
    trials += [("steering", s, [Intervention("resid_post", layer, "add", value=(s * norm * v))], plain, feel)
               for s in cfg.steer_scales]
    trials.append(("prompting", 1.0, [], prompted, [f"{system}\n{p}" for p in feel]))
    tok = model.tokenizer
    rows = []
    for method, strength, ivs, fmt, fprompts in trials:
        lp, _ = _word_logprobs(model, fprompts, token_ids, ivs, cfg.batch_size)
        shift = (lp - lp_none).mean(0)  # [E]
        i = emos.index(e)
        others = [j for j in range(len(emos)) if j != i]
        gens = gens_none if method == "none" else _generate(model, fmt, ivs, cfg.max_new_tokens, cfg.batch_size)
        texts = [tok.decode(g, skip_special_tokens=True) for g in gens]
        x = x_none if method == "none" else _reread(model, plain, gens, layer, cfg.batch_size).double() @ v.double()
        wins = np.nan_to_num((x > x_none).numpy().astype(float))
        k = int(wins.sum())
        lo, hi = wilson_ci(k, len(wins))
        scores = judge.score(texts)
        rows.append({"emotion": e, "method": method, "strength": float(strength),
                     "feels_shift": float(shift[i] - shift[others].mean()) if others else float(shift[i]),
                     "row_win": bool(int(torch.argmax(shift)) == i) if method != "none" else False,
                     "read_back_win": float(wins.mean()), "read_back_win_ci_low": float(lo), "read_back_win_ci_high": float(hi),
                     "fluency": _fluency(model, prompts, texts, cfg.batch_size),
                     "lexicon_hit_rate": float(success_rate(scores, e)), "n_prompts": len(prompts)})
    df = pd.DataFrame(rows)
    floor = float(df[df.method == "none"]["fluency"].iloc[0]) - cfg.max_fluency_drop
    df["chosen"] = df.method == "none"
    df["fluent"] = df.fluency >= floor
    for m in METHODS:
        sub = df[df.method == m]
        ok = sub[sub.fluent]
        pick = (ok if len(ok) else sub).sort_values(["read_back_win", "strength"], ascending=[False, True]).index[0]
        df.loc[pick, "chosen"] = True
    return df
