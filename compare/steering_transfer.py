"""Steering transfer: do the base model's emotion steering vectors still work on the tuned model?

**What steers.** The base model's *picked* steering vectors when there are any: ``psylens steer sweep``'s
``RUN/steering/vectors/<emotion>.safetensors`` (each emotion at its own layer(s) and alpha, see
:func:`psylens.validation.suite.sweep_vectors`), looked up in this run or in ``base_run`` (a run of the
base model); they are copied to ``RUN/compare/steering_vectors/`` so the run holds what steered. Otherwise
(``steer_with="auto"`` and no vectors, or ``steer_with="layer"``) the base model's story directions (the ones
the emotion section projects on; the run's ``validation/directions.safetensors`` when ``psylens validate``
saved them, else fitted now) at one layer (:func:`psylens.validation.suite.default_layer`) with alpha fixed on
the base model (``scale`` × its mean residual norm at that layer). Either way the tuned model receives exactly
the base's vectors; ``steering`` in the result says which were used and why.

**How each model is judged** — two validation gates, each with its random-direction control:

- :func:`psylens.validation.gates.feels_matrix` (the "… I feel" next-token check): gap, pass/fail, each
  emotion's own shift. ``own_shift_difference`` is the paired change tuned − base over the emotions with a
  bootstrap interval; a model compared with itself gives exactly 0.
- :func:`psylens.validation.gates.read_back` (``read_back=True``): each model writes greedy text to
  ``n_prompts`` neutral prompts steered by each vector, unsteered, and steered by a random draw of the same
  norm; *that same model, unsteered*, re-reads each text and its mean residual over the generated tokens is
  projected on the base's direction of the target emotion. Win rate = steered text projects higher than the
  unsteered text of the same prompt; control = the random text's win rate against the unsteered one (≈ 0.5).
  ``read_back.difference`` is tuned − base of the win rate, paired over (emotion, prompt) items, with an
  interval resampling prompts.

.. warning:: A vector that transfers "worse" may have found a tuned model whose residual norm grew at
   that layer (the same alpha is then relatively weaker): ``residual_norm`` of both is in the result. The
   tuned model's read-back projects on the *base's* directions: a tuned model whose own emotion directions
   moved reads its texts with a slightly wrong ruler (the emotion section's direction cosines say by how much).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from psylens.compare import artifacts as art

__all__ = ["SteeringTransferConfig", "STEER_WITH", "steering_transfer", "base_vectors", "run_steering_transfer"]

#: what the section steers with (the names of ``psylens validate``'s ``steer_with``)
STEER_WITH: tuple[str, ...] = ("auto", "sweep", "layer")


@dataclass(frozen=True)
class SteeringTransferConfig:
    """``layer``: steering layer for the directions (``None``: 0.45 of the depth); ``scale``: their alpha as a
    multiple of the base's residual norm; ``n_contexts``: "… I feel" contexts (≤ 24 built in); ``n_random``:
    control draws (≥ 5). ``steer_with``: ``"auto"`` (the base's sweep vectors when this run or ``base_run``
    holds them for every emotion, else the directions at ``layer`` × ``scale``), ``"sweep"`` (the vectors or a
    ``ValueError``), ``"layer"`` (always the directions). ``base_run``: a run directory of the base model whose
    ``steering/vectors/`` to use (``None``: this run). ``read_back``: also run the read-back gate on both models,
    on ``n_prompts`` steering prompts with ``max_new_tokens`` generated tokens, ``batch_size`` texts a batch."""

    layer: int | None = None
    scale: float = 0.5
    n_contexts: int = 24
    n_random: int = 5
    seed: int = 0
    steer_with: str = "auto"
    base_run: str | None = None
    read_back: bool = True
    n_prompts: int = 8
    max_new_tokens: int = 16
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale must be positive (a multiple of the residual norm), got {self.scale}")
        if self.n_contexts < 1:
            raise ValueError(f"n_contexts must be at least 1, got {self.n_contexts}")
        if self.n_random < 5:
            raise ValueError(f"n_random must be at least 5 (the gate's own minimum), got {self.n_random}")
        if self.steer_with not in STEER_WITH:
            raise ValueError(f"steering.steer_with {self.steer_with!r} is not one of {STEER_WITH}: auto (the base's sweep "
                             "vectors when the run or base_run has them), sweep (require them), layer (the story "
                             "directions at layer × scale)")
        if self.base_run is not None:
            if not isinstance(self.base_run, (str, os.PathLike)) or not str(self.base_run).strip():
                raise ValueError(f"steering.base_run must be a run directory (a path) or None (this run), got {self.base_run!r}")
            object.__setattr__(self, "base_run", os.fspath(self.base_run))
        if not isinstance(self.read_back, bool):
            raise ValueError(f"steering.read_back must be True or False, got {self.read_back!r}")
        for name in ("n_prompts", "max_new_tokens", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"steering.{name} must be a positive integer, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gate_row(g: Any) -> dict[str, Any]:
    s = g.to_dict()
    keep = ("value", "threshold", "control", "passed", "rows_won", "cols_won", "gap_ci95", "own_shift",
            "own_minus_random", "residual_norm")
    return {k: s.get(k) for k in keep}


def _read_back_row(g: Any) -> dict[str, Any]:
    s = g.to_dict()
    keep = ("value", "threshold", "control", "passed", "ci95", "win_rate_vs_random", "win_rate_vs_random_ci95",
            "control_ci95", "per_emotion", "empty_generations")
    return {k: s.get(k) for k in keep}


def _vector_info(vectors: Mapping[str, Any]) -> dict[str, Any]:
    """The validation gates' record of each vector (layer(s), alpha, scale, norm, source), plus its file,
    scale reference and positions."""
    from psylens.validation.gates import _vector_info as gate_info

    info = gate_info(vectors, list(vectors))
    return {e: {**info[e], "file": sv.meta.get("file"), "scale_reference": sv.meta.get("scale_reference"),
                "positions": sv.positions} for e, sv in vectors.items()}


def base_vectors(
    run: Any, pair: Any, emotions: Sequence[str], config: SteeringTransferConfig | None = None,
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The base model's picked steering vectors of ``emotions`` (or ``None``) and a record of the choice:
    ``{"from": "sweep"|"directions", "source_run", "note"}``.

    Looked up in ``config.base_run`` when given, else in ``run`` (``None``: no run, the directions). Vectors
    made for another model (its recorded fingerprint, or the vectors' ``model``, differ from the base) are
    not used. ``steer_with="sweep"`` turns every "not used" into a ``ValueError`` that says how to fix it.
    """
    from psylens.runs import fingerprint_matches, open_run
    from psylens.validation.suite import sweep_vectors

    cfg = config or SteeringTransferConfig()
    if cfg.steer_with == "layer":
        return None, {"from": "directions", "source_run": None, "note": "steer_with='layer'"}
    src, where = run, "this run"
    if cfg.base_run is not None:
        try:
            src, where = open_run(cfg.base_run), f"base_run {cfg.base_run!r}"
        except (ValueError, OSError) as e:
            raise ValueError(f"steering.base_run {cfg.base_run!r} is not a run directory ({e}); give the run where "
                             "`psylens steer sweep` wrote the base model's vectors, or leave it unset") from None
    vectors, why = (None, "no run to look in") if src is None else sweep_vectors(src, pair.base, list(emotions))
    if vectors is not None:
        # the model the sweep ran on: a run's main model ("model"), else a comparison run's base
        rec = src.models.get("model") or src.models.get("base") or {}
        fp = rec.get("fingerprint")
        spec = getattr(pair.base, "spec", None)
        made_for = {str(v.meta.get("model")) for v in vectors.values() if isinstance(v.meta.get("model"), str)}
        if fp is not None and not fingerprint_matches(fp, pair.base):
            vectors, why = None, (f"the vectors in {where} belong to model {rec.get('spec')!r} (fingerprint {fp}), "
                                  f"not the base {spec!r}")
        elif fp is None and made_for and made_for != {str(spec)}:
            vectors, why = None, f"the vectors in {where} were made for {sorted(made_for)}, not the base {spec!r}"
    if vectors is None:
        if cfg.steer_with == "sweep":
            raise ValueError(f"steering.steer_with='sweep' needs the base model's steering-sweep vectors: {why}; run "
                             "`psylens steer sweep` on the base model (into this run or a base run given as "
                             "steering.base_run), or use steer_with='auto'/'layer'")
        return None, {"from": "directions", "source_run": None, "note": f"no sweep vectors used: {why}"}
    src_path = str(getattr(src, "path", "")) or None
    return vectors, {"from": "sweep", "source_run": src_path, "note": f"{why}, from {where}"}


