"""``psylens validate``: every gate on one model, one direction source and one layer, written to ``RUN/validation/``.

:func:`run_validation` reads the texts once (stories, neutral texts, the ``emotions`` scenarios,
the dose templates), builds the directions of ``config.source`` (``stories``: :mod:`story directions
<psylens.validation.directions>`; ``expression``: :func:`psylens.steering.expression.expression_directions`
over all 24 concepts; ``probes``: ``RUN/probes/directions.safetensors``), fits the shuffled-label
control (story directions on permuted concept labels), runs the gates of :mod:`psylens.validation.gates`
and writes, through ``run.step("validation", config)``:

- ``validation/summary.json`` — ``{"source", "layer", "gates": {name: {"value", "threshold", "control",
  "passed", ...}}, "passed", "total", ...}``; ``total`` counts the gated gates that could run
  (``preferences`` is reported, never gated; ``geometry`` needs the 24 concepts, which probe
  directions lack);
- ``validation/directions.safetensors`` — the directions validated, every concept and layer, readable
  by ``SteeringVector.from_directions(path, concept, layers=[L])``;
- the tables behind each gate (:data:`psylens.validation.artifacts.TABLES`).

``feels_matrix`` and ``read_back`` steer "at the layer and scale the steering sweep picks": when the
run holds the sweep's vectors (``RUN/steering/vectors/<emotion>.safetensors``, with each emotion's
``best_layer`` / ``best_scale`` in ``RUN/steering/summary.json``) each emotion's vector is used as it
is; otherwise the directions at ``layer`` × ``scale`` × the residual norm (the plain mean norm, or with
``scale_reference="centred"`` the norm after subtracting the mean token vector, with ``"median"`` √d × the
median dimension's root-mean-square). ``summary["steering"]``
says which (``"from": "sweep" | "config"``, and the ``"scale_reference"``) and each of the two gates
carries its own ``steering`` record. ``summary["layer"]`` stays the layer the reading gates use.

``ValidationConfig.quick_config()`` uses fewer contexts, prompts, extraction prompts, activities and
stories, and reads the stories only up to the layers the gates use (the demo's budget); the summary
says so (``"quick": true`` and ``"reduced"``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from psylens.stimuli import EMOTIONS
from psylens.validation import artifacts as art
from psylens.validation.directions import DEFAULT_START_OFFSET, directions_from_means, text_means

if TYPE_CHECKING:
    from psylens.models import Model
    from psylens.probes import Directions
    from psylens.runs import Run

__all__ = ["ValidationConfig", "run_validation", "SOURCES", "STEER_WITH", "default_layer", "GATES", "sweep_vectors"]

log = logging.getLogger(__name__)

SOURCES = ("stories", "expression", "probes")
STEER_WITH = ("auto", "sweep", "layer")
GATES = ("feels_matrix", "implicit_scenarios", "dose_response", "geometry", "logit_lens", "read_back", "preferences")
LAYER_FRACTION = 0.45  # 13 of SmolLM2-135M's 30 layers, where "… I feel" moved most with expression directions


def default_layer(n_layers: int) -> int:
    """The layer at ``LAYER_FRACTION`` of the depth (13 on a 30-layer model)."""
    return int(round(LAYER_FRACTION * (n_layers - 1)))


@dataclass(frozen=True)
class ValidationConfig:
    """What ``psylens validate`` runs. ``quick()`` fits the demo's budget; the default is the full suite.

    ``source``: ``stories`` | ``expression`` | ``probes``. ``layer``: where every gate reads and steers
    (``None``: :func:`default_layer`). ``scale``: steering strength for ``feels_matrix`` and
    ``read_back``, a multiple of the layer's mean residual norm (0.5: the setting where "… I feel"
    moved with steering on SmolLM2-135M). ``n_contexts`` / ``n_prompts`` / ``n_activities`` /
    ``n_extraction_prompts``: how many of the built-in contexts, steering prompts, activities and
    expression-extraction prompts to use (``None``: all); ``n_stories_per_concept`` / ``n_neutral`` /
    ``n_scenarios`` / ``n_test_stories``: training stories per concept, neutral texts, ``emotions``
    scenario groups and held-out stories per emotion read (``None``: all). ``steer_with``: what ``feels_matrix`` and ``read_back`` steer with — ``"auto"``
    (default): the steering sweep's picked vectors when the run has them for every emotion
    (``RUN/steering/vectors/<emotion>.safetensors``: each emotion at its own layer and scale), else
    the directions at ``layer`` × ``scale``; ``"sweep"``: the picked vectors or a ``ValueError``;
    ``"layer"``: always the directions at ``layer`` × ``scale``. ``every_layer``: story directions
    at every layer (default; what the steering sweep can pick from) — ``False`` reads the stories only
    up to the deepest layer the gates use (``layer`` and the sweep vectors' layers) and saves directions
    at those layers only (about half the reading time at the default layer; ``quick`` does this).
    ``scale_reference``: what ``scale`` multiplies when the gates steer with the directions at ``layer``
    (:data:`psylens.steering.sweep.SCALE_REFERENCES`): ``"norm"`` (default), the layer's mean per-token
    residual norm; ``"centred"``, the mean per-token norm after subtracting the mean token vector;
    ``"median"``, √d × the median dimension's root-mean-square — for models with massive activations
    (Gemma-3), see :func:`psylens.steering.sweep.residual_norms`. The
    sweep's picked vectors carry their own alpha and ignore it. ``read_back_fluency``: the fluency criterion
    ``read_back``'s steered texts are held to (:data:`psylens.steering.sweep.FLUENCY_CRITERIA`; default the
    issue's ``"relative"``; ``None``: not judged) — the gate passes only at it.
    """

    source: str = "stories"
    layer: int | None = None
    scale: float = 0.5
    n_contexts: int | None = None
    n_prompts: int = 20
    n_random: int = 5
    max_new_tokens: int = 24
    n_activities: int | None = None
    n_extraction_prompts: int | None = None
    n_stories_per_concept: int | None = None
    n_neutral: int | None = None
    n_scenarios: int | None = None
    n_test_stories: int | None = None
    start_offset: int = DEFAULT_START_OFFSET
    denoise: bool = True
    batch_size: int = 16
    seed: int = 0
    quick: bool = False
    steer_with: str = "auto"
    every_layer: bool = True
    scale_reference: str = "norm"
    read_back_fluency: str | None = "relative"

    def __post_init__(self) -> None:
        from psylens.steering.sweep import FLUENCY_CRITERIA, check_scale_reference

        check_scale_reference(self.scale_reference, "scale_reference")
        if self.read_back_fluency is not None and self.read_back_fluency not in FLUENCY_CRITERIA:
            raise ValueError(f"read_back_fluency {self.read_back_fluency!r} is not one of {FLUENCY_CRITERIA} or None "
                             "(not judged); on the command line: --read-back-fluency relative|relative_greedy|absolute|none")
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not one of {SOURCES}: stories (story directions), "
                             "expression (the model prompted to express each concept), probes (RUN/probes/directions.safetensors)")
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0):
            raise ValueError(f"layer must be a non-negative integer or None (the default layer), got {self.layer!r}")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive (a multiple of the residual norm, e.g. 0.5), got {self.scale!r}")
        for name in ("n_contexts", "n_activities", "n_extraction_prompts", "n_stories_per_concept", "n_neutral", "n_scenarios",
                     "n_test_stories"):
            v = getattr(self, name)
            if v is not None and v < 2:
                raise ValueError(f"{name} must be at least 2 or None (all), got {v}")
        if self.n_prompts < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("n_prompts, max_new_tokens and batch_size must be at least 1")
        if self.steer_with not in STEER_WITH:
            raise ValueError(f"steer_with {self.steer_with!r} is not one of {STEER_WITH}: auto (the sweep's picked vectors "
                             "when the run has them), sweep (require them), layer (the directions at layer × scale)")
        if self.n_random < 5:
            raise ValueError(f"n_random must be at least 5 (random draws for feels_matrix's control), got {self.n_random}")

    @classmethod
    def quick_config(cls, **changes: Any) -> ValidationConfig:
        """Fewer contexts (8), prompts (6), tokens (16), activities (8), extraction prompts (12), training
        stories (12 per concept), neutral texts (40) and scenarios (30); story directions only at the
        layers the gates use (``every_layer=False``). Sized for the demo's budget of ≤ 2.5 min on
        SmolLM2-135M on a 2-core CPU (measured: BENCHMARKS.md); its numbers are noisier than the full
        suite's."""
        base: dict[str, Any] = dict(n_contexts=8, n_prompts=6, max_new_tokens=16, n_activities=8,
                                    n_extraction_prompts=12, n_stories_per_concept=12, n_neutral=40,
                                    n_scenarios=30, quick=True, every_layer=False)
        base.update(changes)
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ValidationConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown validation settings {unknown}; valid: {sorted(cls.__dataclass_fields__)}")
        return cls(**dict(d))


def _progress(items: list[Any], enabled: bool, desc: str) -> Any:
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc)


