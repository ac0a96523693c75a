"""What an SAE's latents mean: label AUROCs with controls, per-feature summaries, decoder clusters.

>>> z_train, _ = encode(sae, train.acts); z_held, _ = encode(sae, held.acts)         # doctest: +SKIP
>>> table = label_aurocs(z_held, held_labels, z_train=z_train, labels_train=train_labels)  # doctest: +SKIP
>>> table["reflection"]       # {"feature": 17, "auroc": 0.91, "control_auroc": 0.49, "auroc_ci": [...], ...}

:func:`label_aurocs` picks each label's best latent on the *training* steps and reports its AUROC
on the *held-out* steps (picking and scoring on the same steps would overstate it); the control is
the same latent on held-out steps whose labels were shuffled, which must sit near 0.5.
:func:`feature_summaries` gives each latent's activation frequency, its top-activating steps with
their neighbours in the trace, its position-in-trace profile and its decoder column's top
logit-lens tokens; :func:`decoder_map` clusters decoder columns by cosine and lays them out in 2-D.
:func:`features_report` assembles ``features.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

__all__ = [
    "auroc",
    "auroc_matrix",
    "label_aurocs",
    "feature_summaries",
    "logit_lens_tokens",
    "decoder_map",
    "features_report",
]


def _np(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def auroc_matrix(scores: Float[Tensor, "n f"] | np.ndarray, labels: Bool[Tensor, " n"] | np.ndarray) -> np.ndarray:
    """AUROC of every column of ``scores`` for the binary ``labels`` (Mann–Whitney, ties count half).

    NaN when ``labels`` has no positives or no negatives.
    """
    from scipy.stats import rankdata

    s = _np(scores)
    if s.ndim == 1:
        s = s[:, None]
    y = np.asarray(_np(labels) > 0.5)
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"{s.shape[0]} score rows but {y.shape[0]} labels; give one label per step")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(s.shape[1], np.nan)
    ranks = rankdata(s, axis=0)  # average ranks for ties
    return (ranks[y].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc(scores: Any, labels: Any) -> float:
    """AUROC of one score vector (see :func:`auroc_matrix`)."""
    return float(auroc_matrix(_np(scores).reshape(-1), labels)[0])


def _cluster_auroc_ci(score: np.ndarray, y: np.ndarray, groups: Sequence[str] | None, seed: int,
                      n_boot: int = 200, level: float = 0.95) -> list[float] | None:
    """Bootstrap interval of one latent's AUROC, resampling whole traces (``groups``) when given."""
    rng = np.random.default_rng(seed)
    n = len(score)
    if groups is None:
        members = [np.array([i]) for i in range(n)]
    else:
        _, inv = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        members = [np.nonzero(inv == g)[0] for g in range(int(inv.max()) + 1)]
    vals = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(members), size=len(members))
        idx = np.concatenate([members[g] for g in pick])
        v = auroc_matrix(score[idx], y[idx])[0]
        if np.isfinite(v):
            vals.append(v)
    if len(vals) < n_boot // 2:
        return None
    a = (1 - level) / 2
    return [float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))]


