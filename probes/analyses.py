"""The analyses on top of directions and probes: each a function returning a table (pandas).

1. :func:`layer_curve` — accuracy by layer for every site, with its controls; :func:`curve_landmarks`
   says where the signal emerges (first layer over 2× chance), peaks and how much it fades.
2. :func:`geometry` — cosine similarity between emotion directions per layer; PCA of the emotion
   centroids; does PC1 order the emotions by valence (Spearman ρ against a valence order,
   default ``VALENCE``, with an exact permutation p-value)?
3. :func:`cross_format` — directions (and probes) learned on one format classify the other
   (implicit events → explicit statements and back).
4. Persistence — :func:`persistence_stimuli` appends the built-in neutral continuation to
   emotional events, :func:`harvest_persistence` reads every token, :func:`persistence_curve`
   decodes the emotion at token offsets 0…N after the event's last token.
5. :func:`system_prompt_shift` — projection of neutral texts on each emotion direction with and
   without a mood system prompt, as a shift in standard deviations of the unprompted distribution.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from psylens.activations import Activations
from psylens.probes.classifiers import DEFAULT_C, Probe, train_logistic_many
from psylens.probes.directions import (
    Directions,
    center_groups,
    class_matrix,
    emotion_directions,
    group_ids,
    pick_site,
)
from psylens.probes.fit import ProbeResults, cross_val_predict, group_folds, scores
from psylens.stimuli import EMOTIONS, Stimuli, Stimulus

if TYPE_CHECKING:
    import pandas as pd

    from psylens.models import Model

__all__ = [
    "VALENCE",
    "layer_curve",
    "curve_landmarks",
    "Geometry",
    "geometry",
    "direction_predict",
    "cross_format",
    "persistence_stimuli",
    "cut_continuation",
    "harvest_persistence",
    "persistence_curve",
    "default_offsets",
    "system_prompt_shift",
    "shift_summary",
]

#: Default valence scores: joy > surprise > neutral > {fear, sadness, disgust, anger} (tied).
VALENCE: dict[str, float] = {
    "joy": 3.0,
    "surprise": 2.0,
    "neutral": 1.0,
    "fear": 0.0,
    "sadness": 0.0,
    "disgust": 0.0,
    "anger": 0.0,
}


# --------------------------------------------------------------------------------------------
# 1. layer curve
# --------------------------------------------------------------------------------------------
def layer_curve(results: ProbeResults | Sequence[ProbeResults]) -> pd.DataFrame:
    """One row per (site, layer): accuracy, macro-F1 and every control, for one or several fits."""
    import pandas as pd

    items = [results] if isinstance(results, ProbeResults) else list(results)
    if not items:
        raise ValueError("layer_curve needs at least one ProbeResults")
    return pd.concat([r.table() for r in items], ignore_index=True)


def curve_landmarks(results: ProbeResults) -> dict[str, Any]:
    """Where the signal emerges (first layer over 2× chance), peaks, and what is left at the last layer."""
    acc = results.accuracy
    i = results.best_index
    out: dict[str, Any] = {
        "emergence_layer": results.emergence_layer,
        "peak_layer": results.best_layer,
        "peak_accuracy": round(float(acc[i]), 4),
        "last_layer": results.layers[-1],
        "last_layer_accuracy": round(float(acc[-1]), 4),
        "drop_from_peak": round(float(acc[i] - acc[-1]), 4),
        "chance": round(results.chance, 4),
    }
    if results.shuffled_accuracy is not None:
        out["shuffled_at_peak"] = round(float(results.shuffled_accuracy[i]), 4)
        out["max_shuffled"] = round(float(results.shuffled_accuracy.max()), 4)
    sel = results.selectivity
    if sel is not None:
        out["selectivity_at_peak"] = round(float(sel[i]), 4)
        out["max_selectivity_layer"] = results.layers[int(np.argmax(sel))]
    return out


# --------------------------------------------------------------------------------------------
# 2. geometry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Geometry:
    """Per-layer geometry of the emotions: direction cosines, centroid PCA and valence ordering."""

    emotions: tuple[str, ...]
    layers: tuple[int, ...]
    cosine: np.ndarray  # [L, E, E]
    pca: np.ndarray  # [L, E, 2] centroid coordinates on PC1, PC2
    explained: np.ndarray  # [L, 2] explained-variance ratio of PC1, PC2
    valence_rho: np.ndarray  # [L] Spearman ρ(PC1, valence), PC1 oriented so ρ ≥ 0
    valence_p: np.ndarray  # [L] exact permutation p-value of |ρ|
    valence: Mapping[str, float] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """``cosine`` (layer, a, b, cosine), ``pca`` (layer, emotion, pc1, pc2, ...), ``valence`` (layer, rho, p)."""
        import pandas as pd

        e = self.emotions
        cos_rows = [
            {"layer": layer, "a": e[i], "b": e[j], "cosine": float(self.cosine[li, i, j])}
            for li, layer in enumerate(self.layers)
            for i in range(len(e))
            for j in range(len(e))
        ]
        pca_rows = [
            {
                "layer": layer,
                "emotion": e[i],
                "pc1": float(self.pca[li, i, 0]),
                "pc2": float(self.pca[li, i, 1]),
                "explained_pc1": float(self.explained[li, 0]),
                "explained_pc2": float(self.explained[li, 1]),
                "valence": self.valence.get(e[i]),
            }
            for li, layer in enumerate(self.layers)
            for i in range(len(e))
        ]
        val_rows = [
            {"layer": layer, "valence_rho": float(self.valence_rho[li]), "valence_p": float(self.valence_p[li])}
            for li, layer in enumerate(self.layers)
        ]
        return {"cosine": pd.DataFrame(cos_rows), "pca": pd.DataFrame(pca_rows), "valence": pd.DataFrame(val_rows)}

    def summary(self, layer: int) -> dict[str, Any]:
        li = self.layers.index(layer)
        cos = self.cosine[li]
        off = cos[~np.eye(len(self.emotions), dtype=bool)]
        pairs = [(self.emotions[i], self.emotions[j], float(cos[i, j]))
                 for i in range(len(self.emotions)) for j in range(i + 1, len(self.emotions))]
        pairs.sort(key=lambda t: -t[2])
        return {
            "layer": layer,
            "mean_off_diagonal_cosine": round(float(off.mean()), 4),
            "most_similar": [{"a": a, "b": b, "cosine": round(c, 4)} for a, b, c in pairs[:3]],
            "pc1_order": [self.emotions[i] for i in np.argsort(-self.pca[li, :, 0])],
            "explained_pc1": round(float(self.explained[li, 0]), 4),
            "valence_rho": round(float(self.valence_rho[li]), 4),
            "valence_p": round(float(self.valence_p[li]), 4),
            "valence_rho_by_layer": [round(float(v), 4) for v in self.valence_rho],
            "valence": dict(self.valence),
        }


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank)."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v), dtype=float)
    ranks[order] = np.arange(len(v), dtype=float)
    for val in np.unique(v):
        idx = v == val
        ranks[idx] = ranks[idx].mean()
    return ranks


def _spearman_perm(scores_: np.ndarray, valence: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """``(ρ, p)``: Spearman correlation and the permutation p-value of ``|ρ|`` (exact up to 8 items)."""
    rv, rs = _ranks(valence), _ranks(scores_)
    rv_c = rv - rv.mean()
    denom = math.sqrt(float((rv_c**2).sum()) * float(((rs - rs.mean()) ** 2).sum()))
    if denom == 0:
        return 0.0, 1.0
    rho = float((rv_c * (rs - rs.mean())).sum() / denom)
    n = len(rs)
    if n <= 8:
        perms = np.array(list(itertools.permutations(range(n))))
    else:
        rng = np.random.default_rng(seed)
        perms = np.stack([rng.permutation(n) for _ in range(20000)])
    rp = rs[perms] - rs.mean()
    rhos = (rp * rv_c).sum(1) / denom
    p = float((np.abs(rhos) >= abs(rho) - 1e-12).mean())
    return rho, p


def geometry(
    acts: Activations,
    *,
    directions: Directions | None = None,
    site: str | None = None,
    labels: Sequence[str] | None = None,
    valence: Mapping[str, float] | Sequence[str] = VALENCE,
    center_by: str | None = "group",
) -> Geometry:
    """Cosines between directions, PCA of the (group-centred) emotion centroids, valence ordering of PC1.

    ``valence``: scores per emotion (higher = more positive), or a list ordered from most positive
    to most negative. Emotions without a score are left out of the correlation (≥ 3 needed).
    PC1's sign is arbitrary, so it is oriented to make ρ ≥ 0; the p-value tests ``|ρ|``.
    """
    if not isinstance(valence, Mapping):
        order = list(valence)
        valence = {e: float(len(order) - i) for i, e in enumerate(order)}
    site, x, y, classes, rows = class_matrix(acts, site, labels, what="geometry")
    if center_by == "group":
        x = center_groups(x, group_ids(acts, rows, what="geometry with center_by='group'"))
    if directions is None:
        directions = emotion_directions(acts, site=site, labels=classes, center_by=center_by)
    dirs = directions.select(emotions=classes, layers=[v for v in acts.layers])
    k = len(classes)
    yt = torch.from_numpy(y)
    cent = torch.zeros(k, x.shape[1], x.shape[2], dtype=torch.float64).index_add_(0, yt, x.double())
    cent /= torch.bincount(yt, minlength=k).double().view(-1, 1, 1)
    scored = [i for i, c in enumerate(classes) if c in valence]
    val = np.array([valence[classes[i]] for i in scored], dtype=float)
    n_l = len(acts.layers)
    cosine = np.zeros((n_l, k, k))
    pca = np.zeros((n_l, k, 2))
    explained = np.zeros((n_l, 2))
    rho = np.full(n_l, np.nan)
    pval = np.full(n_l, np.nan)
    for li, layer in enumerate(acts.layers):
        cosine[li] = dirs.cosine(layer).numpy()
        c = cent[:, li] - cent[:, li].mean(0, keepdim=True)
        u, s, _ = torch.linalg.svd(c, full_matrices=False)
        coords = (u[:, :2] * s[:2]).numpy()
        if coords.shape[1] < 2:
            coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        total = float((s**2).sum())
        explained[li, : min(2, len(s))] = (s[:2] ** 2).numpy() / total if total > 0 else 0.0
        if len(scored) >= 3:
            r, p = _spearman_perm(coords[scored, 0], val)
            if r < 0:
                coords[:, 0] *= -1
                r = -r
            rho[li], pval[li] = r, p
        pca[li] = coords
    return Geometry(
        emotions=tuple(classes),
        layers=tuple(acts.layers),
        cosine=cosine,
        pca=pca,
        explained=explained,
        valence_rho=rho,
        valence_p=pval,
        valence={c: float(valence[c]) for c in classes if c in valence},
    )


# --------------------------------------------------------------------------------------------
# 3. cross-format generalisation
# --------------------------------------------------------------------------------------------
def direction_predict(dirs: Directions, x: Float[Tensor, "n d"], layer: int) -> np.ndarray:
    """Index (into ``dirs.emotions``) of the direction each row projects on most, after removing the rows' mean.

    Centring on the scored set's own mean uses no labels; it removes the offset between formats
    (short statements and long events sit in different places of activation space).
    """
    xc = x.float() - x.float().mean(0, keepdim=True)
    return dirs.project(xc, layer).argmax(1).numpy()


def _shift_to(x: Tensor, target_mean: Tensor) -> Tensor:
    return x - x.mean(0, keepdim=True) + target_mean


def cross_format(
    a: Activations,
    b: Activations,
    *,
    names: tuple[str, str] = ("implicit", "explicit"),
    site: str | None = None,
    labels: Sequence[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Train on one format, classify the other, both ways, per layer.

    Rows: ``train``, ``test``, ``layer``, ``method`` (``directions``: mean-difference directions,
    argmax projection; ``probe``: logistic probe), ``accuracy``, ``shuffled_accuracy`` (the same,
    trained on shuffled labels), ``chance``, ``n_test``. Directions are centred by group on the
    training side when every text has a group. Both sides are centred on their own mean (no labels).
    """
    import pandas as pd

    site_a = pick_site(a, site)
    pick_site(b, site_a)
    if labels is None:
        labels = [c for c in a.classes if c in set(b.classes)]
    labels = list(labels)
    layers = [v for v in a.layers if v in set(b.layers)]
    if not layers:
        raise ValueError(f"the two sets share no layer: {a.layers} vs {b.layers}")
    rows_out = []
    rng = np.random.default_rng(seed)
    for (train, test), (tname, sname) in (((a, b), names), ((b, a), names[::-1])):
        _, xtr, ytr, classes, rtr = class_matrix(train, site_a, labels, what="cross-format")
        _, xte, yte, _, _ = class_matrix(test, site_a, labels, what="cross-format")
        center = "group" if all(train.groups[r] is not None for r in rtr) else None
        sub = train.select(rtr)
        dirs = emotion_directions(sub, site=site_a, labels=classes, center_by=center)
        shuffled = Activations(
            tensors={site_a: sub[site_a]}, layers=list(sub.layers), labels=[classes[i] for i in rng.permutation(ytr)],
            groups=list(sub.groups), ids=list(sub.ids), texts=list(sub.texts),
        )
        sdirs = emotion_directions(shuffled, site=site_a, labels=classes, center_by=center)
        li = [train.layer_index(v) for v in layers]
        ti = [test.layer_index(v) for v in layers]
        xs = [xtr[:, i].contiguous() for i in li]
        y_sh = rng.permutation(ytr)
        probes = train_logistic_many(xs + xs, [ytr] * len(xs) + [y_sh] * len(xs), classes)
        k = len(classes)
        for j, layer in enumerate(layers):
            xt = xte[:, ti[j]]
            acc_d = scores(yte, direction_predict(dirs, xt, layer), k)[0]
            acc_sd = scores(yte, direction_predict(sdirs, xt, layer), k)[0]
            xt_shift = _shift_to(xt, xs[j].mean(0, keepdim=True))  # match the training set's mean, label-free
            acc_p = scores(yte, probes[j].predict(xt_shift).numpy(), k)[0]
            acc_sp = scores(yte, probes[len(xs) + j].predict(xt_shift).numpy(), k)[0]
            base = {"train": tname, "test": sname, "layer": layer, "chance": 1.0 / k, "n_test": len(yte)}
            rows_out.append({**base, "method": "directions", "accuracy": acc_d, "shuffled_accuracy": acc_sd})
            rows_out.append({**base, "method": "probe", "accuracy": acc_p, "shuffled_accuracy": acc_sp})
    return pd.DataFrame(rows_out)


