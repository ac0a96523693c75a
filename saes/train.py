"""Train SAELens SAEs on step activations: :class:`SAETrainConfig`, :func:`train_sae`, :func:`evaluate_sae`.

>>> cfg = SAETrainConfig(arch="batchtopk", d_sae=512, k=16)                        # doctest: +SKIP
>>> result = train_sae(steps.only(train_ids), cfg, exclude_traces=held_ids)       # doctest: +SKIP
>>> save_sae(result.sae, "runs/r/saes/L12")                                       # doctest: +SKIP
>>> sae = load_sae("runs/r/saes/L12")                  # SAELens' SAE.load_from_disk
>>> evaluate_sae(sae, steps.only(held_ids))            # explained_variance, l0, dead_fraction, mse

Training is SAELens' own ``SAETrainer(SAETrainerConfig, sae, data_provider)``; psylens only feeds
it step vectors through :class:`psylens.saes.data.StepDataProvider` and chooses settings. The run
level (``psylens sae train``: step activations, the held-out split, the files) is
:func:`train_step_sae`.

Architectures (``arch``): ``batchtopk`` (k active on average over a batch; SAELens saves it as a
**JumpReLU** SAE, so ``load_sae`` gives a ``JumpReLUSAE``), ``jumprelu`` (L0 penalty
``sparsity_coefficient``), ``topk`` (exactly k per step), ``standard`` (ReLU + L1 penalty
``sparsity_coefficient``), ``matryoshka`` (Bussmann et al. 2025, arXiv 2503.17547: BatchTopK whose
nested prefixes of ``matryoshka_widths`` latents must each reconstruct the input on their own, so the
first latents learn general features instead of splitting them into narrow ones; saved as JumpReLU too).

.. warning:: ``k`` only binds ``topk`` / ``batchtopk`` / ``matryoshka``; ``jumprelu`` and ``standard`` reach their L0
   through ``sparsity_coefficient``, which needs tuning per layer — read ``l0`` in the metrics.
   Inputs are rescaled to norm ``sqrt(d_in)`` during training (``normalize``) and the scale is
   folded back into the saved weights, so the saved SAE reads raw activations.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from psylens.saes.data import StepDataProvider, StepSet

__all__ = [
    "ARCHS",
    "default_matryoshka_widths",
    "SAETrainConfig",
    "TrainResult",
    "build_training_sae",
    "trainer_config",
    "train_sae",
    "save_sae",
    "load_sae",
    "encode",
    "evaluate_sae",
    "training_warnings",
]

log = logging.getLogger(__name__)

ARCHS = ("batchtopk", "jumprelu", "topk", "standard", "matryoshka")
TOPK_ARCHS = ("topk", "batchtopk", "matryoshka")  # the architectures whose L0 is set by ``k``
NORMALIZE = ("expected_average_only_in", "none")


def default_matryoshka_widths(d_sae: int, k: int) -> tuple[int, ...]:
    """Nested widths growing 4× up to ``d_sae``, the smallest at least ``max(k, 8)`` latents
    (512 latents, k 24 → ``(32, 128, 512)``), as in Bussmann et al.'s ×4 ladders. Below
    ``d_sae = 4 · max(k, 8)`` there is one level only, i.e. plain BatchTopK (SAELens warns)."""
    widths = [d_sae]
    while widths[0] // 4 >= max(k, 8):
        widths.insert(0, widths[0] // 4)
    return tuple(widths)


@dataclass(frozen=True)
class SAETrainConfig:
    """How to train one SAE (validated here; round-trips through :meth:`to_json` / :meth:`from_json`).

    Attributes:
        arch: one of ``ARCHS``.
        d_sae: number of latents.
        k: active latents per step (``topk``) or on average over a batch (``batchtopk``).
        sparsity_coefficient: L1 (``standard``) or L0 (``jumprelu``) penalty weight; ignored by top-k.
        epochs: passes over the training steps (``n_samples`` overrides it).
        n_samples: total training samples (``None``: ``epochs`` × the number of training steps).
        batch_size: steps per batch.
        lr: Adam learning rate; ``lr_end`` is passed to SAELens explicitly (``None``: ``lr``).
        lr_decay: fraction of the training steps at the end with a linear decay of the rate to 0.
        normalize: ``"expected_average_only_in"`` (scale inputs to norm sqrt(d_in), folded in after
            training) or ``"none"``.
        dead_window: a latent is dead after this many training batches without firing (SAELens'
            ``dead_feature_window``; top-k's auxiliary loss revives dead latents).
        seed: initialisation and shuffling seed.
        device: ``"cpu"`` or a torch device string.
        matryoshka_widths: ``matryoshka`` only — strictly increasing prefix sizes ending at ``d_sae``
            (``None``: :func:`default_matryoshka_widths`; filled in on construction, so the saved
            config records the ladder used).
    """

    arch: str = "batchtopk"
    d_sae: int = 512
    k: int = 16
    sparsity_coefficient: float = 1.0
    epochs: float = 30.0
    n_samples: int | None = None
    batch_size: int = 256
    lr: float = 1e-3
    lr_end: float | None = None
    lr_decay: float = 0.2
    normalize: str = "expected_average_only_in"
    dead_window: int = 400
    seed: int = 0
    device: str = "cpu"
    matryoshka_widths: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch {self.arch!r} is not one of {', '.join(ARCHS)}")
        for name in ("d_sae", "k", "batch_size", "dead_window"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.arch in TOPK_ARCHS and self.k > self.d_sae:
            raise ValueError(f"k={self.k} is larger than d_sae={self.d_sae}; choose k <= d_sae (e.g. --k 16)")
        self._check_widths()
        if self.n_samples is not None and (isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int)
                                           or self.n_samples < self.batch_size):
            raise ValueError(f"n_samples must be an integer >= batch_size ({self.batch_size}) or None, got {self.n_samples!r}")
        for name in ("sparsity_coefficient", "epochs", "lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        if self.lr_end is not None and (not isinstance(self.lr_end, (int, float)) or self.lr_end < 0):
            raise ValueError(f"lr_end must be a non-negative number or None, got {self.lr_end!r}")
        if not isinstance(self.lr_decay, (int, float)) or not 0.0 <= self.lr_decay < 1.0:
            raise ValueError(f"lr_decay must be a fraction in [0, 1), got {self.lr_decay!r}")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"normalize {self.normalize!r} is not one of {', '.join(NORMALIZE)}")

    def _check_widths(self) -> None:
        w = self.matryoshka_widths
        if self.arch != "matryoshka":
            if w is not None:
                raise ValueError(f"matryoshka_widths {list(w)} given for arch {self.arch!r}; they apply to arch "
                                 "'matryoshka' only: drop them or choose --arch matryoshka")
            return
        if w is None:
            object.__setattr__(self, "matryoshka_widths", default_matryoshka_widths(self.d_sae, self.k))
            return
        if isinstance(w, (str, bytes)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in w):
            raise ValueError(f"matryoshka_widths must be integers, got {w!r}; e.g. (32, 128, {self.d_sae})")
        w = tuple(w)
        if not w or w[-1] != self.d_sae or w[0] < 1 or any(a >= b for a, b in zip(w, w[1:])):
            raise ValueError(
                f"matryoshka_widths {list(w)} must be strictly increasing positive prefix sizes ending at d_sae="
                f"{self.d_sae}; e.g. {list(default_matryoshka_widths(self.d_sae, self.k))}"
            )
        object.__setattr__(self, "matryoshka_widths", w)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["matryoshka_widths"] is not None:
            d["matryoshka_widths"] = list(d["matryoshka_widths"])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SAETrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SAE training settings {unknown}; valid: {sorted(names)}")
        d = dict(d)
        if d.get("matryoshka_widths") is not None:
            d["matryoshka_widths"] = tuple(d["matryoshka_widths"])
        return cls(**d)

    def total_samples(self, n_train: int) -> int:
        """Training samples SAELens will draw: ``n_samples`` or ``epochs × n_train``, whole batches."""
        n = self.n_samples if self.n_samples is not None else int(round(self.epochs * n_train))
        return max(self.batch_size, (n // self.batch_size) * self.batch_size)


def build_training_sae(cfg: SAETrainConfig, d_in: int) -> Any:
    """A fresh SAELens ``TrainingSAE`` of ``cfg.arch`` for ``d_in``-dimensional inputs (seeded)."""
    from sae_lens import (
        BatchTopKTrainingSAE,
        BatchTopKTrainingSAEConfig,
        JumpReLUTrainingSAE,
        JumpReLUTrainingSAEConfig,
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
        StandardTrainingSAE,
        StandardTrainingSAEConfig,
        TopKTrainingSAE,
        TopKTrainingSAEConfig,
    )

    if not isinstance(d_in, int) or d_in < 1:
        raise ValueError(f"d_in must be a positive integer, got {d_in!r}")
    common = {"d_in": d_in, "d_sae": cfg.d_sae, "device": cfg.device, "normalize_activations": cfg.normalize}
    torch.manual_seed(cfg.seed)
    if cfg.arch == "batchtopk":
        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(k=float(cfg.k), **common))
    if cfg.arch == "matryoshka":
        widths = list(cfg.matryoshka_widths or default_matryoshka_widths(cfg.d_sae, cfg.k))
        return MatryoshkaBatchTopKTrainingSAE(
            MatryoshkaBatchTopKTrainingSAEConfig(k=float(cfg.k), matryoshka_widths=widths, **common))
    if cfg.arch == "topk":
        return TopKTrainingSAE(TopKTrainingSAEConfig(k=cfg.k, **common))
    if cfg.arch == "jumprelu":
        return JumpReLUTrainingSAE(JumpReLUTrainingSAEConfig(l0_coefficient=cfg.sparsity_coefficient, **common))
    return StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=cfg.sparsity_coefficient, **common))


def trainer_config(cfg: SAETrainConfig, n_train: int) -> Any:
    """SAELens' ``SAETrainerConfig`` for ``cfg`` on ``n_train`` training steps (``lr_end`` set explicitly)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    total = cfg.total_samples(n_train)
    n_batches = total // cfg.batch_size
    return SAETrainerConfig(
        total_training_samples=total,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr if cfg.lr_end is None else cfg.lr_end,
        lr_scheduler_name="constant",
        lr_decay_steps=int(cfg.lr_decay * n_batches),
        device=cfg.device,
        dead_feature_window=cfg.dead_window,
        feature_sampling_window=max(1, n_batches),
        n_batches_for_norm_estimate=max(1, min(100, math.ceil(n_train / cfg.batch_size))),
        logger=LoggingConfig(log_to_wandb=False),
    )


@dataclass(frozen=True, eq=False)
class TrainResult:
    """A trained SAE and how the training went.

    ``sae`` is SAELens' training SAE (its scaling folded in); save it with :func:`save_sae`.
    ``train_dead_fraction``: latents that did not fire in the last ``dead_window`` batches.
    """

    sae: Any
    n_train_steps: int
    n_samples: int
    seconds: float
    train_dead_fraction: float
    config: SAETrainConfig


@contextlib.contextmanager
def _trainer_progress(enabled: bool) -> Iterator[None]:
    """SAELens' trainer always draws a tqdm bar; switch it off for ``progress=False``."""
    from sae_lens.training import sae_trainer

    if enabled:
        yield
        return
    original = sae_trainer.tqdm
    sae_trainer.tqdm = functools.partial(original, disable=True)  # type: ignore[assignment]
    try:
        yield
    finally:
        sae_trainer.tqdm = original  # type: ignore[assignment]


def train_sae(
    train: StepSet | Float[Tensor, "n d"],
    cfg: SAETrainConfig | None = None,
    *,
    exclude_traces: Iterable[str] = (),
    progress: bool = True,
) -> TrainResult:
    """Train an SAE on the training step vectors with SAELens' ``SAETrainer``.

    ``exclude_traces``: the held-out trace ids; a ``ValueError`` if any training row is from one.
    """
    from sae_lens.training.sae_trainer import SAETrainer

    cfg = cfg or SAETrainConfig()
    acts = train.acts if isinstance(train, StepSet) else train
    n, d_in = int(acts.shape[0]), int(acts.shape[1])
    provider = StepDataProvider(train, cfg.batch_size, exclude_traces=exclude_traces, seed=cfg.seed, device=cfg.device)
    sae = build_training_sae(cfg, d_in)
    tcfg = trainer_config(cfg, n)
    trainer = SAETrainer(cfg=tcfg, sae=sae, data_provider=provider)
    t0 = time.perf_counter()
    with _trainer_progress(progress):
        sae = trainer.fit()
    seconds = time.perf_counter() - t0
    dead = float(trainer.dead_neurons.float().mean().item())
    return TrainResult(sae=sae, n_train_steps=n, n_samples=tcfg.total_training_samples, seconds=seconds,
                       train_dead_fraction=dead, config=cfg)


def save_sae(sae: Any, path: str | Path) -> Path:
    """Save the inference SAE in SAELens' format (``cfg.json`` + ``sae_weights.safetensors``).

    A ``batchtopk`` or ``matryoshka`` SAE is saved as JumpReLU (SAELens' choice); ``load_sae`` reads it back.
    """
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    if hasattr(sae, "save_inference_model"):
        sae.save_inference_model(str(p))
    else:
        sae.save_model(str(p))
    return p


def load_sae(path: str | Path, device: str = "cpu") -> Any:
    """``sae_lens.SAE.load_from_disk(path)`` with an error that says what is missing."""
    from sae_lens import SAE

    from psylens.saes import artifacts as art

    p = Path(path)
    missing = [f for f in (art.SAE_CFG, art.SAE_WEIGHTS) if not (p / f).is_file()]
    if missing:
        raise ValueError(f"{str(p)!r} is not a saved SAE: {missing} missing; train one with `psylens sae train`")
    return SAE.load_from_disk(str(p), device=device)


@torch.no_grad()
def encode(sae: Any, acts: Float[Tensor, "n d"], batch_size: int = 1024) -> tuple[Tensor, Tensor]:
    """``(latents [n, d_sae], reconstruction [n, d])`` of ``acts`` under ``sae`` (eval mode, batched)."""
    was_training = bool(getattr(sae, "training", False))
    sae.eval()
    try:
        zs, xs = [], []
        dtype = sae.W_dec.dtype
        for i in range(0, acts.shape[0], batch_size):
            x = acts[i : i + batch_size].to(sae.W_dec.device, dtype)
            z = sae.encode(x)
            zs.append(z.float().cpu())
            xs.append(sae.decode(z).float().cpu())
    finally:
        if was_training:
            sae.train()
    if not zs:
        raise ValueError("no activations to encode (0 rows)")
    return torch.cat(zs), torch.cat(xs)


def _cluster_ratio_ci(num: np.ndarray, den: np.ndarray, groups: Sequence[str], seed: int = 0,
                      n_boot: int = 1000, level: float = 0.95) -> tuple[float, float]:
    """Trace-cluster bootstrap interval of ``1 - sum(num) / sum(den)``."""
    _, inv = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    g = int(inv.max()) + 1
    sn = np.bincount(inv, weights=num, minlength=g)
    sd = np.bincount(inv, weights=den, minlength=g)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, g, size=(n_boot, g))
    samples = 1.0 - sn[pick].sum(1) / np.maximum(sd[pick].sum(1), 1e-30)
    a = (1 - level) / 2
    return float(np.quantile(samples, a)), float(np.quantile(samples, 1 - a))


