"""A BatchTopK crosscoder on two models' activations, and its latents' classes with the latent-scaling check.

>>> cc = train_crosscoder(acts_base, acts_tuned, d_latent=512, k=16, steps=2000, lr=1e-3, seed=0)   # doctest: +SKIP
>>> res = latent_classes(cc, acts_base, acts_tuned)                                                 # doctest: +SKIP
>>> res.counts["tuned_only"], res.table.query("cls == 'tuned_only'")                                # doctest: +SKIP

**The crosscoder** (Lindsey et al. 2024; the BatchTopK variant of Minder et al. 2025). Rows are the *same*
inputs read by both models: ``x_base``, ``x_tuned`` ``[n, d]``. One shared latent code

    f(x) = BatchTopK( ReLU( Σ_m (x_m − b_dec,m) W_enc,m + b_enc ) ),     x̂_m = f(x) W_dec,m + b_dec,m

— per-model encoder weights summed, per-model decoders. BatchTopK keeps the ``k · batch`` largest values of
``f_j(x) · (‖d_j,base‖ + ‖d_j,tuned‖)`` across the whole batch (the selection score of Minder et al.'s
``BatchTopKCrossCoder``), so ``k`` is the *average* number of active latents a row. After training a single
threshold θ replaces the batch selection (the ``k·n``-th largest score over the training rows, so the mean L0 on
them is ``k``): ``f_j(x) = pre_j(x) · [score_j(x) > θ]``. Loss: Σ_m ‖x_m − x̂_m‖², averaged over the batch; Adam,
the rate decayed linearly to 0 over the last 20% of the steps. Inputs are multiplied by one scalar for both models
(mean ‖x‖² = d over the training rows of both), so a direction that grows under tuning still shows in the decoder
norms. Both models' encoder and decoder weights start from the *same* random directions: with identical inputs
they stay identical, so a model against itself gives decoder-norm ratios of exactly 0.5. Batches come from
:class:`psylens.saes.data.StepDataProvider` over ``[x_base, x_tuned]`` rows — the data-provider pattern of the
step SAEs (SAELens has no crosscoder, so the training loop is this module's own).

**Classes** (:func:`latent_classes`). The decoder-norm ratio ``ratio_j = 0.5·((‖d_j,tuned‖ − ‖d_j,base‖) /
max(‖d_j,tuned‖, ‖d_j,base‖) + 1)`` is 1 for a latent only the tuned model's decoder uses, 0 for base-only, 0.5
for equal norms. *Never use it alone*: an L1 crosscoder shrinks a weakly shared latent's base decoder to zero
("complete shrinkage") or splits a shared concept into model-specific latents ("latent decoupling"), and both look
tuned-only by the ratio. **Latent scaling** (Minder et al. 2025) checks each latent against the data: with the
owner model's decoder ``d_j`` (tuned if ``ratio ≥ 0.5``, else base) and the latent's activations ``f_j``, fit

    β_j^{M,target} = argmin_β Σ_i ‖β f_j(x_i) d_j − y_i‖²  =  ⟨d_j, Σ_i f_j(x_i) y_i⟩ / (‖d_j‖² Σ_i f_j(x_i)²)

for each model M and two targets: its reconstruction ``y = x̂_M`` (``recon``) and its error with the latent's own
contribution put back, ``y = x_M − x̂_M + f_j(x) d_j,M`` (``error``). ``ν_error = β^{other,error} / β^{owner,error}``
and ``ν_recon = β^{other,recon} / β^{owner,recon}``: how much of the latent the *other* model carries. A latent is
``tuned_only`` when ``ratio ≥ 0.9`` **and** ``ν_error < 0.2`` **and** ``ν_recon < 0.5`` (the thresholds of the
diffing toolkit's ``truly_specific``); ratio ≥ 0.9 with a larger ν is ``tuned_norm_only`` (a ratio artifact).
``base_only`` / ``base_norm_only`` mirror them; ``0.4 ≤ ratio ≤ 0.6`` is ``shared``; latents that never fire are
``dead``; the rest ``intermediate``.

**Noise level** (:func:`noise_control`). How many "tuned-only" latents appear with no tuned-only structure at
all: a control crosscoder (same settings, the next seed) on ``(x_base, x_base + ε)``, ε Gaussian with the
per-dimension variance of ``x_tuned − x_base`` — the same energy of difference, no sparse structure. Its
tuned-only count is the noise level; ``tuned_only_beyond_noise = max(0, tuned_only − noise)``. A model against
itself has ε = 0, and both counts are 0.

Footguns: with few rows (hundreds of steps) many latents stay dead — read ``dead_fraction``; β of a latent that
fires on a handful of rows is noisy; the classes are about the rows given (the traces read), not the models at
large.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

__all__ = [
    "BatchTopKCrosscoder",
    "LatentClasses",
    "THRESHOLDS",
    "train_crosscoder",
    "latent_classes",
    "noise_control",
    "crosscoder_fit",
]

log = logging.getLogger(__name__)

#: ratio thresholds (tuned share of the decoder norm) and the latent-scaling limits
THRESHOLDS: dict[str, float] = {"specific": 0.9, "shared_low": 0.4, "shared_high": 0.6, "nu_error": 0.2,
                                "nu_recon": 0.5}


class BatchTopKCrosscoder(nn.Module):
    """Two-model crosscoder: ``W_enc [2, d, L]``, ``b_enc [L]``, ``W_dec [L, 2, d]``, ``b_dec [2, d]``.

    Model 0 is the base, model 1 the tuned. ``scale`` multiplies raw inputs (set by :func:`train_crosscoder`);
    ``threshold`` is the inference threshold on ``f · (‖d_base‖ + ‖d_tuned‖)`` (``inf`` before training ends:
    then :meth:`encode` needs ``batch_topk=True``). Every method takes and returns *scaled* activations except
    :meth:`reconstruct`, which takes raw ones.
    """

    def __init__(self, d_model: int, d_latent: int, k: int, *, seed: int = 0) -> None:
        super().__init__()
        for name, v in (("d_model", d_model), ("d_latent", d_latent), ("k", k)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if k > d_latent:
            raise ValueError(f"k={k} is larger than d_latent={d_latent}; choose k <= d_latent (e.g. k=16)")
        self.d_model, self.d_latent, self.k = d_model, d_latent, k
        g = torch.Generator().manual_seed(int(seed))
        dirs_LD = torch.randn(d_latent, d_model, generator=g)
        dirs_LD = dirs_LD / dirs_LD.norm(dim=-1, keepdim=True)
        # the same directions for both models: identical inputs keep the two halves identical
        self.W_enc = nn.Parameter(0.5 * dirs_LD.T.unsqueeze(0).repeat(2, 1, 1).contiguous())  # [2, d, L]
        self.b_enc = nn.Parameter(torch.zeros(d_latent))
        self.W_dec = nn.Parameter(dirs_LD.unsqueeze(1).repeat(1, 2, 1).contiguous())  # [L, 2, d]
        self.b_dec = nn.Parameter(torch.zeros(2, d_model))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("threshold", torch.tensor(float("inf")))

    # -- pieces --------------------------------------------------------------------------
    def decoder_norms(self) -> Float[Tensor, "L 2"]:
        return self.W_dec.norm(dim=-1)

    def pre_acts(self, x_BMD: Float[Tensor, "B 2 d"]) -> Float[Tensor, "B L"]:
        B = x_BMD.shape[0]
        return torch.relu((x_BMD - self.b_dec).reshape(B, -1) @ self.W_enc.reshape(-1, self.d_latent) + self.b_enc)

    def encode(self, x_BMD: Float[Tensor, "B 2 d"], *, batch_topk: bool = False) -> Float[Tensor, "B L"]:
        """Latent codes of scaled inputs: the batch's top ``k·B`` scores (training) or the threshold (inference)."""
        pre_BL = self.pre_acts(x_BMD)
        score_BL = pre_BL * self.decoder_norms().sum(-1)
        if batch_topk:
            n_keep = min(self.k * pre_BL.shape[0], pre_BL.numel())
            idx = score_BL.flatten().topk(n_keep, sorted=False).indices
            mask = torch.zeros_like(score_BL).flatten().scatter_(0, idx, 1.0).view_as(score_BL)
            return pre_BL * mask
        if not math.isfinite(float(self.threshold)):
            raise ValueError("this crosscoder has no inference threshold yet; train it with train_crosscoder "
                             "(or call encode(..., batch_topk=True))")
        return pre_BL * (score_BL > self.threshold)

    def decode(self, f_BL: Float[Tensor, "B L"]) -> Float[Tensor, "B 2 d"]:
        return (f_BL @ self.W_dec.reshape(self.d_latent, -1)).view(-1, 2, self.d_model) + self.b_dec

    @torch.no_grad()
    def reconstruct(self, x_base: Float[Tensor, "n d"], x_tuned: Float[Tensor, "n d"]) -> tuple[Tensor, Tensor, Tensor]:
        """``(x [n, 2, d], f [n, L], x̂ [n, 2, d])`` for raw activations, all in the scaled frame."""
        x = _stack(x_base, x_tuned) * self.scale
        f = self.encode(x)
        return x, f, self.decode(f)

    def state(self) -> dict[str, Tensor]:
        """The tensors to save (``crosscoder.safetensors``)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_state(cls, tensors: dict[str, Tensor], k: int) -> BatchTopKCrosscoder:
        d_model, d_latent = int(tensors["W_enc"].shape[1]), int(tensors["W_enc"].shape[2])
        cc = cls(d_model, d_latent, k)
        cc.load_state_dict(tensors)
        return cc


def _stack(x_base: Tensor, x_tuned: Tensor) -> Float[Tensor, "n 2 d"]:
    for name, x in (("acts_base", x_base), ("acts_tuned", x_tuned)):
        if not isinstance(x, Tensor) or x.ndim != 2:
            raise ValueError(f"{name} must be an [n, d] tensor, got {type(x).__name__} "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else ''}")
    if x_base.shape != x_tuned.shape:
        raise ValueError(f"acts_base {tuple(x_base.shape)} and acts_tuned {tuple(x_tuned.shape)} differ: a crosscoder "
                         "needs both models' activations on the same inputs, row for row")
    return torch.stack([x_base.detach().float(), x_tuned.detach().float()], dim=1)


def train_crosscoder(
    acts_base: Float[Tensor, "n d"],
    acts_tuned: Float[Tensor, "n d"],
    *,
    d_latent: int,
    k: int,
    steps: int,
    lr: float,
    seed: int,
    batch_size: int = 256,
    progress: bool = False,
) -> BatchTopKCrosscoder:
    """Train a BatchTopK crosscoder on paired rows (row ``i`` of both = the same input); see the module docstring.

    ``batch_size`` is capped at the number of rows. Deterministic for a seed (initialisation and batches).
    """
    from tqdm.auto import tqdm

    from psylens.saes.data import StepDataProvider

    x_NMD = _stack(acts_base, acts_tuned)
    n, _, d = x_NMD.shape
    if n < 2:
        raise ValueError(f"only {n} rows: a crosscoder needs at least 2 paired activations (more traces or steps)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not bool(torch.isfinite(x_NMD).all()):
        raise ValueError("the activations contain NaN or inf; check the model's dtype (fp16 overflow?)")
    torch.manual_seed(seed)
    cc = BatchTopKCrosscoder(int(d), d_latent, k, seed=seed)
    ms = float((x_NMD**2).sum(-1).mean())
    scale = math.sqrt(d / ms) if ms > 0 else 1.0
    cc.scale.fill_(scale)
    xs_NMD = x_NMD * scale
    with torch.no_grad():
        cc.b_dec.copy_(xs_NMD.mean(0))
    b = min(int(batch_size), n)
    provider = StepDataProvider(xs_NMD.reshape(n, 2 * d), b, seed=seed)
    opt = torch.optim.Adam(cc.parameters(), lr=float(lr), betas=(0.9, 0.999))
    decay_from = int(0.8 * steps)
    cc.train()
    for step in tqdm(range(steps), desc="crosscoder", disable=not progress, leave=False):
        if step >= decay_from:
            for group in opt.param_groups:
                group["lr"] = float(lr) * (steps - step) / max(1, steps - decay_from)
        x_BMD = next(provider).view(b, 2, d)
        f_BL = cc.encode(x_BMD, batch_topk=True)
        loss = ((x_BMD - cc.decode(f_BL)) ** 2).sum(-1).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    cc.eval()
    with torch.no_grad():  # the inference threshold: mean L0 = k over the training rows
        score = torch.cat([cc.pre_acts(xs_NMD[i : i + 4096]) * cc.decoder_norms().sum(-1)
                           for i in range(0, n, 4096)]).flatten()
        kth = min(k * n, score.numel())
        cc.threshold.fill_(float(score.topk(kth).values[-1]) if kth else 0.0)
        if float(cc.threshold) <= 0:  # fewer than k·n positive scores: keep every positive one
            cc.threshold.fill_(0.0)
    return cc


@torch.no_grad()
def crosscoder_fit(cc: BatchTopKCrosscoder, acts_base: Tensor, acts_tuned: Tensor) -> dict[str, Any]:
    """``explained_variance`` per model (1 − SSE/SST on these rows), mean ``l0``, ``dead_fraction``."""
    x, f, xh = cc.reconstruct(acts_base, acts_tuned)
    ev = {}
    for m, name in enumerate(("base", "tuned")):
        sse = float(((x[:, m] - xh[:, m]) ** 2).sum())
        sst = float(((x[:, m] - x[:, m].mean(0)) ** 2).sum())
        ev[name] = 1.0 - sse / sst if sst > 0 else float("nan")
    return {"explained_variance": ev, "l0": float((f > 0).sum(-1).float().mean()),
            "dead_fraction": float(((f > 0).sum(0) == 0).float().mean())}


@dataclass(frozen=True, eq=False)
class LatentClasses:
    """Per-latent numbers (``table``: the columns of ``crosscoder_latents.parquet``) and the class ``counts``."""

    table: Any  # pandas.DataFrame
    counts: dict[str, int]
    thresholds: dict[str, float]

    @property
    def tuned_only(self) -> list[int]:
        return [int(i) for i in self.table.loc[self.table["cls"] == "tuned_only", "latent"]]

    @property
    def base_only(self) -> list[int]:
        return [int(i) for i in self.table.loc[self.table["cls"] == "base_only", "latent"]]


def _betas(d_LD: Tensor, f_NL: Tensor, x_ND: Tensor, xh_ND: Tensor, dm_LD: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form β of every latent with vectors ``d_LD`` against one model's recon and error targets.

    ``dm_LD``: that model's own decoder (put back into the error target: ``x − x̂ + f_j d_j,M``).
    """
    c_L = (f_NL**2).sum(0)  # Σ_i f_ij²
    dn_L = (d_LD**2).sum(-1)
    den = (c_L * dn_L).clamp_min(1e-30)
    recon = ((xh_ND.T @ f_NL).T * d_LD).sum(-1) / den  # ⟨d_j, Σ_i f_ij x̂_i⟩
    err = (((x_ND - xh_ND).T @ f_NL).T * d_LD).sum(-1) + c_L * (dm_LD * d_LD).sum(-1)
    return err / den, recon


