"""Activation differences between the base and the tuned model on the same tokens.

Both models read the *same* token sequences (the tuned model's tokenizer is the base's, see
:func:`~psylens.compare.pair.check_compatible`), one text at a time, through
:func:`psylens.interventions.record` (``resid_pre`` of layer 0 = the embeddings, ``resid_post`` of every
layer). Two input sets:

- ``emotions``: emotion stimuli (``psylens.stimuli.load("emotions")``, an even draw over labels) as user turns;
- ``tasks``: ``psych`` test prompts (:func:`psylens.tasks.choice_prompt`, chain of thought) as user turns
  plus a *trace* the tuned model generates greedily (``trace_tokens``; 0 = prompts only).

Per set and layer ``l`` (``d_t = tuned − base`` at token ``t``):

- ``mean_diff_norm``: ‖mean_t d_t‖ with a bootstrap interval over texts, and ``relative`` to the
  base's mean residual norm; ``token_diff_norm``: mean_t ‖d_t‖ (zero before the first changed layer);
- ``token_cosine``: mean cosine of base and tuned activations per token;
- ``contribution``: ‖m_l − m_{l−1}‖, the part of the mean difference that layer ``l`` itself adds
  (``m_{−1}`` is the embeddings' difference), and ``relative_contribution`` = contribution / the base's mean
  residual norm at ``l``. Layers are **ranked by relative contribution**: a change planted in one layer
  propagates down the residual stream, so the raw norm would also rank the layers after it high, and the
  residual norm grows with depth (SmolLM2's last layer: ~6× the middle), so raw contributions favour late layers;
- ``cosine_between_sets``: the cosine of the two sets' mean differences (does tuning move the residual
  the same way on emotion texts and on reasoning tasks?).

Per-token KL: ``KL(p_tuned ‖ p_base)`` of the next-token distributions at every position of each task
trace; its mean over texts with an interval, and the positions where it is largest with their tokens.

Per-layer KL (a logit lens on both models): each layer's ``resid_post`` of each model read through *its own*
final norm and unembedding (Gemma's final logit soft-cap applied), ``KL(p_base ‖ p_tuned)`` of those
next-token distributions at each position, averaged over the positions ``layer_kl`` names (``"trace"``: the
positions predicting the generated trace tokens, the last prompt token when there is no trace; ``"all"``:
every position of the text) per text, then over texts with a bootstrap interval; written as
``layer_kl.parquet`` and under ``layer_kl`` in ``activations.json``. At the last layer it is the models' own
output KL(base ‖ tuned); a change entering at layer ``l`` leaves the layers before ``l`` at exactly 0.
Cost: one ``[positions, d] × [d, vocab]`` product a layer and model (``layer_kl="off"`` skips it).

The activation-difference lens (diffing-toolkit): the mean difference over the first ``lens_tokens``
generated tokens of each trace (the prompt's last token when there is no trace), at every layer, passed
through each model's final norm and unembedding; the top tokens it promotes.

.. warning:: The last layer's ``resid_post`` is the decoder layer's output *before* the final norm
   (unlike HF's last hidden state). The lens applies the final norm itself.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from psylens.compare import artifacts as art

__all__ = ["ActivationsConfig", "PairedPass", "paired_pass", "balanced_tasks", "task_inputs", "emotion_inputs", "lens_tokens",
           "lens_log_probs", "layer_kl", "LAYER_KL_POSITIONS", "activation_diffs", "run_activations"]

N_BOOT = 200
#: positions the per-layer KL averages over (``ActivationsConfig.layer_kl``)
LAYER_KL_POSITIONS: tuple[str, ...] = ("trace", "all", "off")


@dataclass(frozen=True)
class ActivationsConfig:
    """How many texts and tokens the activation section reads (defaults sized for SmolLM2 on a CPU)."""

    n_emotion: int = 42
    n_tasks: int = 24
    trace_tokens: int = 24
    lens_tokens: int = 5
    top_tokens: int = 10
    top_positions: int = 20
    format: str = "auto"
    #: per-layer logit-lens KL over the task traces: "trace" (generated positions), "all" (every position), "off"
    layer_kl: str = "trace"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.layer_kl not in LAYER_KL_POSITIONS:
            raise ValueError(f"layer_kl {self.layer_kl!r} is not one of {LAYER_KL_POSITIONS}: 'trace' (the positions "
                             "predicting the generated trace tokens), 'all' (every position), 'off' (no per-layer KL)")
        for k in ("n_emotion", "n_tasks", "trace_tokens", "lens_tokens", "top_tokens", "top_positions"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{k} must be a non-negative integer, got {v!r}")
        if self.n_emotion + self.n_tasks == 0:
            raise ValueError("n_emotion and n_tasks are both 0: nothing to compare; give at least one text")
        if self.lens_tokens < 1:
            raise ValueError(f"lens_tokens must be at least 1, got {self.lens_tokens}")
        if self.format not in ("auto", "chat", "raw"):
            raise ValueError(f"format {self.format!r} is not one of 'auto', 'chat', 'raw'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------
def emotion_inputs(n: int, seed: int = 0) -> list[str]:
    """``n`` emotion stimuli, the same number of each label (round-robin over labels, seeded)."""
    from psylens import stimuli

    if n == 0:
        return []
    st = stimuli.load("emotions")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = {}
    for s in st:
        by_label.setdefault(str(s.label), []).append(s.text)
    for v in by_label.values():
        rng.shuffle(v)
    labels = sorted(by_label)
    return [by_label[labels[i % len(labels)]][i // len(labels)] for i in range(n)]


def balanced_tasks(n: int, seed: int = 0) -> list[Any]:
    """``n`` ``psych`` test tasks, the kinds in turn (each kind shuffled by ``seed``; a kind that runs out is skipped)."""
    from psylens import tasks

    items = tasks.load("psych", split="test")
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[Any]] = {}
    for t in items:
        by_kind.setdefault(t.kind, []).append(t)
    for v in by_kind.values():
        rng.shuffle(v)
    kinds = [k for k in tasks.KINDS if k in by_kind]
    out: list[Any] = []
    i = 0
    while len(out) < min(n, len(items)):
        kind, j = kinds[i % len(kinds)], i // len(kinds)
        if j < len(by_kind[kind]):
            out.append(by_kind[kind][j])
        i += 1
    return out


def task_inputs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` ``psych`` test prompts (chain of thought), the same number of each kind; and their kinds."""
    from psylens import tasks

    picked = balanced_tasks(n, seed)
    return [tasks.choice_prompt(t, chain_of_thought=True) for t in picked], [t.kind for t in picked]