def evaluate_sae(sae: Any, held: StepSet | Float[Tensor, "n d"], *, seed: int = 0) -> dict[str, Any]:
    """Held-out quality: ``explained_variance``, ``l0``, ``dead_fraction``, ``mse`` (+ ``*_ci`` intervals).

    - ``explained_variance`` = 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² over held-out steps (x̄ their mean).
    - ``l0``: mean number of non-zero latents per step.
    - ``dead_fraction``: latents that fire on no held-out step. Footgun: with few held-out steps a
      rare but live latent counts as dead; the training-time figure is ``train_dead_fraction``.
    - ``mse``: mean over steps of Σ_d (x − x̂)² / d.
    Intervals resample whole traces (95%) when ``held`` is a :class:`StepSet`, else single steps.
    """
    x = held.acts if isinstance(held, StepSet) else held.detach().float()
    groups = list(held.trace_ids) if isinstance(held, StepSet) else [str(i) for i in range(x.shape[0])]
    z, xh = encode(sae, x)
    sse = ((x - xh) ** 2).sum(-1).double().numpy()
    sst = ((x - x.mean(0, keepdim=True)) ** 2).sum(-1).double().numpy()
    l0 = (z != 0).sum(-1).double().numpy()
    mse = sse / x.shape[1]
    ev = 1.0 - float(sse.sum() / max(sst.sum(), 1e-30))
    from psylens.stats import grouped_bootstrap_ci

    return {
        "n_held_out_steps": int(x.shape[0]),
        "n_held_out_traces": len(set(groups)),
        "explained_variance": ev,
        "explained_variance_ci": list(_cluster_ratio_ci(sse, sst, groups, seed=seed)),
        "l0": float(l0.mean()),
        "l0_ci": list(grouped_bootstrap_ci(l0, groups, seed=seed)),
        "dead_fraction": float(((z != 0).sum(0) == 0).float().mean().item()),
        "mse": float(mse.mean()),
        "mse_ci": list(grouped_bootstrap_ci(mse, groups, seed=seed)),
    }


