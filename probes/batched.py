"""Many multinomial logistic regressions at once: batched L-BFGS in torch over shared design matrices.

Probing fits hundreds of small, independent problems — layers × folds × controls — and the
problems of one layer all read the *same* activation matrix (a fold or a shuffled labelling
only changes which rows train and which labels they carry). So problems are grouped by their
matrix ``x[g]``; every function evaluation is two wide matrix products per group
(``x[g] @ [V_1 … V_P]``), instead of hundreds of thin ones, and every problem keeps its own
L-BFGS history, step size and stopping test, so each converges to its own optimum as if it
were fitted alone.

Each problem ``(g, p)`` trains on the rows ``member[g, p]`` of ``x[g]``, standardised with those
rows' mean and standard deviation, and minimises scikit-learn's objective for
``LogisticRegression(C=C)`` with the multinomial loss::

    f(W, b) = mean_i CE(softmax(W z_i + b), y_i) + ||W||² / (2 C n)        (b unpenalised)

(A unit test checks predictions and coefficients against ``sklearn.linear_model.LogisticRegression``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["fit_logistic_shared", "SharedFit"]


@dataclass(frozen=True)
class SharedFit:
    """Solutions ``[G, P, ...]``: weights in standardised space, bias, and the standardisation used."""

    weight: Float[Tensor, "G P K d"]
    bias: Float[Tensor, "G P K"]
    mean: Float[Tensor, "G P d"]
    scale: Float[Tensor, "G P d"]
    n_iter: Int[Tensor, "G P"]
    converged: Bool[Tensor, "G P"]


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Inner products over the last dim, ``[..., m] · [..., m] → [...]`` (einsum is 3× slower here)."""
    return torch.linalg.vecdot(a, b)


