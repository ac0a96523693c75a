"""The validation gates: each returns ``{"value", "threshold", "control", "passed", ...details}`` and its tables.

Every gate is a function returning a :class:`GateResult` — a read-only mapping (``gate["value"]``)
over its JSON summary, with ``.tables`` (pandas DataFrames) holding the numbers behind it. Each puts a
control beside its value and a 95% interval beside every rate (:mod:`psylens.stats`).

========================  =========================================================  ========================================
gate                      value (passes when)                                         control
========================  =========================================================  ========================================
``feels_matrix``          gap, mean diagonal − off-diagonal shift (nats) of each      random directions of the same norm at
                          emotion's words after "…I feel" (≥ 2, with every row and    the same layer and scale (≥ 5 draws):
                          column won and each own shift ≥ 1.5 above random's)         the gap a draw gives its best emotion
``implicit_scenarios``    top-1 accuracy of held-out texts' projections (≥ 0.80 in    shuffled-label directions
                          every set; the value is the lowest set's)
``dose_response``         templates whose Spearman ρ(N, projection) has the           the same texts, levels shuffled
                          expected sign and |ρ| ≥ 0.7 (≥ 5 of 6)
``geometry``              PC1 valence AUROC (≥ 0.90; best of PC2–3 arousal AUROC       directions fitted on shuffled labels
                          ≥ 0.75; mean cosine of the six basic < 0.5)
``logit_lens``            emotions with ≥ 3 of their direction's top 30 tokens        a random direction per emotion
                          being their words (≥ 4 of 6)
``read_back``             win rate: steered text re-read projects higher than the     a random direction's text vs the
                          unsteered text (≥ 0.80, and ≥ 0.80 against the random)      unsteered one
========================  =========================================================  ========================================

Footguns: the steering gates (``feels_matrix``, ``read_back``) add hooks only inside their own
calls (``psylens.interventions.intervene``); the model is unchanged afterwards. Projections compare
texts only within one set (each set is centred on its own mean), never across sets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from psylens.interventions import Intervention, intervene, record
from psylens.models import prompt_special_tokens
from psylens.stats import bootstrap_ci, rate_ci, wilson_ci
from psylens.stimuli import EMOTIONS

if TYPE_CHECKING:
    from psylens.models import Model
    from psylens.probes import Directions
    from psylens.steering import SteeringVector

__all__ = [
    "GateResult",
    "feels_matrix",
    "implicit_scenarios",
    "dose_response",
    "geometry",
    "logit_lens",
    "read_back",
    "word_token_ids",
    "feel_prompt",
    "auroc",
    "spearman",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class GateResult(Mapping[str, Any]):
    """A gate's JSON summary (``gate["value"]``, ``gate["passed"]``, …) and the tables behind it."""

    name: str
    summary: Mapping[str, Any]
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.summary)

    def __len__(self) -> int:
        return len(self.summary)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.summary)


def _num(x: Any) -> float | None:
    """A float for JSON, ``None`` where undefined (NaN)."""
    if x is None:
        return None
    x = float(x)
    return None if not math.isfinite(x) else round(x, 6)


def _ci(lo_hi: tuple[float, float] | None) -> list[float] | None:
    return None if lo_hi is None else [_num(lo_hi[0]), _num(lo_hi[1])]  # type: ignore[list-item]


def _gate(name: str, value: float, threshold: float, control: float, passed: bool, tables: dict[str, pd.DataFrame],
          **details: Any) -> GateResult:
    summary = {"value": _num(value), "threshold": float(threshold), "control": _num(control), "passed": bool(passed),
               **details}
    return GateResult(name, summary, tables)


def _check_emotions(dirs: Directions, emotions: Sequence[str]) -> list[str]:
    emos = list(emotions)
    if len(emos) < 2:
        raise ValueError(f"a gate contrasts emotions: give at least two, got {emos}")
    missing = [e for e in emos if e not in dirs.emotions]
    if missing:
        raise ValueError(f"the directions have no {missing}; they have {list(dirs.emotions)}")
    return emos