def _even(items: list[Any], n: int | None, key: Any = None) -> list[Any]:
    """At most ``n`` items, alternating the kinds given by ``key`` (all when ``n`` is None)."""
    if n is None or n >= len(items):
        return items
    if key is None:
        return items[:n]
    kinds: dict[Any, list[Any]] = {}
    for it in items:
        kinds.setdefault(key(it), []).append(it)
    out: list[Any] = []
    while len(out) < n:
        for k in list(kinds):
            if kinds[k] and len(out) < n:
                out.append(kinds[k].pop(0))
    return out


def _source_directions(model: Model, run: Run, cfg: ValidationConfig, story_means: torch.Tensor, labels: list[str],
                       layers: list[int], neutral_means: torch.Tensor | None, concepts: list[str]) -> Directions:
    if cfg.source == "stories":
        return directions_from_means(
            story_means, labels, layers, concepts=concepts, neutral=neutral_means, model=model.spec,
            meta={"start_offset": cfg.start_offset, "format": "raw", "split": "train",
                  "position": f"mean over the story's tokens from token {cfg.start_offset}"},
        )
    if cfg.source == "expression":
        from psylens.steering.expression import EXTRACTION_PROMPTS, expression_directions

        prompts = list(EXTRACTION_PROMPTS)[: cfg.n_extraction_prompts or None]
        return expression_directions(model, prompts, emotions=tuple(concepts), batch_size=cfg.batch_size)
    from psylens.steering.artifacts import PROBE_DIRECTIONS
    from psylens.steering.vector import load_directions

    path = run.file(PROBE_DIRECTIONS)
    if not path.is_file():
        raise ValueError(f"--source probes reads {str(path)!r}, which does not exist: fit probes first "
                         f"(psylens probe --out {run.path}) or use --source stories|expression")
    return load_directions(path)


