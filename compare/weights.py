"""Weight differences, module by module: how much, how widely, in how many directions, and where.

For every linear module of every decoder layer (``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``,
``gate_proj``, ``up_proj``, ``down_proj`` on Llama-style models), with ``W`` the base weight
``[d_out, d_in]`` and ``ΔW = W_tuned − W``:

- ``relative_norm`` = ‖ΔW‖_F / ‖W‖_F.
- ``changed_fraction``: the fraction of entries with ``|ΔW_ij| > eps(dtype) · max(|W_ij|, |W_tuned_ij|)``
  — a change beyond one unit of the weights' own floating-point precision (``eps`` of the base dtype:
  1.2e-7 for fp32, 7.8e-3 for bf16, 9.8e-4 for fp16). Rounding noise from saving and reloading is not a
  change; any real update is. (RL updates touch 5–30% of parameters: Mukherjee et al., 2025.)
- ``effective_rank``: the entropy effective rank of Roy & Vetterli (2007), ``exp(−Σ p_i log p_i)`` with
  ``p_i = σ_i / Σ_j σ_j`` over ΔW's singular values: 1 for a rank-1 change, ``min(d_out, d_in)`` for a flat
  spectrum, 0 for no change. It counts directions weighted by their share of the change, so a full-rank
  update dominated by a few directions has a small effective rank.
- ``principal_overlap``: how much ΔW's top-``k`` singular directions lie in W's top-``k`` principal
  directions: ``(‖U_Wᵀ U_Δ‖²_F + ‖V_Wᵀ V_Δ‖²_F) / 2k`` over the left (``U``) and right (``V``) singular
  vectors, with ``k = min(8, rank ΔW)``. 1: the change rotates/rescales W's own principal directions;
  the chance level for random directions is ``k/2 · (1/d_out + 1/d_in)`` with ``k`` = W's directions compared
  (``min(8, d)``; the section summary averages it over the changed modules).
  RLVR updates avoid the principal directions, SFT updates do not (Zhu et al., 2025).

``weight_directions.safetensors`` holds, under each module's name, the top left singular vector of ΔW
(``[d_out]``, unit norm, sign fixed so its largest-magnitude entry is positive; zeros for an unchanged module).

With a LoRA adapter merged into the base (:class:`~psylens.compare.pair.ModelPair` ``adapter_on_base``),
ΔW is ``B·A·scale`` read from the adapter's own tensors — exact, with no subtraction of merged weights
(``scale = lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA; per-module ``alpha_pattern`` honoured).

.. warning:: Module names are the full names in the HF model (``model.layers.3.mlp.down_proj``); a
   comparison of two checkpoints needs the same names in both (same architecture class).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from psylens.compare import artifacts as art
from psylens.precision import wide

__all__ = [
    "WeightDiff",
    "WeightsConfig",
    "effective_rank",
    "principal_overlap",
    "changed_fraction",
    "lora_deltas",
    "layer_linears",
    "weight_diffs",
    "run_weights",
    "TOP_K",
]

TOP_K = 8


@dataclass(frozen=True)
class WeightsConfig:
    """``top_k``: singular directions compared in ``principal_overlap``; ``exact_lora``: read ΔW from the adapter."""

    top_k: int = TOP_K
    exact_lora: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer (singular directions compared), got {self.top_k!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WeightDiff:
    """One module's row of ``weights.json`` (:data:`~psylens.compare.artifacts.WEIGHT_KEYS`)."""

    module: str
    layer: int
    relative_norm: float
    changed_fraction: float
    effective_rank: float
    principal_overlap: float

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in art.WEIGHT_KEYS}


# --------------------------------------------------------------------------------------------
# the measures
# --------------------------------------------------------------------------------------------
def effective_rank(singular_values: Float[Tensor, " k"]) -> float:
    """Roy & Vetterli's entropy effective rank ``exp(H(σ / Σσ))``; 0 when every value is 0."""
    s = singular_values.double().clamp_min(0)
    total = float(s.sum())
    if total == 0.0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def changed_fraction(w: Float[Tensor, "o i"], delta: Float[Tensor, "o i"], dtype: torch.dtype) -> float:
    """Fraction of entries of ``delta`` beyond ``eps(dtype) · max(|W|, |W + ΔW|)`` (see the module doc)."""
    eps = torch.finfo(dtype).eps
    tol = eps * torch.maximum(w.abs(), (w + delta).abs())
    return float((delta.abs() > tol).double().mean())


def _numerical_rank(s: Tensor) -> int:
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    return int((s > s[0] * 1e-6).sum())


