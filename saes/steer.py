"""Steer new traces with an SAE feature and count the behaviour it should change.

>>> report = feature_steering(model, "RUN/saes/L12-...", feature=17, label="reflection",
...                           alphas=[-8.0, 8.0], tasks="psych", split="test", samples=2)   # doctest: +SKIP
>>> report["conditions"]["feature@-8"]["label_steps_per_trace"]       # vs report["conditions"]["none"]

Conditions: ``none`` (no steering), ``feature@<alpha>`` (``SteeringVector.from_sae(sae_dir,
feature, alpha=alpha)``), ``random@<alpha>`` (a random direction of the same norm at the same
layer and alpha — the first control) and ``random_feature@<alpha>`` (another latent of the same SAE:
its decoder column rescaled to the steered column's norm, at the same layer and alpha — the second
control, :func:`random_feature_like`; the latent is drawn with ``random_seed`` among the live latents
other than the feature, of similar firing frequency when ``features.json`` records frequencies:
:func:`random_control_feature`; ``random_feature=False`` leaves it out); with ``ablate=True`` also
``feature@ablate`` (the decoder column's direction projected out of the residual at every position,
``mode="ablate"``: directional ablation, which removes what the stream carries along it instead of pushing
it negative), ``random@ablate`` (a random direction projected out — the control) and
``random_feature@ablate`` (the random-feature latent's direction projected out — the second control,
unless ``random_feature=False``); with ``clamps`` also ``feature@clamp<v>`` (the
latent's activation held at ``v`` at every position through the SAE, its error term kept:
:class:`psylens.saes.FeatureClamp`; ``v = 0`` removes the latent's own contribution only where it
fires) and ``random@clamp<v>`` (a latent that fires about as often, clamped the same way — the
control, :func:`psylens.saes.clamp.matched_control_feature`). Each condition generates traces with ``psylens.saes.generate_traces``
into ``out/<condition>/`` (a run directory each: resumable after a kill), then segments and labels
every step. Per condition: the label's steps per trace (mean, bootstrap 95% interval over traces)
and their share of all steps, every label's steps per trace, task accuracy (Wilson interval), and
fluency (distinct-2, 3-gram repetition, zlib ratio of the reasoning texts).

Against ``none`` (``effects``, :func:`paired_effect`): the same traces (same ids and seeds) paired —
the change of the label's steps per trace and of accuracy with intervals from a bootstrap over tasks,
and the ratio of the label's steps (steered ÷ unsteered) with its interval. ``target`` reads the
strongest suppression: the label's steps at most halved (ratio ≤ 0.5) while accuracy moves by at
most 5 points — and both controls of the same norm (random direction, random feature) beside it;
``target_ablate`` reads ``feature@ablate`` against the same target, with ``random@ablate`` and
``random_feature@ablate`` beside it, and ``target_clamp`` the lowest clamp. Fluency is part of the
verdict: each condition's reasoning texts are scored by the *unsteered* model (token-pooled perplexity
after the same formatted prompt), and a target is ``met`` only when the steered texts' perplexity is at
most :data:`MAX_PERPLEXITY_RATIO` (1.5, the steering sweep's ``absolute`` criterion) × the unsteered
texts' on the same traces — breaking the text removes every behaviour, the targeted one included, and
at chance accuracy the accuracy bar cannot tell. The random controls must fail the bar
(``control_fails``: the random direction's ratio above 0.5, and the random feature's too when it ran —
``random_feature_fails``): when a random direction or another latent also halves the label, the count
cannot tell the feature from any perturbation. ``met_ignoring_fluency`` keeps the bare reading.

Footgun: a steering vector is global state of the model while it is applied — nothing else may use
the model during a condition. Every trace of every condition uses the same seeds, so differences
come from the steering, not from sampling.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from psylens.steering.vector import SteeringVector

__all__ = [
    "feature_steering",
    "run_feature_steering",
    "condition_summary",
    "paired_effect",
    "random_control_feature",
    "random_feature_like",
]

#: the feature-steering target: the label's steps at most halved, accuracy within 5 points
TARGET_RATIO, TARGET_ACCURACY = 0.5, 0.05
#: fluency guard of the target: steered texts' perplexity (under the unsteered model) ÷ the unsteered texts'
MAX_PERPLEXITY_RATIO = 1.5


def _label_counts(records: Sequence[dict[str, Any]], segmentation: str) -> tuple[np.ndarray, np.ndarray]:
    """``[n_traces, n_labels]`` steps of each label (order of ``LABELS``) and ``[n_traces]`` steps a trace."""
    from psylens.saes.labels import LABELS, label_step
    from psylens.saes.segment import segment

    counts = np.zeros((len(records), len(LABELS)))
    n_steps = np.zeros(len(records))
    for i, r in enumerate(records):
        steps = segment(r.get("text") or "", segmentation)
        n_steps[i] = len(steps)
        for st in steps:
            labs = label_step(st.text, r.get("prompt"))
            for j, lab in enumerate(LABELS):
                counts[i, j] += lab in labs
    return counts, n_steps


def condition_summary(records: Sequence[dict[str, Any]], label: str, segmentation: str = "sentence") -> dict[str, Any]:
    """The label's steps per trace, share of steps, accuracy and fluency of a condition's trace records."""
    from psylens.saes.labels import LABELS
    from psylens.stats import bootstrap_ci, wilson_ci
    from psylens.steering.metrics import distinct_n, repetition_rate, zlib_ratio

    counts, steps_per_trace = _label_counts(records, segmentation)
    per_trace = counts[:, LABELS.index(label)] if label in LABELS else np.zeros(len(records))
    n_steps = int(steps_per_trace.sum())
    n = len(records)
    correct = sum(bool(r.get("correct")) for r in records)
    texts = [r.get("text") or "" for r in records]
    x = np.asarray(per_trace, dtype=float)
    return {
        "n_traces": n,
        "n_steps": n_steps,
        "label_steps_per_trace": float(x.mean()) if n else None,
        "label_steps_per_trace_ci": list(bootstrap_ci(x)) if n > 1 else None,
        "label_share_of_steps": float(x.sum() / n_steps) if n_steps else None,
        "steps_per_trace": float(steps_per_trace.mean()) if n else None,
        "labels_per_trace": {lab: float(counts[:, j].mean()) if n else None for j, lab in enumerate(LABELS)},
        "accuracy": correct / n if n else None,
        "accuracy_ci": list(wilson_ci(correct, n)) if n else None,
        "distinct_2": distinct_n(texts, 2) if any(texts) else None,
        "repetition_3": repetition_rate(texts, 3) if any(texts) else None,
        "zlib_ratio": zlib_ratio(texts) if any(texts) else None,
    }


def paired_effect(
    none: Sequence[dict[str, Any]],
    steered: Sequence[dict[str, Any]],
    label: str,
    segmentation: str = "sentence",
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """A steered condition against ``none`` on the same traces (matched by ``id``).

    Returns ``label_steps_diff`` and ``accuracy_diff`` (steered − none, :class:`psylens.stats.PairedDiff`
    dicts: intervals from a bootstrap over tasks) and ``label_steps_ratio`` (mean steered ÷ mean
    unsteered label steps; ``None`` when the unsteered traces have none) with ``label_steps_ratio_ci``
    (the same task bootstrap; draws with no unsteered label step are left out).
    """
    from psylens.saes.labels import LABELS
    from psylens.stats import N_BOOT, paired_diff_ci

    if label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {', '.join(LABELS)}")
    by_id = {r["id"]: r for r in steered}
    ids = [r["id"] for r in none if r["id"] in by_id]
    if not ids:
        raise ValueError(
            f"no trace id is in both conditions ({len(none)} unsteered, {len(steered)} steered traces); "
            "pair traces generated with the same tasks, samples and seed"
        )
    a_recs = [by_id[i] for i in ids]
    b_recs = [r for r in none if r["id"] in by_id]
    j = LABELS.index(label)
    a = _label_counts(a_recs, segmentation)[0][:, j]
    b = _label_counts(b_recs, segmentation)[0][:, j]
    groups = [r.get("task_id", r["id"]) for r in b_recs]
    acc_a = np.array([float(bool(r.get("correct"))) for r in a_recs])
    acc_b = np.array([float(bool(r.get("correct"))) for r in b_recs])
    _, inv = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    sums_a, sums_b = np.bincount(inv, weights=a), np.bincount(inv, weights=b)
    pick = np.random.default_rng(seed).integers(0, len(sums_a), size=(N_BOOT, len(sums_a)))
    num, den = sums_a[pick].sum(axis=1), sums_b[pick].sum(axis=1)
    draws = num[den > 0] / den[den > 0]
    ratio = float(a.sum() / b.sum()) if b.sum() > 0 else None
    return {
        "n_pairs": len(ids),
        "label_steps_diff": paired_diff_ci(a, b, groups=groups, seed=seed).to_dict(),
        "label_steps_ratio": ratio,
        "label_steps_ratio_ci": ([float(q) for q in np.quantile(draws, [0.025, 0.975])]
                                 if ratio is not None and len(draws) else None),
        "accuracy_diff": paired_diff_ci(acc_a, acc_b, groups=groups, seed=seed).to_dict(),
    }


def _decoder(sae_dir: str | os.PathLike[str]) -> Float[Tensor, "d_sae d_model"]:
    """``W_dec`` of the SAE folder's ``sae_weights.safetensors`` (read directly: no SAELens import)."""
    from safetensors import safe_open

    from psylens.saes import artifacts as art

    d = Path(sae_dir)
    art.read_step_info(d)  # a clear error when the folder is not an SAE of `psylens sae train`
    weights = d / art.SAE_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{str(d)!r} is not an SAE folder written by `psylens sae train`: {weights.name} is missing")
    with safe_open(str(weights), framework="pt", device="cpu") as f:
        if "W_dec" not in f.keys():
            raise ValueError(f"{str(weights)!r} has no 'W_dec' tensor; it is not a SAELens SAE")
        return f.get_tensor("W_dec").float()


