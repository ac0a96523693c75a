"""The classifiers behind every probe: standardised multinomial logistic regression, or a small MLP.

A :class:`Probe` is a small immutable value holding its parameters as tensors (so it saves as
safetensors, never pickle) and the standardisation it was trained with; ``probe.predict(X)``
maps raw activations ``[n, d]`` to class indices.

Regularisation is fixed, not tuned: ``C = 0.1`` (scikit-learn's inverse L2 strength, on
standardised features). It was chosen before any result was seen, as a moderate penalty for the
regime probes live in (a few hundred texts, hundreds of dimensions, d ≳ n), and it is never
selected on test folds.

.. note:: scikit-learn's BLAS threads fight badly with other processes on a small shared CPU
   (a 10× slowdown measured on 2 busy cores), so fits run with BLAS limited to one thread.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["KINDS", "DEFAULT_C", "Probe", "train_probe", "single_thread"]

KINDS = ("logistic", "mlp")
DEFAULT_C = 0.1
MLP_HIDDEN = 128
MLP_EPOCHS = 300
MLP_LR = 3e-3
MLP_WEIGHT_DECAY = 1e-2


_LIMITED = ContextVar("psylens_probes_single_thread", default=False)


@contextmanager
def single_thread() -> Iterator[None]:
    """Limit BLAS/OpenMP pools to one thread inside the block (see the module note); re-entrant and cheap when nested."""
    if _LIMITED.get():
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    token = _LIMITED.set(True)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        _LIMITED.reset(token)


@dataclass(frozen=True, eq=False)
class Probe:
    """A fitted probe on one layer: ``kind``, its ``classes`` and parameter tensors.

    ``params`` for ``logistic``: ``weight [K, d]``, ``bias [K]`` (in standardised space);
    for ``mlp``: ``w1 [h, d]``, ``b1 [h]``, ``w2 [K, h]``, ``b2 [K]``. ``mean`` and ``scale``
    ``[d]`` standardise raw activations first. Treat the tensors as read-only.
    """

    kind: str
    classes: tuple[str, ...]
    mean: Float[Tensor, " d"]
    scale: Float[Tensor, " d"]
    params: Mapping[str, Tensor] = field(default_factory=dict)
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"probe kind {self.kind!r} is not one of {KINDS}")
        need = {"logistic": ("weight", "bias"), "mlp": ("w1", "b1", "w2", "b2")}[self.kind]
        missing = [k for k in need if k not in self.params]
        if missing:
            raise ValueError(f"{self.kind} probe lacks parameters {missing}; it needs {list(need)}")

    @property
    def d(self) -> int:
        return int(self.mean.shape[0])

    def logits(self, x: Float[Tensor, "n d"]) -> Float[Tensor, "n K"]:
        """Class scores for raw activations ``x``."""
        if x.ndim != 2 or x.shape[1] != self.d:
            raise ValueError(f"probe expects activations [n, {self.d}], got {list(x.shape)}")
        z = (x.to(torch.float32) - self.mean) / self.scale
        p = self.params
        if self.kind == "logistic":
            return z @ p["weight"].T + p["bias"]
        h = torch.relu(z @ p["w1"].T + p["b1"])
        return h @ p["w2"].T + p["b2"]

    def predict(self, x: Float[Tensor, "n d"]) -> Int[Tensor, " n"]:
        """Index into ``classes`` of the predicted class for each row of ``x``."""
        with torch.no_grad():
            return self.logits(x).argmax(dim=1)

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """Flat ``{prefix + name: tensor}`` for safetensors."""
        out = {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale}
        out.update({f"{prefix}{k}": v for k, v in self.params.items()})
        return out

    @classmethod
    def from_tensors(cls, kind: str, classes: Sequence[str], tensors: Mapping[str, Tensor], prefix: str = "") -> Probe:
        names = ("weight", "bias") if kind == "logistic" else ("w1", "b1", "w2", "b2")
        return cls(
            kind=kind,
            classes=tuple(classes),
            mean=tensors[f"{prefix}mean"],
            scale=tensors[f"{prefix}scale"],
            params={k: tensors[f"{prefix}{k}"] for k in names},
        )


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0  # constant features: leave as is (StandardScaler does the same)
    return mean, scale


def train_probe(
    x: Float[np.ndarray, "n d"],
    y: Int[np.ndarray, " n"],
    classes: Sequence[str],
    *,
    kind: str = "logistic",
    seed: int = 0,
    C: float = DEFAULT_C,
) -> Probe:
    """Fit one probe on raw activations ``x`` with labels ``y`` (indices into ``classes``).

    Classes absent from ``y`` get a logit of -1e9 (never predicted); with a single class present
    the probe always predicts it.
    """
    if kind not in KINDS:
        raise ValueError(f"probe kind {kind!r} is not one of {KINDS}; use kind='logistic' (default) or 'mlp'")
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    k, d = len(classes), x.shape[1]
    mean, scale = _standardise(x)
    z = (x - mean) / scale
    present = np.unique(y)
    info: dict[str, Any] = {}
    if len(present) < 2:
        weight = np.zeros((k, d), dtype=np.float32)
        bias = np.full(k, -1e9, dtype=np.float32)
        bias[present] = 0.0
        params = {"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)}
        kind_out = "logistic"
    elif kind == "logistic":
        params, info = _fit_logistic(z, y, present, k, seed=seed, C=C)
        kind_out = "logistic"
    else:
        params = _fit_mlp(z, y, present, k, seed=seed)
        kind_out = "mlp"
    return Probe(
        kind=kind_out,
        classes=tuple(classes),
        mean=torch.from_numpy(mean.astype(np.float32)),
        scale=torch.from_numpy(scale.astype(np.float32)),
        params=params,
        info=info,
    )


def _fit_logistic(
    z: np.ndarray, y: np.ndarray, present: np.ndarray, k: int, *, seed: int, C: float
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=500, tol=1e-4, random_state=seed)
    with warnings.catch_warnings(record=True) as caught, single_thread():
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(z, y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    d = z.shape[1]
    weight = np.zeros((k, d), dtype=np.float32)
    bias = np.full(k, -1e9, dtype=np.float32)
    coef, icpt = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: one row scores classes_[1] against classes_[0]
        weight[clf.classes_[1]] = coef[0]
        bias[clf.classes_[1]] = icpt[0]
        bias[clf.classes_[0]] = 0.0
    else:
        weight[clf.classes_] = coef
        bias[clf.classes_] = icpt
    return {"weight": torch.from_numpy(weight), "bias": torch.from_numpy(bias)}, {"converged": converged}


def _fit_mlp(z: np.ndarray, y: np.ndarray, present: np.ndarray, k: int, *, seed: int) -> dict[str, Tensor]:
    """Two-layer MLP (ReLU, ``MLP_HIDDEN`` units), full-batch AdamW, fixed epochs: no early stopping on test data."""
    gen = torch.Generator().manual_seed(seed)
    d = z.shape[1]
    zt, yt = torch.from_numpy(z.astype(np.float32)), torch.from_numpy(y)
    w1 = (torch.randn(MLP_HIDDEN, d, generator=gen) / d**0.5).requires_grad_()
    b1 = torch.zeros(MLP_HIDDEN, requires_grad=True)
    w2 = (torch.randn(k, MLP_HIDDEN, generator=gen) / MLP_HIDDEN**0.5).requires_grad_()
    b2 = torch.zeros(k, requires_grad=True)
    absent = torch.ones(k, dtype=torch.bool)
    absent[torch.from_numpy(present)] = False
    opt = torch.optim.AdamW([w1, b1, w2, b2], lr=MLP_LR, weight_decay=MLP_WEIGHT_DECAY)
    for _ in range(MLP_EPOCHS):
        opt.zero_grad()
        logits = torch.relu(zt @ w1.T + b1) @ w2.T + b2
        loss = torch.nn.functional.cross_entropy(logits.masked_fill(absent, -1e9), yt)
        loss.backward()
        opt.step()
    with torch.no_grad():
        b2_out = b2.detach().clone()
        b2_out[absent] = -1e9
    return {"w1": w1.detach(), "b1": b1.detach(), "w2": w2.detach(), "b2": b2_out}