def sweep_vectors(run: Run, model: Model, emotions: list[str]) -> tuple[dict[str, Any] | None, str]:
    """The steering sweep's picked vectors of ``emotions`` (``RUN/steering/vectors/<emotion>.safetensors``),
    each with its ``layer`` and ``scale`` from ``RUN/steering/summary.json`` written into its meta, or
    ``None`` and why not (a vector missing, or made for another model)."""
    from psylens.steering.artifacts import SUMMARY as STEER_SUMMARY
    from psylens.steering.artifacts import vector_file
    from psylens.steering.vector import SteeringVector

    missing = [e for e in emotions if not run.file(vector_file(e)).is_file()]
    if missing:
        return None, f"no steering sweep vectors for {missing} in {run.path / 'steering' / 'vectors'}"
    per: dict[str, Any] = {}
    reference = "norm"  # sweeps before scale_reference existed scaled by the plain norm
    if run.file(STEER_SUMMARY).is_file():
        try:
            steer_summary = run.read_json(STEER_SUMMARY)
            per = dict(steer_summary.get("emotions") or {})
            reference = str(steer_summary.get("scale_reference") or reference)
        except (ValueError, OSError, AttributeError):
            per = {}
    out: dict[str, Any] = {}
    for e in emotions:
        sv = SteeringVector.load(run.file(vector_file(e)))
        if int(sv.d_model) != int(model.d_model) or sv.mode != "add":
            return None, (f"{vector_file(e)} is a {sv.mode} vector of width {sv.d_model}, not an add vector of this "
                          f"model's width {model.d_model}")
        info = dict(per.get(e) or {})
        meta = dict(sv.meta)
        layer = info.get("best_layer", info.get("layer", meta.get("layer")))
        scale = info.get("best_scale", info.get("scale", meta.get("scale")))
        if isinstance(layer, int) and layer in sv.layers:
            meta["layer"] = layer
        if isinstance(scale, (int, float)):
            meta["scale"] = float(scale)
        meta.setdefault("scale_reference", reference)
        meta["file"] = vector_file(e)
        out[e] = sv.replace(meta=meta)
    return out, "the steering sweep's picked vectors (RUN/steering/vectors), each at its own layer and scale"