def _encode(model: Any, text: str, fmt: str) -> Int[Tensor, " t"]:
    prompt = model.format_prompt(text, format=fmt)
    ids = model.tokenizer(prompt, add_special_tokens=model.resolve_format(fmt) == "raw", return_tensors="pt").input_ids[0]
    return ids


# --------------------------------------------------------------------------------------------
# one paired pass
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedPass:
    """Both models on one token sequence: residuals ``[L+1, T, d]`` (row 0 = embeddings), the per-position
    ``KL(p_tuned ‖ p_base)`` ``[T]`` and each model's most likely next token ``[T]``.

    The full next-token distributions are not kept (``[T, vocab]`` per model would cost ~50 MB a text on SmolLM2).
    """

    ids: Int[Tensor, " t"]
    n_prompt: int
    base: Float[Tensor, "l1 t d"]
    tuned: Float[Tensor, "l1 t d"]
    kl: Float[Tensor, " t"]
    base_next: Int[Tensor, " t"]
    tuned_next: Int[Tensor, " t"]


@torch.no_grad()
def _read(model: Any, ids: Tensor) -> tuple[Tensor, Tensor]:
    from psylens.interventions import record

    n = model.n_layers
    with record(model, ["resid_pre", "resid_post"], list(range(n))) as rec:
        logits = model.hf_model(input_ids=ids[None].to(model.device)).logits[0]
    res = torch.stack([rec["resid_pre", 0][0]] + [rec["resid_post", layer][0] for layer in range(n)])
    return res.float().cpu(), torch.log_softmax(logits.float(), -1).cpu()


