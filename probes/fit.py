"""Probes per layer with cross-validation and controls.

``fit_probes(acts)`` fits one probe per layer of one site and reports, per layer:

- **accuracy, macro-F1, confusion** out of fold. With ``cv="group"`` (default) whole groups
  (scenarios) are held out, so a probe is always scored on scenarios it never saw;
  ``cv="text"`` holds out single texts (stratified).
- **shuffled control**: the same, on labels permuted once (seeded) across texts, with the same
  folds. It must land near chance; it is reported beside the real number everywhere.
- **selectivity** (Hewitt & Liang, 2019): a control task that is random but *consistent* — each
  group (scenario) gets one random label (balanced over the classes), shared by all its texts — so
  a probe can only score by memorising scenario identity it saw in training. Both tasks are then
  scored with text-level folds (texts of a scenario on both sides, which memorisation needs):
  ``selectivity = text_accuracy − control_accuracy``. A selective probe reads emotion, not its
  capacity to memorise whatever the representation can tell apart. Needs groups; ``None`` otherwise.

- **lexical baseline**: a bag-of-words logistic probe (TF-IDF of the texts' words +
  scikit-learn ``LogisticRegression``) on the same texts, labels and folds. What the words alone
  give; each layer's ``rise_above_lexical`` is its accuracy minus this, with a paired interval.
- **intervals**: every accuracy gets a 95% bootstrap interval over the held-out texts, resampling
  whole scenarios when the folds hold out scenarios (``psylens.stats``; seeded).

Each layer's final probe is refitted on all texts and kept (``results.probes``), so
``results.evaluate(other_acts)`` scores an external labelled set.

.. warning:: The best layer is the argmax of noisy accuracies: neighbouring layers are often
   indistinguishable from it (``layers_tied_with_best`` in the summary lists them).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from psylens.activations import Activations
from psylens.io import read_json, read_tensors, write_json, write_tensors
from psylens.probes.classifiers import DEFAULT_C, KINDS, Probe, single_thread, train_logistic_many, train_probe
from psylens.probes.directions import class_matrix, group_ids, pick_site

__all__ = [
    "CV",
    "CONTROLS",
    "ProbeResults",
    "EvalResult",
    "fit_probes",
    "group_folds",
    "text_folds",
    "control_labels",
    "scores",
    "cross_val_predict",
    "LexicalBaseline",
    "lexical_baseline",
]

CV = ("group", "text")
CONTROLS = ("shuffled", "selectivity")
Folds = list[tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------------------------
# folds
# --------------------------------------------------------------------------------------------
def group_folds(
    groups: Sequence[Any] | np.ndarray, labels: Sequence[Any] | np.ndarray, n_splits: int = 5, seed: int = 0
) -> Folds:
    """``(train, test)`` index pairs that never put one group on both sides.

    Stratified by label as far as groups allow (scikit-learn ``StratifiedGroupKFold``, shuffled
    with ``seed``); ``n_splits`` is capped at the number of groups. Every index is in exactly one
    test fold. ``ValueError`` with fewer than two groups.
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    groups_a = np.asarray(groups, dtype=object).astype(str)
    labels_a = np.asarray(labels, dtype=object).astype(str)
    if len(groups_a) != len(labels_a):
        raise ValueError(f"{len(groups_a)} groups for {len(labels_a)} labels; give one group per text")
    n_groups = len(np.unique(groups_a))
    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    if n_groups < 2:
        raise ValueError(
            f"group cross-validation needs at least two groups, but all {len(groups_a)} texts are in "
            f"{n_groups} group(s); add scenarios (groups) or use cv='text'"
        )
    k = min(n_splits, n_groups)
    x0 = np.zeros(len(labels_a))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has fewer members than n_splits"
        try:
            folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(x0, labels_a, groups_a))
        except ValueError:  # too few texts per label to stratify: plain group folds, groups in a seeded order
            uniq = np.unique(groups_a)
            rank = dict(zip(uniq.tolist(), np.random.default_rng(seed).permutation(len(uniq)).tolist()))
            shuffled_groups = np.array([rank[g] for g in groups_a.tolist()])
            folds = list(GroupKFold(n_splits=k).split(x0, labels_a, shuffled_groups))
    return [(tr, te) for tr, te in folds if len(tr) and len(te)]


