"""Side-by-side generations: the same prompts answered by the base and the tuned model (greedy).

Two kinds, written to ``RUN/compare/generations.json`` (:data:`psylens.compare.artifacts.GENERATIONS`):

- ``prompts``: the first ``n_prompts`` ``psych`` task prompts (chain of thought, the activation
  section's set) — the base's and the tuned model's answer to each;
- ``steered``: one neutral prompt (the built-in ``steering_prompts``) answered by each model unsteered
  and steered by what the steering section steered with (``steering.json``): the base's picked sweep vector
  of ``steer_emotion`` (``RUN/compare/steering_vectors/``, its own layers and alpha; ``"vector"`` names the
  file) when it used those, else the base's ``steer_emotion`` story direction at the section's layer and
  alpha — the steering transfer, read as text. Only when the steering section ran in this run; else
  ``null`` with the reason.

Greedy decoding (``do_sample=False``) makes the texts reproducible: the same pair gives the same texts,
and a model compared with itself gives identical columns (the control).

.. warning:: The steering alpha is the one the "… I feel" gate used (the sweep vector's own, or ``scale`` ×
   the base's residual norm): strong enough to move a next-token distribution, it may derail a long generation. The
   text shows what the same vector does to both models, not a tuned steering strength.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from psylens.compare import artifacts as art

__all__ = ["GenerationsConfig", "side_by_side", "run_generations"]


@dataclass(frozen=True)
class GenerationsConfig:
    """``n_prompts``: task prompts answered by both models (0: none, and no steered text either);
    ``max_new_tokens``: tokens generated per answer; ``steer_emotion``: the base vector steering both
    models (``None``: no steered text); ``prompt_index``: which ``steering_prompts`` entry is steered."""

    n_prompts: int = 3
    max_new_tokens: int = 48
    steer_emotion: str | None = "joy"
    prompt_index: int = 0
    format: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        for k in ("n_prompts", "prompt_index"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{k} must be a non-negative integer, got {v!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if self.format not in ("auto", "chat", "raw"):
            raise ValueError(f"format {self.format!r} is not one of 'auto', 'chat', 'raw'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _steered(pair: Any, cfg: GenerationsConfig, directions: Any, layer: int | None, alpha: float | None,
             vector: Any = None, vector_file: str | None = None) -> dict[str, Any]:
    from psylens import stimuli
    from psylens.steering import SteeringVector

    prompts = stimuli.load("steering_prompts").texts
    if cfg.prompt_index >= len(prompts):
        raise ValueError(f"prompt_index {cfg.prompt_index} out of range: there are {len(prompts)} steering prompts "
                         f"(0–{len(prompts) - 1})")
    prompt = prompts[cfg.prompt_index]
    if vector is not None:
        from psylens.validation.gates import _center_layer

        sv, layer, alpha = vector, _center_layer(vector), float(vector.alpha)
    else:
        sv = SteeringVector.from_directions(directions, str(cfg.steer_emotion), [int(layer)], alpha=float(alpha))  # type: ignore[arg-type]
    kw = dict(max_new_tokens=cfg.max_new_tokens, do_sample=False, format=cfg.format)
    out: dict[str, Any] = {"emotion": cfg.steer_emotion, "layer": layer, "alpha": alpha, "prompt": prompt,
                           "vector": vector_file}
    for name in art.MODEL_NAMES:
        m = getattr(pair, name)
        out[name] = m.generate([prompt], **kw)[0]
        with sv.apply(m):
            out[f"{name}_steered"] = m.generate([prompt], **kw)[0]
    return out


def side_by_side(
    pair: Any, config: GenerationsConfig | None = None, *, directions: Any = None, layer: int | None = None,
    alpha: float | None = None, prompts: list[str] | None = None, kinds: list[str] | None = None,
    steer_reason: str | None = None, vector: Any = None, vector_file: str | None = None,
) -> dict[str, Any]:
    """Both models' greedy answers to the same prompts, and (given ``directions``, ``layer``, ``alpha``, or a
    ``vector``: the base's :class:`~psylens.steering.SteeringVector` of ``steer_emotion``) the steered text of one
    prompt; the dict ``generations.json`` holds. ``prompts`` default to the task prompts."""
    from psylens.compare.activations import task_inputs

    cfg = config or GenerationsConfig()
    if prompts is None:
        prompts, kinds = task_inputs(cfg.n_prompts, cfg.seed)
    prompts = list(prompts)[: cfg.n_prompts]
    kinds = list(kinds or [None] * len(prompts))[: len(prompts)]
    kw = dict(max_new_tokens=cfg.max_new_tokens, do_sample=False, format=cfg.format)
    answers = {name: getattr(pair, name).generate(prompts, **kw) if prompts else [] for name in art.MODEL_NAMES}
    rows = [{"prompt": p, "kind": k, "base": answers["base"][i], "tuned": answers["tuned"][i]}
            for i, (p, k) in enumerate(zip(prompts, kinds))]
    steered: dict[str, Any] | None = None
    reason = steer_reason
    if cfg.steer_emotion is None:
        reason = "no steered text asked for (steer_emotion=None)"
    elif cfg.n_prompts == 0:
        reason = "n_prompts=0: no generations"
    elif vector is not None:
        steered, reason = _steered(pair, cfg, None, None, None, vector=vector, vector_file=vector_file), None
    elif directions is None or layer is None or alpha is None:
        reason = reason or "no steering layer and alpha (run the steering section: --sections ...,steering)"
    elif cfg.steer_emotion not in getattr(directions, "emotions", []):
        reason = f"the base directions have no {cfg.steer_emotion!r} (they have {list(directions.emotions)})"
    else:
        steered, reason = _steered(pair, cfg, directions, int(layer), float(alpha)), None
    return {"schema_version": art.SCHEMA_VERSION, "config": cfg.to_dict(), "decoding": "greedy",
            "prompts": rows, "steered": steered, "steered_reason": reason}


def run_generations(run: Any, pair: Any, config: GenerationsConfig | None = None) -> dict[str, Any]:
    """Write ``RUN/compare/generations.json`` (steered text when this run holds ``steering.json`` and the
    base directions); return the section's headline (how many answers differ between the models)."""
    cfg = config or GenerationsConfig()
    directions = layer = alpha = vector = vfile = None
    reason = None
    used = (run.read_json(art.STEERING).get("steering") or {}) if run.has(art.STEERING) else {}
    if used.get("from") == "sweep" and cfg.steer_emotion is not None:
        from psylens.steering import SteeringVector

        vfile = art.steering_vector_file(cfg.steer_emotion)
        if run.has(vfile):
            vector = SteeringVector.load(run.file(vfile))
        else:
            vfile, reason = None, (f"the steering section steered with the base's sweep vectors but has none for "
                                   f"{cfg.steer_emotion!r} in {art.STEERING_VECTORS}")
    elif run.has(art.STEERING) and run.has(art.BASE_DIRECTIONS):
        from psylens.probes import Directions

        s = run.read_json(art.STEERING)
        layer, alpha = s.get("layer"), s.get("alpha")
        directions = Directions.load(run.file(art.BASE_DIRECTIONS))
    else:
        reason = "the steering section did not run in this run (no compare/steering.json): no layer and alpha to steer with"
    with run.step("compare_generations", cfg.to_dict()) as step:
        result = side_by_side(pair, cfg, directions=directions, layer=layer, alpha=alpha, steer_reason=reason,
                              vector=vector, vector_file=vfile)
        run.write_json(art.GENERATIONS, result)
        step.output(art.GENERATIONS)
    rows = result["prompts"]
    return {"n_prompts": len(rows), "n_differ": sum(r["base"] != r["tuned"] for r in rows),
            "steered": result["steered"] is not None}
