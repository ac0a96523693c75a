"""The classifiers behind every probe: standardised multinomial logistic regression, or a small MLP.

A :class:`Probe` is a small immutable value holding its parameters as tensors (so it saves as
safetensors, never pickle) and the standardisation it was trained with; ``probe.predict(X)``
maps raw activations ``[n, d]`` to class indices.

Logistic probes are fitted in batches (:func:`train_logistic_many`, batched L-BFGS in torch, see
``psylens.probes.batched``): the same objective and optimum as scikit-learn's
``LogisticRegression(C=C)`` (lbfgs, multinomial), ~10× faster when hundreds of small probes are
needed. ``train_probe(..., solver="sklearn")`` fits one with scikit-learn itself (the reference).

Regularisation is fixed, not tuned: ``C = 0.1`` (scikit-learn's inverse L2 strength, on
standardised features). It was chosen before any result was seen, as a moderate penalty for the
regime probes live in (a few hundred texts, hundreds of dimensions, d ≳ n), and it is never
selected on test folds.

.. note:: Thread pools fight badly with other processes on a small shared CPU (10–20× slowdowns
   measured on 2 busy cores: every small op waits for a descheduled worker), so fits run with
   BLAS/OpenMP and torch limited to one thread. This sets ``torch.set_num_threads(1)`` for the
   duration of a fit (process-wide; restored afterwards): do not run other torch work in
   parallel threads meanwhile.
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

__all__ = ["KINDS", "DEFAULT_C", "Probe", "train_probe", "train_logistic_many", "single_thread"]

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
    torch_threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(torch_threads)
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
    solver: str = "batched",
) -> Probe:
    """Fit one probe on raw activations ``x`` with labels ``y`` (indices into ``classes``).

    ``solver`` (logistic only): ``"batched"`` (psylens' L-BFGS, the default everywhere) or
    ``"sklearn"`` (scikit-learn's ``LogisticRegression``, the reference it is tested against).

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
    elif kind == "logistic" and solver == "batched":
        return train_logistic_many([torch.from_numpy(x)], [y], classes, C=C)[0]
    elif kind == "logistic":
        if solver != "sklearn":
            raise ValueError(f"solver {solver!r} is not 'batched' or 'sklearn'")
        params, info = _fit_logistic(z, y, present, k, seed=seed, C=C)
        kind_out = "logistic"
    else:
        with single_thread():
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
    params = [w1, b1, w2, b2]
    # AdamW written out: importing torch.optim pulls in torch._dynamo (~10 s on a small CPU)
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, MLP_EPOCHS + 1):
        for p in params:
            p.grad = None
        logits = torch.relu(zt @ w1.T + b1) @ w2.T + b2
        loss = torch.nn.functional.cross_entropy(logits.masked_fill(absent, -1e9), yt)
        loss.backward()
        with torch.no_grad():
            for p, a, v in zip(params, m1, m2):
                g = p.grad
                if g is None:  # pragma: no cover - every parameter is used
                    continue
                p.mul_(1 - MLP_LR * MLP_WEIGHT_DECAY)
                a.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (v / (1 - beta2**step)).sqrt_().add_(eps)
                p.addcdiv_(a, denom, value=-MLP_LR / (1 - beta1**step))
    with torch.no_grad():
        b2_out = b2.detach().clone()
        b2_out[absent] = -1e9
    return {"w1": w1.detach(), "b1": b1.detach(), "w2": w2.detach(), "b2": b2_out}


def _train_in_span(
    xs: Sequence[Tensor], ys: Sequence[np.ndarray], rows: Sequence[np.ndarray | None] | None, which: list[int],
    classes: Sequence[str], C: float,
) -> list[Probe]:
    """Problems with n ≪ d, solved exactly in the span of their standardised training rows.

    With an L2 penalty the optimal weights lie in the row span of ``Z`` (representer theorem):
    writing ``Z = U S Vᵀ`` and ``W = M Vᵀ`` gives ``W z_i = M (U S)_i`` and ``‖W‖ = ‖M‖``, so the
    problem on the ``n``-dimensional features ``U S`` has the same optimum, at a fraction of the cost.
    """
    from psylens.probes.batched import fit_logistic_shared

    k = len(classes)
    zs, stats, vs = [], [], []
    for i in which:
        x = torch.as_tensor(xs[i], dtype=torch.float32)
        r = None if rows is None else rows[i]
        x = x if r is None else x[torch.as_tensor(r, dtype=torch.long)]
        mean = x.mean(0)
        scale = x.std(0, unbiased=False)
        scale = torch.where(scale < 1e-6 * scale.max().clamp_min(1e-12), torch.ones_like(scale), scale)
        z = (x - mean) / scale
        u, sv, vh = torch.linalg.svd(z.double(), full_matrices=False)  # z = u diag(sv) vh
        zs.append((u * sv).float())
        vs.append(vh.float())
        stats.append((mean, scale))
    n_max = max(z.shape[0] for z in zs)
    r_max = max(z.shape[1] for z in zs)
    xb = torch.zeros(len(which), n_max, r_max)
    mb = torch.zeros(len(which), 1, n_max, dtype=torch.bool)
    yb = torch.zeros(len(which), 1, n_max, dtype=torch.long)
    for a, (i, z) in enumerate(zip(which, zs)):
        xb[a, : z.shape[0], : z.shape[1]] = z
        mb[a, 0, : z.shape[0]] = True
        yb[a, 0, : z.shape[0]] = torch.as_tensor(np.asarray(ys[i]), dtype=torch.long)
    with single_thread():
        fit = fit_logistic_shared(xb, mb, yb, k, C=C, standardise=False)
    probes = []
    for a, i in enumerate(which):
        r_i = vs[a].shape[0]
        weight = fit.weight[a, 0, :, :r_i] @ vs[a]  # [K, d] in standardised space
        bias = fit.bias[a, 0].clone()
        absent = torch.ones(k, dtype=torch.bool)
        absent[torch.from_numpy(np.unique(np.asarray(ys[i])))] = False
        bias[absent] = -1e9
        probes.append(Probe(
            kind="logistic", classes=tuple(classes), mean=stats[a][0], scale=stats[a][1],
            params={"weight": weight, "bias": bias},
            info={"converged": bool(fit.converged[a, 0]), "n_iter": int(fit.n_iter[a, 0]), "solved_in_span": True},
        ))
    return probes


def train_logistic_many(
    xs: Sequence[Float[Tensor, "n d"]],
    ys: Sequence[np.ndarray],
    classes: Sequence[str],
    *,
    rows: Sequence[np.ndarray | None] | None = None,
    C: float = DEFAULT_C,
    max_batch_bytes: int = 64 * 2**20,
) -> list[Probe]:
    """Fit one standardised multinomial logistic probe per ``(xs[i][rows[i]], ys[i])``, all batched.

    Problems that pass the *same* tensor object as ``xs[i]`` (e.g. the folds and controls of one
    layer) share one design matrix in the solver; ``rows`` selects each problem's training rows.
    Equivalent to calling ``train_probe`` on each, up to the optimiser's tolerance.
    """
    from psylens.probes.batched import fit_logistic_shared

    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} activation matrices for {len(ys)} label vectors; give one each")
    if rows is not None and len(rows) != len(xs):
        raise ValueError(f"{len(rows)} row selections for {len(xs)} problems; give one each (or None)")
    k = len(classes)
    out: list[Probe | None] = [None] * len(xs)
    # group problems by their matrix
    group_of: dict[int, int] = {}
    mats: list[Tensor] = []
    members: list[list[int]] = []
    small: list[int] = []
    for i, x in enumerate(xs):
        y = np.asarray(ys[i], dtype=np.int64)
        r = None if rows is None else rows[i]
        xt = torch.as_tensor(x, dtype=torch.float32)
        if len(np.unique(y)) < 2:  # degenerate: the single-class path of train_probe
            xr = xt if r is None else xt[torch.as_tensor(r, dtype=torch.long)]
            out[i] = train_probe(xr.numpy(), y, classes)
            continue
        if 2 * len(y) <= xt.shape[1]:  # far fewer texts than dimensions: solve in their span
            small.append(i)
            continue
        key = id(x)
        if key not in group_of:
            group_of[key] = len(mats)
            mats.append(xt)
            members.append([])
        members[group_of[key]].append(i)
    if small:
        for i, probe in zip(small, _train_in_span(xs, ys, rows, small, classes, C)):
            out[i] = probe
    if not mats:
        return [p for p in out if p is not None]
    d = int(mats[0].shape[1])
    hist = 8

    def cost(g: int) -> int:
        n, p = int(mats[g].shape[0]), len(members[g])
        return 4 * (n * d + p * (k * d + k) * (2 * hist + 8) + n * p * k * 6)

    with single_thread():
        g0 = 0
        while g0 < len(mats):
            g1, total = g0, 0
            while g1 < len(mats) and (g1 == g0 or total + cost(g1) <= max_batch_bytes):
                total += cost(g1)
                g1 += 1
            chunk = list(range(g0, g1))
            n_max = max(int(mats[g].shape[0]) for g in chunk)
            p_max = max(len(members[g]) for g in chunk)
            xb = torch.zeros(len(chunk), n_max, d)
            mb = torch.zeros(len(chunk), p_max, n_max, dtype=torch.bool)
            yb = torch.zeros(len(chunk), p_max, n_max, dtype=torch.long)
            for a, g in enumerate(chunk):
                n_g = int(mats[g].shape[0])
                xb[a, :n_g] = mats[g]
                for b, i in enumerate(members[g]):
                    r = None if rows is None else rows[i]
                    idx = torch.arange(n_g) if r is None else torch.as_tensor(r, dtype=torch.long)
                    mb[a, b, idx] = True
                    yb[a, b, idx] = torch.as_tensor(np.asarray(ys[i]), dtype=torch.long)
            fit = fit_logistic_shared(xb, mb, yb, k, C=C, history=hist)
            for a, g in enumerate(chunk):
                for b, i in enumerate(members[g]):
                    bias = fit.bias[a, b].clone()
                    absent = torch.ones(k, dtype=torch.bool)
                    absent[torch.from_numpy(np.unique(np.asarray(ys[i])))] = False
                    bias[absent] = -1e9
                    out[i] = Probe(
                        kind="logistic",
                        classes=tuple(classes),
                        mean=fit.mean[a, b].clone(),
                        scale=fit.scale[a, b].clone(),
                        params={"weight": fit.weight[a, b].clone(), "bias": bias},
                        info={"converged": bool(fit.converged[a, b]), "n_iter": int(fit.n_iter[a, b])},
                    )
            g0 = g1
    return [p for p in out if p is not None]