def random_control_feature(
    sae_dir: str | os.PathLike[str],
    feature: int,
    *,
    seed: int = 0,
    features: Sequence[dict[str, Any]] | None = None,
) -> int:
    """A random latent of the same SAE to steer with as the control for ``feature``.

    Never ``feature`` itself and never a dead latent: a latent with a zero decoder column is dead, and,
    when ``features`` (``features.json``'s per-latent records) is given, so is one that never fired on
    the run's steps (``frequency`` 0; when no frequencies are recorded, ``mean_activation`` 0 or
    missing) or that ``features`` does not list. When frequencies are recorded and ``feature`` fires,
    the latent is one of similar frequency (:func:`psylens.saes.clamp.matched_control_feature`, within
    2× — the clamp control's rule, so the same ``seed`` picks the same latent); otherwise one drawn
    uniformly from the live latents with ``seed``.
    """
    from psylens.saes.clamp import matched_control_feature

    norms = _decoder(sae_dir).norm(dim=-1)  # [d_sae]
    d_sae = int(norms.shape[0])
    if isinstance(feature, bool) or not isinstance(feature, (int, np.integer)) or not 0 <= int(feature) < d_sae:
        raise ValueError(f"feature {feature!r} is out of range: the SAE has {d_sae} latents (0–{d_sae - 1})")
    feature = int(feature)
    alive = {j for j in range(d_sae) if float(norms[j]) > 0}
    if features is not None:
        recs = [f for f in features if isinstance(f, dict) and "feature" in f and int(f["feature"]) in alive]

        def num(v: Any) -> float:
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) else 0.0

        if any("frequency" in f for f in recs):
            fired = {int(f["feature"]): num(f.get("frequency")) for f in recs}
            if fired.get(feature, 0.0) > 0 and any(v > 0 for j, v in fired.items() if j != feature):
                return matched_control_feature(recs, feature, seed=seed)
        else:
            fired = {int(f["feature"]): num(f.get("mean_activation")) for f in recs}
        alive = {j for j, v in fired.items() if v > 0}
    candidates = sorted(alive - {feature})
    if not candidates:
        raise ValueError(
            f"the SAE in {str(sae_dir)!r} has no live latent other than {feature} (of {d_sae}) to serve as the "
            "random-feature control; pass control_feature=<latent> or random_feature=False"
        )
    return int(np.random.default_rng(seed).choice(candidates))