class _Objective:
    def __init__(self, x: Tensor, member: Tensor, y: Tensor, k: int, C: float, standardise: bool = True) -> None:
        g, p, n = member.shape
        d = x.shape[-1]
        self.x, self.k, self.shape = x, k, (g, p, n, d)
        m = member.to(x.dtype)  # [G, P, n]
        self.n = m.sum(-1).clamp_min(1.0)  # [G, P]
        if standardise:
            mean = torch.einsum("gpn,gnd->gpd", m, x) / self.n.unsqueeze(-1)
            sq = torch.einsum("gpn,gnd->gpd", m, x * x) / self.n.unsqueeze(-1)
            var = (sq - mean * mean).clamp_min(0.0)
            scale = var.sqrt()
            self.mean = mean
            small = scale < 1e-6 * scale.amax(-1, keepdim=True).clamp_min(1e-12)
            self.scale = torch.where(small, torch.ones_like(scale), scale)
        else:
            self.mean = torch.zeros(g, p, d, dtype=x.dtype)
            self.scale = torch.ones(g, p, d, dtype=x.dtype)
        self.lam = 1.0 / (C * self.n)  # [G, P]
        onehot = torch.nn.functional.one_hot(y.clamp_min(0), k).to(x.dtype)  # [G, P, n, K]
        # the [G, n, P, K] layout is what x @ V produces: no transposes in the hot loop
        self.m_t = m.permute(0, 2, 1).contiguous()  # [G, n, P]
        self.target = (onehot * m.unsqueeze(-1)).permute(0, 2, 1, 3).contiguous()  # [G, n, P, K]

    def __call__(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """``theta [G, P, K·d + K]`` → ``(f [G, P], grad [G, P, K·d + K])``."""
        g, p, n, d = self.shape
        k = self.k
        w = theta[..., : k * d].reshape(g, p, k, d)
        b = theta[..., k * d :]  # [G, P, K]
        v = w / self.scale.unsqueeze(2)  # raw-space weights [G, P, K, d]
        c = b - torch.linalg.vecdot(v, self.mean.unsqueeze(2))  # [G, P, K]
        logits = torch.baddbmm(c.view(g, 1, p * k), self.x, v.reshape(g, p * k, d).transpose(1, 2)).view(g, n, p, k)
        # softmax by hand (torch's kernel is slow for K ≈ 6); CE = -target·shifted + log Σexp
        logits -= logits.amax(-1, keepdim=True)
        e = logits.exp()
        z = e.sum(-1)  # [G, n, P]
        ce = (self.m_t * z.log()).sum(1) - (self.target * logits).sum((1, 3))
        f = ce / self.n + 0.5 * self.lam * (w * w).sum((-1, -2))
        e /= z.unsqueeze(-1)
        e *= self.m_t.unsqueeze(-1)
        e -= self.target
        e /= self.n.view(g, 1, p, 1)  # residual [G, n, P, K]
        rsum = e.sum(1)  # [G, P, K]
        gv = torch.bmm(e.view(g, n, p * k).transpose(1, 2), self.x).view(g, p, k, d)
        gv -= rsum.unsqueeze(-1) * self.mean.unsqueeze(2)
        gv /= self.scale.unsqueeze(2)
        gw = gv.add_(w * self.lam.view(g, p, 1, 1))
        return f, torch.cat([gw.reshape(g, p, k * d), rsum], dim=-1)


def fit_logistic_shared(
    x: Float[Tensor, "G n d"],
    member: Bool[Tensor, "G P n"],
    y: Int[Tensor, "G P n"],
    n_classes: int,
    *,
    C: float = 0.1,
    tol: float = 1e-4,
    max_iter: int = 500,
    history: int = 8,
    standardise: bool = True,
) -> SharedFit:
    """Fit ``G × P`` L2 multinomial logistic regressions; problem ``(g, p)`` uses rows ``member[g, p]`` of ``x[g]``.

    ``y[g, p]`` holds each row's label index (ignored outside ``member``). A problem stops when
    its largest gradient entry is at most ``tol`` (scikit-learn's test) or its objective stops
    decreasing. ``standardise=False`` uses ``x`` as given (mean 0, scale 1 reported).
    """
    k = n_classes
    x = x.float()
    obj = _Objective(x, member, y, k, C, standardise)
    g, p, _, d = obj.shape
    theta = torch.zeros(g, p, k * d + k, dtype=x.dtype)
    f, grad = obj(theta)
    active = torch.ones(g, p, dtype=torch.bool)
    n_iter = torch.zeros(g, p, dtype=torch.long)
    converged = torch.zeros(g, p, dtype=torch.bool)
    s_hist: list[Tensor] = []
    y_hist: list[Tensor] = []
    rho_hist: list[Tensor] = []
    for it in range(1, max_iter + 1):
        # two-loop recursion, per problem (inner products over the last dim only)
        q = grad.clone()
        alphas = []
        for s_i, y_i, r_i in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
            a_i = r_i * _dot(s_i, q)
            q.addcmul_(a_i.unsqueeze(-1), y_i, value=-1.0)
            alphas.append(a_i)
        if s_hist:
            sy = _dot(s_hist[-1], y_hist[-1])
            yy = _dot(y_hist[-1], y_hist[-1]).clamp_min(1e-30)
            gamma = torch.where(sy > 0, sy / yy, torch.ones_like(sy))
            q *= gamma.unsqueeze(-1)
        else:
            q /= grad.abs().sum(-1, keepdim=True).clamp_min(1.0)
        for s_i, y_i, r_i, a_i in zip(s_hist, y_hist, rho_hist, reversed(alphas)):
            beta = r_i * _dot(y_i, q)
            q.addcmul_((a_i - beta).unsqueeze(-1), s_i)
        direction = q.neg_()
        slope = _dot(grad, direction)
        bad = slope >= 0
        if bool(bad.any()):
            direction = torch.where(bad.unsqueeze(-1), -grad, direction)
            slope = _dot(grad, direction)
        direction *= active.unsqueeze(-1)  # finished problems stay put
        # backtracking Armijo line search with a step per problem
        t = torch.ones(g, p, dtype=x.dtype)
        trial = theta + direction
        f_new, g_new = obj(trial)
        for _ in range(30):
            fail = active & (f_new > f + 1e-4 * t * slope)
            if not bool(fail.any()):
                break
            t = torch.where(fail, t * 0.5, t)
            retry = theta + t.unsqueeze(-1) * direction
            f_try, g_try = obj(retry)
            trial = torch.where(fail.unsqueeze(-1), retry, trial)
            f_new = torch.where(fail, f_try, f_new)
            g_new = torch.where(fail.unsqueeze(-1), g_try, g_new)
        keep = active.unsqueeze(-1)
        s_new = (trial - theta).mul_(keep)
        y_new = (g_new - grad).mul_(keep)
        sy = _dot(s_new, y_new)
        ok = sy > 1e-12
        rho = torch.where(ok, 1.0 / sy.clamp_min(1e-12), torch.zeros_like(sy))
        if not bool(ok.all()):
            s_new.mul_(ok.unsqueeze(-1))
            y_new.mul_(ok.unsqueeze(-1))
        s_hist.append(s_new)
        y_hist.append(y_new)
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        stalled = active & ((f - f_new).abs() <= 1e-10 * f.abs().clamp_min(1.0))
        theta = torch.where(keep, trial, theta)
        f = torch.where(active, f_new, f)
        grad = torch.where(keep, g_new, grad)
        n_iter += active.long()
        small = grad.abs().amax(-1) <= tol
        finished = active & (small | stalled)
        converged |= finished
        active = active & ~finished
        if not bool(active.any()):
            break
    w = theta[..., : k * d].reshape(g, p, k, d)
    b = theta[..., k * d :]
    return SharedFit(weight=w, bias=b, mean=obj.mean, scale=obj.scale, n_iter=n_iter, converged=converged)
