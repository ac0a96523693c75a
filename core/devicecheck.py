"""Does psylens give the same answers on this device as on the CPU? ``check_device`` says, check by check.

psylens runs on CPU, CUDA and MPS, but a device bug — an op that is wrong, missing or imprecise on one
backend — does not raise: it silently changes an analysis. :func:`check_device` loads a model twice
through :func:`psylens.load_model` — a *reference* (float32 on the CPU) and a *target* (the device,
dtype and ``device_map`` you give) — runs psylens' own primitives on both with the same fixed inputs,
and compares the answers:

=================  ==========================================================================================
check              what is compared (target vs reference)
=================  ==========================================================================================
``logits``         one forward pass on three fixed short texts (a right-padded batch), at every real token:
                   the largest ``|Δ log-softmax|`` over the :data:`TOP_K` most likely next tokens of either
                   side (the whole vocabulary's largest is reported too: it is the far tail's rounding), and
                   the fraction of tokens whose top-1 next token agrees
``record``         ``resid_post`` recorded with :func:`psylens.interventions.record` at the first, middle
                   and last layer: the mean over real tokens of ``‖Δh‖ / ‖h_ref‖`` (worst layer; the
                   worst token is reported beside it)
``interventions``  each edit applied alone through :func:`psylens.interventions.intervene` and read at the
                   last layer's ``resid_post`` (the same per-token measure, worst edit): ``add`` a vector
                   (layer 0); ``scale``, ``clamp``, ``project_out`` the residual's mean direction and
                   ``add`` at ``resid_mid`` (middle layer); ``zero`` and ``mean``-ablate every other head
                   (``head_out``) and neuron (``mlp_post``) of layer 0 — where the architecture has those
                   sites; ``patch`` the middle layer's ``resid_pre`` with activations of other texts. The
                   values are the same CPU tensors on both sides (each moves them to its own device and
                   dtype)
``steering``       a :class:`~psylens.steering.SteeringVector` (a random unit direction, seed 0, at the
                   middle layer, ``alpha`` = half the median residual norm there): greedy generation of
                   :data:`NEW_TOKENS` tokens on two left-padded prompts — the fraction of identical
                   tokens — and the steered-minus-unsteered projection on the direction, per token, at
                   the steered and the last layer (relative error ``‖Δ‖ / ‖ref‖``)
``attribution``    :func:`psylens.circuits.scores.attribution` (``direct`` and ``atp`` scores of every head
                   and neuron up to the last layer; baseline :func:`~psylens.circuits.signal.unit_baseline`
                   of two neutral texts, on each side) for a joy-vs-sadness contrast of four texts built
                   here: the smallest Spearman correlation over {direct, atp} × {heads, neurons}, and the
                   largest ``max|Δ| / max|ref|``
``fingerprint``    :func:`psylens.runs.model_fingerprint` of both: identical when the dtypes are equal (the
                   documented promise: an exact integer checksum computed on each tensor's own device);
                   skipped, with the reason, when the target's dtype differs (other bits, other print) or
                   parameters are offloaded by ``device_map``
=================  ==========================================================================================

Tolerances depend on the target's dtype (:data:`TOLERANCES`; "activ." bounds ``record`` and
``interventions``; the other columns are :class:`Tolerances`' fields):

=========  =========  ======  ========  ======  =======  ========  ===========
dtype      logprob    top1    activ.    tokens  shift    spearman  attribution
           ≤          ≥       ≤         ≥       ≤        ≥         ≤
=========  =========  ======  ========  ======  =======  ========  ===========
float32    1e-3       1.0     1e-4      1.0     1e-3     0.999     1e-3
float16    0.25       0.9     0.04      0.5     0.05     0.95      0.1
bfloat16   1.0        0.8     0.15      0.25    0.15     0.9       0.25
=========  =========  ======  ========  ======  =======  ========  ===========

float32 bars allow only the rounding of another accumulation order (CPU vs GPU kernels; TF32 matmuls,
when switched on, exceed them and the report says so). The half-precision bars were set from
SmolLM2-135M-Instruct in float16 and bfloat16 on the CPU against float32 (``psylens doctor --device cpu
--dtype bfloat16``): each measured value sits below half its bar (bfloat16: logprob 0.43, activations
0.017 / 0.058, shift 0.011, Spearman 0.998, attribution 0.076; float16 five to ten times closer), and
every edit of ``interventions`` moves the reference at least twice the bfloat16 bar. A device *bug* — a wrong kernel, a dropped hook, a mis-cast value — moves them by an order of
magnitude or more. Greedy tokens in half precision drift apart once a near-tie flips, so ``tokens`` is a
loose bar there, and exact in float32.

A check that raises (an op the device does not support, a dtype it cannot hold) is recorded as failed
with the exception's type and message, and the other checks still run: the report lists everything
that breaks. ``Check.passed`` is ``None`` for a skipped check.

.. warning:: The reference is a float32 copy of the whole model on the CPU: it needs 4 bytes a
   parameter of RAM besides the target. The two models are loaded one after the other and both are
   held until the checks end.

>>> report = check_device("smollm2-135m-instruct", device="cuda")      # doctest: +SKIP
>>> report.passed, [c.name for c in report.checks if c.passed is False]  # doctest: +SKIP
(True, [])
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from psylens.interventions import Intervention, intervene, record, site_module
from psylens.io import dumps_json
from psylens.models import Model, load_model

__all__ = [
    "Check",
    "DeviceReport",
    "Tolerances",
    "TOLERANCES",
    "CHECKS",
    "TEXTS",
    "NEW_TOKENS",
    "TOP_K",
    "available_devices",
    "check_device",
    "compare_models",
]

# --------------------------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerances:
    """The bars of one target dtype (see the module's table).

    Attributes:
        logprob: largest ``|Δ log-softmax|`` allowed (``logits``).
        top1: smallest fraction of tokens whose top-1 next token agrees (``logits``).
        activation: largest mean over real tokens of ``‖Δh‖ / ‖h_ref‖`` (``record``, ``interventions``).
        tokens: smallest fraction of identical greedy tokens under steering (``steering``).
        shift: largest relative error of the steered-minus-unsteered projection (``steering``).
        spearman: smallest Spearman correlation of attribution scores (``attribution``).
        attribution: largest ``max|Δ| / max|ref|`` of attribution scores (``attribution``).
    """

    logprob: float
    top1: float
    activation: float
    tokens: float
    shift: float
    spearman: float
    attribution: float


TOLERANCES: dict[str, Tolerances] = {
    "float32": Tolerances(logprob=1e-3, top1=1.0, activation=1e-4, tokens=1.0, shift=1e-3, spearman=0.999,
                          attribution=1e-3),
    "float16": Tolerances(logprob=0.25, top1=0.9, activation=0.04, tokens=0.5, shift=0.05, spearman=0.95,
                          attribution=0.1),
    "bfloat16": Tolerances(logprob=1.0, top1=0.8, activation=0.15, tokens=0.25, shift=0.15, spearman=0.9,
                           attribution=0.25),
}

_DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                "half": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}

# The fixed inputs: short, ordinary texts of different lengths (the batch is padded).
TEXTS: tuple[str, ...] = (
    "The kettle clicked off and the kitchen went quiet.",
    "I finally opened the letter: they said yes, and I laughed out loud in the hallway.",
    "She heard footsteps behind her in the empty car park.",
)
NEW_TOKENS = 12  # greedy tokens generated under steering
TOP_K = 20  # the logits check compares the log-probabilities of each side's TOP_K most likely tokens
_ATTRIBUTION_TEXTS: tuple[tuple[str, str, str], ...] = (  # (text, label, scenario)
    ("My sister called to say the test came back clear, and I cried with relief and joy.", "joy", "call"),
    ("My sister called to say the test came back bad, and I sat alone and cried.", "sadness", "call"),
    ("The dog I thought was lost came running up the path, tail wagging.", "joy", "dog"),
    ("The dog I had for twelve years did not come running up the path any more.", "sadness", "dog"),
)
_NEUTRAL_TEXTS = ("The bus arrives at ten past nine.", "She put the cups back in the cupboard.")


# --------------------------------------------------------------------------------------------
# the values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The outcome of one comparison.

    Attributes:
        name: one of :data:`CHECKS`' names.
        passed: ``True``/``False``; ``None`` when the check was skipped (``detail`` says why).
        value: the headline number (``None`` when there is none, e.g. the check raised).
        tolerance: its bar (``None`` when there is none).
        detail: one line: what was measured, the secondary numbers, or the exception.
        bound: ``"max"`` (``value`` must be ≤ ``tolerance``) or ``"min"`` (≥).
        metrics: every number measured, JSON-safe (per layer, per edit, per score, ...).
        seconds: how long the check took.
    """

    name: str
    passed: bool | None
    value: float | None
    tolerance: float | None
    detail: str
    bound: str = "max"
    metrics: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.passed is None

    @property
    def status(self) -> str:
        """``"pass"``, ``"fail"`` or ``"skip"``."""
        return "skip" if self.passed is None else ("pass" if self.passed else "fail")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and ±inf become ``None``)."""
        return _plain({"name": self.name, "status": self.status, "passed": self.passed, "value": self.value,
                       "tolerance": self.tolerance, "bound": self.bound, "detail": self.detail,
                       "metrics": self.metrics, "seconds": round(self.seconds, 3)})


@dataclass(frozen=True)
class DeviceReport:
    """Every check of one target against the reference; ``passed`` when no non-skipped check failed."""

    model: str
    device: str
    dtype: str
    reference_device: str
    reference_dtype: str
    checks: tuple[Check, ...]
    device_map: str | None = None
    notes: tuple[str, ...] = ()  # what about the target's device explains a number (TF32, no float64, offload)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if not c.skipped)

    @property
    def failed(self) -> list[str]:
        """Names of the failed checks."""
        return [c.name for c in self.checks if c.passed is False]

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check {name!r}; the checks are {[c.name for c in self.checks]}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN and ±inf become ``None``)."""
        return _plain({"model": self.model, "device": self.device, "dtype": self.dtype, "device_map": self.device_map,
                       "reference_device": self.reference_device, "reference_dtype": self.reference_dtype,
                       "passed": self.passed, "failed": self.failed, "torch": torch.__version__,
                       "notes": list(self.notes), "checks": [c.to_dict() for c in self.checks]})