MIN_OPTIMIZER_STEPS = 100  # below this an SAE has barely moved from its initialisation


def training_warnings(metrics: dict[str, Any], *, n_batches: int, arch: str, k: int) -> list[str]:
    """What in ``metrics`` (from :func:`evaluate_sae`) says the SAE did not train, each with how to fix it.

    An SAE trained on a few hundred steps for a few epochs takes a few dozen optimizer steps and comes out
    worse than the steps' mean (negative explained variance) with an L0 far above ``k``; nothing fails, so these
    are written beside the metrics (``metrics.json``'s ``warnings``) and logged. Empty when nothing looks wrong.
    """
    out = []
    more = "train longer (--epochs), or on more traces (psylens traces --samples)"
    if n_batches < MIN_OPTIMIZER_STEPS:
        out.append(f"only {n_batches} optimizer steps (epochs × training steps ÷ batch size); an SAE needs "
                   f"hundreds to thousands: {more}, or lower --batch-size")
    ev = metrics.get("explained_variance")
    if isinstance(ev, float) and ev < 0:
        out.append(f"held-out explained variance {ev:.2f} < 0: the SAE reconstructs held-out steps worse than their "
                   f"mean does, so its features mean little; {more}")
    l0 = metrics.get("l0")
    if arch in ("batchtopk", "topk", "matryoshka") and isinstance(l0, float) and l0 > 2 * k:
        out.append(f"held-out L0 {l0:.1f} is over twice k = {k}: the sparsity {arch} aims at was not reached; {more}")
    return out