def _on_host(t: Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def _host(directions: Directions | None) -> Directions | None:
    """``directions`` as the gates read them: on the CPU in float32 or float64.

    A user's directions may sit on an accelerator (``dirs.to("cuda")``) or in bfloat16; the gates compute on
    the host and move what they add to the model onto its device themselves.
    """
    v = getattr(directions, "vectors", None)
    if not isinstance(v, Tensor):  # None, or a stand-in that reads like Directions: used as it is
        return directions
    return directions if _on_host(v) else directions.to("cpu", torch.float32)


def _host_vectors(vectors: Mapping[str, SteeringVector] | None) -> dict[str, SteeringVector] | None:
    """Steering vectors on the CPU in float32 or float64 (each moved to the model's device when applied)."""
    if vectors is None:
        return None
    return {e: sv if not isinstance(getattr(sv, "vectors", None), Tensor) or _on_host(sv.vectors)
            else sv.to("cpu", torch.float32) for e, sv in vectors.items()}


def _unit_rows(dirs: Directions, emotions: Sequence[str], layer: int) -> Float[Tensor, "emotion d"]:
    return torch.stack([dirs[e, layer].float() for e in emotions])


def _check_vectors(model: Model, vectors: Mapping[str, SteeringVector], emotions: Sequence[str]) -> dict[str, SteeringVector]:
    """The steering vectors of ``emotions`` (add mode, this model's width), or a ``ValueError`` naming the problem."""
    missing = [e for e in emotions if e not in vectors]
    if missing:
        raise ValueError(f"vectors has no {missing}; it has {sorted(vectors)} — give one steering vector per emotion, "
                         "or vectors=None to steer with the directions at one layer")
    out = {}
    for e in emotions:
        sv = vectors[e]
        if getattr(sv, "mode", None) != "add":
            raise ValueError(f"the {e!r} steering vector has mode {getattr(sv, 'mode', None)!r}; the gates steer with add-mode vectors")
        if int(sv.d_model) != int(model.d_model):
            raise ValueError(f"the {e!r} steering vector has d_model {sv.d_model}, the model {model.d_model}: "
                             "it was made for another model")
        bad = [v for v in sv.layers if not 0 <= int(v) < int(model.n_layers)]
        if bad:
            raise ValueError(f"the {e!r} steering vector steers layers {bad}, outside the model's 0–{int(model.n_layers) - 1}")
        out[e] = sv
    return out


def _center_layer(sv: SteeringVector) -> int:
    """The layer a vector was picked at: ``meta["layer"]`` when recorded, else the middle of its layers."""
    v = dict(sv.meta).get("layer")
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and int(v) in sv.layers:
        return int(v)
    return int(sv.layers[len(sv.layers) // 2])


def _vector_info(picked: Mapping[str, SteeringVector], emotions: Sequence[str], *_: Any) -> dict[str, Any]:
    out = {}
    for e in emotions:
        sv = picked[e]
        meta = dict(sv.meta)
        scale = meta.get("scale")
        out[e] = {"layer": _center_layer(sv), "layers": [int(v) for v in sv.layers], "alpha": _num(sv.alpha),
                  "scale": _num(scale) if isinstance(scale, (int, float)) else None,
                  "norm": _num(float(sv.alpha) * float(sv.norms().max())), "source": meta.get("source")}
    return out


def _random_units(n: int, d: int, seed: int) -> Float[Tensor, "n d"]:
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, d, generator=g)
    return r / r.norm(dim=-1, keepdim=True)


# --------------------------------------------------------------------------------------------
# feels_matrix
# --------------------------------------------------------------------------------------------
def feel_prompt(context: str) -> str:
    """``context`` ending in "I feel" (appended as " I feel" when it does not already end so)."""
    c = context.rstrip()
    return c if c.lower().endswith("i feel") else f"{c} I feel"


def word_token_ids(tokenizer: Any, words: Mapping[str, Sequence[str]]) -> dict[str, list[int]]:
    """Per emotion, the distinct first tokens of ``" " + word`` — tokens two emotions share are dropped.

    The next-token probability of an emotion's words is the probability mass of these tokens.
    """
    first: dict[str, set[int]] = {}
    for e, ws in words.items():
        ids: set[int] = set()
        for w in ws:
            toks = tokenizer(" " + str(w).strip(), add_special_tokens=False)["input_ids"]
            if toks:
                ids.add(int(toks[0]))
        first[e] = ids
    out: dict[str, list[int]] = {}
    for e, ids in first.items():
        shared = set().union(*(first[o] for o in first if o != e)) if len(first) > 1 else set()
        keep = sorted(ids - shared)
        if not keep:
            raise ValueError(f"the words of {e!r} have no first token of their own (all shared with other emotions); "
                             "give each emotion distinctive words")
        out[e] = keep
    return out


def last_logits(hf: Any, **enc: Any) -> Tensor:
    """Next-token logits at the last position ``[batch, vocab]``, computing the unembedding there only
    (``logits_to_keep=1`` where the model's forward takes it — the same numbers, a fraction of the cost)."""
    import inspect

    try:
        takes = "logits_to_keep" in inspect.signature(hf.forward).parameters
    except (TypeError, ValueError):
        takes = False
    out = hf(**enc, logits_to_keep=1) if takes else hf(**enc)
    return out.logits[:, -1]


@torch.no_grad()
def _word_logprobs(
    model: Model, prompts: Sequence[str], token_ids: Sequence[Sequence[int]], ivs: Sequence[Intervention],
    batch_size: int, norm_layer: int | None = None, rows: list[Tensor] | None = None,
) -> tuple[Float[Tensor, "prompt emotion"], float | None]:
    """log P(next token ∈ each emotion's tokens) after each prompt, under ``ivs``; optionally the mean
    residual norm at ``norm_layer`` (first token and padding excluded). With ``norm_layer`` and a list
    ``rows``, the residual rows behind that norm (``[token, d_model]`` per batch, float32, CPU) are
    appended to it (for :func:`psylens.steering.sweep.reference_norm`)."""
    tok = model.tokenizer
    old = tok.padding_side
    tok.padding_side = "left"
    out: list[Tensor] = []
    norms: list[Tensor] = []
    try:
        for s in range(0, len(prompts), batch_size):
            enc = tok(list(prompts[s : s + batch_size]), return_tensors="pt", padding=True).to(model.device)
            with intervene(model.hf_model, list(ivs)):
                if norm_layer is not None:
                    with record(model.hf_model, ["resid_post"], [norm_layer]) as rec:
                        logits = last_logits(model.hf_model, **enc).float()
                    mask = enc["attention_mask"].bool().clone()
                    mask[torch.arange(mask.shape[0]), mask.float().argmax(dim=1)] = False
                    norms.append(rec["resid_post", norm_layer].float().norm(dim=-1)[mask].cpu())
                    if rows is not None:
                        rows.append(rec["resid_post", norm_layer].float()[mask].cpu())
                else:
                    logits = last_logits(model.hf_model, **enc).float()
            lp = torch.log_softmax(logits, dim=-1).cpu()
            out.append(torch.stack([torch.logsumexp(lp[:, list(ids)], dim=-1) for ids in token_ids], dim=1))
    finally:
        tok.padding_side = old
    mean_norm = float(torch.cat(norms).mean()) if norms else None
    return torch.cat(out), mean_norm


def feels_matrix(
    model: Model,
    directions: Directions,
    layer: int,
    *,
    words: Mapping[str, Sequence[str]],
    contexts: Sequence[str],
    emotions: Sequence[str] = EMOTIONS,
    alpha: float | None = None,
    scale: float = 0.5,
    n_random: int = 5,
    gap_threshold: float = 2.0,
    margin_threshold: float = 1.5,
    seed: int = 0,
    batch_size: int = 16,
    vectors: Mapping[str, SteeringVector] | None = None,
    scale_reference: str = "norm",
) -> GateResult:
    """Shift of each emotion's words' next-token log-probability after "…I feel", steered minus unsteered.

    Each emotion's unit direction at ``layer``, times ``alpha`` (default ``scale`` × the mean residual
    norm at ``layer`` over the prompts; with ``scale_reference="centred"`` or ``"median"`` × that
    reference norm over the same tokens, see :func:`psylens.steering.sweep.residual_norms`; the summary's
    ``residual_norm`` stays the plain one, ``scale_norm`` is the one multiplied), is added at every
    position (``resid_post``) through :func:`psylens.interventions.intervene`; the prompts are ``contexts`` ending in "I feel", as raw
    text. ``matrix[r, c]`` is the mean over contexts of the shift of emotion ``c``'s words under
    vector ``r``. Rows won: the vector's own emotion rises most; columns won: an emotion's words rise
    most under its own vector. Control: ``n_random`` random unit directions × ``alpha`` at the same
    layer; its number is the gap a random draw gives the emotion it moves most (mean over draws).

    Passes when every row and column is won, the gap is ≥ ``gap_threshold`` nats and each emotion's
    own shift exceeds the random draws' mean shift of its words by ≥ ``margin_threshold`` nats.

    ``vectors`` (emotion → :class:`~psylens.steering.SteeringVector`, e.g. the steering sweep's picked
    ``RUN/steering/vectors/<emotion>.safetensors``): each row steers with its emotion's vector as it is
    (its own layers and alpha) instead of ``directions`` × ``alpha`` at ``layer``; the control is then
    ``n_random`` draws of :meth:`~psylens.steering.SteeringVector.random_like` *per vector* (same
    layers, per-layer norms and alpha), and each emotion's own shift is compared with the draws made
    at its own vector's settings. ``directions`` then only names the emotions.
    """
    from psylens.steering.sweep import check_scale_reference, reference_norm

    check_scale_reference(scale_reference, "scale_reference")
    directions, vectors = _host(directions), _host_vectors(vectors)
    emos = _check_emotions(directions, emotions)
    if n_random < 5:
        raise ValueError(f"n_random must be at least 5 (a single random draw can move one emotion's words by over 1 nat), got {n_random}")
    missing = [e for e in emos if e not in words]
    if missing:
        raise ValueError(f"no feel words for {missing}; words has {sorted(words)}")
    if isinstance(contexts, str) or len(list(contexts)) < 1:
        raise ValueError("contexts must be a sequence of one or more neutral context strings (≥ 20 for the gate)")
    prompts = [feel_prompt(c) for c in contexts]
    ids = word_token_ids(model.tokenizer, {e: words[e] for e in emos})
    token_ids = [ids[e] for e in emos]
    picked = _check_vectors(model, vectors, emos) if vectors is not None else None
    by_scale = picked is None and alpha is None
    rows: list[Tensor] | None = [] if by_scale and scale_reference != "norm" else None
    base, mean_norm = _word_logprobs(model, prompts, token_ids, [], batch_size, norm_layer=layer, rows=rows)  # [P, E]
    # the norm `scale` multiplies: the plain mean norm, or the centred one over the same tokens
    scale_norm = mean_norm if rows is None else reference_norm(torch.cat(rows), scale_reference)

    def shifts_ivs(ivs: list[Intervention]) -> Tensor:
        steered, _ = _word_logprobs(model, prompts, token_ids, ivs, batch_size)
        return steered - base  # [P, E]

    if picked is None:
        a = float(alpha) if alpha is not None else float(scale) * float(scale_norm)  # type: ignore[arg-type]
        units = _unit_rows(directions, emos, layer)

        def shifts(u: Tensor) -> Tensor:
            return shifts_ivs([Intervention("resid_post", layer, "add", value=(a * u).to(model.dtype))])

        s_rpc = torch.stack([shifts(units[r]) for r in range(len(emos))])  # [R, P, C]
        rand = _random_units(n_random, units.shape[1], seed)
        r_kvpc = torch.stack([shifts(rand[k]) for k in range(n_random)]).unsqueeze(1)  # [K, 1, P, C]: shared draws
    else:
        from psylens.steering.apply import interventions_for

        s_rpc = torch.stack([shifts_ivs(interventions_for(picked[e])) for e in emos])  # [R, P, C]
        r_kvpc = torch.stack([
            torch.stack([shifts_ivs(interventions_for(picked[e].random_like(seed + 1000 * k + r)))
                         for r, e in enumerate(emos)])
            for k in range(n_random)
        ])  # [K, R, P, C]: draws at each vector's own layers, norms and alpha
    m = s_rpc.mean(1).double().numpy()  # [R, C]
    rm_kvc = r_kvpc.mean(2).double().numpy()  # [K, V, C] (V = 1: draws shared by every row)
    n = len(emos)
    eye = np.eye(n, dtype=bool)
    rows_won = int(sum(int(np.argmax(m[r]) == r) for r in range(n)))
    cols_won = int(sum(int(np.argmax(m[:, c]) == c) for c in range(n)))
    gap = float(m[eye].mean() - m[~eye].mean())
    per_ctx = s_rpc.double().numpy()  # [R, P, C]
    ctx_gap = np.array([per_ctx[:, p][eye].mean() - per_ctx[:, p][~eye].mean() for p in range(per_ctx.shape[1])])
    gap_ci = bootstrap_ci(ctx_gap, seed=seed) if len(ctx_gap) > 1 else None
    v_of = (lambda c: 0) if rm_kvc.shape[1] == 1 else (lambda c: c)
    # [C] random draws' mean shift of each emotion's words (at that emotion's own vector settings when picked)
    rand_mean = np.array([rm_kvc[:, v_of(c), c].mean() for c in range(n)])
    margin = np.diag(m) - rand_mean
    control = float(np.mean([row[row.argmax()] - np.delete(row, row.argmax()).mean()
                             for row in rm_kvc.reshape(-1, n)]))
    passed = rows_won == n and cols_won == n and gap >= gap_threshold and bool((margin >= margin_threshold).all())
    matrix = pd.DataFrame(
        [{"vector": emos[r], "words": emos[c], "shift": float(m[r, c]),
          "ci_lo": float(bootstrap_ci(per_ctx[r, :, c], seed=seed)[0]) if per_ctx.shape[1] > 1 else None,
          "ci_hi": float(bootstrap_ci(per_ctx[r, :, c], seed=seed)[1]) if per_ctx.shape[1] > 1 else None}
         for r in range(n) for c in range(n)]
    )
    if picked is None:
        random_tab = pd.DataFrame([{"draw": k, "words": emos[c], "shift": float(rm_kvc[k, 0, c])}
                                   for k in range(n_random) for c in range(n)])
    else:
        random_tab = pd.DataFrame([{"draw": k, "vector": emos[v], "words": emos[c], "shift": float(rm_kvc[k, v, c])}
                                   for k in range(n_random) for v in range(n) for c in range(n)])
    steering = ({"from": "layer", "layer": int(layer), "alpha": _num(a), "scale": None if alpha is not None else float(scale),
                 "scale_reference": scale_reference if by_scale else None}
                if picked is None else {"from": "vectors", "vectors": _vector_info(picked, emos, mean_norm)})
    return _gate(
        "feels_matrix", gap, gap_threshold, control, passed, {"matrix": matrix, "random": random_tab},
        unit="nats",
        rows_won=rows_won, cols_won=cols_won, n_emotions=n,
        rows_won_rate=_num(rows_won / n), rows_won_ci95=_ci(wilson_ci(rows_won, n)),
        cols_won_rate=_num(cols_won / n), cols_won_ci95=_ci(wilson_ci(cols_won, n)),
        gap_ci95=_ci(gap_ci),
        own_shift={e: _num(m[i, i]) for i, e in enumerate(emos)},
        random_mean_shift={e: _num(rand_mean[i]) for i, e in enumerate(emos)},
        own_minus_random={e: _num(margin[i]) for i, e in enumerate(emos)},
        margin_threshold=margin_threshold,
        control_mean_shift=_num(rm_kvc.mean()),
        layer=int(layer),
        alpha=_num(a) if picked is None else None, scale=(None if alpha is not None else float(scale)) if picked is None else None,
        steering=steering,
        residual_norm=_num(mean_norm), n_contexts=len(prompts), n_random=n_random,
        scale_reference=scale_reference if by_scale else None,
        scale_norm=_num(scale_norm) if by_scale else None,
        words={e: len(ids[e]) for e in emos},
        emotions=emos,
        control_kind=(f"{n_random} random unit directions × alpha at layer {layer}: the gap each gives the emotion it moves most"
                      if picked is None else
                      f"{n_random} random draws per vector (random_like: same layers, norms and alpha): the gap each "
                      "gives the emotion it moves most"),
    )


# --------------------------------------------------------------------------------------------
# implicit_scenarios
# --------------------------------------------------------------------------------------------
def _derangement(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    while True:
        p = rng.permutation(n)
        if n < 2 or not (p == np.arange(n)).any():
            return p


def _top1(x: Tensor, units: Tensor, sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xc = x.double().clone()
    for s in np.unique(sets):
        idx = torch.as_tensor(np.nonzero(sets == s)[0])
        xc[idx] = xc[idx] - xc[idx].mean(0, keepdim=True)  # each set centred on its own mean
    proj = (xc @ units.double().T).numpy()  # [n, E]
    return proj, proj.argmax(1)


def implicit_scenarios(
    directions: Directions,
    layer: int,
    acts: Float[Tensor, "n d"],
    labels: Sequence[str],
    *,
    sets: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    control: Directions | None = None,
    emotions: Sequence[str] = EMOTIONS,
    threshold: float = 0.8,
    texts: Sequence[str] | None = None,
    seed: int = 0,
) -> GateResult:
    """Top-1 accuracy of held-out texts' projections on the emotions' directions.

    ``acts``: each text's activation at ``layer`` (the same reading as the directions: for story
    directions the mean over tokens from the start offset). ``sets`` names each text's set (e.g.
    ``"stories"``, ``"emotions"``); each set is centred on its own mean and scored on its own; the value
    is the lowest set's accuracy. Texts labelled outside ``emotions`` are dropped. ``control``:
    directions fitted on shuffled labels (default: these directions with the emotions deranged).
    """
    directions, control = _host(directions), _host(control)
    acts = acts if _on_host(acts) else acts.detach().to("cpu", torch.float32)
    emos = _check_emotions(directions, emotions)
    labs = [str(v) for v in labels]
    if acts.ndim != 2 or acts.shape[0] != len(labs):
        raise ValueError(f"acts must be [n, d] with one row per label; got {list(acts.shape)} and {len(labs)} labels")
    set_names = np.asarray(list(sets) if sets is not None else ["all"] * len(labs), dtype=object)
    grp = np.asarray(list(groups) if groups is not None else [f"item{i}" for i in range(len(labs))], dtype=object)
    keep = np.array([v in emos for v in labs])
    if not keep.any():
        raise ValueError(f"no text is labelled with one of {emos}")
    x = acts[torch.as_tensor(np.nonzero(keep)[0])]
    y = np.array([emos.index(v) for v, k in zip(labs, keep) if k])
    set_names, grp = set_names[keep], grp[keep]
    units = _unit_rows(directions, emos, layer)
    if control is not None:
        cunits = _unit_rows(control, emos, layer)
        control_kind = "directions fitted on shuffled labels"
    else:
        cunits = units[torch.as_tensor(_derangement(len(emos), seed))]
        control_kind = "the same directions with the emotions deranged"
    proj, pred = _top1(x, units, set_names)
    _, cpred = _top1(x, cunits, set_names)
    per_set: dict[str, Any] = {}
    for s in sorted(set(set_names.tolist())):
        m = set_names == s
        ok = (pred[m] == y[m]).astype(float)
        cok = (cpred[m] == y[m]).astype(float)
        per_set[s] = {"accuracy": _num(ok.mean()), "ci95": _ci(rate_ci(ok, groups=grp[m], seed=seed)),
                      "control": _num(cok.mean()), "control_ci95": _ci(rate_ci(cok, groups=grp[m], seed=seed)),
                      "n": int(m.sum())}
    value = min(v["accuracy"] for v in per_set.values())
    ctrl = max(v["control"] for v in per_set.values())
    rows = []
    kept_texts = [t for t, k in zip(texts, keep) if k] if texts is not None else None
    for i in range(len(y)):
        row = {"set": set_names[i], "group": grp[i], "label": emos[y[i]], "predicted": emos[pred[i]],
               "correct": bool(pred[i] == y[i]), "control_predicted": emos[cpred[i]]}
        row.update({f"proj_{e}": float(proj[i, j]) for j, e in enumerate(emos)})
        if kept_texts is not None:
            row["text"] = kept_texts[i]
        rows.append(row)
    return _gate(
        "implicit_scenarios", value, threshold, ctrl, value >= threshold, {"items": pd.DataFrame(rows)},
        sets=per_set, chance=_num(1 / len(emos)), layer=int(layer), emotions=emos, control_kind=control_kind,
        value_kind="the lowest set's top-1 accuracy", control_value_kind="the highest set's control accuracy",
    )


# --------------------------------------------------------------------------------------------
# dose_response
# --------------------------------------------------------------------------------------------
def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ (average ranks for ties); NaN when either side is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(np.asarray(x, float)), rankdata(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def dose_response(
    templates: Sequence[Mapping[str, Any]],
    projections: Mapping[str, Sequence[float]],
    *,
    rho_threshold: float = 0.7,
    min_passing: int | None = None,
    n_shuffles: int = 20,
    seed: int = 0,
) -> GateResult:
    """Spearman ρ between each template's level N and its expected emotion's projection.

    ``templates``: ``{"id", "levels", "emotion", "sign"}`` each (``sign`` +1: the projection should
    rise with N, −1: fall). ``projections[id]``: the expected emotion's projection of the template's
    text at each level, in the order of ``levels``. A template passes when ``sign · ρ ≥ rho_threshold``.
    Value: templates passing; passes when ≥ ``min_passing`` (default: the issue's "5 of 6" as a share,
    ⌈5n/6⌉ of n templates — 5 of 6, 10 of the 12 built-in ones). Control: the same
    projections with the levels shuffled (mean templates passing over ``n_shuffles`` shuffles).
    """
    tps = list(templates)
    if not tps:
        raise ValueError("no dose templates; give {'id', 'levels', 'emotion', 'sign'} for each")
    need = -(-5 * len(tps) // 6) if min_passing is None else int(min_passing)  # ⌈5n/6⌉
    rng = np.random.default_rng(seed)
    rows, levels_rows = [], []
    passing, control_counts = 0, np.zeros(n_shuffles)
    for t in tps:
        tid = str(t["id"])
        if tid not in projections:
            raise ValueError(f"no projections for template {tid!r}; projections has {sorted(projections)}")
        lv = np.asarray(t["levels"], float)
        pj = np.asarray(projections[tid], float)
        if len(lv) != len(pj) or len(lv) < 3:
            raise ValueError(f"template {tid!r}: {len(lv)} levels and {len(pj)} projections; give one projection per level (≥ 3)")
        sign = 1 if float(t.get("sign", 1)) >= 0 else -1
        rho = spearman(lv, pj)
        ok = bool(math.isfinite(rho) and sign * rho >= rho_threshold)
        passing += ok
        shuffled = [spearman(rng.permutation(lv), pj) for _ in range(n_shuffles)]
        control_counts += np.array([math.isfinite(r) and sign * r >= rho_threshold for r in shuffled], float)
        boot = []
        for _ in range(500):
            i = rng.integers(0, len(lv), len(lv))
            r = spearman(lv[i], pj[i])
            if math.isfinite(r):
                boot.append(r)
        ci = (float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))) if boot else None
        rows.append({"template": tid, "emotion": t.get("emotion"), "sign": sign, "rho": _num(rho),
                     "rho_ci_lo": ci[0] if ci else None, "rho_ci_hi": ci[1] if ci else None,
                     "control_rho": _num(float(np.nanmean(shuffled)) if any(map(math.isfinite, shuffled)) else float("nan")),
                     "passed": ok, "n_levels": len(lv)})
        levels_rows += [{"template": tid, "emotion": t.get("emotion"), "level": float(a), "projection": float(b)}
                        for a, b in zip(lv, pj)]
    n = len(tps)
    control = float(control_counts.mean())
    return _gate(
        "dose_response", passing, need, control, passing >= need,
        {"levels": pd.DataFrame(levels_rows), "templates": pd.DataFrame(rows)},
        n_templates=n, rate=_num(passing / n), rate_ci95=_ci(wilson_ci(passing, n)),
        rho_threshold=rho_threshold,
        templates={r["template"]: {"rho": r["rho"], "control_rho": r["control_rho"], "passed": r["passed"]} for r in rows},
        control_kind=f"levels shuffled ({n_shuffles} shuffles; mean templates passing)",
    )


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` (ties count half); NaN with one class."""
    s = np.asarray(scores, float)
    y = np.asarray(positive, bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def _sep(scores: np.ndarray, y: np.ndarray) -> float:
    a = auroc(scores, y)
    return max(a, 1 - a)  # a component's sign is arbitrary


def _pca(v: np.ndarray) -> np.ndarray:
    x = v - v.mean(0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u * s  # scores [C, k]


def _geometry_numbers(v: np.ndarray, val: np.ndarray, aro: np.ndarray) -> tuple[float, float, int, np.ndarray]:
    sc = _pca(v)
    valence = _sep(sc[:, 0], val)
    cand = [(_sep(sc[:, k], aro), k) for k in (1, 2) if k < sc.shape[1]]
    arousal, k = max(cand) if cand else (float("nan"), -1)
    return valence, arousal, k + 1, sc


def geometry(
    directions: Directions,
    layer: int,
    info: Mapping[str, Mapping[str, Any]],
    *,
    control: Directions | None = None,
    basic: Sequence[str] = EMOTIONS,
    valence_threshold: float = 0.9,
    arousal_threshold: float = 0.75,
    cosine_threshold: float = 0.5,
    seed: int = 0,
    n_boot: int = 1000,
) -> GateResult:
    """PCA of the concept directions at ``layer``: does PC1 carry valence and PC2/PC3 arousal?

    ``info[concept]`` has ``"valence"`` (``"positive"``/``"negative"``) and ``"arousal"``
    (``"high"``/``"low"``). AUROCs are orientation-free (a component's sign is arbitrary: the larger of
    AUROC and 1 − AUROC). Value: PC1's valence AUROC; passes when it is ≥ ``valence_threshold``, the
    best of PC2–PC3 separates arousal with AUROC ≥ ``arousal_threshold`` and the mean pairwise cosine
    of the ``basic`` directions is < ``cosine_threshold``. Control: the same numbers for ``control``
    (directions fitted on shuffled concept labels; default: these directions with the labels permuted).
    """
    directions, control = _host(directions), _host(control)
    concepts = [c for c in directions.emotions if c in info]
    if len(concepts) < 4:
        raise ValueError(f"geometry needs valence/arousal for at least 4 of the directions' concepts; got {concepts}")
    for c in concepts:
        if info[c].get("valence") not in ("positive", "negative") or info[c].get("arousal") not in ("high", "low"):
            raise ValueError(f"concept {c!r}: valence must be 'positive'/'negative' and arousal 'high'/'low', got {dict(info[c])}")
    val = np.array([info[c]["valence"] == "positive" for c in concepts])
    aro = np.array([info[c]["arousal"] == "high" for c in concepts])
    v = torch.stack([directions[c, layer].double() for c in concepts]).numpy()
    valence, arousal, pc_arousal, sc = _geometry_numbers(v, val, aro)
    if control is not None:
        cv = torch.stack([control[c, layer].double() for c in concepts]).numpy()
        control_kind = "directions fitted on shuffled concept labels"
    else:
        cv = v[np.random.default_rng(seed).permutation(len(concepts))]
        control_kind = "these directions with the concept labels permuted"
    c_valence, c_arousal, _, _ = _geometry_numbers(cv, val, aro)
    b = [e for e in basic if e in directions.emotions]
    if len(b) >= 2:
        cu = torch.stack([directions[e, layer].double() for e in b])
        cos = (cu @ cu.T).numpy()
        mean_cos = float(cos[~np.eye(len(b), dtype=bool)].mean())
    else:
        mean_cos = float("nan")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(concepts), len(concepts))
        if val[i].all() or (~val[i]).all():
            continue
        boots.append(_sep(sc[i, 0], val[i]))
    val_ci = (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))) if boots else None
    passed = valence >= valence_threshold and arousal >= arousal_threshold and mean_cos < cosine_threshold
    k = min(3, sc.shape[1])
    table = pd.DataFrame([
        {"concept": c, **{f"pc{j + 1}": float(sc[i, j]) for j in range(k)},
         "valence": info[c]["valence"], "arousal": info[c]["arousal"],
         "valence_score": info[c].get("valence_score"), "arousal_score": info[c].get("arousal_score")}
        for i, c in enumerate(concepts)
    ])
    var = sc.var(0)
    return _gate(
        "geometry", valence, valence_threshold, c_valence, passed, {"pca": table},
        valence_auroc=_num(valence), valence_auroc_ci95=_ci(val_ci),
        arousal_auroc=_num(arousal), arousal_pc=pc_arousal, arousal_threshold=arousal_threshold,
        control_arousal_auroc=_num(c_arousal),
        basic_mean_cosine=_num(mean_cos), cosine_threshold=cosine_threshold, basic=b,
        explained_variance=[_num(x) for x in (var / var.sum())[:k]] if var.sum() > 0 else None,
        n_concepts=len(concepts), layer=int(layer), control_kind=control_kind,
    )


# --------------------------------------------------------------------------------------------
# logit_lens
# --------------------------------------------------------------------------------------------
def _final_norm(hf: Any) -> Any:
    base = hf.get_decoder() if hasattr(hf, "get_decoder") else getattr(hf, "model", hf)
    for name in ("norm", "final_layernorm", "ln_f"):
        mod = getattr(base, name, None)
        if mod is not None:
            return mod
    raise ValueError(f"cannot find the final norm of {type(hf).__name__} (looked for norm, final_layernorm, ln_f)")


def _is_word(token: str, words: set[str]) -> bool:
    t = token.strip().lower()
    if not t.isalpha():
        return False
    return t in words or (len(t) >= 4 and any(w.startswith(t) for w in words))


@torch.no_grad()
def logit_lens(
    model: Model,
    directions: Directions,
    layer: int,
    *,
    words: Mapping[str, Sequence[str]],
    emotions: Sequence[str] = EMOTIONS,
    k: int = 30,
    min_hits: int = 3,
    min_emotions: int = 4,
    seed: int = 0,
) -> GateResult:
    """Each direction through the final norm and the unembedding: are its top ``k`` tokens its emotion's words?

    The unit direction is scaled to RMS 1 (``u · sqrt(d)``), normed by the model's final norm and
    unembedded. A token is a word of the emotion when, stripped and lower-cased, it is one of
    ``words[emotion]`` or a prefix (≥ 4 letters) of one. Value: emotions with ≥ ``min_hits`` such tokens;
    passes when ≥ ``min_emotions``. Control: one random unit direction per emotion, counted the same way.
    """
    directions = _host(directions)
    emos = _check_emotions(directions, emotions)
    missing = [e for e in emos if e not in words]
    if missing:
        raise ValueError(f"no words for {missing}; words has {sorted(words)}")
    hf = model.hf_model
    norm, head = _final_norm(hf), hf.get_output_embeddings()
    d = directions.d_model
    tok = model.tokenizer
    wsets = {e: {str(w).strip().lower() for w in words[e]} for e in emos}

    def top(u: Tensor) -> list[int]:
        x = (u.float() * math.sqrt(d)).to(device=model.device, dtype=model.dtype).view(1, 1, -1)
        logits = head(norm(x)).float().view(-1)
        return logits.topk(k).indices.tolist()

    units = _unit_rows(directions, emos, layer)
    rand = _random_units(len(emos), d, seed)
    rows, hits, chits = [], {}, {}
    for i, e in enumerate(emos):
        for kind, u, store in (("direction", units[i], hits), ("random", rand[i], chits)):
            ids = top(u)
            toks = [tok.decode([t]) for t in ids]
            flags = [_is_word(t, wsets[e]) for t in toks]
            store[e] = int(sum(flags))
            rows += [{"emotion": e, "kind": kind, "rank": r + 1, "token_id": int(t), "token": s, "is_word": f}
                     for r, (t, s, f) in enumerate(zip(ids, toks, flags))]
    value = sum(h >= min_hits for h in hits.values())
    control = sum(h >= min_hits for h in chits.values())
    return _gate(
        "logit_lens", value, min_emotions, control, value >= min_emotions, {"tokens": pd.DataFrame(rows)},
        hits=hits, control_hits=chits, min_hits=min_hits, k=k, n_emotions=len(emos),
        rate=_num(value / len(emos)), rate_ci95=_ci(wilson_ci(value, len(emos))),
        top_tokens={e: [r["token"] for r in rows if r["emotion"] == e and r["kind"] == "direction"][:10] for e in emos},
        layer=int(layer), control_kind="one random unit direction per emotion",
    )


# --------------------------------------------------------------------------------------------
# read_back
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def _generate_ids(model: Model, formatted: Sequence[str], values: Sequence[Tensor | Mapping[int, Tensor] | None],
                  layer: int, max_new_tokens: int, batch_size: int, positions: str = "all") -> list[list[int]]:
    """Greedy continuations (token ids, up to the first EOS) of each formatted prompt, each steered
    by its own vector ``values[i]`` added at ``layer`` — or, given as ``{layer: vector}``, at each of
    those layers (``None``: unsteered). Rows of one batch may steer different layers."""
    tok = model.tokenizer
    old = tok.padding_side
    tok.padding_side = "left"
    outs: list[list[int]] = []
    try:
        for s in range(0, len(formatted), batch_size):
            chunk = list(formatted[s : s + batch_size])
            vals = list(values[s : s + batch_size])
            enc = tok(chunk, return_tensors="pt", padding=True,
                      add_special_tokens=prompt_special_tokens(model)).to(model.device)
            per = [({layer: v} if isinstance(v, Tensor) else dict(v)) if v is not None else {} for v in vals]
            ivs = []
            for lay in sorted({k for d in per for k in d}):
                zero = torch.zeros(int(model.d_model))
                rows = torch.stack([d[lay].float().cpu() if lay in d else zero for d in per])  # [B, d]
                ivs.append(Intervention("resid_post", int(lay), "add", value=rows.unsqueeze(1).to(model.device, model.dtype),
                                        positions=positions))
            outs.extend(greedy_new_ids(model, enc, ivs, max_new_tokens))
    finally:
        tok.padding_side = old
    return outs


def greedy_new_ids(model: Model, enc: Any, ivs: Sequence[Intervention], max_new_tokens: int) -> list[list[int]]:
    """The greedy continuation of a left-padded, tokenized batch under ``ivs``: each row's new token ids,
    cut before its first EOS."""
    tok = model.tokenizer
    with torch.no_grad(), intervene(model.hf_model, list(ivs)):
        out = model.hf_model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
    eos = tok.eos_token_id
    rows = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        rows.append(row)
    return rows


@torch.no_grad()
def _reread(model: Model, formatted: Sequence[str], gens: Sequence[Sequence[int]], layer: int | Sequence[int],
            batch_size: int) -> Any:
    """Unsteered mean ``resid_post`` at ``layer`` over each generation's tokens, read after its prompt; NaN rows
    for empty generations. Given several layers, ``{layer: [n, d]}``."""
    if not isinstance(layer, (int, np.integer)):
        lays = sorted({int(v) for v in layer})
        outs = {v: torch.full((len(gens), int(model.d_model)), float("nan")) for v in lays}
    else:
        lays, outs = [int(layer)], None
    tok = model.tokenizer
    prompts = [tok(f, add_special_tokens=prompt_special_tokens(model))["input_ids"] for f in formatted]
    out = torch.full((len(gens), int(model.d_model)), float("nan"))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    for s in range(0, len(gens), batch_size):
        idx = [i for i in range(s, min(s + batch_size, len(gens))) if len(gens[i]) > 0]
        if not idx:
            continue
        seqs = [list(prompts[i]) + list(gens[i]) for i in idx]
        t = max(map(len, seqs))
        ids = torch.full((len(idx), t), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        w = torch.zeros((len(idx), t))
        for r, (i, sq) in enumerate(zip(idx, seqs)):
            ids[r, : len(sq)] = torch.tensor(sq)
            att[r, : len(sq)] = 1
            w[r, len(prompts[i]) : len(sq)] = 1
        with record(model.hf_model, ["resid_post"], lays) as rec:
            model.hf_model(input_ids=ids.to(model.device), attention_mask=att.to(model.device), use_cache=False)
        for lay in lays:
            x = rec["resid_post", lay].float().cpu()
            mean = (x * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True)
            if outs is None:
                out[idx] = mean
            else:
                outs[lay][idx] = mean
    return out if outs is None else outs


def read_back(
    model: Model,
    directions: Directions,
    layer: int,
    prompts: Sequence[str],
    *,
    emotions: Sequence[str] = EMOTIONS,
    alpha: float | None = None,
    scale: float = 0.5,
    max_new_tokens: int = 24,
    threshold: float = 0.8,
    seed: int = 0,
    batch_size: int = 32,
    vectors: Mapping[str, SteeringVector] | None = None,
    scale_reference: str = "norm",
    fluency: str | None = "relative",
    n_reference: int = 1,
) -> GateResult:
    """Do steered generations, re-read by the unsteered model, carry the target emotion?

    For each emotion and prompt (chat-formatted), greedy text is generated steered by the emotion's
    direction × ``alpha`` at ``layer`` (default ``scale`` × the layer's mean residual norm over the
    prompts: :func:`~psylens.steering.sweep.residual_norms` with ``reference=scale_reference``), unsteered,
    and steered by a random unit direction × ``alpha`` (a fresh one per prompt).
    Each text is re-read by the unsteered model after its prompt; its mean ``resid_post`` at ``layer``
    over the generated tokens is projected on the target direction. A win: the steered text projects
    higher than the unsteered text of the same prompt. Value: win rate; passes when it is ≥
    ``threshold`` and the win rate against the random-direction text is too. Control: the random
    text's win rate against the unsteered one (chance is about 0.5). Empty generations count as losses.

    ``vectors`` (emotion → :class:`~psylens.steering.SteeringVector`, e.g. the steering sweep's picked
    vectors): each emotion's text is steered by its vector as it is (its layers and alpha), its random
    control by :meth:`~psylens.steering.SteeringVector.random_like` of that vector (a fresh draw per
    prompt), and the three texts are re-read at the vector's own layer (``meta["layer"]``, else the
    middle of its layers) and projected on ``directions`` there (on the vector's own direction when
    ``directions`` lack that layer; the summary says which).

    Fluency (``fluency``: a criterion of :data:`psylens.steering.sweep.FLUENCY_CRITERIA`, default the issue's
    ``"relative"``; ``None``: not judged): each emotion's steered texts are held to the steering sweep's criterion
    — perplexity under the unsteered model after the same prompt, over that of the unsteered greedy texts, at
    most the model's own T=1 texts' (``n_reference`` draws), and distinct-2 and zlib ratio no worse than those
    texts' (``relative_greedy``: than the unsteered greedy texts'; ``absolute``: perplexity ratio ≤ 1.5). The
    gate passes only when every emotion's texts are fluent (``passed_ignoring_fluency`` keeps the bare
    reading); ``fluency`` in the result holds the criterion, the reference and each emotion's numbers.
    """
    from psylens.steering.sweep import check_scale_reference, residual_norms

    check_scale_reference(scale_reference, "scale_reference")
    from psylens.steering.sweep import FLUENCY_CRITERIA

    if fluency is not None and fluency not in FLUENCY_CRITERIA:
        raise ValueError(f"fluency {fluency!r} is not one of {FLUENCY_CRITERIA} or None (not judged): relative (the "
                         "issue's criterion, against the model's own T=1 text), relative_greedy (diversity against its "
                         "greedy text) or absolute (perplexity ratio ≤ 1.5)")
    directions, vectors = _host(directions), _host_vectors(vectors)
    emos = _check_emotions(directions, emotions)
    items = [p for p in prompts]
    if not items or not all(isinstance(p, str) and p.strip() for p in items):
        raise ValueError("prompts must be one or more non-empty strings (≥ 20 neutral prompts for the gate)")
    formatted = [model.format_prompt(p) for p in items]
    n_p, n_e = len(items), len(emos)
    picked = _check_vectors(model, vectors, emos) if vectors is not None else None
    target: dict[str, str] = {}
    if picked is None:
        a = (float(alpha) if alpha is not None
             else float(scale) * residual_norms(model, formatted, [layer], reference=scale_reference)[layer])
        units = _unit_rows(directions, emos, layer)
        rand = _random_units(n_p, units.shape[1], seed + 1)
        all_fmt = formatted * (n_e + 2)
        values: list[Any] = [a * units[e] for e in range(n_e) for _ in range(n_p)]
        values += [None] * n_p + [a * rand[p] for p in range(n_p)]
        gens = _generate_ids(model, all_fmt, values, layer, max_new_tokens, batch_size)
        acts = _reread(model, all_fmt, gens, layer, batch_size).double()  # [(E+2)P, d]
        # (steered, unsteered, random) rows of emotion e, prompt p; the target direction and its layer
        at = {e: (e * n_p, n_e * n_p, (n_e + 1) * n_p) for e in range(n_e)}
        acts_at = {e: acts for e in range(n_e)}
        u_of = {e: units[e].double() for e in range(n_e)}
    else:
        pos = {sv.positions for sv in picked.values()}
        if len(pos) != 1:
            raise ValueError(f"the steering vectors steer different positions {sorted(pos)}; give vectors with one positions setting")
        a = None
        lay_of = {e: _center_layer(picked[e]) for e in emos}
        all_fmt = formatted * (2 * n_e + 1)
        steer_vals = {e: {int(v): picked[e].alpha * picked[e].vectors[i].float() for i, v in enumerate(picked[e].layers)}
                      for e in emos}
        values = [steer_vals[e] for e in emos for _ in range(n_p)] + [None] * n_p
        for e_i, e in enumerate(emos):
            for p in range(n_p):
                rv = picked[e].random_like(seed + 1 + 1000 * e_i + p)
                values.append({int(v): rv.alpha * rv.vectors[i].float() for i, v in enumerate(rv.layers)})
        gens = _generate_ids(model, all_fmt, values, layer, max_new_tokens, batch_size, positions=pos.pop())
        by_layer = _reread(model, all_fmt, gens, sorted(set(lay_of.values())), batch_size)  # {layer: [(2E+1)P, d]}
        at = {e: (e * n_p, n_e * n_p, (n_e + 1) * n_p + e * n_p) for e in range(n_e)}
        acts_at = {e: by_layer[lay_of[emo]].double() for e, emo in enumerate(emos)}
        u_of = {}
        for e, emo in enumerate(emos):
            lay = lay_of[emo]
            if lay in list(directions.layers):
                u_of[e], target[emo] = directions[emo, lay].double(), f"directions at layer {lay}"
            else:
                row = picked[emo].vectors[list(picked[emo].layers).index(lay)].double()
                u_of[e], target[emo] = row / row.norm().clamp_min(1e-30), f"the vector's own direction at layer {lay}"
    tok = model.tokenizer
    rows = []
    for e, emo in enumerate(emos):
        u = u_of[e]
        i_s, i_n, i_r = at[e]
        x = acts_at[e]
        st, no, ra = x[i_s : i_s + n_p] @ u, x[i_n : i_n + n_p] @ u, x[i_r : i_r + n_p] @ u
        for p in range(n_p):
            s_, n_, r_ = float(st[p]), float(no[p]), float(ra[p])
            rows.append({
                "emotion": emo, "prompt": items[p],
                "steered_text": tok.decode(gens[i_s + p], skip_special_tokens=True),
                "none_text": tok.decode(gens[i_n + p], skip_special_tokens=True),
                "random_text": tok.decode(gens[i_r + p], skip_special_tokens=True),
                "proj_steered": s_, "proj_none": n_, "proj_random": r_,
                "win_none": bool(s_ > n_), "win_random": bool(s_ > r_), "random_win_none": bool(r_ > n_),
            })
    df = pd.DataFrame(rows)
    groups = df["prompt"].tolist()
    w_none = df["win_none"].to_numpy(float)
    w_rand = df["win_random"].to_numpy(float)
    c = df["random_win_none"].to_numpy(float)
    value, vs_random, control = float(w_none.mean()), float(w_rand.mean()), float(c.mean())
    bare = value >= threshold and vs_random >= threshold
    flu = None
    if fluency is not None:
        steered = {emo: df[df.emotion == emo]["steered_text"].tolist() for emo in emos}
        flu = _read_back_fluency(model, items, formatted, steered, df[df.emotion == emos[0]]["none_text"].tolist(),
                                 fluency, seed=seed, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 n_reference=n_reference)
    passed = bare and (flu is None or flu["n_fluent"] == len(emos))
    return _gate(
        "read_back", value, threshold, control, passed, {"items": df},
        ci95=_ci(rate_ci(w_none, groups=groups, seed=seed)),
        win_rate_vs_random=_num(vs_random), win_rate_vs_random_ci95=_ci(rate_ci(w_rand, groups=groups, seed=seed)),
        control_ci95=_ci(rate_ci(c, groups=groups, seed=seed)),
        per_emotion={emo: {"vs_none": _num(df[df.emotion == emo]["win_none"].mean()),
                           "vs_random": _num(df[df.emotion == emo]["win_random"].mean())} for emo in emos},
        empty_generations=int(sum(len(g) == 0 for g in gens)),
        layer=int(layer),
        alpha=_num(a) if picked is None else None,
        scale=(None if alpha is not None else float(scale)) if picked is None else None,
        scale_reference=scale_reference if picked is None and alpha is None else None,
        steering=({"from": "layer", "layer": int(layer), "alpha": _num(a), "scale": None if alpha is not None else float(scale),
                   "scale_reference": scale_reference if alpha is None else None}
                  if picked is None else
                  {"from": "vectors", "vectors": _vector_info(picked, emos), "projected_on": target}),
        n_prompts=n_p, max_new_tokens=max_new_tokens, emotions=emos,
        control_kind=("a random unit direction × alpha per prompt; its text's win rate against the unsteered text"
                      if picked is None else
                      "a random_like draw of the emotion's vector per prompt (same layers, norms, alpha); its text's "
                      "win rate against the unsteered text"),
        fluency=flu if flu is not None else "not judged here",
        passed_ignoring_fluency=bool(bare),
    )


def _read_back_fluency(model: Model, prompts: Sequence[str], formatted: Sequence[str], steered: Mapping[str, list[str]],
                       none_texts: list[str], criterion: str, *, seed: int, batch_size: int, max_new_tokens: int,
                       n_reference: int) -> dict[str, Any]:
    """Each emotion's steered texts under the steering sweep's fluency ``criterion`` (see :func:`read_back`)."""
    from psylens.steering.metrics import distinct_n, token_nll, zlib_ratio
    from psylens.steering.sweep import SweepConfig, _finite, _fluency_checks, _fluency_reference, _ppl, _ratio

    cfg = SweepConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, fluency=criterion)
    rows = list(range(len(prompts)))
    nll, cnt = token_nll(model, list(prompts), none_texts, batch_size=batch_size)
    ppl_none = _ppl(nll, cnt, rows)
    reference: dict[str, Any] = {}
    if criterion != "absolute":
        reference = _fluency_reference(model, list(formatted), list(prompts), cfg, seed, ppl_none, draws=n_reference)
    reference["unsteered_greedy"] = {"distinct_2": _finite(distinct_n(none_texts, 2)), "zlib_ratio": _finite(zlib_ratio(none_texts))}
    per: dict[str, Any] = {}
    for emo, texts in steered.items():
        nll, cnt = token_nll(model, list(prompts), texts, batch_size=batch_size)
        cell = {"perplexity_ratio": _finite(_ratio(_ppl(nll, cnt, rows), ppl_none)),
                "distinct_2": _finite(distinct_n(texts, 2)), "zlib_ratio": _finite(zlib_ratio(texts))}
        checks = _fluency_checks(cell, reference, cfg)
        per[emo] = {**cell, "checks": checks, "fluent": all(checks.values())}
    ref_keys = ("perplexity_ratio", "distinct_2", "zlib_ratio", "temperature", "draws", "n", "unsteered_greedy")
    return {"criterion": criterion, "reference": {k: reference[k] for k in ref_keys if k in reference},
            "max_perplexity_ratio": cfg.max_perplexity_ratio if criterion == "absolute" else None,
            "per_emotion": per, "n_fluent": sum(bool(v["fluent"]) for v in per.values())}