def text_folds(labels: Sequence[Any] | np.ndarray, n_splits: int = 5, seed: int = 0) -> Folds:
    """Stratified text-level folds (``StratifiedKFold``); ``n_splits`` capped by the rarest label's count."""
    from sklearn.model_selection import StratifiedKFold

    labels_a = np.asarray(labels, dtype=object).astype(str)
    _, counts = np.unique(labels_a, return_counts=True)
    k = min(n_splits, int(counts.min()))
    if k < 2:
        raise ValueError(
            f"text-level cross-validation needs at least two texts of every label; the rarest label has "
            f"{int(counts.min())}; add texts"
        )
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels_a)), labels_a))


def control_labels(groups: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """The selectivity control task: one random label per group, balanced over ``n_classes``, shared by its texts."""
    uniq = np.unique(groups)
    rng = np.random.default_rng(seed + 7919)
    per_group = rng.permutation(np.arange(len(uniq)) % n_classes)
    lookup = dict(zip(uniq.tolist(), per_group.tolist()))
    return np.array([lookup[g] for g in groups.tolist()], dtype=np.int64)


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
def scores(y: np.ndarray, pred: np.ndarray, k: int) -> tuple[float, float, np.ndarray]:
    """``(accuracy, macro_f1, confusion [k, k])``; rows are true labels, columns predictions.

    Macro-F1 averages over the labels present in ``y`` (an absent label's F1 is undefined).
    """
    y = np.asarray(y, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    conf = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    acc = float(np.trace(conf) / max(len(y), 1))
    tp = np.diag(conf).astype(float)
    support, predicted = conf.sum(1).astype(float), conf.sum(0).astype(float)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    return acc, float(f1[present].mean()) if present.any() else 0.0, conf


def _train_many(
    xs: Sequence[Tensor], rows: Sequence[np.ndarray | None], ys: Sequence[np.ndarray], classes: Sequence[str],
    kind: str, seed: int, C: float,
) -> list[Probe]:
    if kind == "logistic":
        return train_logistic_many(xs, ys, classes, rows=rows, C=C)
    out = []
    for x, r, y in zip(xs, rows, ys):
        xr = x if r is None else x[torch.as_tensor(r, dtype=torch.long)]
        out.append(train_probe(xr.numpy(), y, classes, kind=kind, seed=seed, C=C))
    return out


def cross_val_predict(
    tasks: Sequence[tuple[Tensor, np.ndarray, Folds]],
    classes: Sequence[str],
    *,
    kind: str = "logistic",
    seed: int = 0,
    C: float = DEFAULT_C,
    stats: dict[str, int] | None = None,
) -> list[np.ndarray]:
    """Out-of-fold predictions for many ``(x [n, d], y [n], folds)`` tasks, all fitted in one batch."""
    xs: list[Tensor] = []
    rows: list[np.ndarray | None] = []
    ys: list[np.ndarray] = []
    where: list[tuple[int, np.ndarray]] = []
    for t, (x, y, folds) in enumerate(tasks):
        for tr, te in folds:
            xs.append(x), rows.append(tr), ys.append(y[tr]), where.append((t, te))
    probes = _train_many(xs, rows, ys, classes, kind, seed, C)
    preds = [np.full(len(y), -1, dtype=np.int64) for _, y, _ in tasks]
    for p, (t, te) in zip(probes, where):
        preds[t][te] = p.predict(tasks[t][0][torch.as_tensor(te, dtype=torch.long)]).numpy()
    if stats is not None:
        stats["fits"] += len(probes)
        stats["not_converged"] += sum(p.info.get("converged") is False for p in probes)
    return preds


# --------------------------------------------------------------------------------------------
# lexical baseline and intervals
# --------------------------------------------------------------------------------------------
LEXICAL_METHOD = "tf-idf bag of words (unigrams, vocabulary fitted per training fold) + logistic regression, C=1"
BOOTSTRAP = {"n_boot": 2000, "seed": 0, "level": 0.95}


@dataclass(frozen=True, eq=False)
class LexicalBaseline:
    """Out-of-fold predictions of a bag-of-words probe on the texts themselves.

    ``predictions [n]`` index into the classes; ``accuracy`` and its ``ci95`` (bootstrap over texts,
    resampling groups when given).
    """

    accuracy: float
    ci95: tuple[float, float]
    predictions: np.ndarray
    n_features: int
    method: str = LEXICAL_METHOD

    def summary(self) -> dict[str, Any]:
        return {"accuracy": round(self.accuracy, 4), "ci95": [round(v, 4) for v in self.ci95],
                "method": self.method, "n_features": self.n_features}


def lexical_baseline(
    texts: Sequence[str],
    y: Sequence[int] | np.ndarray,
    folds: Folds,
    classes: Sequence[str],
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    C: float = 1.0,
) -> LexicalBaseline:
    """A bag-of-words logistic probe scored out of fold on ``folds`` — what the words alone give.

    Give it the same ``folds`` as the activation probes (e.g. :func:`group_folds`, holding out
    whole scenarios), so the two numbers are comparable item by item. The vocabulary is fitted on
    each training fold only. ``ValueError`` when the texts carry no words.

    .. warning:: Texts that name their label (a planted word) make this reach ~1.0: it is a floor for
       what a probe must beat, not a measure of the model.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from psylens.stats import rate_ci

    texts = [t if isinstance(t, str) else "" for t in texts]
    y_a = np.asarray(y, dtype=np.int64)
    if len(texts) != len(y_a):
        raise ValueError(f"{len(texts)} texts for {len(y_a)} labels; give one label per text")
    if not any(t.strip() for t in texts):
        raise ValueError("the texts are all empty: a lexical baseline needs the texts the activations were read from")
    pred = np.full(len(y_a), -1, dtype=np.int64)
    n_features = 0
    for tr, te in folds:
        present = np.unique(y_a[tr])
        vec = TfidfVectorizer(lowercase=True, sublinear_tf=True, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z']+\b")
        try:
            x_tr = vec.fit_transform([texts[i] for i in tr])
        except ValueError as e:  # empty vocabulary in this fold
            raise ValueError(f"the training texts of a fold have no words to count ({e}); check the texts") from None
        n_features = max(n_features, x_tr.shape[1])
        if len(present) == 1:
            pred[te] = present[0]
            continue
        clf = LogisticRegression(C=C, max_iter=2000)
        clf.fit(x_tr, y_a[tr])
        pred[te] = clf.predict(vec.transform([texts[i] for i in te]))
    if (pred < 0).any():
        raise ValueError("the folds do not cover every text; give folds whose test parts partition the texts")
    correct = (pred == y_a).astype(np.float64)
    lo, hi = rate_ci(correct, groups=groups, **BOOTSTRAP)
    return LexicalBaseline(accuracy=float(correct.mean()), ci95=(lo, hi), predictions=pred, n_features=int(n_features))


def accuracy_intervals(y: np.ndarray, predictions: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Per layer ``[lo, hi]`` of the accuracy of ``predictions [L, n]`` (bootstrap over texts or groups)."""
    from psylens.stats import rate_ci

    return np.array([rate_ci((p == y).astype(np.float64), groups=groups, **BOOTSTRAP) for p in predictions])


def paired_intervals(
    y: np.ndarray, predictions: np.ndarray, reference: np.ndarray, groups: np.ndarray | None
) -> list[Any]:
    """Per layer, the paired difference (``psylens.stats.PairedDiff``) of correctness against ``reference [n]``."""
    from psylens.stats import paired_diff_ci

    ref = (reference == y).astype(np.float64)
    return [paired_diff_ci((p == y).astype(np.float64), ref, groups=groups, **BOOTSTRAP) for p in predictions]


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class EvalResult:
    """Fitted probes applied to an external labelled set."""

    classes: tuple[str, ...]
    layers: tuple[int, ...]
    n: int
    accuracy: np.ndarray
    macro_f1: np.ndarray
    confusion: np.ndarray
    best_layer: int
    predictions: np.ndarray
    ids: tuple[str, ...] = ()
    y: np.ndarray | None = None  # [n] true label indices (for the intervals)

    @property
    def accuracy_at_best_layer(self) -> float:
        return float(self.accuracy[self.layers.index(self.best_layer)])

    @cached_property
    def accuracy_ci95(self) -> np.ndarray | None:
        """``[L, 2]``: 95% bootstrap interval over the evaluation texts (``None`` without ``y``)."""
        return None if self.y is None else accuracy_intervals(self.y, self.predictions, None)

    def summary(self) -> dict[str, Any]:
        ci = self.accuracy_ci95
        return {
            "accuracy_ci95_by_layer": None if ci is None else [[round(float(a), 4), round(float(b), 4)] for a, b in ci],
            "accuracy_ci95_at_best_layer": None if ci is None
            else [round(float(v), 4) for v in ci[self.layers.index(self.best_layer)]],
            "accuracy_by_layer": [round(float(a), 4) for a in self.accuracy],
            "accuracy_at_best_layer": round(self.accuracy_at_best_layer, 4),
            "n": self.n,
            "labels": list(self.classes),
            "best_layer": self.best_layer,
            "macro_f1_by_layer": [round(float(a), 4) for a in self.macro_f1],
            "chance": round(1.0 / len(self.classes), 4),
        }


@dataclass(frozen=True, eq=False)
class ProbeResults:
    """Per-layer probe scores with controls, and the probes refitted on all texts.

    Arrays are indexed by position in ``layers``: ``accuracy [L]``, ``confusion [L, K, K]``,
    ``predictions [L, n]`` (out of fold, indices into ``classes``), and so on.
    """

    site: str
    classes: tuple[str, ...]
    layers: tuple[int, ...]
    kind: str
    cv: str
    n_splits: int
    seed: int
    C: float
    ids: tuple[str, ...]
    y: np.ndarray
    accuracy: np.ndarray
    macro_f1: np.ndarray
    confusion: np.ndarray
    predictions: np.ndarray
    shuffled_accuracy: np.ndarray | None = None
    shuffled_macro_f1: np.ndarray | None = None
    shuffled_confusion: np.ndarray | None = None
    text_accuracy: np.ndarray | None = None
    control_accuracy: np.ndarray | None = None
    probes: tuple[Probe, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None  # [n] group index per text (resampled by the intervals); None: texts
    lexical: LexicalBaseline | None = None

    # -- headline numbers -------------------------------------------------------------------
    @property
    def chance(self) -> float:
        """Accuracy of always predicting the most frequent label (1/K when balanced)."""
        counts = np.bincount(self.y, minlength=len(self.classes))
        return float(counts.max() / counts.sum())

    @property
    def best_index(self) -> int:
        return int(np.argmax(self.accuracy))  # first layer on ties

    @property
    def best_layer(self) -> int:
        return self.layers[self.best_index]

    @property
    def best_accuracy(self) -> float:
        return float(self.accuracy[self.best_index])

    @property
    def selectivity(self) -> np.ndarray | None:
        if self.text_accuracy is None or self.control_accuracy is None:
            return None
        return self.text_accuracy - self.control_accuracy

    # -- intervals (psylens.stats; bootstrap over held-out texts, by scenario when groups are known) --
    @cached_property
    def accuracy_ci95(self) -> np.ndarray:
        """``[L, 2]``: 95% interval of each layer's out-of-fold accuracy."""
        return accuracy_intervals(self.y, self.predictions, self.groups)

    @property
    def rise_above_lexical(self) -> np.ndarray | None:
        """``[L]``: accuracy minus the lexical baseline's (``None`` without one)."""
        return None if self.lexical is None else self.accuracy - self.lexical.accuracy

    @cached_property
    def rise_vs_lexical(self) -> list[Any] | None:
        """Per layer, the paired difference probe − lexical over the same held-out texts (``PairedDiff``)."""
        if self.lexical is None:
            return None
        return paired_intervals(self.y, self.predictions, self.lexical.predictions, self.groups)

    @cached_property
    def layers_tied_with_best(self) -> list[int]:
        """Layers whose accuracy the best layer does not beat: the paired interval of best − layer includes 0."""
        best = self.predictions[self.best_index][None]
        return [
            layer for j, layer in enumerate(self.layers)
            if j == self.best_index or not paired_intervals(self.y, best, self.predictions[j], self.groups)[0].beats
        ]

    @property
    def emergence_layer(self) -> int | None:
        """First layer whose accuracy exceeds twice chance (``None`` if none does, always so for 2 labels)."""
        above = np.nonzero(self.accuracy > 2 * self.chance)[0]
        return self.layers[int(above[0])] if len(above) else None

    def layer_index(self, layer: int) -> int:
        try:
            return self.layers.index(int(layer))
        except ValueError:
            raise ValueError(f"layer {layer} was not probed; probed layers: {list(self.layers)}") from None

    def table(self) -> Any:
        """One row per layer: accuracy, macro-F1 and every control (pandas DataFrame)."""
        import pandas as pd

        def col(a: np.ndarray | None) -> list[float | None]:
            return [None if a is None else float(v) for v in (a if a is not None else [None] * len(self.layers))]

        sel = self.selectivity
        ci = self.accuracy_ci95
        rise = self.rise_above_lexical
        rise_ci = None if self.rise_vs_lexical is None else np.array([[d.lo, d.hi] for d in self.rise_vs_lexical])
        n_l = len(self.layers)
        return pd.DataFrame(
            {
                "site": self.site,
                "layer": list(self.layers),
                "accuracy": col(self.accuracy),
                "accuracy_ci95_lo": col(ci[:, 0]),
                "accuracy_ci95_hi": col(ci[:, 1]),
                "lexical_accuracy": [None if self.lexical is None else self.lexical.accuracy] * n_l,
                "rise_above_lexical": col(rise),
                "rise_above_lexical_ci95_lo": col(None if rise_ci is None else rise_ci[:, 0]),
                "rise_above_lexical_ci95_hi": col(None if rise_ci is None else rise_ci[:, 1]),
                "macro_f1": col(self.macro_f1),
                "shuffled_accuracy": col(self.shuffled_accuracy),
                "shuffled_macro_f1": col(self.shuffled_macro_f1),
                "text_cv_accuracy": col(self.text_accuracy),
                "control_task_accuracy": col(self.control_accuracy),
                "selectivity": col(sel),
                "chance": self.chance,
                "n_labels": len(self.classes),
            }
        )

    def summary(self) -> dict[str, Any]:
        """The JSON-able headline: labels, layers, accuracy curves with controls, best layer, chance."""

        def r(a: np.ndarray | None) -> list[float] | None:
            return None if a is None else [round(float(v), 4) for v in a]

        return {
            "site": self.site,
            "labels": list(self.classes),
            "layers": list(self.layers),
            "n": int(len(self.y)),
            "kind": self.kind,
            "cv": self.cv,
            "n_splits": self.n_splits,
            "C": self.C,
            "accuracy_by_layer": r(self.accuracy),
            "macro_f1_by_layer": r(self.macro_f1),
            "shuffled_accuracy_by_layer": r(self.shuffled_accuracy),
            "shuffled_macro_f1_by_layer": r(self.shuffled_macro_f1),
            "selectivity": None
            if self.selectivity is None
            else {
                "text_cv_accuracy_by_layer": r(self.text_accuracy),
                "control_task_accuracy_by_layer": r(self.control_accuracy),
                "selectivity_by_layer": r(self.selectivity),
            },
            "best_layer": self.best_layer,
            "best_accuracy": round(self.best_accuracy, 4),
            "shuffled_accuracy_at_best_layer": None
            if self.shuffled_accuracy is None
            else round(float(self.shuffled_accuracy[self.best_index]), 4),
            "chance": round(self.chance, 4),
            "emergence_layer": self.emergence_layer,
            "info": dict(self.info),
            **self.interval_summary(),
        }

    def interval_summary(self) -> dict[str, Any]:
        """The intervals and the lexical baseline (JSON-able): what ``summary()`` adds to the curves."""

        def pair(v: Sequence[float]) -> list[float]:
            return [round(float(v[0]), 4), round(float(v[1]), 4)]

        ci = self.accuracy_ci95
        b = self.best_index
        out: dict[str, Any] = {
            "accuracy_ci95_by_layer": [pair(v) for v in ci],
            "best_accuracy_ci95": pair(ci[b]),
            "layers_tied_with_best": self.layers_tied_with_best,
            "shuffled_accuracy_ci95_at_best_layer": None,
            "lexical_baseline": None if self.lexical is None else self.lexical.summary(),
            "rise_above_lexical_by_layer": None,
            "rise_above_lexical_ci95_by_layer": None,
            "beats_lexical_at_best_layer": None,
            "intervals": {
                **BOOTSTRAP,
                "over": "held-out texts, resampling whole scenarios" if self.groups is not None else "held-out texts",
                "note": "95% percentile bootstrap (Wilson when every text agrees); beats = the paired interval "
                "over the same texts excludes zero",
            },
        }
        if self.shuffled_accuracy is not None and self.shuffled_confusion is not None:
            # the shuffled task's own labels are not kept; its confusion gives the count of hits
            conf = self.shuffled_confusion[b]
            from psylens.stats import wilson_ci

            out["shuffled_accuracy_ci95_at_best_layer"] = pair(wilson_ci(int(np.trace(conf)), int(conf.sum())))
        if self.lexical is not None and self.rise_vs_lexical is not None:
            rise = self.rise_above_lexical
            out["rise_above_lexical_by_layer"] = [round(float(v), 4) for v in rise]  # type: ignore[union-attr]
            out["rise_above_lexical_ci95_by_layer"] = [pair((d.lo, d.hi)) for d in self.rise_vs_lexical]
            out["beats_lexical_at_best_layer"] = bool(self.rise_vs_lexical[b].beats)
        return out

    # -- applying ---------------------------------------------------------------------------
    def _probe_at(self, layer: int) -> Probe:
        if not self.probes:
            raise ValueError("these results kept no fitted probes (fit_probes(..., keep_probes=False))")
        return self.probes[self.layer_index(layer)]

    def predict(self, acts: Activations, layer: int, *, site: str | None = None) -> list[str]:
        """Predicted label of every text in ``acts`` by the probe at ``layer``."""
        site = site or self.site
        x = _features(acts, site, layer)
        idx = self._probe_at(layer).predict(x)
        return [self.classes[i] for i in idx.tolist()]

    def evaluate(self, acts: Activations, *, site: str | None = None) -> EvalResult:
        """Score the fitted probes on an external labelled set (its labels must be among ``classes``).

        ``ValueError`` when texts have no label, or a label the probes were not trained on
        (filter the set first, e.g. ``stimuli.filter(labels=results.classes)``).
        """
        site = site or self.site
        y = eval_labels(acts, self.classes)
        k = len(self.classes)
        accs, f1s, confs, preds = [], [], [], []
        for layer in self.layers:
            pred = self._probe_at(layer).predict(_features(acts, site, layer)).numpy()
            a, f, c = scores(y, pred, k)
            accs.append(a), f1s.append(f), confs.append(c), preds.append(pred)
        return EvalResult(
            classes=self.classes,
            layers=self.layers,
            n=len(y),
            accuracy=np.array(accs),
            macro_f1=np.array(f1s),
            confusion=np.stack(confs),
            best_layer=self.best_layer,
            predictions=np.stack(preds),
            ids=tuple(acts.ids),
            y=y,
        )

    # -- storage ----------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str], name: str = "probes") -> Path:
        """``DIR/<name>.json`` (scores) + ``DIR/<name>.safetensors`` (arrays and fitted probes)."""
        d = Path(directory)
        tensors: dict[str, Tensor] = {"y": torch.from_numpy(self.y)}
        for key in ("accuracy", "macro_f1", "confusion", "predictions", "shuffled_accuracy", "shuffled_macro_f1",
                    "shuffled_confusion", "text_accuracy", "control_accuracy"):
            val = getattr(self, key)
            if val is not None:
                tensors[key] = torch.from_numpy(np.ascontiguousarray(val))
        if self.groups is not None:
            tensors["groups"] = torch.from_numpy(np.ascontiguousarray(self.groups, dtype=np.int64))
        if self.lexical is not None:
            tensors["lexical_predictions"] = torch.from_numpy(np.ascontiguousarray(self.lexical.predictions))
        kinds = []
        for i, p in enumerate(self.probes):
            tensors.update(p.tensors(prefix=f"probe.{i}."))
            kinds.append(p.kind)
        write_tensors(d / f"{name}.safetensors", tensors)
        meta = {
            "site": self.site, "classes": list(self.classes), "layers": list(self.layers), "kind": self.kind,
            "cv": self.cv, "n_splits": self.n_splits, "seed": self.seed, "C": self.C, "ids": list(self.ids),
            "probe_kinds": kinds, "info": self.info, "summary": self.summary(),
            "lexical": None if self.lexical is None else {
                "accuracy": self.lexical.accuracy, "ci95": list(self.lexical.ci95),
                "n_features": self.lexical.n_features, "method": self.lexical.method,
            },
        }
        return write_json(d / f"{name}.json", meta)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], name: str = "probes") -> ProbeResults:
        d = Path(directory)
        if not (d / f"{name}.json").is_file():
            raise ValueError(f"no saved probes in {str(d)!r} (no {name}.json); fit and save them with ProbeResults.save")
        meta = read_json(d / f"{name}.json")
        t = read_tensors(d / f"{name}.safetensors")

        def get(key: str) -> np.ndarray | None:
            return t[key].numpy() if key in t else None

        probes = tuple(
            Probe.from_tensors(kind, meta["classes"], t, prefix=f"probe.{i}.") for i, kind in enumerate(meta["probe_kinds"])
        )
        return cls(
            site=meta["site"], classes=tuple(meta["classes"]), layers=tuple(meta["layers"]), kind=meta["kind"],
            cv=meta["cv"], n_splits=meta["n_splits"], seed=meta["seed"], C=meta["C"], ids=tuple(meta["ids"]),
            y=t["y"].numpy(), accuracy=t["accuracy"].numpy(), macro_f1=t["macro_f1"].numpy(),
            confusion=t["confusion"].numpy(), predictions=t["predictions"].numpy(),
            shuffled_accuracy=get("shuffled_accuracy"), shuffled_macro_f1=get("shuffled_macro_f1"),
            shuffled_confusion=get("shuffled_confusion"), text_accuracy=get("text_accuracy"),
            control_accuracy=get("control_accuracy"), probes=probes, info=meta.get("info", {}),
            groups=get("groups"), lexical=_load_lexical(meta.get("lexical"), get("lexical_predictions")),
        )

    def __repr__(self) -> str:
        ctrl = "" if self.shuffled_accuracy is None else f", shuffled {float(self.shuffled_accuracy[self.best_index]):.2f}"
        return (
            f"ProbeResults({self.kind}, site={self.site!r}, {len(self.classes)} labels, cv={self.cv!r}, "
            f"best layer {self.best_layer}: {self.best_accuracy:.2f}{ctrl}, chance {self.chance:.2f})"
        )


def _load_lexical(meta: dict[str, Any] | None, predictions: np.ndarray | None) -> LexicalBaseline | None:
    if meta is None or predictions is None:
        return None
    return LexicalBaseline(accuracy=float(meta["accuracy"]), ci95=(float(meta["ci95"][0]), float(meta["ci95"][1])),
                           predictions=predictions, n_features=int(meta["n_features"]), method=str(meta["method"]))


def _features(acts: Activations, site: str, layer: int) -> Float[Tensor, "n d"]:
    pick_site(acts, site)
    if acts.positions == "all":
        raise ValueError("probes score one activation per text; these activations have positions='all'")
    x = acts.layer(site, layer)
    return x.flatten(1).float() if x.ndim == 3 else x.float()


def eval_labels(acts: Activations, classes: Sequence[str]) -> np.ndarray:
    """Label indices of an evaluation set, with clear errors for unlabelled texts and unknown labels."""
    missing = [i for i, lab in enumerate(acts.labels) if lab is None]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(acts)} evaluation texts have no label (first: {acts.ids[missing[0]]!r}); "
            f"every evaluation text needs one of {list(classes)}"
        )
    unknown = sorted({lab for lab in acts.labels if lab not in classes})  # type: ignore[misc]
    if unknown:
        raise ValueError(
            f"the evaluation set has labels {unknown} that the probes were not trained on; they know "
            f"{list(classes)}. Filter the set to those labels or train on a set that has them"
        )
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[lab] for lab in acts.labels], dtype=np.int64)  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# fitting
# --------------------------------------------------------------------------------------------
def fit_probes(
    acts: Activations,
    *,
    cv: str = "group",
    kind: str = "logistic",
    site: str | None = None,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    layers: Iterable[int] | None = None,
    n_splits: int = 5,
    controls: Sequence[str] = CONTROLS,
    C: float = DEFAULT_C,
    keep_probes: bool = True,
    lexical: bool = True,
) -> ProbeResults:
    """Fit and cross-validate one probe per layer of ``site``, with the controls (see the module doc).

    Args:
        acts: per-text activations with labels (unlabelled rows are ignored).
        cv: ``"group"`` (hold out whole scenarios; needs groups) or ``"text"``.
        kind: ``"logistic"`` (multinomial, standardised, fixed ``C``) or ``"mlp"`` (2-layer, 128 ReLU units).
        site: which harvested site (``None``: the only one).
        seed: folds, label shuffle, control task and MLP initialisation.
        labels: restrict to these labels (e.g. the six emotions without neutral).
        layers: restrict to these layers (absolute indices; default all harvested).
        n_splits: folds (capped by the number of groups / the rarest label).
        controls: any of ``"shuffled"``, ``"selectivity"``.
        C: inverse L2 strength of the logistic probe (fixed; do not tune it on test folds).
        keep_probes: refit each layer's probe on all texts and keep it (for ``evaluate``).
        lexical: fit the bag-of-words baseline on ``acts.texts`` with the same folds (skipped, with a
            note in ``info``, when the texts are empty).

    Every accuracy gets a 95% interval (``accuracy_ci95``), resampling scenarios when every text has
    a group, else texts.
    """
    if cv not in CV:
        raise ValueError(f"cv {cv!r} is not one of {CV}; 'group' holds out whole scenarios (default)")
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise ValueError(f"unknown controls {bad}; valid controls: {list(CONTROLS)}")
    site, x, y, classes, rows = class_matrix(acts, site, labels, what="probes")
    if x.ndim != 3:
        raise ValueError(f"site {site!r} activations have shape {list(x.shape)}; expected [n, layer, d]")
    want = list(acts.layers) if layers is None else [int(v) for v in layers]
    li = [acts.layer_index(v) for v in want]
    k = len(classes)
    groups = group_ids(acts, rows, what="cv='group'") if cv == "group" else None
    if groups is None and "selectivity" in controls and all(acts.groups[r] is not None for r in rows):
        groups_sel: np.ndarray | None = group_ids(acts, rows, what="selectivity")
    else:
        groups_sel = groups
    folds = group_folds(groups, y, n_splits, seed) if groups is not None else text_folds(y, n_splits, seed)
    rng = np.random.default_rng(seed)
    y_shuf = rng.permutation(y) if "shuffled" in controls else None
    sel = "selectivity" in controls and groups_sel is not None and len(np.unique(groups_sel)) >= 2
    y_ctrl = control_labels(groups_sel, k, seed) if sel and groups_sel is not None else None
    tfolds = text_folds(y, n_splits, seed) if y_ctrl is not None else []
    cfolds = text_folds(y_ctrl, n_splits, seed) if y_ctrl is not None else []
    stats = {"fits": 0, "not_converged": 0}
    ci_groups = groups if groups is not None else groups_sel
    lex: LexicalBaseline | None = None
    lex_note = "off"
    if lexical:
        texts = [acts.texts[r] if acts.texts else "" for r in rows]
        if any(isinstance(t, str) and t.strip() for t in texts):
            lex = lexical_baseline(texts, y, folds, classes, groups=ci_groups)
            lex_note = LEXICAL_METHOD + "; same folds as the probes"
        else:
            lex_note = "skipped: the activations carry no texts"
    with single_thread():
        res = _fit_layers(
            acts, site, x, y, classes, rows, want, li, groups, folds, y_shuf, sel,
            y_ctrl, tfolds, cfolds,
            kind=kind, cv=cv, n_splits=n_splits, seed=seed, C=C, keep_probes=keep_probes, stats=stats,
        )
    return replace(res, groups=ci_groups, lexical=lex, info={**res.info, "lexical": lex_note})