def random_feature_like(
    sv: SteeringVector,
    sae_dir: str | os.PathLike[str],
    control_feature: int | None = None,
    *,
    seed: int = 0,
    features: Sequence[dict[str, Any]] | None = None,
) -> SteeringVector:
    """The random-feature control of ``sv`` (a vector of ``SteeringVector.from_sae(sae_dir, feature, ...)``).

    Another latent's decoder column of the same SAE — ``control_feature``, or one drawn by
    :func:`random_control_feature` with ``seed`` and ``features`` — rescaled at each layer to the norm
    of ``sv``'s vector there, with ``sv``'s layers, alpha, mode, positions and site: it adds exactly as
    much as the feature does, along a direction the SAE also learned. ``meta`` records ``feature``
    (the control latent), ``control_for`` (the steered one), ``source="random_feature"`` and ``seed``.
    """
    from psylens.steering.vector import SteeringVector

    steered = (sv.meta or {}).get("feature")
    if sv.meta.get("source") != "sae" or steered is None:
        raise ValueError(
            f"random_feature_like needs a vector from SteeringVector.from_sae (meta source 'sae' with a feature), "
            f"got meta {dict(sv.meta)!r}; build it with SteeringVector.from_sae(sae_dir, feature)"
        )
    if control_feature is None:
        control_feature = random_control_feature(sae_dir, int(steered), seed=seed, features=features)
    if isinstance(control_feature, bool) or not isinstance(control_feature, (int, np.integer)):
        raise ValueError(f"control_feature must be a latent index (an int), got {control_feature!r}")
    if int(control_feature) == int(steered):
        raise ValueError(f"control_feature must differ from the steered feature ({steered}); pick another latent")
    ctrl = SteeringVector.from_sae(sae_dir, int(control_feature), layers=list(sv.layers))
    ctrl_norms = ctrl.norms()  # [k]
    if bool((ctrl_norms == 0).any()):
        raise ValueError(f"latent {int(control_feature)} has a zero decoder column (a dead latent); pick a live one")
    vecs = ctrl.vectors.float() / ctrl_norms.unsqueeze(-1) * sv.norms().unsqueeze(-1)  # [k, d_model]
    label = f"random_feature({sv.label})" if sv.label else "random_feature"
    meta = {**sv.meta, "source": "random_feature", "feature": int(control_feature), "control_for": int(steered),
            "seed": int(seed)}
    return sv.replace(vectors=vecs.to(sv.vectors.dtype), label=label, meta=meta)