def principal_overlap(
    u_w: Float[Tensor, "o k"], v_w: Float[Tensor, "i k"], u_d: Float[Tensor, "o k"], v_d: Float[Tensor, "i k"]
) -> float:
    """``(‖U_Wᵀ U_Δ‖²_F + ‖V_Wᵀ V_Δ‖²_F) / 2k`` for orthonormal columns (``k`` = columns of ``u_d``)."""
    k = u_d.shape[1]
    if k == 0:
        return 0.0
    left = float((u_w.T @ u_d).pow(2).sum())
    right = float((v_w.T @ v_d).pow(2).sum())
    return (left + right) / (2 * k)


def _top_direction(u: Tensor) -> Tensor:
    """The first column of ``u`` with its largest-magnitude entry made positive."""
    v = u[:, 0]
    return v if float(v[v.abs().argmax()]) >= 0 else -v


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------
def _weight(module: nn.Module) -> Tensor:
    """``[d_out, d_in]`` (transformers' ``Conv1D`` stores ``[d_in, d_out]``)."""
    w = module.weight
    return w.T if type(module).__name__ == "Conv1D" else w


def layer_linears(hf_model: nn.Module) -> Iterator[tuple[str, int, nn.Module]]:
    """``(full name, layer, module)`` for every linear module inside the decoder layers, in order."""
    from psylens.modules import decoder_layers, unwrap_hf_model

    root = unwrap_hf_model(hf_model)
    layers = decoder_layers(root)
    prefix = next((n for n, m in root.named_modules() if m is layers), None)
    if prefix is None:
        raise ValueError(f"cannot find the decoder layers of {type(root).__name__} among its modules")
    for i, layer in enumerate(layers):
        for sub, mod in layer.named_modules():
            if sub and (isinstance(mod, nn.Linear) or type(mod).__name__ == "Conv1D"):
                yield f"{prefix}.{i}.{sub}" if prefix else f"{i}.{sub}", i, mod


def lora_deltas(adapter_dir: str | Path) -> dict[str, Float[Tensor, "o i"]]:
    """``{module name: B·A·scale}`` from a PEFT LoRA adapter directory (fp32; ``[d_out, d_in]``).

    Names are the base model's module names (``model.layers.0.self_attn.q_proj``). ``ValueError`` for
    adapters that are not plain LoRA (DoRA, other PEFT methods): their ΔW is not ``B·A·scale``.
    """
    from safetensors.torch import load_file

    d = Path(adapter_dir)
    cfg_file = d / "adapter_config.json"
    if not cfg_file.is_file():
        raise ValueError(f"{str(d)!r} is not a PEFT adapter directory (no adapter_config.json)")
    cfg = json.loads(cfg_file.read_text())
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ValueError(f"adapter {str(d)!r} is {cfg.get('peft_type')!r}, not LoRA: give the merged model as --tuned instead")
    if cfg.get("use_dora"):
        raise ValueError(f"adapter {str(d)!r} uses DoRA: ΔW is not B·A·scale; give the merged model as --tuned instead")
    files = [d / "adapter_model.safetensors"]
    if not files[0].is_file():
        raise ValueError(f"adapter {str(d)!r} has no adapter_model.safetensors (only safetensors adapters are read; no pickle)")
    tensors = load_file(str(files[0]))
    alpha = float(cfg.get("lora_alpha", 8))
    rslora = bool(cfg.get("use_rslora", False))
    alpha_pattern = cfg.get("alpha_pattern") or {}
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
    out: dict[str, Tensor] = {}
    for key, a in tensors.items():
        m = re.match(r"^(?:base_model\.model\.)?(.+)\.lora_A(?:\.[^.]+)?\.weight$", key)
        if not m:
            continue
        name = m.group(1)
        b_key = key.replace(".lora_A", ".lora_B")
        if b_key not in tensors:
            raise ValueError(f"adapter {str(d)!r}: {key} has no matching lora_B tensor")
        b = tensors[b_key]
        r = a.shape[0]
        al = next((float(v) for pat, v in alpha_pattern.items() if name == pat or name.endswith("." + pat)
                   or re.fullmatch(pat, name)), alpha)
        scale = al / math.sqrt(r) if rslora else al / r
        delta = (b.float() @ a.float()) * scale
        out[name] = delta.T if fan_in_fan_out else delta
    if not out:
        raise ValueError(f"adapter {str(d)!r} holds no lora_A/lora_B tensors")
    return out


# --------------------------------------------------------------------------------------------
# the section
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def _one(name: str, layer: int, w: Tensor, delta: Tensor, dtype: torch.dtype, top_k: int) -> tuple[WeightDiff, Tensor]:
    w64, d64 = w.detach().cpu().double(), delta.detach().cpu().double()
    wn = float(w64.norm())
    dn = float(d64.norm())
    if dn == 0.0:
        return WeightDiff(name, layer, 0.0, 0.0, 0.0, 0.0), torch.zeros(w.shape[0])
    u_d, s_d, vh_d = torch.linalg.svd(d64, full_matrices=False)
    k = min(top_k, _numerical_rank(s_d))
    u_w, _, vh_w = torch.linalg.svd(w64, full_matrices=False)
    kw = min(top_k, u_w.shape[1])
    ov = principal_overlap(u_w[:, :kw], vh_w[:kw].T, u_d[:, :k], vh_d[:k].T)
    row = WeightDiff(
        module=name,
        layer=layer,
        relative_norm=dn / wn if wn > 0 else float("inf"),
        changed_fraction=changed_fraction(w64, d64, dtype),
        effective_rank=effective_rank(s_d),
        principal_overlap=ov,
    )
    return row, _top_direction(u_d).float()