# --------------------------------------------------------------------------------------------
# 4. persistence
# --------------------------------------------------------------------------------------------
def default_offsets(n: int = 200) -> list[int]:
    """0–10 every token, then every 10 tokens to ``n`` (inclusive)."""
    if n < 0:
        raise ValueError(f"the largest offset must be ≥ 0, got {n}")
    return sorted({*range(0, min(n, 10) + 1), *range(0, n + 1, 10), n})


def cut_continuation(tokenizer: Any, continuation: str, n_tokens: int) -> str:
    """The shortest prefix of ``continuation``, cut at a word boundary, with at least ``n_tokens`` tokens.

    ``ValueError`` if the whole continuation is shorter.
    """
    enc = tokenizer(continuation, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if len(offsets) < n_tokens:
        raise ValueError(
            f"the continuation has {len(offsets)} tokens but {n_tokens} offsets were asked for; "
            f"ask for at most {len(offsets)} or give a longer continuation"
        )
    end = offsets[n_tokens - 1][1] if n_tokens > 0 else 0
    nxt = continuation.find(" ", end)
    return continuation if nxt < 0 else continuation[:nxt]


def persistence_stimuli(
    stimuli: Stimuli,
    continuation: str,
    *,
    labels: Sequence[str] = EMOTIONS,
    n_groups: int | None = 8,
) -> Stimuli:
    """Emotional texts followed by the same neutral ``continuation`` (``meta["event"]`` keeps the original text).

    Takes the first ``n_groups`` groups that have every label in ``labels`` (all with ``None``).
    """
    label_set = set(labels)
    by_group: dict[str, dict[str, Stimulus]] = {}
    for s in stimuli:
        if s.label in label_set and s.group is not None:
            by_group.setdefault(s.group, {})[s.label] = s  # type: ignore[index]
    full = [g for g, members in by_group.items() if set(members) >= label_set]
    if len(full) < 2:
        raise ValueError(
            f"persistence needs at least two groups holding every label of {sorted(label_set)}; found {len(full)}"
        )
    chosen = full if n_groups is None else full[:n_groups]
    items = []
    for g in chosen:
        for lab in labels:
            s = by_group[g][lab]
            items.append(
                Stimulus(
                    text=f"{s.text} {continuation}",
                    label=s.label,
                    group=s.group,
                    id=f"{s.id}+continuation",
                    meta={"event": s.text},
                )
            )
    return Stimuli(items, name=f"{stimuli.name}+continuation")


def _event_lengths(model: Model, stim: Stimuli, format: str) -> list[int]:
    """Number of text tokens of each stimulus's event (its own tokens before the continuation)."""
    from psylens.harvest import encode

    out = []
    for s in stim:
        event = s.meta.get("event") if isinstance(s.meta, dict) else None
        if not event:
            raise ValueError(f"stimulus {s.id!r} has no meta['event']; build the set with persistence_stimuli")
        full = encode(model, s.text, format=format)
        ev = encode(model, event, format=format)
        a, b = full.ids[full.text_start :], ev.ids[ev.text_start :]
        common = 0
        for u, v in zip(a, b):
            if u != v:
                break
            common += 1
        out.append(common)
    return out


def harvest_persistence(
    model: Model,
    stim: Stimuli,
    *,
    offsets: Sequence[int],
    layers: Sequence[int],
    site: str = "resid_post",
    format: str = "auto",
    batch_size: int = 8,
    progress: bool = False,
) -> dict[int, Activations]:
    """Harvest every token of ``stim`` and keep, per offset, one row per text: the token ``offset``
    positions after the event's last token (offset 0 is the event's last token).

    Texts too short for an offset are left out of that offset.
    """
    acts = model.harvest(
        stim, sites=[site], layers=list(layers), positions="all", format=format, batch_size=batch_size, progress=progress
    )
    n_event = _event_lengths(model, stim, format)
    ts, tp = acts.token_stimulus, acts.token_position
    if ts is None or tp is None:
        raise ValueError("the harvest returned no token positions; persistence needs positions='all'")
    out: dict[int, Activations] = {}
    for off in offsets:
        want = torch.tensor([n - 1 + off for n in n_event])
        hit = (tp == want[ts]).nonzero().flatten()
        if len(hit) == 0:
            continue
        idx = ts[hit].tolist()
        out[int(off)] = Activations(
            tensors={site: acts[site][hit]},
            layers=list(acts.layers),
            labels=[stim[i].label for i in idx],
            groups=[stim[i].group for i in idx],
            ids=[stim[i].id for i in idx],
            texts=[stim[i].text for i in idx],
            positions="last",
            meta={**acts.meta, "offset": int(off)},
        )
    return out


def persistence_curve(
    by_offset: Mapping[int, Activations],
    *,
    site: str | None = None,
    labels: Sequence[str] | None = None,
    transfer: Mapping[int, tuple[Probe, Probe]] | None = None,
    n_splits: int = 5,
    seed: int = 0,
    C: float = DEFAULT_C,
) -> pd.DataFrame:
    """Decoding accuracy at each token offset and layer.

    - ``accuracy``: a probe refitted at that offset, cross-validated by group (is the emotion still
      there?), with ``shuffled_accuracy`` beside it;
    - ``transfer_accuracy``: ``transfer[layer] = (probe, shuffled_probe)`` trained elsewhere (on the
      events' last token, other scenarios) applied at the offset (is it still read the same way?),
      with ``transfer_shuffled_accuracy``.
    """
    import pandas as pd

    if not by_offset:
        raise ValueError("no offsets to decode: the harvest kept no rows (are the texts long enough?)")
    tasks: list[tuple[Tensor, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]] = []
    keys: list[tuple[int, int, np.ndarray]] = []
    classes: list[str] | None = None
    rng = np.random.default_rng(seed)
    for off in sorted(by_offset):
        acts = by_offset[off]
        s, x, y, cls, rows = class_matrix(acts, site, labels if labels is not None else classes, what="persistence")
        classes = classes or cls
        groups = group_ids(acts, rows, what="persistence")
        folds = group_folds(groups, y, n_splits, seed)
        y_sh = rng.permutation(y)
        for li, layer in enumerate(acts.layers):
            xl = x[:, li].contiguous()
            tasks += [(xl, y, folds), (xl, y_sh, folds)]
            keys.append((off, layer, y))
            keys.append((off, layer, y_sh))
    if classes is None:  # pragma: no cover - by_offset is not empty
        raise ValueError("no labelled texts at any offset")
    preds = cross_val_predict(tasks, classes, seed=seed, C=C)
    k = len(classes)
    rows_out = []
    for j in range(0, len(tasks), 2):
        off, layer, y = keys[j]
        _, y_sh, _ = tasks[j + 1]
        row: dict[str, Any] = {
            "offset": off,
            "layer": layer,
            "accuracy": scores(y, preds[j], k)[0],
            "shuffled_accuracy": scores(y_sh, preds[j + 1], k)[0],
            "n": len(y),
            "chance": 1.0 / k,
        }
        if transfer is not None and layer in transfer:
            real, shuf = transfer[layer]
            x = tasks[j][0]
            row["transfer_accuracy"] = scores(y, real.predict(x).numpy(), k)[0]
            row["transfer_shuffled_accuracy"] = scores(y, shuf.predict(x).numpy(), k)[0]
        rows_out.append(row)
    return pd.DataFrame(rows_out)


# --------------------------------------------------------------------------------------------
# 5. system-prompt shift
# --------------------------------------------------------------------------------------------
def system_prompt_shift(
    directions: Directions,
    base: Activations,
    prompted: Mapping[str, Activations],
    *,
    site: str | None = None,
    layers: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Shift of neutral texts along each emotion direction when a mood system prompt is added.

    ``base``: the texts without the mood prompt; ``prompted[mood]``: the same texts with the
    prompt for ``mood``. Per layer, prompt and direction: ``shift_sd = (mean_prompted −
    mean_base) / sd_base`` of the projections on the unit direction.
    """
    import pandas as pd

    site = pick_site(base, site or directions.site)
    layers = list(layers) if layers is not None else [v for v in directions.layers if v in set(base.layers)]
    rows = []
    for layer in layers:
        pb = directions.project(base.layer(site, layer), layer)  # [n, E]
        mu, sd = pb.mean(0), pb.std(0).clamp_min(1e-12)
        for mood, acts in prompted.items():
            if list(acts.ids) != list(base.ids):
                raise ValueError(f"prompted set {mood!r} holds other texts than the base set; harvest the same texts")
            pp = directions.project(acts.layer(site, layer), layer)
            shift = (pp.mean(0) - mu) / sd
            for ei, emotion in enumerate(directions.emotions):
                rows.append(
                    {
                        "layer": layer,
                        "prompt": mood,
                        "direction": emotion,
                        "shift_sd": float(shift[ei]),
                        "base_mean": float(mu[ei]),
                        "base_sd": float(sd[ei]),
                        "prompted_mean": float(pp[:, ei].mean()),
                        "n": len(base),
                    }
                )
    return pd.DataFrame(rows)


def shift_summary(table: pd.DataFrame, layer: int) -> dict[str, Any]:
    """At ``layer``: each mood's shift along its own direction, the mean of those (matched) and of the
    others (off-diagonal), and their difference (specificity)."""
    t = table[table["layer"] == layer]
    if t.empty:
        raise ValueError(f"no system-prompt shift at layer {layer}; layers: {sorted(table['layer'].unique().tolist())}")
    matched = t[t["prompt"] == t["direction"]]
    off = t[(t["prompt"] != t["direction"]) & t["direction"].isin(t["prompt"].unique())]
    by = {r.prompt: round(float(r.shift_sd), 3) for r in matched.itertuples()}
    m, o = float(matched["shift_sd"].mean()), float(off["shift_sd"].mean()) if len(off) else float("nan")
    return {
        "layer": layer,
        "matched_shift_sd": by,
        "mean_matched_shift_sd": round(m, 3),
        "mean_off_diagonal_shift_sd": round(o, 3),
        "specificity_sd": round(m - o, 3),
        "n_moods_shifted_over_1sd": int((matched["shift_sd"] > 1).sum()),
    }