def run_validation(
    model: Model,
    run: Run | str | os.PathLike[str],
    config: ValidationConfig | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every gate and write ``RUN/validation/`` (see the module doc); returns the summary.

    Footgun: the steering gates hook the model inside their calls only; nothing stays attached.
    """
    from psylens import stimuli
    from psylens.concepts import CONCEPTS, concept_info, concept_words, dose_templates, feel_contexts, feel_words
    from psylens.runs import Run, open_run
    from psylens.validation import gates as G
    from psylens.validation.preferences import ACTIVITIES, preferences

    t0 = time.time()
    run = run if isinstance(run, Run) else open_run(run)
    cfg = config or ValidationConfig()
    n_layers = int(model.n_layers)
    layer = cfg.layer if cfg.layer is not None else default_layer(n_layers)
    if not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {n_layers} layers (0–{n_layers - 1})")
    concepts = list(CONCEPTS)
    all_layers = list(range(n_layers))
    read = dict(start_offset=cfg.start_offset, format="raw", batch_size=cfg.batch_size, progress=progress)

    with run.step("validation", {**cfg.to_dict(), "layer": layer}) as step:
        stories = stimuli.load("stories")
        train = [s for s in stories if s.label in concepts and (s.meta or {}).get("split") == "train"]
        test = [s for s in stories if s.label in EMOTIONS and (s.meta or {}).get("split") == "test"]
        if not train or not test:
            raise ValueError("the 'stories' set needs stories with meta.split 'train' and 'test' labelled by concept")
        if cfg.n_stories_per_concept is not None:
            per: dict[str, list[Any]] = {}
            for s in train:
                per.setdefault(str(s.label), []).append(s)
            train = [s for group in per.values() for s in group[: cfg.n_stories_per_concept]]
        if cfg.n_test_stories is not None:
            per_test: dict[str, list[Any]] = {}
            for s in test:
                per_test.setdefault(str(s.label), []).append(s)
            test = [s for group in per_test.values() for s in group[: cfg.n_test_stories]]
        labels = [str(s.label) for s in train]
        # the steering sweep's picked vectors (gates 1 and 6), looked up before reading: their layers are read too
        vectors, why = (None, "steer_with='layer'") if cfg.steer_with == "layer" else sweep_vectors(run, model, list(EMOTIONS))
        picked_layers = sorted({G._center_layer(v) for v in vectors.values()}) if vectors else []
        # the story means at every layer only where story directions are built from them
        if cfg.source != "stories":
            read_layers = [layer]
        else:
            read_layers = all_layers if cfg.every_layer else sorted({layer, *picked_layers})
        train_means = text_means(model, [s.text for s in train], read_layers, desc="reading stories", **read)
        neutral_means = None
        if cfg.denoise:
            neutral = stimuli.load("neutral_texts").texts[: cfg.n_neutral or None]
            neutral_means = text_means(model, neutral, read_layers, desc="reading neutral texts", **read)
        dirs = _source_directions(model, run, cfg, train_means, labels, read_layers, neutral_means, concepts)
        li = read_layers.index(layer)
        control = directions_from_means(
            train_means[:, li : li + 1], labels, [layer], concepts=concepts,
            neutral=None if neutral_means is None else neutral_means[:, li : li + 1],
            shuffle_seed=cfg.seed, model=model.spec, meta={"control": "shuffled concept labels"},
        )
        dirs.save(step.output(art.DIRECTIONS))
        control.save(step.output(art.CONTROL_DIRECTIONS))
        step.output(art.CONTROL_DIRECTIONS.replace(".safetensors", ".json"))
        step.output(art.DIRECTIONS.replace(".safetensors", ".json"))
        emos = [e for e in EMOTIONS if e in dirs.emotions]
        if len(emos) < 2:
            raise ValueError(f"the {cfg.source} directions have fewer than two of the six emotions {list(EMOTIONS)}: {list(dirs.emotions)}")

        if vectors is not None and set(emos) != set(EMOTIONS):
            vectors = {e: v for e, v in vectors.items() if e in emos}
        if vectors is None and cfg.steer_with == "sweep":
            raise ValueError(f"steer_with='sweep' needs the steering sweep's vectors: {why}; run `psylens steer sweep "
                             f"--run {run.path}` first, or use steer_with='auto'/'layer'")
        sweep_refs = sorted({str(v.meta.get("scale_reference", "norm")) for v in (vectors or {}).values()})
        steering = ({"from": "sweep", "note": why,
                     # the sweep's reference (its scales multiply it); the config's scale_reference is not used
                     "scale_reference": sweep_refs[0] if len(sweep_refs) == 1 else sweep_refs,
                     "vectors": {e: {"file": v.meta.get("file"), "layer": v.meta.get("layer"), "layers": list(v.layers),
                                     "scale": v.meta.get("scale"), "scale_reference": v.meta.get("scale_reference"),
                                     "alpha": v.alpha} for e, v in vectors.items()}}
                    if vectors is not None else
                    {"from": "config", "layer": int(layer), "scale": cfg.scale, "scale_reference": cfg.scale_reference,
                     "note": f"the directions at layer {layer} × {cfg.scale} the "
                             f"{'' if cfg.scale_reference == 'norm' else cfg.scale_reference + ' '}residual norm ({why})"})
        log.info("feels_matrix and read_back steer with %s", steering["note"])
        results: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        fw = feel_words()
        lens_words = {e: sorted(set(fw.get(e, [])) | set(concept_words().get(e, []))) for e in emos}
        todo = list(GATES)
        for name in _progress(todo, progress, "validation gates"):
            log.info("gate %s", name)
            if name == "feels_matrix":
                ctx = feel_contexts()[: cfg.n_contexts or None]
                results[name] = G.feels_matrix(model, dirs, layer, words=fw, contexts=ctx, emotions=emos, scale=cfg.scale,
                                               n_random=cfg.n_random, seed=cfg.seed, batch_size=cfg.batch_size,
                                               vectors=vectors, scale_reference=cfg.scale_reference)
            elif name == "implicit_scenarios":
                groups = list(dict.fromkeys(s.group for s in stimuli.load("emotions")))[: cfg.n_scenarios or None]
                scen = [s for s in stimuli.load("emotions") if s.label in emos and s.group in set(groups)]
                x = torch.cat([
                    text_means(model, [s.text for s in test], [layer], desc="reading held-out stories", **read)[:, 0],
                    text_means(model, [s.text for s in scen], [layer], desc="reading scenarios", **read)[:, 0],
                ])
                results[name] = G.implicit_scenarios(
                    dirs, layer, x, [s.label for s in test] + [s.label for s in scen],
                    sets=["stories"] * len(test) + ["emotions"] * len(scen),
                    groups=[f"story:{s.group}:{s.label}" for s in test] + [f"scenario:{s.group}" for s in scen],
                    texts=[s.text for s in test] + [s.text for s in scen], control=control, emotions=emos, seed=cfg.seed,
                )
            elif name == "dose_response":
                tps = [t for t in dose_templates() if t["emotion"] in dirs.emotions]
                if not tps:
                    skipped[name] = "the directions have none of the dose templates' emotions"
                    continue
                texts = [t["template"].replace("{n}", str(v)) for t in tps for v in t["levels"]]
                x = text_means(model, texts, [layer], desc="reading dose templates", **read)[:, 0].double()
                proj, k = {}, 0
                for t in tps:
                    n = len(t["levels"])
                    proj[t["id"]] = (x[k : k + n] @ dirs[t["emotion"], layer].double()).tolist()
                    k += n
                results[name] = G.dose_response(tps, proj, seed=cfg.seed)
            elif name == "geometry":
                if not set(concepts) <= set(dirs.emotions):
                    skipped[name] = (f"needs directions for all {len(concepts)} concepts; the {cfg.source} directions have "
                                     f"{len(dirs.emotions)}")
                    continue
                results[name] = G.geometry(dirs, layer, concept_info(), control=control, seed=cfg.seed)
            elif name == "logit_lens":
                results[name] = G.logit_lens(model, dirs, layer, words=lens_words, emotions=emos, seed=cfg.seed)
            elif name == "read_back":
                prompts = stimuli.load("steering_prompts").texts[: cfg.n_prompts]
                results[name] = G.read_back(model, dirs, layer, prompts, emotions=emos, scale=cfg.scale,
                                            max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, batch_size=max(cfg.batch_size, 32),
                                            vectors=vectors, scale_reference=cfg.scale_reference,
                                            fluency=cfg.read_back_fluency)
            elif name == "preferences":
                acts = _even(list(ACTIVITIES), cfg.n_activities, key=lambda a: a[1])
                results[name] = preferences(model, dirs, layer, activities=acts, emotions=emos,
                                            batch_size=max(cfg.batch_size, 32), seed=cfg.seed,
                                            vectors=vectors, scale=cfg.scale, scale_reference=cfg.scale_reference)
            for table, df in results[name].tables.items():
                run.write_table(art.table_file(name, table), df)
                step.output(art.table_file(name, table))

        gates_out: dict[str, Any] = {}
        for name, res in results.items():
            gates_out[name] = {**res.to_dict(), "gated": bool(res.get("gated", True)),
                               "tables": {t: art.table_file(name, t) for t in res.tables}}
        for name, why in skipped.items():
            gates_out[name] = {"value": None, "threshold": None, "control": None, "passed": False, "gated": False,
                               "skipped": why}
        gated = [g for g in gates_out.values() if g["gated"]]
        summary = {
            "schema_version": art.SCHEMA_VERSION,
            "source": cfg.source,
            "layer": int(layer),
            "gates": gates_out,
            "passed": int(sum(g["passed"] for g in gated)),
            "total": len(gated),
            "steering": steering,
            "quick": cfg.quick,
            "reduced": ({"n_contexts": cfg.n_contexts, "n_prompts": cfg.n_prompts, "n_activities": cfg.n_activities,
                         "n_extraction_prompts": cfg.n_extraction_prompts, "max_new_tokens": cfg.max_new_tokens,
                         "n_stories_per_concept": cfg.n_stories_per_concept, "n_neutral": cfg.n_neutral,
                         "n_scenarios": cfg.n_scenarios, "n_test_stories": cfg.n_test_stories, "every_layer": cfg.every_layer,
                         "note": "--quick: fewer contexts, prompts, tokens, activities, extraction prompts, training "
                                 "stories, neutral texts and scenarios than the full suite"
                                 + ("" if cfg.every_layer else "; story directions only at the layers the gates use")}
                        if cfg.quick else None),
            "model": getattr(model, "spec", None),
            "directions": {"file": art.DIRECTIONS, "kind": dict(dirs.meta).get("kind", cfg.source),
                           "concepts": list(dirs.emotions), "layers": [int(v) for v in dirs.layers],
                           "control_file": art.CONTROL_DIRECTIONS},
            "config": {**cfg.to_dict(), "layer": layer},
            "seconds": round(time.time() - t0, 1),
        }
        run.write_json(art.SUMMARY, summary, nan="null")
        step.output(art.SUMMARY)
        step.note(passed=summary["passed"], total=summary["total"], source=cfg.source, layer=int(layer))
    return summary