def _target(effects: dict[str, Any], alphas: Sequence[float], which: str | None = None) -> dict[str, Any] | None:
    """The strongest suppression against the target (label steps ≤ half, accuracy within 5 points);
    ``which="ablate"``: the directional ablation instead; ``which="clamp<v>"``: that clamp."""
    if which is None:
        neg = [a for a in alphas if a < 0]
        if not neg:
            return None
        which = f"{min(neg):g}"
    feat, rand = effects.get(f"feature@{which}"), effects.get(f"random@{which}")
    if feat is None:
        return None
    ratio, acc = feat["label_steps_ratio"], feat["accuracy_diff"]["diff"]
    ppl = feat.get("perplexity_ratio")
    bare = ratio is not None and ratio <= TARGET_RATIO and abs(acc) <= TARGET_ACCURACY
    fluent = ppl is not None and bool(np.isfinite(ppl)) and ppl <= MAX_PERPLEXITY_RATIO
    r_ratio = rand["label_steps_ratio"] if rand else None
    rfeat = effects.get(f"random_feature@{which}")
    rf_ratio = rfeat["label_steps_ratio"] if rfeat else None
    rf_fails = None if rfeat is None else (rf_ratio is not None and rf_ratio > TARGET_RATIO)
    # the random controls must not halve it too (the random feature only when it ran: older summaries lack it)
    control_fails = r_ratio is not None and r_ratio > TARGET_RATIO and rf_fails is not False
    return {
        "condition": f"feature@{which}",
        "ratio": ratio,
        "ratio_ci": feat["label_steps_ratio_ci"],
        "accuracy_diff": acc,
        "accuracy_diff_ci": feat["accuracy_diff"]["ci95"],
        "random_ratio": r_ratio,
        "threshold_ratio": TARGET_RATIO,
        "threshold_accuracy": TARGET_ACCURACY,
        "perplexity_ratio": ppl,
        "random_perplexity_ratio": rand.get("perplexity_ratio") if rand else None,
        "random_feature_ratio": rf_ratio,
        "random_feature_perplexity_ratio": rfeat.get("perplexity_ratio") if rfeat else None,
        "random_feature_fails": rf_fails,
        "max_perplexity_ratio": MAX_PERPLEXITY_RATIO,
        "fluent": fluent,
        "control_fails": control_fails,
        "met_ignoring_fluency": bare,
        "met": bare and fluent and control_fails,
    }