@torch.no_grad()
def paired_pass(pair: Any, ids: Int[Tensor, " t"], n_prompt: int | None = None) -> PairedPass:
    """Run both models on ``ids``; keep every layer's residual, the per-position KL and the top next tokens."""
    b, bl = _read(pair.base, ids)
    t, tl = _read(pair.tuned, ids)
    kl = (tl.exp() * (tl - bl)).sum(-1).clamp_min(0)  # [T]
    return PairedPass(ids.cpu(), int(n_prompt if n_prompt is not None else len(ids)), b, t, kl,
                      bl.argmax(-1), tl.argmax(-1))


@torch.no_grad()
def _trace(model: Any, ids: Tensor, n_new: int) -> Tensor:
    if n_new == 0:
        return ids
    tok = model.tokenizer
    out = model.hf_model.generate(
        input_ids=ids[None].to(model.device), attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
        max_new_tokens=n_new, do_sample=False, pad_token_id=tok.pad_token_id,
    )
    return out[0].cpu()


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------
def _norm_ci(per_text: Float[Tensor, "n l d"], seed: int) -> tuple[list[float], list[float]]:
    n = per_text.shape[0]
    if n < 2:
        v = per_text.mean(0).norm(dim=-1).tolist()
        return v, v
    rng = np.random.default_rng(seed)
    boots = torch.stack([per_text[torch.from_numpy(rng.integers(0, n, n))].mean(0).norm(dim=-1) for _ in range(N_BOOT)])
    return boots.quantile(0.025, dim=0).tolist(), boots.quantile(0.975, dim=0).tolist()


@dataclass(frozen=True)
class _TextStats:
    """What the section keeps of one paired pass (the residuals themselves are dropped: ~40 MB a text on SmolLM2)."""

    mean_diff: Float[Tensor, "l1 d"]      # mean over tokens of tuned − base
    token_diff_norm: Float[Tensor, " l1"]  # mean over tokens of ‖tuned − base‖
    base_norm: Float[Tensor, " l1"]
    cosine: Float[Tensor, " l1"]
    n_tokens: int


def _text_stats(p: PairedPass) -> _TextStats:
    d = p.tuned - p.base  # [L+1, T, d]
    return _TextStats(d.mean(1), d.norm(dim=-1).mean(1), p.base.norm(dim=-1).mean(1),
                      torch.nn.functional.cosine_similarity(p.tuned, p.base, dim=-1).mean(1), int(p.base.shape[1]))


def _set_stats(texts: list[_TextStats], seed: int) -> tuple[dict[str, Any], Tensor]:
    """Per-layer statistics of one input set; and the mean difference per layer ``[L+1, d]``."""
    per_text_mean = torch.stack([t.mean_diff for t in texts])  # [n, L+1, d]
    tok_norm = torch.stack([t.token_diff_norm for t in texts]).mean(0)  # [L+1]
    base_norm = torch.stack([t.base_norm for t in texts]).mean(0)
    cos = torch.stack([t.cosine for t in texts]).mean(0)
    m = per_text_mean.mean(0)  # [L+1, d]
    norm = m.norm(dim=-1)
    lo, hi = _norm_ci(per_text_mean, seed)
    contrib = (m[1:] - m[:-1]).norm(dim=-1)  # layer l adds m_l - m_{l-1}
    n_layers = m.shape[0] - 1
    layers = []
    for layer in range(n_layers):
        i = layer + 1
        layers.append({
            "layer": layer,
            "mean_diff_norm": float(norm[i]),
            "mean_diff_norm_ci95": [float(lo[i]), float(hi[i])],
            "relative": float(norm[i] / base_norm[i]) if float(base_norm[i]) > 0 else 0.0,
            "token_diff_norm": float(tok_norm[i]),
            "token_cosine": float(cos[i]),
            "contribution": float(contrib[layer]),
            "relative_contribution": float(contrib[layer] / base_norm[i]) if float(base_norm[i]) > 0 else 0.0,
        })
    noise = 1e-5 * float(base_norm[1:].mean())
    changed = [row["layer"] for row in layers if row["token_diff_norm"] > noise]
    ranked = sorted(range(n_layers), key=lambda i: -layers[i]["relative_contribution"])
    out = {
        "n_texts": len(texts),
        "n_tokens": int(sum(t.n_tokens for t in texts)),
        "embedding_diff_norm": float(tok_norm[0]),
        "float_noise_level": noise,
        "first_changed_layer": changed[0] if changed else None,
        "layers_ranked": ranked if changed else [],
        "layers": layers,
    }
    return out, m