@torch.no_grad()
def latent_classes(
    crosscoder: BatchTopKCrosscoder,
    acts_base: Float[Tensor, "n d"],
    acts_tuned: Float[Tensor, "n d"],
    *,
    thresholds: dict[str, float] | None = None,
) -> LatentClasses:
    """Decoder-norm ratios, latent-scaling β per model and target, ν ratios and a class for every latent.

    See the module docstring for the definitions; ``thresholds`` overrides entries of :data:`THRESHOLDS`.
    """
    import pandas as pd

    th = dict(THRESHOLDS)
    if thresholds:
        bad = sorted(set(thresholds) - set(th))
        if bad:
            raise ValueError(f"unknown thresholds {bad}; valid: {sorted(th)}")
        th.update({k: float(v) for k, v in thresholds.items()})
    x, f, xh = crosscoder.reconstruct(acts_base, acts_tuned)
    norms = crosscoder.decoder_norms().detach()  # [L, 2]
    nb, nt = norms[:, 0], norms[:, 1]
    ratio = 0.5 * ((nt - nb) / torch.maximum(nb, nt).clamp_min(1e-12) + 1.0)
    owner_tuned = ratio >= 0.5
    W = crosscoder.W_dec.detach()
    d_own = torch.where(owner_tuned[:, None], W[:, 1], W[:, 0])  # the owner's decoder [L, d]
    be_b, br_b = _betas(d_own, f, x[:, 0], xh[:, 0], W[:, 0])
    be_t, br_t = _betas(d_own, f, x[:, 1], xh[:, 1], W[:, 1])
    own_e, oth_e = torch.where(owner_tuned, be_t, be_b), torch.where(owner_tuned, be_b, be_t)
    own_r, oth_r = torch.where(owner_tuned, br_t, br_b), torch.where(owner_tuned, br_b, br_t)
    nu_e = oth_e / own_e.abs().clamp_min(1e-12)
    nu_r = oth_r / own_r.abs().clamp_min(1e-12)
    freq = (f > 0).float().mean(0)
    passes = (nu_e < th["nu_error"]) & (nu_r < th["nu_recon"])
    cls = np.full(crosscoder.d_latent, "intermediate", dtype=object)
    r = ratio.numpy()
    cls[(r >= th["shared_low"]) & (r <= th["shared_high"])] = "shared"
    t_spec, b_spec = r >= th["specific"], r <= 1.0 - th["specific"]
    cls[t_spec & passes.numpy()] = "tuned_only"
    cls[t_spec & ~passes.numpy()] = "tuned_norm_only"
    cls[b_spec & passes.numpy()] = "base_only"
    cls[b_spec & ~passes.numpy()] = "base_norm_only"
    cls[(freq == 0).numpy()] = "dead"
    table = pd.DataFrame({
        "latent": np.arange(crosscoder.d_latent, dtype=np.int64),
        "norm_base": nb.numpy().astype(np.float64), "norm_tuned": nt.numpy().astype(np.float64),
        "ratio": r.astype(np.float64), "frequency": freq.numpy().astype(np.float64),
        "owner": np.where(owner_tuned.numpy(), "tuned", "base"),
        "beta_base_error": be_b.numpy().astype(np.float64), "beta_tuned_error": be_t.numpy().astype(np.float64),
        "beta_base_recon": br_b.numpy().astype(np.float64), "beta_tuned_recon": br_t.numpy().astype(np.float64),
        "nu_error": nu_e.numpy().astype(np.float64), "nu_recon": nu_r.numpy().astype(np.float64),
        "cls": cls.astype(str),
    })
    from psylens.compare.artifacts import CROSSCODER_CLASSES

    counts = {c: int((table["cls"] == c).sum()) for c in CROSSCODER_CLASSES}
    return LatentClasses(table=table, counts=counts, thresholds=th)


def noise_control(
    acts_base: Float[Tensor, "n d"],
    acts_tuned: Float[Tensor, "n d"],
    *,
    d_latent: int,
    k: int,
    steps: int,
    lr: float,
    seed: int,
    batch_size: int = 256,
    thresholds: dict[str, float] | None = None,
    progress: bool = False,
) -> tuple[LatentClasses, float]:
    """The control crosscoder on ``(x_base, x_base + ε)`` (ε: Gaussian, per-dimension variance of the difference).

    Returns its classes and the RMS of ε per dimension (0 for a model against itself).
    """
    xb = acts_base.detach().float()
    diff = acts_tuned.detach().float() - xb
    sd_D = diff.pow(2).mean(0).sqrt()  # per-dimension RMS of the real difference
    g = torch.Generator().manual_seed(int(seed) + 7919)
    noisy = xb + torch.randn(xb.shape, generator=g) * sd_D
    cc = train_crosscoder(xb, noisy, d_latent=d_latent, k=k, steps=steps, lr=lr, seed=seed + 1,
                          batch_size=batch_size, progress=progress)
    return latent_classes(cc, xb, noisy, thresholds=thresholds), float(sd_D.pow(2).mean().sqrt())