def feature_steering(
    model: Any,
    sae_dir: str | os.PathLike[str],
    feature: int,
    label: str,
    *,
    alphas: Sequence[float] = (-8.0, 8.0),
    out: str | os.PathLike[str] | None = None,
    tasks: Any = "psych",
    split: str | None = "test",
    samples: int = 2,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 16,
    segmentation: str = "sentence",
    random_seed: int = 0,
    ablate: bool = False,
    clamps: Sequence[float] = (),
    control_feature: int | None = None,
    random_feature: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate traces under each condition (see the module docstring) and summarise them.

    ``out``: where the per-condition trace runs go (default ``<sae_dir>/steering``). ``ablate``: also
    project the feature's direction (and, as the control, a random one) out of the stream. ``clamps``:
    values (the latent's activation units) to clamp the latent to; ``random_feature``: also steer, at
    every alpha, with another latent's decoder column rescaled to the feature's norm
    (``random_feature@<alpha>``), and with ``ablate`` project that latent's direction out
    (``random_feature@ablate``); ``control_feature``: the latent clamped as the clamps' control and
    steered as the random feature (default: drawn with ``random_seed`` — for clamps one of similar
    frequency from ``<sae_dir>/features.json``, :func:`psylens.saes.clamp.matched_control_feature`;
    for the random feature :func:`random_control_feature`, which reads ``features.json`` when there is
    one). Returns ``{"feature", "label", "alphas", "ablate", "clamps", "random_feature",
    "control_feature", "layer", "conditions": {name: summary}, "effects": {name: paired_effect vs none},
    "target": ... | None, "target_ablate": ... | None, "target_clamp": ... | None}``; the same dict is
    written to ``<out>/summary.json`` after every condition (a killed run keeps what it finished).
    Each condition's summary also has ``latent``: the SAE latent it steers with (``None`` for ``none``
    and the random directions).
    """
    from psylens.io import write_json
    from psylens.saes.labels import LABELS
    from psylens.saes.traces import generate_traces, read_traces
    from psylens.steering.vector import SteeringVector

    if label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {', '.join(LABELS)}")
    if not alphas and not ablate and not clamps:
        raise ValueError("give at least one alpha (negative suppresses, positive amplifies), ablate=True or a clamp value")
    bad = [c for c in clamps if isinstance(c, bool) or not isinstance(c, (int, float)) or not np.isfinite(c)]
    if bad:
        raise ValueError(f"clamp values must be finite numbers (the latent's activation to hold), got {bad}")
    from psylens.saes import artifacts as art

    base = Path(out) if out is not None else Path(sae_dir) / art.STEERING
    feats_path = Path(sae_dir) / art.FEATURES
    feats = json.loads(feats_path.read_text(encoding="utf-8")).get("features", []) if feats_path.is_file() else None
    if control_feature is None and clamps:
        from psylens.saes.clamp import matched_control_feature

        if feats is None:
            raise ValueError(f"no features.json in {str(sae_dir)!r} to match a control latent; give control_feature")
        control_feature = matched_control_feature(feats, int(feature), seed=random_seed)
    elif control_feature is None and random_feature and (alphas or ablate):
        control_feature = random_control_feature(sae_dir, int(feature), seed=random_seed, features=feats)
    if control_feature is not None and int(control_feature) == int(feature):
        raise ValueError(f"control_feature must differ from the feature ({feature})")
    conditions: dict[str, Any] = {art.STEERING_NONE: None}
    for a in alphas:
        sv = SteeringVector.from_sae(sae_dir, feature, alpha=float(a))
        conditions[art.steering_condition(art.FEATURE, a)] = sv
        conditions[art.steering_condition(art.RANDOM, a)] = sv.random_like(seed=random_seed)
        if random_feature and control_feature is not None:  # chosen above whenever alphas and random_feature
            conditions[art.steering_condition(art.RANDOM_FEATURE, a)] = random_feature_like(
                sv, sae_dir, int(control_feature), seed=random_seed)
    if ablate:
        sv = SteeringVector.from_sae(sae_dir, feature, mode="ablate")
        conditions[art.steering_condition(art.FEATURE, "ablate")] = sv
        conditions[art.steering_condition(art.RANDOM, "ablate")] = sv.random_like(seed=random_seed)
        if random_feature and control_feature is not None:  # another latent's direction projected out
            conditions[art.steering_condition(art.RANDOM_FEATURE, "ablate")] = random_feature_like(
                sv, sae_dir, int(control_feature), seed=random_seed)
    if clamps and control_feature is not None:  # chosen above whenever there are clamps
        from psylens.saes.clamp import FeatureClamp

        for c in clamps:
            fc = FeatureClamp.from_sae(sae_dir, feature, value=float(c))
            conditions[art.steering_condition(art.FEATURE, f"clamp{float(c):g}")] = fc
            conditions[art.steering_condition(art.RANDOM, f"clamp{float(c):g}")] = fc.with_feature(int(control_feature))

    def perplexity_of(records: Sequence[dict[str, Any]], ids: Sequence[str], folder: Path) -> float:
        """Token-pooled perplexity of the records' texts (those of ``ids``) under the unsteered model; kept
        in ``<folder>/perplexity.json`` beside a digest of what was read, so a resumed run re-reads nothing."""
        import hashlib

        from psylens.io import write_json
        from psylens.saes.traces import format_trace_prompt
        from psylens.steering.metrics import perplexity

        by_id = {str(r.get("id")): r for r in records}
        rows = [by_id[i] for i in ids if i in by_id]
        prompts = [format_trace_prompt(model, str(r.get("prompt") or "")) for r in rows]
        texts = [str(r.get("text") or "") for r in rows]
        digest = hashlib.sha256(json.dumps([str(getattr(model, "spec", "")), prompts, texts]).encode()).hexdigest()
        cache = folder / "perplexity.json"
        if cache.is_file():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                kept = json.loads(cache.read_text(encoding="utf-8"))
                if kept["digest"] == digest and isinstance(kept["perplexity"], (int, float)):
                    return float(kept["perplexity"])
        value = perplexity(model, prompts, texts, format="raw", batch_size=batch_size)
        write_json(cache, {"digest": digest, "perplexity": value, "n_texts": len(texts)}, nan="null")
        return value

    result: dict[str, Any] = {"feature": int(feature), "label": label, "alphas": [float(a) for a in alphas],
                              "ablate": bool(ablate), "clamps": [float(c) for c in clamps],
                              "random_feature": bool(random_feature and (alphas or ablate)),
                              "control_feature": None if control_feature is None else int(control_feature),
                              "layer": None, "conditions": {}, "effects": {}, "target": None,
                              "target_ablate": None, "target_clamp": None}
    unsteered: list[dict[str, Any]] = []
    for name, sv in conditions.items():
        folder = base / art.condition_folder(name)
        kwargs = dict(split=split, samples=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                      seed=seed, batch_size=batch_size, progress=progress)
        if sv is None:
            generate_traces(model, tasks, folder, **kwargs)
        else:
            result["layer"] = sv.layer if hasattr(sv, "layer") else sv.layers[0]
            with sv.apply(model):
                generate_traces(model, tasks, folder, **kwargs)
        records = read_traces(folder)
        summary = condition_summary(records, label, segmentation)
        ids = [str(r.get("id")) for r in (unsteered or records)]
        summary["perplexity"] = perplexity_of(records, ids, folder)  # after the block: the unsteered model reads
        # what was added (ablation and clamps add nothing of fixed norm: they remove what is there)
        summary["vector_norm"] = (float(sv.norms()[0] * abs(sv.alpha)) if sv is not None and getattr(sv, "mode", None) == "add"
                                  else 0.0)
        # the SAE latent the condition steers with (none for no steering and the random directions)
        if isinstance(sv, SteeringVector):
            latent = sv.meta.get("feature") if sv.meta.get("source") in ("sae", "random_feature") else None
        else:
            latent = None if sv is None else sv.feature  # a FeatureClamp
        summary["latent"] = None if latent is None else int(latent)
        result["conditions"][name] = summary
        if sv is None:
            unsteered = records
        else:
            result["effects"][name] = paired_effect(unsteered, records, label, segmentation, seed=seed)
            none_ppl = result["conditions"]["none"]["perplexity"]
            result["effects"][name]["perplexity_ratio"] = (summary["perplexity"] / none_ppl
                                                           if none_ppl and np.isfinite(none_ppl) else None)
            result["target"] = _target(result["effects"], [float(a) for a in alphas])
            result["target_ablate"] = _target(result["effects"], [], "ablate") if ablate else None
            result["target_clamp"] = _target(result["effects"], [], f"clamp{min(float(c) for c in clamps):g}") if clamps else None
        write_json(base / "summary.json", result, nan="null")
    return result


def run_feature_steering(
    run: Any,
    name: str,
    label: str = "reflection",
    *,
    feature: int | None = None,
    strengths: Sequence[float] = (-4.0,),
    model: Any = None,
    split: str | None = "test",
    samples: int = 2,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 16,
    ablate: bool = False,
    clamps: Sequence[float] = (),
    random_feature: bool = True,
    progress: bool = True,
    device: str = "auto",
    dtype: str | None = None,
    device_map: str | None = None,
) -> dict[str, Any]:
    """``psylens sae steer`` as a function: steer new traces of the run's task set with one of the
    run's SAEs (``RUN/saes/<name>``) → ``RUN/saes/<name>/steering/summary.json``.

    ``feature``: ``None`` picks the label's best feature from ``features.json`` (chosen on training
    steps). ``strengths`` are in units of the feature's mean activation where it fires (from
    ``features.json``): ``-1`` subtracts its typical contribution, ``-4`` four times that; the
    decoder-unit ``alpha`` of each is recorded. ``ablate``: also the directional ablation of the
    feature (and of a random direction, the control). ``clamps``: hold the latent's activation at each
    value (in units of its mean activation, like ``strengths``; ``0`` switches it off where it fires)
    through the SAE, beside a latent of similar firing frequency clamped the same way (the control).
    ``random_feature``: at each strength also steer with that control latent's decoder column rescaled
    to the feature's norm (``random_feature@<alpha>``; without clamps the latent is drawn by
    :func:`random_control_feature` from ``features.json``, seed 0). Recorded as step ``sae-steer-<name>`` (a re-run with the
    same settings resumes the condition runs).
    """
    from psylens.runs import Run, open_run
    from psylens.saes import artifacts as art
    from psylens.saes.labels import LABELS
    from psylens.saes.pipeline import _LazyModel, _model_spec
    from psylens.saes.traces import TRACES_CONFIG_FILE

    if label not in LABELS:
        raise ValueError(f"label {label!r} is not one of {', '.join(LABELS)}")
    if any(s == 0 for s in strengths) or not (strengths or ablate or clamps):
        raise ValueError(f"strengths must be non-zero (negative suppresses, positive amplifies), got {list(strengths)}; "
                         "give at least one strength, ablate or a clamp")
    r = run if isinstance(run, Run) else open_run(run)
    folder = r.file(art.sae_dir(name))
    if not (folder / art.FEATURES).is_file():
        have = sorted(p.name for p in r.file(art.DIR).glob("*") if (p / art.STEP_SAE).is_file()) if r.has(art.DIR) else []
        raise ValueError(
            f"no SAE {name!r} with {art.FEATURES} in {str(r.path)!r} (SAEs there: {have or 'none'}); "
            "train one with `psylens sae train` (features on)"
        )
    feats = r.read_json(art.sae_file(name, art.FEATURES))
    if feature is None:
        feature = (feats.get("labels", {}).get(label) or {}).get("feature")
        if feature is None:
            raise ValueError(f"features.json of {name!r} has no best feature for {label!r} (no positive steps?); give --feature")
    by_index = {int(f["feature"]): f for f in feats.get("features", [])}
    scale = (by_index.get(int(feature)) or {}).get("mean_activation")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"feature {feature} never fires on the run's steps (mean activation {scale!r}); pick a live feature")
    alphas = [float(s) * float(scale) for s in strengths]
    bad = [c for c in clamps if isinstance(c, bool) or not isinstance(c, (int, float)) or not np.isfinite(c)]
    if bad:
        raise ValueError(f"clamp values must be finite numbers (units of the feature's mean activation), got {bad}")
    clamp_values = [float(c) * float(scale) for c in clamps]
    control = None
    if clamps:
        from psylens.saes.clamp import matched_control_feature

        control = matched_control_feature(feats.get("features", []), int(feature), seed=0)
    elif random_feature and strengths:
        control = random_control_feature(folder, int(feature), seed=0, features=feats.get("features", []))
    config = {"name": name, "label": label, "feature": int(feature), "strengths": [float(s) for s in strengths],
              "alphas": alphas, "mean_activation": float(scale), "split": split, "samples": samples,
              "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed, "batch_size": batch_size,
              "ablate": bool(ablate), "clamps": [float(c) for c in clamps], "clamp_values": clamp_values,
              "random_feature": bool(random_feature), "control_feature": control}
    # the task set the run's traces came from (its split is this function's own: held-out tasks by default)
    tasks = r.read_json(TRACES_CONFIG_FILE).get("tasks", "psych") if r.has(TRACES_CONFIG_FILE) else "psych"
    config["tasks"] = tasks
    lazy = _LazyModel(model, _model_spec(r, model), device=device, dtype=dtype, device_map=device_map)
    with r.step(f"sae-steer-{name}", config) as step:
        result = feature_steering(lazy.get(), folder, int(feature), label, alphas=alphas, out=folder / art.STEERING,
                                  tasks=tasks, split=split, samples=samples, max_new_tokens=max_new_tokens,
                                  temperature=temperature, seed=seed, batch_size=batch_size, ablate=ablate,
                                  clamps=clamp_values, control_feature=control, random_feature=random_feature,
                                  progress=progress)
        result.update({"strengths": config["strengths"], "mean_activation": float(scale), "sae": name})
        rel = art.sae_file(name, art.STEERING_SUMMARY)
        r.write_json(rel, result, nan="null")
        step.output(rel)
    return result
