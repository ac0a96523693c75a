"""Per-unit scores of one emotion signal: ``direct``, ``atp`` and ``patching``, for every head and neuron.

Units: every attention head (``head_out``, the head's input to the output projection) and every MLP
neuron (``mlp_post``, the input of the down projection) at layers ``0..L`` (``L``: the read-out layer;
units above it cannot change the signal and score 0). Scores are signed contributions to the signal
``S`` of :mod:`psylens.circuits.signal` (positive: the unit raises it):

- ``direct``: the unit's direct write onto the direction ``v`` through the residual stream,
  ``Σ_i w_i · ā_i · (W_downᵀ v)`` for a neuron (the paper's activation × (W_downᵀ·v), contrasted like
  the signal) and ``Σ_i w_i · z̄_i,h · (W_O,hᵀ v)`` for a head (``ā``, ``z̄``: means over the read-out
  tokens — every text token, or the last with ``readout="last"``).
  It ignores every path through later layers; on Gemma's sandwich norms the post-norm makes it an
  approximation even for layer ``L``.
- ``atp``: attribution patching, ``Σ_{i,t} ∂S/∂a_{i,t} · (a_{i,t} − baseline)`` over the text tokens,
  one forward and one backward pass for all units (``torch.autograd.grad`` w.r.t. the recorded site
  tensors, so no parameter gradients are made). It is the first-order estimate of ``S − S(unit
  patched to the baseline)`` and equals it exactly when ``S`` is linear in the unit (e.g. neurons of
  layer ``L``). AtP*'s saturation fix (recomputing the attention softmax) applies to query/key units;
  psylens' head unit is the head's output ``z``, downstream of the softmax, so there is nothing to
  recompute exactly at the unit itself — the saturation of *later* heads is left to ``patching``,
  which verifies the top units (GradDrop, AtP*'s other fix, costs one backward per layer and is not done).
- ``patching``: real activation patching — ``S − S(unit replaced by the baseline at the text
  tokens)`` — for the top-K heads and top-K neurons by ``atp`` (NaN elsewhere): the ground truth.

The baseline is a :class:`~psylens.circuits.signal.Baseline`: the mean over neutral stimuli, or one per
stimulus (its scenario's neutral event, :func:`~psylens.circuits.signal.scenario_baseline`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from psylens.circuits.signal import Baseline, Edit, Prepared, Units, _batches, signal
from psylens.interventions import StopForward, record, site_module, tap
from psylens.modules import decoder_layers
from psylens.precision import wide, wide_dtype

__all__ = ["UnitScores", "attribution", "patching", "output_weights", "spearman"]


@dataclass(frozen=True, eq=False)
class UnitScores:
    """Scores ``[n_layers, n_heads]`` and ``[n_layers, d_mlp]`` per score name; ``signal``: clean ``S``."""

    direct_heads: Float[Tensor, "layer head"]
    direct_neurons: Float[Tensor, "layer d_mlp"]
    atp_heads: Float[Tensor, "layer head"]
    atp_neurons: Float[Tensor, "layer d_mlp"]
    patching_heads: Float[Tensor, "layer head"]
    patching_neurons: Float[Tensor, "layer d_mlp"]
    signal: float
    readout_layer: int

    def get(self, score: str, kind: str) -> Tensor:
        return getattr(self, f"{score}_{kind}")

    def with_patching(self, heads: Tensor, neurons: Tensor) -> UnitScores:
        return UnitScores(self.direct_heads, self.direct_neurons, self.atp_heads, self.atp_neurons, heads, neurons,
                          self.signal, self.readout_layer)


def output_weights(model: Any, layer: int) -> tuple[Tensor, Tensor]:
    """``(W_O [d_model, n_heads*d_head], W_down [d_model, d_mlp])`` of ``layer`` (the modules whose inputs
    are ``head_out`` and ``mlp_post``)."""
    hf = model.hf_model if hasattr(model, "hf_model") else model
    lay = decoder_layers(hf)[layer]
    o, _ = site_module(lay, "head_out")
    d, _ = site_module(lay, "mlp_post")
    for m, what in ((o, "attention output projection"), (d, "MLP down projection")):
        if not isinstance(getattr(m, "weight", None), Tensor) or m.weight.ndim != 2:
            raise ValueError(f"the {what} of layer {layer} ({type(m).__name__}) has no 2-D weight; direct scores need a linear layer")
    return o.weight, d.weight


def attribution(
    model: Any,
    data: Prepared,
    weights: np.ndarray,
    direction: Float[Tensor, " d_model"],
    layer: int,
    baseline: Baseline,
    *,
    progress: bool = False,
) -> UnitScores:
    """``direct`` and ``atp`` for every head and neuron at layers ``0..layer`` in one forward+backward per
    batch (``patching`` left NaN; fill it with :func:`patching`)."""
    hf = model.hf_model if hasattr(model, "hf_model") else model
    n_layers = len(decoder_layers(hf))
    if not 0 <= layer < n_layers:
        raise ValueError(f"read-out layer {layer} out of range: the model has {n_layers} layers (0–{n_layers - 1})")
    baseline.check(data)
    n_heads, d_head = baseline.heads.shape[1:]
    d_mlp = baseline.neurons.shape[1]
    layers = list(range(layer + 1))
    w_all = torch.as_tensor(np.asarray(weights, dtype=np.float64))
    atp_h = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    atp_n = torch.zeros(n_layers, d_mlp, dtype=torch.float64)
    con_h = torch.zeros(n_layers, n_heads, d_head, dtype=torch.float64)  # Σ_i w_i z̄_i
    con_n = torch.zeros(n_layers, d_mlp, dtype=torch.float64)
    emb = hf.get_input_embeddings()
    dev = emb.weight.device
    wd = wide_dtype(dev)  # float64, float32 on MPS (no float64 there)
    v = direction.detach().float().to(dev)
    total = 0.0
    for b in _batches(data, progress, "attribution"):
        w_b = w_all[list(b.rows)]
        if not bool((w_b != 0).any()):
            continue
        got: dict[str, Tensor] = {}

        def keep(site: str, lay: int, x: Tensor) -> None:
            got["x"] = x
            raise StopForward

        mask = b.text_mask.to(dev)  # where units are patched
        read = b.readout_mask.to(dev)  # where the projection is read
        pos = (b.attention_mask.cumsum(-1) - 1).clamp(min=0)
        with torch.enable_grad():
            embeds = emb(b.input_ids.to(dev)).detach().requires_grad_(True)
            with record(hf, ["head_out", "mlp_post"], layers, grad=True) as rec, tap(hf, [("resid_post", layer)], keep):
                try:
                    hf(inputs_embeds=embeds, attention_mask=b.attention_mask.to(dev), position_ids=pos.to(dev), use_cache=False)
                except StopForward:
                    pass
            x = got["x"]
            mf = read.float()
            p = ((x.float() @ v) * mf).sum(1) / mf.sum(1)  # [b]
            s_b = (wide(p) * w_b.to(wd).to(dev)).sum()
            acts = [rec[s, lay] for lay in layers for s in ("head_out", "mlp_post")]
            grads = torch.autograd.grad(s_b, acts, allow_unused=True)
        total += float(s_b.detach())
        # [b, t]: w_i / n_read_i at the read-out tokens (a unit writes directly only at its own position)
        wm = (w_b.to(wd).to(dev).unsqueeze(1) * wide(read)) / wide(read).sum(1, keepdim=True)
        for k, lay in enumerate(layers):
            z, gz = acts[2 * k].detach(), grads[2 * k]
            a, ga = acts[2 * k + 1].detach(), grads[2 * k + 1]
            mz = mask.unsqueeze(-1).unsqueeze(-1)
            if gz is not None:
                dz = (wide(z) - baseline.heads_at(lay, b.rows).to(wd).to(dev))
                atp_h[lay] += (wide(gz) * dz * mz).sum(dim=(0, 1, 3)).cpu()
            if ga is not None:
                da = (wide(a) - baseline.neurons_at(lay, b.rows).to(wd).to(dev))
                atp_n[lay] += (wide(ga) * da * mask.unsqueeze(-1)).sum(dim=(0, 1)).cpu()
            con_h[lay] += torch.einsum("bt,bthd->hd", wm, wide(z)).cpu()
            con_n[lay] += torch.einsum("bt,btn->n", wm, wide(a)).cpu()
        del acts, grads, got, x, p, s_b, embeds
    dir_h = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    dir_n = torch.zeros(n_layers, d_mlp, dtype=torch.float64)
    vd = direction.detach().cpu().double()  # to the CPU first: float64 on every device
    for lay in layers:
        w_o, w_down = output_weights(hf, lay)
        wov = (w_o.detach().cpu().double().T @ vd).view(n_heads, d_head)  # [H, dh]
        dir_h[lay] = (con_h[lay] * wov).sum(-1)
        dir_n[lay] = con_n[lay] * (w_down.detach().cpu().double().T @ vd)
    nan_h = torch.full((n_layers, n_heads), float("nan"))
    nan_n = torch.full((n_layers, d_mlp), float("nan"))
    return UnitScores(dir_h.float(), dir_n.float(), atp_h.float(), atp_n.float(), nan_h, nan_n, total, layer)


def _top(x: Tensor, k: int) -> list[tuple[int, int]]:
    flat = torch.nan_to_num(x, nan=-float("inf")).flatten()
    k = min(k, flat.numel())
    idx = torch.topk(flat, k).indices.tolist()
    return [(i // x.shape[1], i % x.shape[1]) for i in idx]


def patching(
    model: Any,
    data: Prepared,
    weights: np.ndarray,
    direction: Tensor,
    scores: UnitScores,
    baseline: Baseline,
    *,
    top_heads: int = 50,
    top_neurons: int = 50,
    by: str = "atp",
    progress: bool = False,
) -> UnitScores:
    """Real patching (the unit replaced by its baseline at the text tokens) of the top ``top_heads`` heads
    and ``top_neurons`` neurons by ``by`` (``"atp"`` or ``"direct"``; ranked by the signed score).
    Returns ``scores`` with ``patching_*`` filled there (NaN elsewhere). Costs one forward (to the
    read-out layer) per unit."""
    if by not in ("atp", "direct"):
        raise ValueError(f"by {by!r} is not 'atp' or 'direct'")
    layer = scores.readout_layer
    clean = signal(model, data, weights, direction, layer)
    ph = torch.full_like(scores.atp_heads, float("nan"))
    pn = torch.full_like(scores.atp_neurons, float("nan"))
    todo = [("h", u) for u in _top(scores.get(by, "heads")[: layer + 1], top_heads)]
    todo += [("n", u) for u in _top(scores.get(by, "neurons")[: layer + 1], top_neurons)]
    it: Sequence[Any] = todo
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc="patching", leave=False)
    for kind, (lay, i) in it:
        units = Units(heads=((lay, i),)) if kind == "h" else Units(neurons=((lay, i),))
        after = signal(model, data, weights, direction, layer, Edit(units, "mean"), baseline)
        (ph if kind == "h" else pn)[lay, i] = clean - after
    return scores.with_patching(ph, pn)


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN for fewer than 3 finite pairs."""
    from scipy.stats import spearmanr

    a, b = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    r = spearmanr(a[ok], b[ok]).statistic
    return float(r)