def steering_transfer(
    pair: Any, directions: Any, config: SteeringTransferConfig | None = None, *, words: Any = None, contexts: Any = None,
    vectors: Mapping[str, Any] | None = None, prompts: Sequence[str] | None = None, steering: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Both models' feels-matrix and read-back gates under the base's vectors (see the module doc).

    ``vectors``: emotion → the base's :class:`~psylens.steering.SteeringVector` (each at its own layers and
    alpha; :func:`base_vectors`); ``None``: ``directions`` × the base's alpha at ``layer``. ``prompts``: the
    read-back prompts (default: the built-in ``steering_prompts``, the first ``n_prompts``). ``steering``: the
    record :func:`base_vectors` returned (written as the result's ``steering``).
    """
    from psylens import stimuli
    from psylens.concepts import feel_contexts, feel_words
    from psylens.stats import paired_diff_ci
    from psylens.stimuli import EMOTIONS
    from psylens.validation.gates import feels_matrix, read_back
    from psylens.validation.suite import default_layer

    cfg = config or SteeringTransferConfig()
    layer = cfg.layer if cfg.layer is not None else default_layer(pair.n_layers)
    if not 0 <= layer < pair.n_layers:
        raise ValueError(f"layer {layer} out of range: the models have {pair.n_layers} layers (0–{pair.n_layers - 1})")
    words = words if words is not None else feel_words()
    contexts = list(contexts if contexts is not None else feel_contexts())[: cfg.n_contexts]
    emos = [e for e in EMOTIONS if e in directions.emotions]
    if vectors is not None:
        missing = [e for e in emos if e not in vectors]
        if missing:
            raise ValueError(f"vectors has no {missing} (it has {sorted(vectors)}); give one steering vector per emotion "
                             f"of the directions ({emos}), or vectors=None to steer with the directions at layer {layer}")
        vectors = {e: vectors[e] for e in emos}
    kw = dict(words=words, contexts=contexts, emotions=emos, n_random=cfg.n_random, seed=cfg.seed, vectors=vectors)
    g_base = feels_matrix(pair.base, directions, layer, scale=cfg.scale, **kw)
    # the base's alpha at `layer` (directions only: picked vectors carry their own alpha, the same on both models)
    alpha = float(g_base.to_dict()["steering"]["alpha"]) if vectors is None else None
    g_tuned = feels_matrix(pair.tuned, directions, layer, alpha=alpha, **kw)
    rb, rt = _gate_row(g_base), _gate_row(g_tuned)
    ob = np.array([rb["own_shift"][e] for e in emos], dtype=float)
    ot = np.array([rt["own_shift"][e] for e in emos], dtype=float)
    d = paired_diff_ci(ot, ob, seed=cfg.seed)
    record = dict(steering or {"from": "sweep" if vectors is not None else "directions", "source_run": None,
                               "note": "vectors given" if vectors is not None else "directions given"})
    record.update({"layer": None if vectors is not None else int(layer), "alpha": alpha,
                   "scale": None if vectors is not None else cfg.scale,
                   "vectors": _vector_info(vectors) if vectors is not None else None})
    out: dict[str, Any] = {
        "schema_version": art.SCHEMA_VERSION,
        "config": cfg.to_dict(),
        "layer": layer,
        "alpha": alpha,
        "gate": "feels_matrix",
        "gates": ["feels_matrix", "read_back"] if cfg.read_back else ["feels_matrix"],
        "steering": record,
        "emotions": emos,
        "n_contexts": len(contexts),
        "base": rb,
        "tuned": rt,
        "own_shift_difference": d.diff,
        "own_shift_difference_ci95": [d.lo, d.hi],
        "read_back": None,
    }
    if cfg.read_back:
        texts = list(prompts) if prompts is not None else stimuli.load("steering_prompts").texts
        texts = texts[: cfg.n_prompts]
        rkw = dict(emotions=emos, alpha=alpha, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed,
                   batch_size=cfg.batch_size, vectors=vectors)
        r_base = read_back(pair.base, directions, layer, texts, **rkw)
        r_tuned = read_back(pair.tuned, directions, layer, texts, **rkw)
        ib, it = r_base.tables["items"], r_tuned.tables["items"]  # one row per (emotion, prompt), the same order
        if list(zip(ib["emotion"], ib["prompt"])) != list(zip(it["emotion"], it["prompt"])):
            raise RuntimeError("read_back's items differ in order between the two models; cannot pair them")
        rd = paired_diff_ci(it["win_none"].to_numpy(float), ib["win_none"].to_numpy(float), groups=ib["prompt"].tolist(),
                            seed=cfg.seed)
        out["read_back"] = {
            "n_prompts": len(texts), "max_new_tokens": cfg.max_new_tokens,
            "projected_on": "the base's story direction of the target emotion, read by the same model unsteered",
            "base": _read_back_row(r_base), "tuned": _read_back_row(r_tuned),
            "difference": rd.diff, "difference_ci95": [rd.lo, rd.hi],
            "items": [{"emotion": e, "prompt": p, "base_win": bool(wb), "tuned_win": bool(wt),
                       "base_steered_text": sb, "tuned_steered_text": stx}
                      for e, p, wb, wt, sb, stx in zip(ib["emotion"], ib["prompt"], ib["win_none"], it["win_none"],
                                                        ib["steered_text"], it["steered_text"])],
        }
    return out


def headline(result: dict[str, Any]) -> dict[str, Any]:
    h = {
        "layer": result["layer"], "alpha": result["alpha"],
        "base_gap": result["base"]["value"], "base_passed": result["base"]["passed"],
        "tuned_gap": result["tuned"]["value"], "tuned_passed": result["tuned"]["passed"],
        "control_gap_base": result["base"]["control"], "control_gap_tuned": result["tuned"]["control"],
        "own_shift_difference": result["own_shift_difference"],
        "own_shift_difference_ci95": result["own_shift_difference_ci95"],
        "steered_with": (result.get("steering") or {}).get("from"),
    }
    rb = result.get("read_back")
    if rb:
        h.update({
            "read_back_base": rb["base"]["value"], "read_back_base_passed": rb["base"]["passed"],
            "read_back_tuned": rb["tuned"]["value"], "read_back_tuned_passed": rb["tuned"]["passed"],
            "read_back_control_base": rb["base"]["control"], "read_back_control_tuned": rb["tuned"]["control"],
            "read_back_difference": rb["difference"], "read_back_difference_ci95": rb["difference_ci95"],
        })
    return h


def run_steering_transfer(run: Any, pair: Any, config: SteeringTransferConfig | None = None, *, directions: Any = None,
                          seed: int = 0, n_stories: int | None = None, n_neutral: int | None = None,
                          progress: bool = False) -> dict[str, Any]:
    """Write ``RUN/compare/steering.json`` (and the sweep vectors used, ``RUN/compare/steering_vectors/``); return
    the headline numbers. ``n_stories`` / ``n_neutral``: a quick fit of the base's story directions when neither
    the run nor ``directions`` has them."""
    from dataclasses import replace

    from psylens.stimuli import EMOTIONS

    cfg = config or SteeringTransferConfig(seed=seed)
    if config is None and seed:
        cfg = replace(cfg, seed=seed)
    if directions is None:
        from psylens.compare.emotions import base_directions

        directions = base_directions(pair, run, n_stories=n_stories, n_neutral=n_neutral, progress=progress)
    emos = [e for e in EMOTIONS if e in directions.emotions]
    vectors, record = base_vectors(run, pair, emos, cfg)
    with run.step("compare_steering", cfg.to_dict()) as step:
        result = steering_transfer(pair, directions, cfg, vectors=vectors, steering=record)
        if vectors is not None:
            files = {}
            for e, sv in vectors.items():
                rel = art.steering_vector_file(e)
                run.file(rel).parent.mkdir(parents=True, exist_ok=True)
                sv.save(run.file(rel))
                step.output(rel)
                files[e] = rel
            result["steering"]["copies"] = files
        run.write_json(art.STEERING, result, nan="null")
        step.output(art.STEERING)
    return headline(result)