def _plain(obj: Any) -> Any:
    """``obj`` through psylens' JSON writer and back: numpy and tensors become lists, NaN/inf ``None``."""
    return json.loads(dumps_json(obj, nan="null", indent=None))


# --------------------------------------------------------------------------------------------
# devices and dtypes
# --------------------------------------------------------------------------------------------


def available_devices() -> list[str]:
    """The devices this machine can run psylens on: ``["cpu", "cuda:0", ..., "mps"]``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def _unavailable(device: str, why: str) -> ValueError:
    return ValueError(
        f"device {device!r} {why}; available devices here: {', '.join(available_devices())}. "
        "Choose one with --device (psylens doctor) or device= (check_device), or 'auto' for the best available"
    )


def _resolve_device(device: str | torch.device) -> torch.device:
    """``device`` checked against :func:`available_devices` (``"auto"``: cuda, then mps, then cpu)."""
    from psylens.models import pick_device

    if isinstance(device, str) and device == "auto":
        return pick_device("auto")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise _unavailable(str(device), "is not a device name") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _unavailable(str(device), "is not available (torch sees no CUDA GPU)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _unavailable(str(device), f"does not exist (this machine has {torch.cuda.device_count()} CUDA GPUs)")
        return dev
    if dev.type == "mps":
        if "mps" not in available_devices():
            raise _unavailable(str(device), "is not available (torch.backends.mps.is_available() is False)")
        return dev
    raise _unavailable(str(device), "is not supported by psylens (it runs on cpu, cuda and mps)")


def _resolve_dtype(dtype: str | None, device: torch.device | None) -> str:
    """A canonical dtype name; ``None``: the dtype :func:`psylens.load_model` picks for ``device``."""
    if dtype is None or dtype == "auto":
        from psylens.models import _default_dtype

        dev = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return str(_default_dtype(dev)).replace("torch.", "")
    if not isinstance(dtype, str) or dtype not in _DTYPE_NAMES:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16 (or leave it out for the "
                         "device's default: bfloat16 on CUDA, float16 on MPS, float32 on the CPU)")
    return _DTYPE_NAMES[dtype]


def _dtype_name(model: Model) -> str:
    return str(model.dtype).replace("torch.", "")


# --------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------


def check_device(
    model: str,
    *,
    device: str = "auto",
    dtype: str | None = None,
    device_map: str | None = None,
    reference_device: str = "cpu",
    progress: bool = False,
) -> DeviceReport:
    """Load ``model`` on ``reference_device`` (float32) and on the target, run every check, return the report.

    Args:
        model: anything :func:`psylens.load_model` takes (alias, HF id, directory, ``.gguf``).
        device: ``"auto"`` (cuda → mps → cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        dtype: ``"float32"``, ``"float16"``, ``"bfloat16"``; ``None``: the device's default
            (bfloat16 on CUDA, float16 on MPS, float32 on the CPU).
        device_map: e.g. ``"auto"`` (accelerate spreads the target over the GPUs); then ``device`` must
            stay ``"auto"``.
        reference_device: where the float32 reference runs (``"cpu"``: the point of the check).
        progress: show a progress bar (stderr) over the loads and checks.

    Raises:
        ValueError: an unavailable or unknown device (the message lists the available ones), an unknown
            dtype, ``device`` together with ``device_map``; nothing is loaded then. Errors of the checks
            themselves never raise: they are failed checks in the report.
    """
    if device_map is not None and device != "auto":
        raise ValueError(f"give a device ({device!r}) or a device_map ({device_map!r}), not both: a device_map "
                         "places the target itself")
    ref_dev = _resolve_device(reference_device)
    target_dev = None if device_map is not None else _resolve_device(device)
    target_dtype = _resolve_dtype(dtype, target_dev)
    bar = _Progress(progress, total=2 + len(CHECKS))
    try:
        bar.stage(f"loading the reference ({ref_dev}, float32)")
        reference = load_model(model, device=ref_dev, dtype="float32")
        where = f"device_map={device_map}" if device_map is not None else str(target_dev)
        bar.stage(f"loading the target ({where}, {target_dtype})")
        target = load_model(model, device=target_dev or "auto", dtype=target_dtype, device_map=device_map)
        report = compare_models(reference, target, on_check=bar.stage)
    finally:
        bar.close()
    return DeviceReport(report.model, report.device, report.dtype, report.reference_device, report.reference_dtype,
                        report.checks, device_map, report.notes)


def compare_models(
    reference: Model, target: Model, *, on_check: Callable[[str], None] | None = None
) -> DeviceReport:
    """Every check of :data:`CHECKS` on two loaded copies of one model (the tolerances of ``target``'s dtype).

    ``reference`` should be float32 (on the CPU for a device check). ``on_check(name)`` is called before
    each check (a progress hook). A check that raises is a failed :class:`Check` naming the exception.
    """
    tname = _dtype_name(target)
    if tname not in TOLERANCES:
        raise ValueError(f"no tolerances for the target's dtype {tname}; load it as one of {', '.join(TOLERANCES)}")
    pair = _Pair.build(reference, target, TOLERANCES[tname])
    checks = []
    for name, fn in CHECKS:
        if on_check is not None:
            on_check(name)
        checks.append(_run_check(name, fn, pair))
    return DeviceReport(model=target.spec, device=str(target.device), dtype=tname,
                        reference_device=str(reference.device), reference_dtype=_dtype_name(reference),
                        checks=tuple(checks), notes=_notes(target) + _same_place(reference, target))


def _same_place(reference: Model, target: Model) -> tuple[str, ...]:
    """A note when the target is the reference's own device and dtype: the report is then a control."""
    if str(reference.device) == str(target.device) and _dtype_name(reference) == _dtype_name(target):
        return (f"the target is the reference's own device and dtype ({target.device}, {_dtype_name(target)}): this "
                "compares psylens with itself (every value should be exact), not a device; pick an accelerator "
                f"with --device (available here: {', '.join(available_devices())}) or a lower --dtype",)
    return ()


def _notes(target: Model) -> tuple[str, ...]:
    """Facts about the target's placement that explain numbers in the report."""
    hf = target.hf_model
    types = {q.device.type for q in hf.parameters()}
    notes = []
    tf32 = torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    if "cuda" in types and _dtype_name(target) == "float32" and tf32:
        notes.append("TF32 matmuls are on (torch.backends.cuda.matmul.allow_tf32, or "
                     "torch.set_float32_matmul_precision('high')): float32 matmuls keep a 10-bit mantissa here, "
                     "beyond the float32 bars; switch them off to test float32 itself")
    if "mps" in types:
        notes.append("MPS has no float64: psylens' float64 reductions (attribution scores, baselines) run in "
                     "float32 there (psylens.precision)")
    devices = sorted({str(q.device) for q in hf.parameters()})
    if len(devices) > 1:
        notes.append(f"the target's parameters are spread over {', '.join(devices)} (device_map)")
    return tuple(notes)


def _run_check(name: str, fn: Callable[[_Pair], Check], pair: _Pair) -> Check:
    """``fn(pair)``, timed; an exception becomes a failed check naming it (never propagated)."""
    t0 = time.perf_counter()
    try:
        c = fn(pair)
    except Exception as e:  # the point is to list everything that breaks on the device
        msg = " ".join(str(e).split())
        c = Check(name, False, None, None, f"raised {type(e).__name__}: {msg[:500]}",
                  metrics={"exception": type(e).__name__, "message": msg[:2000]})
    return Check(c.name, c.passed, c.value, c.tolerance, c.detail, c.bound, c.metrics, time.perf_counter() - t0)


class _Progress:
    """A tqdm bar over named stages (or nothing)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="devicecheck", leave=False)
        self._started = False

    def stage(self, name: str) -> None:
        if self._bar is None:
            return
        if self._started:
            self._bar.update(1)
        self._started = True
        self._bar.set_description(name)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.close()


# --------------------------------------------------------------------------------------------
# shared inputs
# --------------------------------------------------------------------------------------------


def _pad_id(model: Model) -> int:
    tok = model.tokenizer
    for v in (tok.pad_token_id, tok.eos_token_id, 0):
        if v is not None:
            return int(v[0] if isinstance(v, (list, tuple)) else v)
    return 0


def _batch(model: Model, texts: Sequence[str], side: str = "right") -> tuple[Int[Tensor, "b t"], Int[Tensor, "b t"]]:
    """``(input_ids [b, t], attention_mask [b, t])`` of raw ``texts``, padded on ``side`` (CPU tensors)."""
    encs = [list(model.tokenizer(t, add_special_tokens=True)["input_ids"]) for t in texts]
    t = max(len(e) for e in encs)
    ids = torch.full((len(encs), t), _pad_id(model), dtype=torch.long)
    mask = torch.zeros((len(encs), t), dtype=torch.long)
    for r, e in enumerate(encs):
        sl = slice(0, len(e)) if side == "right" else slice(t - len(e), t)
        ids[r, sl] = torch.tensor(e)
        mask[r, sl] = 1
    return ids, mask


def _unit(d: int, seed: int) -> Float[Tensor, " d"]:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


@dataclass
class _Pair:
    """The two models, the tolerances and the fixed inputs every check shares."""

    ref: Model
    tgt: Model
    tol: Tolerances
    ids: Int[Tensor, "b t"]
    mask: Int[Tensor, "b t"]
    layers: tuple[int, ...]  # first, middle, last (deduplicated)
    mid: int
    last: int
    direction: Float[Tensor, " d_model"]  # the fixed random unit direction, seed 0

    @classmethod
    def build(cls, ref: Model, tgt: Model, tol: Tolerances) -> _Pair:
        if ref.n_layers != tgt.n_layers or ref.d_model != tgt.d_model:
            raise ValueError(f"the reference ({ref.n_layers} layers, d_model {ref.d_model}) and the target "
                             f"({tgt.n_layers} layers, d_model {tgt.d_model}) are not the same model")
        ids, mask = _batch(ref, TEXTS)
        n = ref.n_layers
        mid, last = n // 2, n - 1
        return cls(ref, tgt, tol, ids, mask, tuple(sorted({0, mid, last})), mid, last, _unit(ref.d_model, 0))

    @property
    def real(self) -> Bool[Tensor, "b t"]:
        return self.mask.bool()


@torch.no_grad()
def _forward(model: Model, ids: Tensor, mask: Tensor) -> Float[Tensor, "b t vocab"]:
    dev = model.device
    return model.hf_model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False).logits


def _to_cpu64(x: Tensor) -> Tensor:
    """Cast on the device first (MPS has no float64), then to the CPU in float64."""
    return x.detach().float().cpu().double()


@torch.no_grad()
def _record(model: Model, site: str, layers: Sequence[int], ids: Tensor, mask: Tensor,
            edits: Sequence[Intervention] = ()) -> dict[int, Float[Tensor, "b t ..."]]:
    """``site`` at ``layers`` (float64 CPU ``[b, t, *site]``) of one forward, with ``edits`` applied."""
    with intervene(model, list(edits)), record(model, [site], list(layers)) as rec:
        _forward(model, ids, mask)
    return {layer: _to_cpu64(rec[site, layer]) for layer in layers}


def _token_rel(a: Tensor, b: Tensor, real: Tensor) -> tuple[float, float]:
    """``(mean, worst)`` over real tokens of ``‖a − b‖ / ‖b‖`` (``[b, t, *site]``; 0 where equal, inf where
    only ``b`` is 0).

    The mean weighs every token alike: a single token's norm (the attention sinks' massive activations)
    cannot hide the others' errors, as it would in ``‖Δ‖_F / ‖b‖_F``; the worst token is reported beside it
    (in half precision a few tokens' errors run several times the mean).
    """
    diff = (a - b)[real].flatten(1).norm(dim=-1)
    ref = b[real].flatten(1).norm(dim=-1)
    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / ref)
    return (float(rel.mean()), float(rel.max())) if rel.numel() else (0.0, 0.0)


def _vec_rel(a: Tensor, b: Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` over all entries (0 when equal)."""
    diff = float((a.double() - b.double()).norm())
    return 0.0 if diff == 0 else diff / float(b.double().norm())


def _max_rel(a: Tensor, b: Tensor) -> float:
    """``max|a − b| / max|b|`` (0 when equal)."""
    diff = float((a.double() - b.double()).abs().max())
    return 0.0 if diff == 0 else diff / float(b.double().abs().max())


def _median_norm(h: Tensor, real: Tensor) -> float:
    return float(h[real].norm(dim=-1).median())


def _bar(value: float, tol: float, bound: str) -> bool:
    return bool(value <= tol) if bound == "max" else bool(value >= tol)


# --------------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------------


def _check_logits(p: _Pair) -> Check:
    """Log-softmax of one forward pass on :data:`TEXTS` at every real token: the largest ``|Δ|`` over the
    :data:`TOP_K` most likely tokens of either side, and how often the top-1 token agrees."""
    lr = _to_cpu64(torch.log_softmax(_forward(p.ref, p.ids, p.mask).float(), dim=-1))[p.real]  # [n, vocab]
    lt = _to_cpu64(torch.log_softmax(_forward(p.tgt, p.ids, p.mask).float(), dim=-1))[p.real]
    n = int(lr.shape[0])
    if not bool(torch.isfinite(lt).all()):
        bad = int((~torch.isfinite(lt)).any(-1).sum())
        return Check("logits", False, math.inf, p.tol.logprob,
                     f"the target's log-probabilities hold NaN/inf at {bad} of {n} tokens",
                     metrics={"nonfinite_tokens": bad, "tokens": n})
    k = min(TOP_K, lr.shape[-1])
    likely = torch.cat([lr.topk(k, dim=-1).indices, lt.topk(k, dim=-1).indices], dim=-1)  # [n, 2k]
    diff = (lt - lr).abs()
    delta = float(diff.gather(-1, likely).max())
    full = float(diff.max())
    top1 = float((lt.argmax(-1) == lr.argmax(-1)).double().mean())
    ok = _bar(delta, p.tol.logprob, "max") and _bar(top1, p.tol.top1, "min")
    detail = (f"max |Δ log p| {delta:.3g} over each token's top {k} (either side), {full:.3g} over all "
              f"{lr.shape[-1]}; top-1 agreement {top1:.3f} (≥ {p.tol.top1:g}) at {n} tokens")
    return Check("logits", ok, delta, p.tol.logprob, detail,
                 metrics={"max_abs_logprob_top_k": delta, "max_abs_logprob_vocab": full, "top1_agreement": top1,
                          "tokens": n, "top_k": k})


def _check_record(p: _Pair) -> Check:
    """``resid_post`` through :func:`~psylens.interventions.record` at the first, middle and last layer."""
    hr = _record(p.ref, "resid_post", p.layers, p.ids, p.mask)
    ht = _record(p.tgt, "resid_post", p.layers, p.ids, p.mask)
    rel = {layer: _token_rel(ht[layer], hr[layer], p.real) for layer in p.layers}
    worst = max(rel, key=lambda k: rel[k][0])
    value = rel[worst][0]
    per = ", ".join(f"L{k} {m:.3g} (worst token {w:.3g})" for k, (m, w) in rel.items())
    return Check("record", _bar(value, p.tol.activation, "max"), value, p.tol.activation,
                 f"resid_post mean relative error per token: {per}",
                 metrics={"relative_error": {f"layer_{k}": m for k, (m, _) in rel.items()},
                          "worst_token": {f"layer_{k}": w for k, (_, w) in rel.items()}, "worst_layer": worst})


def _every_other(n: int) -> tuple[int, ...]:
    return tuple(range(0, n, 2))


def _edits(p: _Pair) -> tuple[dict[str, Intervention], dict[str, str]]:
    """The interventions compared (values computed once, on the reference) and the ones skipped, with why.

    Each is meant to move the last layer's residual by more than a half-precision bar, so that a target
    which dropped it would fail: every other head and every other neuron of layer 0 (on SmolLM2 a few
    heads of a middle layer move it by less than bfloat16's noise), and a ``project_out`` of the direction
    of the residual's mean. Edits that still move it less are named in the check's detail.
    """
    ref, mid, first = p.ref, p.mid, 0
    base = _record(ref, "resid_post", sorted({first, mid}), p.ids, p.mask)
    scale0 = 0.5 * _median_norm(base[first], p.real)
    scale_mid = _median_norm(base[mid], p.real)
    mean_dir = base[mid][p.real].mean(0).float()
    edits: dict[str, Intervention] = {
        "add": Intervention("resid_post", first, "add", value=scale0 * _unit(ref.d_model, 1)),
        "scale": Intervention("resid_post", mid, "scale", value=0.5),
        "clamp": Intervention("resid_post", mid, "clamp", value=(_unit(ref.d_model, 2), 0.5 * scale_mid)),
        "project_out": Intervention("resid_post", mid, "project_out", value=mean_dir),
        "add_resid_mid": Intervention("resid_mid", mid, "add", value=0.5 * scale_mid * _unit(ref.d_model, 4)),
    }
    skipped: dict[str, str] = {}
    layer_module = ref.layers()[first]
    for site, n_units, name in (("head_out", ref.n_heads, "heads"), ("mlp_post", ref.d_mlp, "neurons")):
        try:
            site_module(layer_module, site)
        except ValueError as e:
            skipped[f"zero_{name}"] = skipped[f"mean_{name}"] = str(e)
            continue
        units = _every_other(n_units)
        mean = _record(ref, site, [first], p.ids, p.mask)[first][p.real].mean(0)  # [*site]
        edits[f"zero_{name}"] = Intervention(site, first, "zero", units=units)
        edits[f"mean_{name}"] = Intervention(site, first, "mean", units=units, value=mean[list(units)].float())
    src_ids, src_mask = p.ids.roll(1, 0), p.mask.roll(1, 0)  # other texts in each row
    source = _record(ref, "resid_pre", [mid], src_ids, src_mask)[mid].float()  # [b, t, d_model]
    edits["patch"] = Intervention("resid_pre", mid, "patch", value=source)
    return edits, skipped


def _check_interventions(p: _Pair) -> Check:
    """Each edit of :func:`_edits` alone; the last layer's ``resid_post`` compared (mean relative error per token)."""
    edits, skipped = _edits(p)
    clean = _record(p.ref, "resid_post", [p.last], p.ids, p.mask)[p.last]
    rel: dict[str, float] = {}
    worst_token: dict[str, float] = {}
    effect: dict[str, float] = {}
    for name, iv in edits.items():
        hr = _record(p.ref, "resid_post", [p.last], p.ids, p.mask, [iv])[p.last]
        ht = _record(p.tgt, "resid_post", [p.last], p.ids, p.mask, [iv])[p.last]
        rel[name], worst_token[name] = _token_rel(ht, hr, p.real)
        effect[name] = _token_rel(hr, clean, p.real)[0]  # how far the edit moves the reference
    worst = max(rel, key=rel.__getitem__)
    value = rel[worst]
    inert = [k for k, v in effect.items() if v == 0]
    weak = [k for k, v in effect.items() if 0 < v <= p.tol.activation]
    ok = _bar(value, p.tol.activation, "max") and not inert
    bad = [k for k, v in rel.items() if not _bar(v, p.tol.activation, "max")]
    parts = [f"{len(edits)} edits, read at L{p.last} resid_post; worst {worst} {value:.3g} "
             f"(worst token {worst_token[worst]:.3g})"]
    if bad:
        parts.append(f"over the bar: {', '.join(f'{k} {rel[k]:.3g}' for k in bad)}")
    if inert:
        parts.append(f"no effect on the reference (nothing to compare): {', '.join(inert)}")
    if weak:
        parts.append(f"moves the reference less than the bar, so a dropped edit would pass: {', '.join(weak)}")
    if skipped:
        parts.append(f"skipped {', '.join(skipped)}: this architecture has no such site")
    return Check("interventions", ok, value, p.tol.activation, "; ".join(parts),
                 metrics={"relative_error": rel, "worst_token": worst_token, "effect": effect, "skipped": skipped,
                          "inert": inert, "weak": weak})


@torch.no_grad()
def _generate(model: Model, ids: Tensor, mask: Tensor) -> Int[Tensor, "b n"]:
    dev = model.device
    out = model.hf_model.generate(
        input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
        do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=_pad_id(model),
    )
    return out[:, ids.shape[1]:].cpu()


def _projection_shift(model: Model, p: _Pair, sv: Any, layers: Sequence[int]) -> Float[Tensor, "layer tokens"]:
    """Per layer, per real token: ``(h_steered − h_clean) · u``."""
    clean = _record(model, "resid_post", layers, p.ids, p.mask)
    with sv.apply(model):
        steered = _record(model, "resid_post", layers, p.ids, p.mask)
    u = p.direction.double()
    return torch.stack([((steered[k] - clean[k]) @ u)[p.real] for k in layers])


def _check_steering(p: _Pair) -> Check:
    """A random unit :class:`SteeringVector` at the middle layer: greedy tokens and the projection shift."""
    from psylens.steering import SteeringVector

    clean = _record(p.ref, "resid_post", [p.mid], p.ids, p.mask)[p.mid]
    alpha = 0.5 * _median_norm(clean, p.real)
    sv = SteeringVector.from_tensor(p.direction, [p.mid], alpha=alpha, label="devicecheck-random",
                                    meta={"source": "psylens.devicecheck", "seed": 0})
    g_ids, g_mask = _batch(p.ref, TEXTS[:2], side="left")
    with sv.apply(p.ref):
        tr = _generate(p.ref, g_ids, g_mask)
    with sv.apply(p.tgt):
        tt = _generate(p.tgt, g_ids, g_mask)
    same = (tt == tr)
    tokens = float(same.double().mean())
    first_diff = [int(torch.nonzero(~row)[0]) if not bool(row.all()) else None for row in same]
    layers = sorted({p.mid, p.last})
    sr = _projection_shift(p.ref, p, sv, layers)
    st = _projection_shift(p.tgt, p, sv, layers)
    shift = _vec_rel(st, sr)
    ok = _bar(tokens, p.tol.tokens, "min") and _bar(shift, p.tol.shift, "max")
    diverged = [f"row {r} from token {i}" for r, i in enumerate(first_diff) if i is not None]
    detail = (f"{tokens:.3f} of {same.numel()} greedy tokens identical"
              + (f" (diverged: {', '.join(diverged)})" if diverged else "")
              + f"; projection shift relative error {shift:.3g} (≤ {p.tol.shift:g}) at L{', L'.join(map(str, layers))}"
              + f"; alpha {alpha:.3g} at L{p.mid}")
    return Check("steering", ok, tokens, p.tol.tokens, detail, bound="min",
                 metrics={"identical_tokens": tokens, "first_divergence": first_diff, "shift_relative_error": shift,
                          "shift_reference": sr.mean(-1).tolist(), "alpha": alpha, "layer": p.mid})


def _spearman(a: Tensor, b: Tensor) -> float:
    from psylens.circuits.scores import spearman

    if torch.equal(a, b):
        return 1.0
    return spearman(a.flatten().double().numpy(), b.flatten().double().numpy())


def _scores(model: Model, p: _Pair, data: Any, weights: np.ndarray, layer: int) -> Any:
    from psylens.circuits.scores import attribution
    from psylens.circuits.signal import prepare, unit_baseline

    neutral = prepare(model, list(_NEUTRAL_TEXTS))
    base = unit_baseline(model, neutral, range(layer + 1))
    return attribution(model, data, weights, p.direction, layer, base)


def _check_attribution(p: _Pair) -> Check:
    """``direct`` and ``atp`` scores of every head and neuron: Spearman and max relative error."""
    from psylens.circuits.signal import contrast_weights, prepare

    texts, labels, groups = (list(x) for x in zip(*_ATTRIBUTION_TEXTS))
    data = prepare(p.ref, texts, labels=labels, groups=groups)
    weights = contrast_weights(labels, groups, "joy", ["joy", "sadness"])
    layer = p.last
    sr = _scores(p.ref, p, data, weights, layer)
    st = _scores(p.tgt, p, data, weights, layer)
    rho: dict[str, float] = {}
    rel: dict[str, float] = {}
    for score in ("direct", "atp"):
        for kind in ("heads", "neurons"):
            a, b = st.get(score, kind)[: layer + 1], sr.get(score, kind)[: layer + 1]
            rho[f"{score}_{kind}"] = _spearman(a, b)
            rel[f"{score}_{kind}"] = _max_rel(a, b)
    finite = [v for v in rho.values() if math.isfinite(v)]
    value = min(finite) if len(finite) == len(rho) else math.nan
    worst_rel = max(rel.values())
    ok = math.isfinite(value) and _bar(value, p.tol.spearman, "min") and _bar(worst_rel, p.tol.attribution, "max")
    per = ", ".join(f"{k} {v:.4f}" for k, v in rho.items())
    detail = (f"Spearman {per}; max|Δ|/max|ref| {worst_rel:.3g} (≤ {p.tol.attribution:g}) "
              f"[read-out L{layer}, {len(texts)} stimuli]")
    return Check("attribution", ok, value, p.tol.spearman, detail, bound="min",
                 metrics={"spearman": rho, "max_relative_error": rel, "signal_reference": sr.signal,
                          "signal_target": st.signal})


def _check_fingerprint(p: _Pair) -> Check:
    """``model_fingerprint`` of both copies: identical on equal dtypes, skipped otherwise."""
    from psylens.runs import model_fingerprint

    rd, td = _dtype_name(p.ref), _dtype_name(p.tgt)
    if rd != td:
        return Check("fingerprint", None, None, None,
                     f"skipped: the target holds {td} weights and the reference {rd}; other bits give another "
                     "fingerprint by design (compare a float32 target to test the promise)")
    offloaded = sum(1 for q in p.tgt.hf_model.parameters() if q.device.type == "meta")
    if offloaded:
        return Check("fingerprint", None, None, None,
                     f"skipped: {offloaded} parameters of the target are offloaded (meta device); their bits are "
                     "not on a device, so the fingerprint counts only their shapes")
    fr, ft = model_fingerprint(p.ref), model_fingerprint(p.tgt)
    same = fr == ft
    detail = f"{ft} on {p.tgt.device}" + (" = reference" if same else f" ≠ reference {fr} on {p.ref.device}")
    return Check("fingerprint", same, 0.0 if same else 1.0, 0.0, detail,
                 metrics={"reference": fr, "target": ft})


# (name, function): run in this order; each gets the shared pair and returns a Check.
CHECKS: tuple[tuple[str, Callable[[_Pair], Check]], ...] = (
    ("logits", _check_logits),
    ("record", _check_record),
    ("interventions", _check_interventions),
    ("steering", _check_steering),
    ("attribution", _check_attribution),
    ("fingerprint", _check_fingerprint),
)