def label_aurocs(
    z_held: Float[Tensor, "n f"],
    labels_held: Mapping[str, Bool[Tensor, " n"]],
    *,
    z_train: Float[Tensor, "m f"] | None = None,
    labels_train: Mapping[str, Bool[Tensor, " m"]] | None = None,
    groups_held: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Each label's best latent and its held-out AUROC, with the label-shuffled control.

    Returns ``{label: {"feature", "auroc", "control_auroc", "auroc_ci", "train_auroc",
    "selected_on", "n_positive", "n_steps"}}``. The latent is chosen by AUROC on ``z_train`` /
    ``labels_train`` when given (``selected_on: "train"``), else on the held-out steps themselves
    (``"held_out"``, optimistic). ``groups_held`` (trace ids) makes the interval resample traces.
    Labels with no positive (or no negative) held-out step are reported with ``auroc: None``.
    """
    rng = np.random.default_rng(seed)
    zh = _np(z_held)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(labels_held):
        yh = np.asarray(_np(labels_held[name]) > 0.5)
        if yh.shape[0] != zh.shape[0]:
            raise ValueError(f"label {name!r} has {yh.shape[0]} held-out values for {zh.shape[0]} steps")
        if z_train is not None and labels_train is not None and name in labels_train:
            sel = auroc_matrix(z_train, labels_train[name])
            selected_on = "train"
        else:
            sel = auroc_matrix(zh, yh)
            selected_on = "held_out"
        rec: dict[str, Any] = {"n_positive": int(yh.sum()), "n_steps": int(len(yh)), "selected_on": selected_on}
        if not np.isfinite(sel).any() or yh.all() or not yh.any():
            out[name] = {**rec, "feature": None, "auroc": None, "control_auroc": None, "auroc_ci": None, "train_auroc": None}
            continue
        f = int(np.nanargmax(sel))
        score = zh[:, f]
        shuffled = rng.permutation(yh)
        out[name] = {
            **rec,
            "feature": f,
            "auroc": float(auroc_matrix(score, yh)[0]),
            "control_auroc": float(auroc_matrix(score, shuffled)[0]),
            "auroc_ci": _cluster_auroc_ci(score, yh, groups_held, seed),
            "train_auroc": float(sel[f]) if selected_on == "train" else None,
        }
    return out


def norm_gain(norm: Any, d_model: int) -> Float[Tensor, " d"] | None:
    """The elementwise gain ``g`` a final norm module applies, as the model applies it.

    RMS norms are read by their output on a vector of ones (RMS 1), so Gemma's ``x · (1 + w)`` gives
    ``1 + w`` and Llama's ``x · w`` gives ``w``; a ``LayerNorm`` (which would centre a vector of ones to
    zero) gives its ``weight``. ``None`` for no norm.
    """
    if norm is None:
        return None
    if isinstance(norm, torch.nn.LayerNorm):
        return None if norm.weight is None else norm.weight.detach().float()
    p = next(norm.parameters(), None)
    ones = torch.ones(1, d_model, dtype=p.dtype if p is not None else torch.float32,
                      device=p.device if p is not None else "cpu")
    with torch.no_grad():
        return norm(ones).detach().float().reshape(-1)


def logit_lens_tokens(
    decoder: Float[Tensor, "f d"],
    unembed: Float[Tensor, "vocab d"],
    tokenizer: Any = None,
    *,
    norm_weight: Float[Tensor, " d"] | None = None,
    k: int = 8,
    batch: int = 256,
) -> list[list[str]] | list[list[int]]:
    """Top ``k`` tokens of each decoder column read through the unembedding: ``W_U (g ⊙ d_f)``.

    ``norm_weight`` (the final norm's gain ``g``, :func:`norm_gain`) is applied elementwise when given; the norm's
    scaling by the residual's size is not (a direction has no size of its own). Token ids are
    decoded with ``tokenizer`` when given, else returned as ids.
    """
    W = unembed.detach().float()
    D = decoder.detach().float()
    if D.shape[1] != W.shape[1]:
        raise ValueError(f"decoder width {D.shape[1]} != unembedding width {W.shape[1]}; use the SAE's model")
    if norm_weight is not None:
        D = D * norm_weight.detach().float()
    ids: list[list[int]] = []
    for i in range(0, D.shape[0], batch):
        logits = D[i : i + batch] @ W.T  # [b, vocab]
        ids.extend(logits.topk(k, dim=-1).indices.tolist())
    if tokenizer is None:
        return ids
    return [[tokenizer.decode([t]) for t in row] for row in ids]


def _context(texts: Mapping[tuple[str, int], str] | None, trace: str, step: int, width: int) -> dict[str, str]:
    if not texts:
        return {}
    clip = lambda s: s if len(s) <= width else s[: width - 1] + "…"  # noqa: E731
    return {
        "before": clip(texts.get((trace, step - 1), "")),
        "text": clip(texts.get((trace, step), "")),
        "after": clip(texts.get((trace, step + 1), "")),
    }


def feature_summaries(
    z: Float[Tensor, "n f"],
    trace_ids: Sequence[str],
    steps: Sequence[int],
    positions: Float[Tensor, " n"],
    *,
    texts: Mapping[tuple[str, int], str] | None = None,
    top: int = 5,
    bins: int = 5,
    width: int = 240,
) -> list[dict[str, Any]]:
    """Per latent: ``frequency``, ``mean_activation`` (when on), ``top_steps`` with context, ``position_profile``.

    ``positions``: relative position of each step in its trace in [0, 1]; the profile gives, per
    equal-width bin, the firing rate and the mean activation. ``texts[(trace, step)]``: the step
    texts for the context (``before``/``text``/``after``, clipped to ``width`` characters).
    """
    Z = z.detach().float().cpu()
    n, f = Z.shape
    if len(trace_ids) != n or len(steps) != n or positions.shape[0] != n:
        raise ValueError(f"{n} rows of latents but {len(trace_ids)} trace ids / {len(steps)} steps / {positions.shape[0]} positions")
    on = Z > 0
    freq = on.float().mean(0)
    count = on.sum(0)
    mean_on = torch.where(count > 0, Z.sum(0) / count.clamp_min(1), torch.zeros(f))
    b = torch.clamp((positions.float() * bins).long(), 0, bins - 1)  # [n]
    onehot = torch.nn.functional.one_hot(b, bins).float()  # [n, bins]
    per_bin = onehot.sum(0).clamp_min(1)  # [bins]
    rate = (onehot.T @ on.float()) / per_bin[:, None]  # [bins, f]
    mean_act = (onehot.T @ Z) / per_bin[:, None]  # [bins, f]
    k = min(top, n)
    vals, idx = Z.topk(k, dim=0)  # [k, f]
    edges = [round(i / bins, 4) for i in range(bins + 1)]
    out = []
    for j in range(f):
        tops = []
        if count[j] > 0:
            for v, i in zip(vals[:, j].tolist(), idx[:, j].tolist()):
                if v <= 0:
                    break
                t, s = trace_ids[i], int(steps[i])
                tops.append({"trace": t, "step": s, "activation": float(v), **_context(texts, t, s, width)})
        out.append({
            "feature": j,
            "frequency": float(freq[j]),
            "mean_activation": float(mean_on[j]),
            "top_steps": tops,
            "position_profile": {"bin_edges": edges, "rate": rate[:, j].tolist(), "mean": mean_act[:, j].tolist()},
        })
    return out


def decoder_map(
    decoder: Float[Tensor, "f d"], *, live: Bool[Tensor, " f"] | None = None, n_clusters: int | None = None, seed: int = 0
) -> dict[str, Any]:
    """Cluster decoder columns by cosine (average-linkage agglomerative) and place them in 2-D.

    Returns ``{"cluster": [f] (−1 for latents left out as dead), "xy": [[x, y]] * f, "n_clusters",
    "method", "map"}``. The map is the top two principal components of the unit decoder columns
    (live ones; dead ones are projected onto the same axes).
    """
    from sklearn.cluster import AgglomerativeClustering

    D = decoder.detach().float().cpu()
    U = D / D.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    f = U.shape[0]
    keep = torch.ones(f, dtype=torch.bool) if live is None else live.bool().cpu()
    n_live = int(keep.sum())
    cluster = [-1] * f
    if n_clusters is None:
        n_clusters = max(2, min(32, n_live // 8))
    n_clusters = min(n_clusters, n_live)
    if n_live >= 2 and n_clusters >= 2:
        fit = AgglomerativeClustering(n_clusters=n_clusters, metric="cosine", linkage="average").fit(U[keep].numpy())
        for j, c in zip(torch.nonzero(keep).flatten().tolist(), fit.labels_.tolist()):
            cluster[j] = int(c)
    elif n_live == 1:
        cluster[int(torch.nonzero(keep)[0])] = 0
    base = U[keep] if n_live >= 2 else U
    mu = base.mean(0, keepdim=True)
    _, _, V = torch.linalg.svd(base - mu, full_matrices=False)
    xy = ((U - mu) @ V[:2].T) if V.shape[0] >= 2 else torch.zeros(f, 2)
    return {
        "cluster": cluster,
        "xy": [[round(float(a), 5), round(float(b), 5)] for a, b in xy.tolist()],
        "n_clusters": int(n_clusters if n_live >= 2 else min(n_live, 1)),
        "method": "agglomerative clustering of unit decoder columns, cosine distance, average linkage",
        "map": "top-2 principal components of the unit decoder columns",
    }


def features_report(
    *,
    z_all: Float[Tensor, "n f"],
    trace_ids: Sequence[str],
    steps: Sequence[int],
    positions: Float[Tensor, " n"],
    held_rows: Bool[Tensor, " n"],
    labels: Mapping[str, Bool[Tensor, " n"]] | None,
    decoder: Float[Tensor, "f d"],
    texts: Mapping[tuple[str, int], str] | None = None,
    logit_lens: Sequence[Sequence[Any]] | None = None,
    seed: int = 0,
    top: int = 5,
) -> dict[str, Any]:
    """``features.json``: ``labels`` (best latent per label, held-out AUROC, control), ``features``, ``clusters``.

    ``held_rows`` marks the held-out steps (AUROCs are scored there; latents chosen on the rest).
    Per-feature summaries use every step.
    """
    from psylens.saes import artifacts as art

    held = held_rows.bool()
    train = ~held
    tids = list(trace_ids)
    table: dict[str, Any] = {}
    if labels:
        lab_h = {k: v.bool()[held] for k, v in labels.items()}
        lab_t = {k: v.bool()[train] for k, v in labels.items()} if bool(train.any()) else None
        table = label_aurocs(
            z_all[held], lab_h,
            z_train=z_all[train] if lab_t is not None else None, labels_train=lab_t,
            groups_held=[t for t, h in zip(tids, held.tolist()) if h], seed=seed,
        )
    feats = feature_summaries(z_all, tids, steps, positions, texts=texts, top=top)
    live = (z_all > 0).any(0)
    dmap = decoder_map(decoder, live=live, seed=seed)
    for j, rec in enumerate(feats):
        rec["cluster"] = dmap["cluster"][j]
        rec["xy"] = dmap["xy"][j]
        if logit_lens is not None:
            rec["logit_lens"] = list(logit_lens[j])
    return {
        "schema_version": art.SCHEMA_VERSION,
        "n_steps": int(z_all.shape[0]),
        "n_held_out_steps": int(held.sum()),
        "d_sae": int(z_all.shape[1]),
        "labels": table,
        "control": "the same latent's AUROC on held-out steps with the labels shuffled (seeded)",
        "features": feats,
        "clusters": {k: v for k, v in dmap.items() if k not in ("cluster", "xy")},
    }