def _final_norm(hf: Any) -> Any:
    for path in ("model.norm", "model.final_layernorm", "transformer.ln_f", "gpt_neox.final_layer_norm"):
        obj = hf
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.Module):
            return obj
    return None


@torch.no_grad()
def lens_tokens(model: Any, vec: Float[Tensor, " d"], k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` tokens ``vec`` promotes most through ``model``'s final norm and unembedding."""
    hf = model.hf_model
    head = hf.get_output_embeddings()
    norm = _final_norm(hf)
    x = vec.to(head.weight.device, head.weight.dtype)[None, None]
    if norm is not None:
        x = norm(x)
    logits = head(x)[0, 0].float()
    top = logits.topk(k)
    return [{"token": model.tokenizer.decode([int(i)]), "id": int(i), "logit": float(v)}
            for v, i in zip(top.values, top.indices)]


@torch.no_grad()
def lens_log_probs(model: Any, resid: Float[Tensor, "t d"]) -> Float[Tensor, "t vocab"]:
    """Next-token log-probabilities of ``model`` read off a residual ``[T, d]`` (logit lens): its final norm, its
    unembedding and, where the model has one, its final logit soft-cap; float32 on the CPU."""
    hf = model.hf_model
    head = hf.get_output_embeddings()
    norm = _final_norm(hf)
    x = resid.to(head.weight.device, head.weight.dtype)[None]  # [1, T, d]
    if norm is not None:
        x = norm(x)
    logits = head(x)[0].float()  # [T, vocab]
    cap = getattr(getattr(hf, "config", None), "final_logit_softcapping", None)
    if isinstance(cap, (int, float)) and cap > 0:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, -1).cpu()


def _kl_positions(p: PairedPass, which: str) -> Int[Tensor, " k"]:
    """The positions of ``p`` the per-layer KL averages over (see :data:`LAYER_KL_POSITIONS`)."""
    t = len(p.ids)
    if which == "all":
        return torch.arange(t)
    if t > p.n_prompt:  # the positions whose next token is a generated one
        return torch.arange(p.n_prompt - 1, t - 1)
    return torch.tensor([p.n_prompt - 1])


@torch.no_grad()
def layer_kl(pair: Any, p: PairedPass, positions: str = "trace") -> Float[Tensor, " l"]:
    """Per decoder layer: mean over ``positions`` of KL(p_base ‖ p_tuned), each model's ``resid_post`` at that
    layer read through its own final norm and unembedding (:func:`lens_log_probs`); ``[n_layers]``, nats."""
    if positions not in LAYER_KL_POSITIONS[:2]:
        raise ValueError(f"positions {positions!r} is not one of {LAYER_KL_POSITIONS[:2]}")
    if p.base.shape[0] == 0:
        raise ValueError("this PairedPass holds no residuals (they were dropped); compute layer_kl before dropping them")
    pos = _kl_positions(p, positions)
    out = torch.zeros(p.base.shape[0] - 1)
    for layer in range(p.base.shape[0] - 1):
        lb = lens_log_probs(pair.base, p.base[layer + 1, pos])  # [K, vocab]
        lt = lens_log_probs(pair.tuned, p.tuned[layer + 1, pos])
        out[layer] = (lb.exp() * (lb - lt)).sum(-1).clamp_min(0).mean()
    return out


def _layer_kl_rows(per_text: Float[Tensor, "n l"], n_positions: int, seed: int) -> list[dict[str, Any]]:
    from psylens.stats import bootstrap_ci

    rows = []
    for layer in range(per_text.shape[1]):
        v = per_text[:, layer].double().numpy()
        lo, hi = bootstrap_ci(v, seed=seed) if len(v) > 1 else (float(v[0]), float(v[0]))
        rows.append({"layer": layer, "kl": float(v.mean()), "kl_lo": float(lo), "kl_hi": float(hi),
                     "n_texts": int(len(v)), "n_positions": int(n_positions)})
    return rows


def _kl(passes: list[PairedPass], tokenizer: Any, top: int, seed: int) -> dict[str, Any]:
    from psylens.stats import bootstrap_ci

    rows: list[tuple[float, int, int]] = []
    per_text, per_text_gen = [], []
    for ti, p in enumerate(passes):
        kl = p.kl  # [T]
        per_text.append(float(kl.mean()))
        if len(p.ids) > p.n_prompt:
            per_text_gen.append(float(kl[p.n_prompt - 1: -1].mean()))
        rows.extend((float(v), ti, pos) for pos, v in enumerate(kl.tolist()))
    rows.sort(key=lambda r: -r[0])
    tops = []
    for v, ti, pos in rows[:top]:
        p = passes[ti]
        ids = p.ids.tolist()
        tops.append({
            "text": ti, "position": pos, "kl": v,
            "context": tokenizer.decode(ids[max(0, pos - 8): pos + 1]),
            "token": tokenizer.decode([ids[pos]]),
            "base_next": tokenizer.decode([int(p.base_next[pos])]),
            "tuned_next": tokenizer.decode([int(p.tuned_next[pos])]),
            "in_trace": pos >= p.n_prompt - 1,
        })
    ci = list(bootstrap_ci(per_text, seed=seed)) if len(per_text) > 1 else [per_text[0]] * 2 if per_text else None
    out: dict[str, Any] = {"mean_kl": float(np.mean(per_text)) if per_text else None, "mean_kl_ci95": ci,
                           "per_text": per_text, "top_positions": tops}
    if per_text_gen:
        out["mean_kl_trace"] = float(np.mean(per_text_gen))
        out["mean_kl_trace_ci95"] = list(bootstrap_ci(per_text_gen, seed=seed)) if len(per_text_gen) > 1 else [per_text_gen[0]] * 2
    return out


# --------------------------------------------------------------------------------------------
# the section
# --------------------------------------------------------------------------------------------
def activation_diffs(
    pair: Any,
    config: ActivationsConfig | None = None,
    *,
    emotion_texts: list[str] | None = None,
    task_texts: list[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The activation section as a dict (what ``activations.json`` holds); texts default to the built-in sets."""
    cfg = config or ActivationsConfig()
    if emotion_texts is None:
        emotion_texts = emotion_inputs(cfg.n_emotion, cfg.seed)
    kinds: list[str] = []
    if task_texts is None:
        task_texts, kinds = task_inputs(cfg.n_tasks, cfg.seed)
    out: dict[str, Any] = {"schema_version": art.SCHEMA_VERSION, "config": cfg.to_dict(), "sets": {}}
    means: dict[str, Tensor] = {}
    lens_vecs: list[Tensor] = []
    task_passes: list[PairedPass] = []
    layer_kls: list[Tensor] = []  # [n_layers] per task text
    n_kl_positions = 0
    sets = [("emotions", emotion_texts, 0), ("tasks", task_texts, cfg.trace_tokens)]
    for name, texts, n_new in sets:
        if not texts:
            continue
        kept: list[_TextStats] = []
        for text in tqdm(texts, desc=f"compare {name}", disable=not progress):
            ids = _encode(pair.base, text, cfg.format)
            full = _trace(pair.tuned, ids, n_new)
            p = paired_pass(pair, full, n_prompt=len(ids))
            kept.append(_text_stats(p))
            if name == "tasks":
                start = p.n_prompt if len(full) > p.n_prompt else p.n_prompt - 1
                lens_vecs.append((p.tuned - p.base)[:, start: start + cfg.lens_tokens].mean(1))  # [L+1, d]
                if cfg.layer_kl != "off":
                    layer_kls.append(layer_kl(pair, p, cfg.layer_kl))
                    n_kl_positions += len(_kl_positions(p, cfg.layer_kl))
                task_passes.append(replace(p, base=p.base[:0], tuned=p.tuned[:0]))  # KL and tokens only
        stats, means[name] = _set_stats(kept, cfg.seed)
        out["sets"][name] = stats
        if name == "tasks":
            if kinds:
                out["sets"][name]["kinds"] = kinds
    if len(means) == 2:
        cos = torch.nn.functional.cosine_similarity(means["emotions"][1:], means["tasks"][1:], dim=-1)
        out["cosine_between_sets"] = [float(c) if math.isfinite(float(c)) else 0.0 for c in cos]
    if task_passes:
        out["kl"] = _kl(task_passes, pair.base.tokenizer, cfg.top_positions, cfg.seed)
        if layer_kls:
            rows = _layer_kl_rows(torch.stack(layer_kls), n_kl_positions, cfg.seed)
            noise = 1e-6
            out["layer_kl"] = {
                "kind": "KL(base ‖ tuned) of each model's own logit lens (final norm + unembedding) on resid_post",
                "positions": ("the positions predicting the generated trace tokens" if cfg.trace_tokens
                              else "the last prompt token") if cfg.layer_kl == "trace" else "every position",
                "file": art.LAYER_KL,
                "float_noise_level": noise,
                "first_nonzero_layer": next((r["layer"] for r in rows if r["kl"] > noise), None),
                "per_text": [[float(v) for v in t] for t in layer_kls],
                "layers": rows,
            }
        lens = torch.stack(lens_vecs).mean(0)  # [L+1, d]
        out["lens"] = {
            "positions": f"first {cfg.lens_tokens} generated tokens" if cfg.trace_tokens else "last prompt token",
            "layers": [
                {"layer": layer, "norm": float(lens[layer + 1].norm()),
                 "base": lens_tokens(pair.base, lens[layer + 1], cfg.top_tokens) if float(lens[layer + 1].norm()) > 0 else [],
                 "tuned": lens_tokens(pair.tuned, lens[layer + 1], cfg.top_tokens) if float(lens[layer + 1].norm()) > 0 else []}
                for layer in range(pair.n_layers)
            ],
        }
    return out


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers ``summary.json`` shows for this section."""
    h: dict[str, Any] = {}
    for name, s in result.get("sets", {}).items():
        ranked = s["layers_ranked"]
        h[name] = {
            "first_changed_layer": s["first_changed_layer"],
            "top_layer": ranked[0] if ranked else None,
            "max_relative_mean_diff": max((row["relative"] for row in s["layers"]), default=0.0),
            "min_token_cosine": min((row["token_cosine"] for row in s["layers"]), default=1.0),
        }
    if "kl" in result:
        h["mean_kl"] = result["kl"]["mean_kl"]
        h["mean_kl_ci95"] = result["kl"]["mean_kl_ci95"]
    if result.get("layer_kl"):
        rows = result["layer_kl"]["layers"]
        top = max(rows, key=lambda r: r["kl"])
        h["layer_kl_first_nonzero_layer"] = result["layer_kl"]["first_nonzero_layer"]
        h["layer_kl_max_layer"] = top["layer"]
        h["layer_kl_max"] = top["kl"]
        h["layer_kl_last"] = rows[-1]["kl"]
        h["layer_kl_last_ci95"] = [rows[-1]["kl_lo"], rows[-1]["kl_hi"]]
    if "lens" in result and result.get("sets", {}).get("tasks", {}).get("layers_ranked"):
        top = result["sets"]["tasks"]["layers_ranked"][0]
        h["lens_top_layer"] = top
        h["lens_top_tokens"] = [t["token"] for t in result["lens"]["layers"][top]["tuned"][:5]]
    return h


def run_activations(run: Any, pair: Any, config: ActivationsConfig | None = None, *, progress: bool = False,
                    **texts: Any) -> dict[str, Any]:
    """Write ``RUN/compare/activations.json``; return the section's headline numbers."""
    cfg = config or ActivationsConfig()
    with run.step("compare_activations", cfg.to_dict()) as step:
        result = activation_diffs(pair, cfg, progress=progress, **texts)
        run.write_json(art.ACTIVATIONS, result)
        step.output(art.ACTIVATIONS)
        if result.get("layer_kl"):
            import pandas as pd

            table = pd.DataFrame(result["layer_kl"]["layers"], columns=list(art.LAYER_KL_COLUMNS))
            run.write_table(art.LAYER_KL, table)
            step.output(art.LAYER_KL)
        elif run.has(art.LAYER_KL):  # an earlier run's table would describe other texts or models
            run.file(art.LAYER_KL).unlink()
        h = headline(result)
        step.note(first_changed_layer=h.get("tasks", h.get("emotions", {})).get("first_changed_layer"))
    return h
