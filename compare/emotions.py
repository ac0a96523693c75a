"""Emotion representations before and after tuning.

Three questions, each with its own control:

1. **Probes** — are emotions as decodable in the tuned model? Both models read the same emotion
   stimuli (``psylens.stimuli.load("emotions")``, the six emotions, ``n_scenarios`` whole scenarios).
   Scenarios are split in two halves: probes (:func:`psylens.probes.fit_probes`, scenario-grouped
   cross-validation with the shuffled-label control) are fitted on the first half of each model, and
   the base probes are scored on the held-out half of *both* models — ``transfer`` is base probes on
   tuned activations, paired with base probes on base activations on the same texts
   (:func:`psylens.stats.paired_diff_ci`).
2. **Directions** — do the emotion directions move? The cosine between the base and the tuned
   model's mean-difference directions (:func:`psylens.probes.emotion_directions`) per emotion and layer;
   random directions in ``d`` dimensions give ~0 ± 1/√d.
3. **Concepts at the assistant turn** — which of the 24 concepts rise or fall after tuning (the table
   of Anthropic's emotions paper, 2026)? The *base* model's story directions
   (:func:`psylens.validation.directions.load_or_fit_story_directions`: the run's, else fitted now) are
   read on both models at the last token of each chat-formatted task prompt (the assistant turn's
   header, just before the answer starts). Per concept: the paired change tuned − base over tasks
   with a 95% interval, averaged over the middle-to-late layers (``band``: 50–75% of the depth by
   default). Control: the same residual change read on 200 random unit directions; ``rises``/``falls``
   are the concepts whose interval excludes 0 *and* whose |change| exceeds the random directions' 95th
   percentile (``rises_interval_only`` drops the second condition). Any shift of the residual moves
   every direction a little and, paired over many prompts, tightly: on SmolLM2 a *random* LoRA (2% of
   six attention matrices) puts 22 of 24 concepts' intervals away from 0. The change vectors of
   the task kinds (24 numbers each) are correlated pairwise (Pearson r); the control is the same
   correlation after permuting the concepts of one vector (expected ~0). A shared residual shift also
   makes the kinds agree (the random LoRA gives r ≈ 0.90), so read r beside a random-adapter baseline.

.. warning:: Projections use the *base* directions on both models: a change in projection mixes
   "the model represents more of X here" with "the tuned model's X direction moved" (question 2 says
   how much it moved).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from psylens.compare import artifacts as art

N_RANDOM = 200  # random unit directions for the concept-change control

__all__ = ["EmotionsConfig", "base_directions", "probe_comparison", "direction_cosines", "concept_shifts", "emotion_shifts",
           "run_emotions", "assistant_turn_residuals"]


@dataclass(frozen=True)
class EmotionsConfig:
    """``n_scenarios``: emotion scenarios read (×6 texts); ``n_tasks``: task prompts for the concept table;
    ``band``: the fraction of depth ``(lo, hi)`` the concept changes are averaged over; ``n_stories``: training
    stories per concept when the base's story directions are fitted here (``None``: all ~38 a concept);
    ``n_neutral``: neutral texts read for their denoising (``None``: all ~105; only with ``n_stories``)."""

    n_scenarios: int = 40
    n_tasks: int = 48
    n_stories: int | None = None
    n_neutral: int | None = None
    band: tuple[float, float] = (0.5, 0.75)
    format: str = "auto"
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "band", tuple(float(b) for b in self.band))
        if self.n_scenarios < 4:
            raise ValueError(f"n_scenarios must be at least 4 (two halves with two scenarios each for grouped folds), got {self.n_scenarios}")
        if self.n_stories is not None and self.n_stories < 2:
            raise ValueError(f"n_stories must be at least 2 stories a concept (or None for all), got {self.n_stories}")
        if self.n_neutral is not None and (self.n_neutral < 2 or self.n_stories is None):
            raise ValueError(
                f"n_neutral must be at least 2 neutral texts and comes with n_stories (a quick fit); got "
                f"n_neutral={self.n_neutral}, n_stories={self.n_stories}"
            )
        if self.n_tasks < 2:
            raise ValueError(f"n_tasks must be at least 2 (an interval needs two tasks), got {self.n_tasks}")
        lo, hi = self.band
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"band must be fractions of depth 0 <= lo <= hi <= 1, got {self.band}")
        if self.format not in ("auto", "chat", "raw"):
            raise ValueError(f"format {self.format!r} is not one of 'auto', 'chat', 'raw'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def band_layers(self, n_layers: int) -> list[int]:
        lo = int(round(self.band[0] * (n_layers - 1)))
        hi = int(round(self.band[1] * (n_layers - 1)))
        return list(range(lo, hi + 1))


# --------------------------------------------------------------------------------------------
# 1. probes
# --------------------------------------------------------------------------------------------
def _emotion_stimuli(n_scenarios: int, seed: int) -> tuple[Any, Any]:
    from psylens import stimuli
    from psylens.stimuli import EMOTIONS

    st = stimuli.load("emotions").filter(labels=EMOTIONS)
    groups = sorted({s.group for s in st})
    rng = np.random.default_rng(seed)
    picked = [groups[i] for i in rng.permutation(len(groups))[: min(n_scenarios, len(groups))]]
    half = len(picked) // 2
    return st.filter(groups=picked[:half]), st.filter(groups=picked[half:])


def probe_comparison(pair: Any, cfg: EmotionsConfig, *, progress: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Probe curves of both models, base→tuned transfer on held-out scenarios; and the activations read."""
    from psylens.probes import fit_probes
    from psylens.stats import paired_diff_ci

    fit_set, held_out = _emotion_stimuli(cfg.n_scenarios, cfg.seed)
    acts = {}
    for name in art.MODEL_NAMES:
        m = getattr(pair, name)
        acts[name] = {
            "fit": m.harvest(fit_set, positions="last", format=cfg.format, batch_size=cfg.batch_size, progress=progress),
            "held_out": m.harvest(held_out, positions="last", format=cfg.format, batch_size=cfg.batch_size, progress=progress),
        }
    out: dict[str, Any] = {"n_fit": len(fit_set), "n_held_out": len(held_out)}
    results = {}
    for name in art.MODEL_NAMES:
        res = fit_probes(acts[name]["fit"], seed=cfg.seed, controls=("shuffled",), lexical=False, n_splits=min(5, len(fit_set) // 6))
        results[name] = res
        out[name] = {
            "layers": list(res.layers),
            "accuracy": [float(a) for a in res.accuracy],
            "accuracy_ci95": [[float(a), float(b)] for a, b in res.accuracy_ci95],
            "shuffled_accuracy": None if res.shuffled_accuracy is None else [float(a) for a in res.shuffled_accuracy],
            "best_layer": res.best_layer,
            "best_accuracy": res.best_accuracy,
            "chance": res.chance,
        }
    base_res = results["base"]
    on_base = base_res.evaluate(acts["base"]["held_out"])
    on_tuned = base_res.evaluate(acts["tuned"]["held_out"])
    rows = []
    y = on_base.y
    groups = [s.group for s in held_out]
    for i, layer in enumerate(base_res.layers):
        ca = (on_tuned.predictions[i] == y).astype(float)
        cb = (on_base.predictions[i] == y).astype(float)
        d = paired_diff_ci(ca, cb, groups=groups, seed=cfg.seed)
        rows.append({"layer": layer, "base_on_base": float(cb.mean()), "base_on_tuned": float(ca.mean()),
                     "difference": d.diff, "difference_ci95": [d.lo, d.hi]})
    out["transfer"] = rows
    return out, acts


# --------------------------------------------------------------------------------------------
# 2. directions
# --------------------------------------------------------------------------------------------
def direction_cosines(base_acts: Any, tuned_acts: Any) -> dict[str, Any]:
    """Cosine between the two models' mean-difference emotion directions, per emotion and layer."""
    from psylens.probes import emotion_directions
    from psylens.stimuli import EMOTIONS

    db = emotion_directions(base_acts, labels=list(EMOTIONS))
    dt = emotion_directions(tuned_acts, labels=list(EMOTIONS))
    cos = (db.vectors.float() * dt.vectors.float()).sum(-1)  # [emotion, layer]
    return {
        "emotions": list(db.emotions),
        "layers": list(db.layers),
        "cosine": cos.tolist(),
        "mean_cosine_by_layer": cos.mean(0).tolist(),
        "random_direction_sd": 1 / float(np.sqrt(db.d_model)),
    }


# --------------------------------------------------------------------------------------------
# 3. concepts at the assistant turn
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def assistant_turn_residuals(
    model: Any, texts: list[str], layers: list[int], fmt: str = "auto", *, progress: bool = False
) -> Float[Tensor, "n layer d"]:
    """``resid_post`` at the last token of each chat-formatted prompt (with the generation prompt)."""
    from psylens.interventions import record

    rows = []
    for text in tqdm(texts, desc="assistant turn", disable=not progress):
        prompt = model.format_prompt(text, format=fmt)
        ids = model.tokenizer(prompt, add_special_tokens=model.resolve_format(fmt) == "raw", return_tensors="pt").input_ids
        with record(model, "resid_post", layers) as rec:
            model.hf_model(input_ids=ids.to(model.device))
        rows.append(torch.stack([rec["resid_post", layer][0, -1].float().cpu() for layer in layers]))
    return torch.stack(rows)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def concept_shifts(
    pair: Any, directions: Any, texts: list[str], kinds: list[str], cfg: EmotionsConfig, *, progress: bool = False
) -> dict[str, Any]:
    """Per concept and layer, the tuned − base projection on ``directions`` at the assistant turn (see the module doc)."""
    from psylens.stats import paired_diff_ci

    n_layers = pair.n_layers
    layers = [layer for layer in directions.layers if 0 <= layer < n_layers]
    if not layers:
        raise ValueError(f"the directions cover layers {list(directions.layers)}, none of them in 0–{n_layers - 1}")
    band = [layer for layer in cfg.band_layers(n_layers) if layer in layers] or layers
    xb = assistant_turn_residuals(pair.base, texts, layers, cfg.format, progress=progress)
    xt = assistant_turn_residuals(pair.tuned, texts, layers, cfg.format, progress=progress)
    pb = torch.stack([directions.project(xb[:, i], layer) for i, layer in enumerate(layers)], 1)  # [n, L, C]
    pt = torch.stack([directions.project(xt[:, i], layer) for i, layer in enumerate(layers)], 1)
    bi = [layers.index(layer) for layer in band]
    band_b, band_t = pb[:, bi].mean(1).numpy(), pt[:, bi].mean(1).numpy()  # [n, C]
    sd = band_b.std(0)
    concepts = []
    for c, name in enumerate(directions.emotions):
        d = paired_diff_ci(band_t[:, c], band_b[:, c], seed=cfg.seed)
        concepts.append({
            "concept": name, "change": d.diff, "change_ci95": [d.lo, d.hi],
            "change_in_base_sd": d.diff / float(sd[c]) if sd[c] > 0 else None,
            "base_mean": float(band_b[:, c].mean()), "tuned_mean": float(band_t[:, c].mean()),
        })
    # control: the same change read on random unit directions (any shift of the residual moves every direction a bit)
    gen = torch.Generator().manual_seed(cfg.seed)
    rand = torch.randn(xb.shape[-1], N_RANDOM, generator=gen)
    rand = rand / rand.norm(dim=0, keepdim=True)
    r_change = ((xt[:, bi] - xb[:, bi]).mean(1) @ rand).mean(0).abs()  # [N_RANDOM]: |mean change| per direction
    q95 = float(r_change.quantile(0.95))
    for r in concepts:
        r["beyond_random"] = abs(r["change"]) > q95
    rises = [r["concept"] for r in sorted(concepts, key=lambda r: -r["change"]) if r["change_ci95"][0] > 0 and r["beyond_random"]]
    falls = [r["concept"] for r in sorted(concepts, key=lambda r: r["change"]) if r["change_ci95"][1] < 0 and r["beyond_random"]]
    rises_ci = [r["concept"] for r in concepts if r["change_ci95"][0] > 0]
    falls_ci = [r["concept"] for r in concepts if r["change_ci95"][1] < 0]
    by_layer = (pt - pb).mean(0).abs().mean(-1).tolist()  # mean |change| over concepts, per layer
    # change vectors by task kind and their correlations
    delta = band_t - band_b
    kind_names = sorted(set(kinds))
    vectors = {k: delta[[i for i, kk in enumerate(kinds) if kk == k]].mean(0) for k in kind_names}
    rng = np.random.default_rng(cfg.seed)
    pairs, rs, controls = [], [], []
    for i, a in enumerate(kind_names):
        for b in kind_names[i + 1:]:
            r = _pearson(vectors[a], vectors[b])
            perm = [_pearson(vectors[a], rng.permutation(vectors[b])) for _ in range(100)]
            perm = [p for p in perm if p is not None]
            pairs.append({"kinds": [a, b], "r": r, "permuted_r_mean": float(np.mean(perm)) if perm else None})
            if r is not None:
                rs.append(r)
                controls.extend(perm)
    return {
        "layers": layers,
        "band": band,
        "directions": {"kind": directions.meta.get("kind") if hasattr(directions, "meta") else None,
                       "model": getattr(directions, "model", None)},
        "n_tasks": len(texts),
        "concepts": concepts,
        "rises": rises,
        "falls": falls,
        "rises_interval_only": rises_ci,
        "falls_interval_only": falls_ci,
        "random_direction_abs_change_q95": q95,
        "n_random_directions": N_RANDOM,
        "mean_abs_change_by_layer": by_layer,
        "kind_vectors": {k: v.tolist() for k, v in vectors.items()},
        "kind_correlations": pairs,
        "mean_kind_correlation": float(np.mean(rs)) if rs else None,
        "mean_kind_correlation_ci95": list(_ci(rs, cfg.seed)) if len(rs) > 1 else None,
        "permuted_control_mean_r": float(np.mean(controls)) if controls else None,
    }


def _ci(values: list[float], seed: int) -> tuple[float, float]:
    from psylens.stats import bootstrap_ci

    return bootstrap_ci(values, seed=seed)


def _stories(n_per_concept: int | None) -> Any:
    from psylens import stimuli

    st = stimuli.load("stories")
    if n_per_concept is None:
        return st
    seen: dict[str, int] = {}
    keep = []
    for s in st:
        if (s.meta or {}).get("split") == "train" and seen.get(str(s.label), 0) < n_per_concept:
            seen[str(s.label)] = seen.get(str(s.label), 0) + 1
            keep.append(s)
    return stimuli.Stimuli(keep, name=f"stories[{n_per_concept}/concept]")


def _neutral(n: int | None) -> Any:
    """The first ``n`` built-in neutral texts (``None``: ``story_directions``' default, all of them)."""
    if n is None:
        return None
    from psylens import stimuli

    st = stimuli.load("neutral_texts")
    return stimuli.Stimuli(list(st)[:n], name=f"neutral_texts[:{n}]")


def base_directions(pair: Any, run: Any = None, *, n_stories: int | None = None, n_neutral: int | None = None,
                    progress: bool = False) -> Any:
    """The base model's 24 story directions: ``RUN/compare/base_directions.safetensors`` when an earlier
    section saved them, else the run's ``validation/directions.safetensors`` (``psylens validate``), else
    fitted now — and saved to ``RUN/compare/`` so the steering section reuses them. ``n_stories`` /
    ``n_neutral``: a quick fit on that many training stories a concept / neutral texts."""
    from psylens.probes import Directions
    from psylens.validation.directions import load_or_fit_story_directions, story_directions

    if run is None:
        return story_directions(pair.base, _stories(n_stories), _neutral(n_neutral), progress=progress)
    if run.has(art.BASE_DIRECTIONS):
        d = Directions.load(run.file(art.BASE_DIRECTIONS))
        if d.model == getattr(pair.base, "spec", None):
            return d
    if n_stories is None:
        d = load_or_fit_story_directions(pair.base, run, progress=progress)
    else:
        d = story_directions(pair.base, _stories(n_stories), _neutral(n_neutral), progress=progress)
    d.save(run.file(art.BASE_DIRECTIONS))
    return d


def emotion_shifts(
    pair: Any, cfg: EmotionsConfig | None = None, *, directions: Any = None, run: Any = None, progress: bool = False
) -> dict[str, Any]:
    """The whole emotion section as a dict (what ``emotions.json`` holds).

    ``directions``: concept directions to project on (default: the base model's story directions,
    from ``run`` when ``psylens validate`` saved them there, else fitted now).
    """
    from psylens.compare.activations import task_inputs

    cfg = cfg or EmotionsConfig()
    probes, acts = probe_comparison(pair, cfg, progress=progress)
    from psylens.activations import Activations  # noqa: F401  (type of acts values)

    cos = direction_cosines(acts["base"]["fit"], acts["tuned"]["fit"])
    if directions is None:
        directions = base_directions(pair, run, n_stories=cfg.n_stories, n_neutral=cfg.n_neutral, progress=progress)
    texts, kinds = task_inputs(cfg.n_tasks, cfg.seed)
    concepts = concept_shifts(pair, directions, texts, kinds, cfg, progress=progress)
    return {"schema_version": art.SCHEMA_VERSION, "config": cfg.to_dict(), "probes": probes,
            "directions": cos, "concepts": concepts}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    p, c = result["probes"], result["concepts"]
    tr = p["transfer"]
    best = p["base"]["layers"].index(p["base"]["best_layer"])
    return {
        "base_best_accuracy": p["base"]["best_accuracy"],
        "tuned_best_accuracy": p["tuned"]["best_accuracy"],
        "chance": p["base"]["chance"],
        "transfer_at_base_best_layer": tr[best],
        "mean_direction_cosine": float(np.mean(result["directions"]["mean_cosine_by_layer"])),
        "rises": c["rises"],
        "falls": c["falls"],
        "mean_kind_correlation": c["mean_kind_correlation"],
        "permuted_control_mean_r": c["permuted_control_mean_r"],
    }


def run_emotions(run: Any, pair: Any, cfg: EmotionsConfig | None = None, *, directions: Any = None,
                 progress: bool = False) -> dict[str, Any]:
    """Write ``RUN/compare/emotions.json``; return the section's headline numbers."""
    cfg = cfg or EmotionsConfig()
    with run.step("compare_emotions", cfg.to_dict()) as step:
        result = emotion_shifts(pair, cfg, directions=directions, run=run, progress=progress)
        run.write_json(art.EMOTIONS, result, nan="null")
        step.output(art.EMOTIONS)
        h = headline(result)
        step.note(rises=h["rises"], falls=h["falls"])
    return h