def weight_diffs(
    pair: Any, config: WeightsConfig | None = None, *, progress: bool = False
) -> tuple[list[WeightDiff], dict[str, Tensor], dict[str, Any]]:
    """Rows sorted by ``relative_norm`` (descending), the top left singular vector per module, and a summary."""
    cfg = config or WeightsConfig()
    lora = lora_deltas(pair.adapter) if (cfg.exact_lora and pair.adapter_on_base and pair.adapter) else None
    tuned_mods = dict((n, m) for n, _, m in layer_linears(pair.tuned.hf_model))
    base_mods = list(layer_linears(pair.base.hf_model))
    rows: list[WeightDiff] = []
    dirs: dict[str, Tensor] = {}
    unknown = set(lora or ()) - {n for n, _, _ in base_mods}
    if unknown:
        raise ValueError(f"the adapter changes modules the base model does not have: {sorted(unknown)[:5]}")
    n_params = n_changed = 0.0
    chance: list[float] = []  # random-direction level of principal_overlap, per changed module
    for name, layer, mod in tqdm(base_mods, desc="weights", disable=not progress):
        if name not in tuned_mods:
            raise ValueError(f"the tuned model has no module {name!r}: base and tuned differ in architecture")
        w = _weight(mod)
        if lora is not None:
            delta = lora.get(name, torch.zeros(()))
            delta = delta.to(torch.float64).expand(w.shape) if delta.ndim == 0 else delta
        else:
            delta = _weight(tuned_mods[name]).detach().cpu().double() - w.detach().cpu().double()  # float64 on the CPU
        row, vec = _one(name, layer, w, delta, w.dtype, cfg.top_k)
        rows.append(row)
        dirs[name] = vec.contiguous()
        n_params += w.numel()
        if row.relative_norm > 0:
            k = min(cfg.top_k, min(w.shape))
            chance.append(k / 2 * (1 / w.shape[0] + 1 / w.shape[1]))
        n_changed += row.changed_fraction * w.numel()
    rows.sort(key=lambda r: (-r.relative_norm, r.layer, r.module))
    changed = [r for r in rows if r.relative_norm > 0]
    summary = {
        "modules": len(rows),
        "modules_changed": len(changed),
        "changed_parameter_fraction": n_changed / n_params if n_params else 0.0,
        "top_module": rows[0].module if changed else None,
        "top_relative_norm": rows[0].relative_norm if rows else 0.0,
        "median_effective_rank": _median([r.effective_rank for r in changed]),
        "mean_principal_overlap": sum(r.principal_overlap for r in changed) / len(changed) if changed else None,
        "principal_overlap_chance": sum(chance) / len(chance) if chance else None,
        "exact_lora": lora is not None,
        "other_parameters_changed": _other_changes(pair),
    }
    return rows, dirs, summary


def _median(xs: list[float]) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@torch.no_grad()
def _other_changes(pair: Any) -> dict[str, float]:
    """Relative norm of the change of every parameter outside the layers' linears (embeddings, norms, head)."""
    linear = {f"{n}.weight" for n, _, _ in layer_linears(pair.base.hf_model)}
    tuned = dict(pair.tuned.hf_model.named_parameters())
    out: dict[str, float] = {}
    for name, p in pair.base.hf_model.named_parameters():
        if name in linear or name not in tuned:
            continue
        d = float((wide(tuned[name]) - wide(p)).norm())
        if d > 0:
            out[name] = d / max(float(wide(p).norm()), 1e-30)
    return out


def run_weights(run: Any, pair: Any, config: WeightsConfig | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Write ``RUN/compare/weights.json`` and ``weight_directions.safetensors``; return the section summary."""
    cfg = config or WeightsConfig()
    with run.step("compare_weights", cfg.to_dict()) as step:
        rows, dirs, summary = weight_diffs(pair, cfg, progress=progress)
        run.write_json(art.WEIGHTS, [r.to_dict() for r in rows])
        run.write_tensors(art.WEIGHT_DIRECTIONS, dirs, metadata={"schema_version": str(art.SCHEMA_VERSION)})
        step.output(art.WEIGHTS)
        step.output(art.WEIGHT_DIRECTIONS)
        step.note(**{k: v for k, v in summary.items() if k != "other_parameters_changed"})
    return summary