def _fit_layers(
    acts: Activations, site: str, x: Tensor, y: np.ndarray, classes: list[str], rows: list[int], want: list[int],
    li: list[int], groups: np.ndarray | None, folds: Folds, y_shuf: np.ndarray | None, sel: bool,
    y_ctrl: np.ndarray | None, tfolds: Folds, cfolds: Folds, *, kind: str, cv: str, n_splits: int,
    seed: int, C: float, keep_probes: bool, stats: dict[str, int],
) -> ProbeResults:
    k = len(classes)
    x_layers = [x[:, i].contiguous() for i in li]
    tasks: list[tuple[Tensor, np.ndarray, Folds]] = [(xl, y, folds) for xl in x_layers]
    if y_shuf is not None:
        tasks += [(xl, y_shuf, folds) for xl in x_layers]
    if y_ctrl is not None:
        tasks += [(xl, y, tfolds) for xl in x_layers] + [(xl, y_ctrl, cfolds) for xl in x_layers]
    preds = cross_val_predict(tasks, classes, kind=kind, seed=seed, C=C, stats=stats)
    n_l = len(x_layers)
    real = [scores(y, p, k) for p in preds[:n_l]]
    pos = n_l
    shuf = None
    if y_shuf is not None:
        shuf = [scores(y_shuf, p, k) for p in preds[pos : pos + n_l]]
        pos += n_l
    tacc = cacc = None
    if y_ctrl is not None:
        tacc = np.array([scores(y, p, k)[0] for p in preds[pos : pos + n_l]])
        cacc = np.array([scores(y_ctrl, p, k)[0] for p in preds[pos + n_l : pos + 2 * n_l]])
    probes: list[Probe] = []
    if keep_probes:
        probes = _train_many(x_layers, [None] * n_l, [y] * n_l, classes, kind, seed, C)
        stats["fits"] += n_l
    info = {
        "n_groups": None if groups is None else int(len(np.unique(groups))),
        "n_folds": len(folds),
        "fits": stats["fits"],
        "not_converged": stats["not_converged"],
        "selectivity": "text-level folds; control task = one random label per group"
        if sel
        else "off or skipped (needs a group on every text)",
    }
    return ProbeResults(
        site=site,
        classes=tuple(classes),
        layers=tuple(want),
        kind=kind,
        cv=cv,
        n_splits=n_splits,
        seed=seed,
        C=C,
        ids=tuple(acts.ids[r] for r in rows),
        y=y,
        accuracy=np.array([r[0] for r in real]),
        macro_f1=np.array([r[1] for r in real]),
        confusion=np.stack([r[2] for r in real]),
        predictions=np.stack(preds[:n_l]),
        shuffled_accuracy=None if shuf is None else np.array([r[0] for r in shuf]),
        shuffled_macro_f1=None if shuf is None else np.array([r[1] for r in shuf]),
        shuffled_confusion=None if shuf is None else np.stack([r[2] for r in shuf]),
        text_accuracy=tacc,
        control_accuracy=cacc,
        probes=tuple(probes),
        info=info,
    )
