"""Many multinomial logistic regressions at once: batched L-BFGS in torch.

Probing fits hundreds of small, independent problems (layers × folds × controls). scikit-learn
fits them one at a time with ~1–3 ms of Python overhead per L-BFGS iteration; here every
problem of a batch advances together (one ``bmm`` per function evaluation), each with its own
L-BFGS history, step size and stopping test, so each converges to its own optimum exactly as if
it were fitted alone. The objective is scikit-learn's for ``LogisticRegression(C=C)`` with the
multinomial loss::

    f(W, b) = mean_i CE(softmax(W z_i + b), y_i) + ||W||² / (2 C n)        (b unpenalised)

whose minimiser is the same as scikit-learn's (a unit test checks predictions and
coefficients against ``sklearn.linear_model.LogisticRegression``).
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["fit_logistic_batched"]


def _loss_grad(
    theta: Tensor, z: Tensor, y1h: Tensor, mask: Tensor, n: Tensor, lam: Tensor, k: int, d: int
) -> tuple[Tensor, Tensor]:
    b_, _ = theta.shape
    w = theta[:, : k * d].view(b_, k, d)
    bias = theta[:, k * d :]
    logits = torch.baddbmm(bias.unsqueeze(1), z, w.transpose(1, 2))  # [B, n, K]
    logp = torch.log_softmax(logits, dim=-1)
    ce = -(y1h * logp).sum(-1) * mask  # [B, n]
    f = ce.sum(1) / n + 0.5 * lam * (w * w).sum((1, 2))
    resid = (logp.exp() - y1h) * mask.unsqueeze(-1) / n.view(-1, 1, 1)  # [B, n, K]
    gw = torch.bmm(resid.transpose(1, 2), z) + lam.view(-1, 1, 1) * w  # [B, K, d]
    gb = resid.sum(1)
    return f, torch.cat([gw.reshape(b_, -1), gb], dim=1)


def fit_logistic_batched(
    z: Float[Tensor, "B n d"],
    y: Int[Tensor, "B n"],
    mask: Bool[Tensor, "B n"],
    n_classes: int,
    *,
    C: float = 0.1,
    tol: float = 1e-4,
    max_iter: int = 500,
    history: int = 10,
) -> tuple[Float[Tensor, "B K d"], Float[Tensor, "B K"], Int[Tensor, " B"], Bool[Tensor, " B"]]:
    """Fit ``B`` independent L2 multinomial logistic regressions on (already standardised) ``z``.

    ``mask`` marks the real rows of each problem (problems may have different sizes; padded rows
    are ignored). Stops a problem when its largest gradient entry is below ``tol`` (scikit-learn's
    test) or its objective stops decreasing. Returns ``(weight, bias, n_iter, converged)``.
    """
    bsz, _, d = z.shape
    k = n_classes
    dtype = z.dtype
    maskf = mask.to(dtype)
    n = maskf.sum(1).clamp_min(1.0)
    lam = 1.0 / (C * n)
    y1h = torch.nn.functional.one_hot(y.clamp_min(0), k).to(dtype) * maskf.unsqueeze(-1)

    theta_out = torch.zeros(bsz, k * d + k, dtype=dtype)
    n_iter = torch.zeros(bsz, dtype=torch.long)
    converged = torch.zeros(bsz, dtype=torch.bool)

    idx = torch.arange(bsz)  # which original problems are still active
    zc, yc, mc, nc, lc = z, y1h, maskf, n, lam
    theta = torch.zeros(bsz, k * d + k, dtype=dtype)
    f, g = _loss_grad(theta, zc, yc, mc, nc, lc, k, d)
    s_hist: list[Tensor] = []
    y_hist: list[Tensor] = []
    rho_hist: list[Tensor] = []
    for it in range(1, max_iter + 1):
        # -- two-loop recursion, per problem ------------------------------------------------
        q = g.clone()
        alphas = []
        for s_i, y_i, r_i in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
            a_i = r_i * (s_i * q).sum(1)
            q -= a_i.unsqueeze(1) * y_i
            alphas.append(a_i)
        if s_hist:
            sy = (s_hist[-1] * y_hist[-1]).sum(1)
            yy = (y_hist[-1] * y_hist[-1]).sum(1).clamp_min(1e-30)
            q *= (sy / yy).unsqueeze(1)
        else:
            q /= g.abs().sum(1, keepdim=True).clamp_min(1.0)
        for s_i, y_i, r_i, a_i in zip(s_hist, y_hist, rho_hist, reversed(alphas)):
            beta = r_i * (y_i * q).sum(1)
            q += s_i * (a_i - beta).unsqueeze(1)
        p = -q
        slope = (g * p).sum(1)
        bad = slope >= 0  # not a descent direction (numerical): restart with steepest descent
        if bool(bad.any()):
            p[bad] = -g[bad]
            slope = (g * p).sum(1)
        # -- backtracking Armijo line search, per problem -----------------------------------
        t = torch.ones(len(idx), dtype=dtype)
        new_theta = theta + p
        f_new, g_new = _loss_grad(new_theta, zc, yc, mc, nc, lc, k, d)
        for _ in range(40):
            fail = f_new > f + 1e-4 * t * slope
            if not bool(fail.any()):
                break
            t = torch.where(fail, t * 0.5, t)
            sub = fail.nonzero().flatten()
            trial = theta[sub] + t[sub].unsqueeze(1) * p[sub]
            fs, gs = _loss_grad(trial, zc[sub], yc[sub], mc[sub], nc[sub], lc[sub], k, d)
            new_theta[sub], f_new[sub], g_new[sub] = trial, fs, gs
        s_new, y_new = new_theta - theta, g_new - g
        sy = (s_new * y_new).sum(1)
        ok = sy > 1e-12
        rho = torch.where(ok, 1.0 / sy.clamp_min(1e-12), torch.zeros_like(sy))
        s_hist.append(torch.where(ok.unsqueeze(1), s_new, torch.zeros_like(s_new)))
        y_hist.append(torch.where(ok.unsqueeze(1), y_new, torch.zeros_like(y_new)))
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        stalled = (f - f_new).abs() <= 1e-12 * f.abs().clamp_min(1.0)
        theta, f, g = new_theta, f_new, g_new
        done = (g.abs().amax(1) <= tol) | stalled
        if it == max_iter:
            done = torch.ones_like(done)
        if bool(done.any()):
            fin = done.nonzero().flatten()
            theta_out[idx[fin]] = theta[fin]
            n_iter[idx[fin]] = it
            converged[idx[fin]] = (g[fin].abs().amax(1) <= tol) | stalled[fin]
            keep = (~done).nonzero().flatten()
            if len(keep) == 0:
                break
            idx = idx[keep]
            theta, f, g = theta[keep], f[keep], g[keep]
            zc, yc, mc, nc, lc = zc[keep], yc[keep], mc[keep], nc[keep], lc[keep]
            s_hist = [s[keep] for s in s_hist]
            y_hist = [v[keep] for v in y_hist]
            rho_hist = [r[keep] for r in rho_hist]
    weight = theta_out[:, : k * d].view(bsz, k, d)
    bias = theta_out[:, k * d :]
    return weight, bias, n_iter, converged
