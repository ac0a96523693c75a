"""``psylens circuits``: each emotion's circuit found, proven by ablation and enhancement, written to ``RUN/circuits/``.

:func:`run_circuits` per emotion ``e`` (file names in :mod:`psylens.circuits.artifacts`):

1. the direction of ``e`` at the read-out layer ``L`` (``--source``: ``probes`` =
   ``RUN/probes/directions.safetensors``, ``expression`` = :func:`psylens.steering.expression.expression_directions`,
   ``stories`` = the validation suite's story directions), and the signal of :mod:`psylens.circuits.signal`;
2. scores on the *discovery* scenarios of the built-in ``emotions`` set (``direct`` and ``atp`` for
   every head and neuron, ``patching`` for the top ``patch_heads`` / ``patch_neurons`` by ``atp``),
   with the baseline = mean over those scenarios' ``neutral`` events (``baseline="scenario"``: each
   stimulus' own scenario's neutral event, for ``atp`` and ``patching``; ablations keep the mean);
3. the circuit (:func:`psylens.circuits.circuit.select`; with selection mode ``drop``, cut on the
   discovery scenarios by :func:`psylens.circuits.ablation.smallest_prefix` — the summary's ``selection``
   records the search);
4. on *held-out* scenarios (never used for scoring or selection): ablation curves (mean and zero) against
   size-matched random sets, enhancement, faithfulness and completeness, sublayer influence;
5. on the *eval* set (``--eval FILE.jsonl``; default: the held-out ``test`` split of the built-in
   ``stories`` for the six emotions, grouped by topic): the full circuit's drop against random sets;
6. the top neurons' top-activating stimuli.

Each finished emotion is checkpointed in ``circuits/partial/`` (same config: a re-run resumes there).
Read-out layer default: ``RUN/probes/summary.json``'s ``best_layer`` when the run has probes, else
:func:`psylens.validation.suite.default_layer` (0.45 of the depth). Source default: ``probes`` when
``RUN/probes/directions.safetensors`` exists, else ``expression``.

Footgun: probe directions are fitted on all 160 ``emotions`` scenarios (cross-validated for their
accuracy only), so "held-out" means held out from circuit discovery, not from the direction. The
``stories`` eval set is held out from both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from psylens.circuits import artifacts as art
from psylens.circuits.ablation import (
    ablation_curve,
    curve_sizes,
    drop_ci,
    enhancement,
    faithfulness_completeness,
    smallest_prefix,
)
from psylens.circuits.circuit import Circuit, Selection, select
from psylens.circuits.scores import UnitScores, attribution, patching, spearman
from psylens.circuits.signal import (
    READOUTS,
    Baseline,
    Edit,
    Prepared,
    contrast_weights,
    is_grouped,
    prepare,
    projections,
    scenario_baseline,
    unit_baseline,
    unit_contrast,
)
from psylens.circuits.sublayers import sublayer_influence
from psylens.stimuli import EMOTIONS

__all__ = ["CircuitsConfig", "run_circuits", "SOURCES", "BASELINES", "MODULATION_JUDGES", "modulation_judges",
           "default_readout_layer", "default_readout", "split_scenarios",
           "stories_eval", "attribution_cost", "drop_ci"]

log = logging.getLogger(__name__)
SOURCES = ("probes", "expression", "stories")
BASELINES = ("neutral", "scenario")  # what atp and patching patch a unit to (CircuitsConfig.baseline)
MODULATION_JUDGES = ("probe", "llm")  # text judges beside the NRC lexicon (CircuitsConfig.modulation_judges)


@dataclass(frozen=True)
class CircuitsConfig:
    """What ``psylens circuits`` runs.

    ``emotions``: which of the six; ``source``: direction source (``None``: probes if the run has them,
    else expression); ``layer``: read-out layer (``None``: the default, see the module doc);
    ``eval_file``: held-out stimuli JSONL (``None``: the stories' test split). ``n_discovery`` /
    ``n_heldout``: scenarios of the ``emotions`` set for scoring / for validation (disjoint, drawn by
    ``seed``). ``patch_heads`` / ``patch_neurons``: units verified by real patching. ``n_random`` (≥ 5):
    random sets per size; ``curve_points``: sizes on the ablation curve; ``factor``: enhancement
    scale; ``alphas``: sublayer injection strengths (empty: skip); ``n_top_neurons`` neurons shown
    with their ``n_top_stimuli`` top-activating stimuli. ``modulation`` (slow: generation): also judge circuit
    modulation (``modulation_op``: ``scale`` or ``shift``, see :mod:`psylens.circuits.modulation`; its strengths
    ``modulation_factors``, ``None``: the op's default grid) vs steering vs prompting (its scales
    ``modulation_steer_scales``, multiples of the read-out layer's residual norm; ``None``:
    ``ModulationConfig().steer_scales``), under ``modulation_fluency``, judged beside the NRC lexicon by the
    text judges ``modulation_judges`` (:data:`MODULATION_JUDGES`; built on the model itself). ``n_expression_prompts``: with ``source``
    ``expression``, the first that many of its extraction prompts (``None``: all 24; fewer is cheaper
    and noisier). ``baseline``: what ``atp`` and ``patching`` patch a unit to — ``"neutral"`` (default), the
    mean over the discovery scenarios' neutral events; ``"scenario"``, each stimulus' own scenario's neutral
    event (:func:`psylens.circuits.signal.scenario_baseline`). Mean ablation always writes the mean (the
    held-out and eval sets have no neutral event of the discovery scenarios). ``readout``: where each
    stimulus' projection is read — ``"mean"`` over its text tokens or its ``"last"`` token (``None``: the
    probes' ``positions`` when the directions are the run's probes, else ``"mean"``).
    """

    emotions: tuple[str, ...] = EMOTIONS
    source: str | None = None
    layer: int | None = None
    eval_file: str | None = None
    n_discovery: int = 40
    n_heldout: int = 20
    selection: Selection = field(default_factory=Selection)
    baseline: str = "neutral"
    readout: str | None = None
    patch_heads: int = 50
    patch_neurons: int = 50
    methods: tuple[str, ...] = ("mean", "zero")
    curve_points: int = 5
    n_random: int = 5
    factor: float = 2.0
    alphas: tuple[float, ...] = (0.25, 0.5, 1.0)
    n_sublayer_stimuli: int = 12
    n_top_neurons: int = 10
    n_top_stimuli: int = 5
    batch_size: int = 16
    seed: int = 0
    measure_cost: bool = True
    modulation: bool = False
    n_modulation_prompts: int = 12
    n_modulation_contexts: int = 12
    modulation_fluency: str = "relative"
    n_expression_prompts: int | None = None
    modulation_scale_reference: str = "norm"
    modulation_op: str = "scale"
    modulation_factors: tuple[float, ...] | None = None
    modulation_steer_scales: tuple[float, ...] | None = None
    modulation_judges: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "emotions", tuple(self.emotions))
        bad = [e for e in self.emotions if e not in EMOTIONS]
        if bad or not self.emotions:
            raise ValueError(f"emotions {bad or '[]'} are not among {list(EMOTIONS)}; give some of them, e.g. joy,anger")
        if self.source is not None and self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not one of {SOURCES}")
        if self.layer is not None and (isinstance(self.layer, bool) or self.layer < 0):
            raise ValueError(f"layer must be a non-negative integer or None, got {self.layer!r}")
        if self.n_discovery < 2 or self.n_heldout < 2:
            raise ValueError(f"n_discovery and n_heldout must be at least 2 scenarios, got {self.n_discovery}, {self.n_heldout}")
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline {self.baseline!r} is not one of {BASELINES}: neutral (the mean over the discovery "
                             "scenarios' neutral events) or scenario (each stimulus' own scenario's neutral event)")
        if self.readout is not None and self.readout not in READOUTS:
            raise ValueError(f"readout {self.readout!r} is not one of {READOUTS} (or None: the probes' positions): mean "
                             "(over each text's tokens) or last (its last token)")
        if self.n_random < 5:
            raise ValueError(f"n_random must be at least 5 random sets, got {self.n_random}")
        if self.n_expression_prompts is not None and (isinstance(self.n_expression_prompts, bool)
                                                      or self.n_expression_prompts < 1):
            raise ValueError(f"n_expression_prompts must be a positive integer or None (all), got {self.n_expression_prompts!r}")
        bad_m = [m for m in self.methods if m not in ("mean", "zero")]
        if bad_m or "mean" not in self.methods:
            raise ValueError(f"methods must be 'mean' or 'mean' and 'zero' (the summary reports mean ablation); got {self.methods}")
        from psylens.circuits.modulation import FLUENCY

        if self.modulation_fluency not in FLUENCY:
            raise ValueError(f"modulation_fluency {self.modulation_fluency!r} is not one of {FLUENCY}: relative (the steering "
                             "sweep's criterion), relative_greedy (diversity against greedy text) or drop")
        from psylens.steering.sweep import check_scale_reference

        check_scale_reference(self.modulation_scale_reference, "modulation_scale_reference")
        from psylens.circuits.modulation import CIRCUIT_OPS

        if self.modulation_op not in CIRCUIT_OPS:
            raise ValueError(f"modulation_op {self.modulation_op!r} is not one of {CIRCUIT_OPS}: scale (multiply the "
                             "circuit's units) or shift (add each unit's emotion contrast)")
        for name, default in (("modulation_factors", "the op's default grid"),
                              ("modulation_steer_scales", "ModulationConfig's steering grid")):
            val = getattr(self, name)
            if val is not None:
                object.__setattr__(self, name, tuple(float(f) for f in val))
                if not getattr(self, name) or not all(np.isfinite(getattr(self, name))):
                    raise ValueError(f"{name} must be one or more finite strengths (or None for {default}), got {val}")
        object.__setattr__(self, "modulation_judges", tuple(self.modulation_judges))
        bad_j = [j for j in self.modulation_judges if j not in MODULATION_JUDGES]
        if bad_j or len(set(self.modulation_judges)) != len(self.modulation_judges):
            raise ValueError(f"modulation_judges {list(self.modulation_judges)} must be distinct names among "
                             f"{MODULATION_JUDGES} (the NRC lexicon always judges): probe (a probe reads the text) or "
                             "llm (the model is asked which emotion the text expresses)")
        if isinstance(self.selection, Mapping):
            object.__setattr__(self, "selection", Selection.from_dict(self.selection))
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "alphas", tuple(float(a) for a in self.alphas))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["emotions"] = list(self.emotions)
        d["methods"] = list(self.methods)
        d["alphas"] = list(self.alphas)
        d["modulation_judges"] = list(self.modulation_judges)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CircuitsConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown circuits settings {unknown}; valid: {sorted(cls.__dataclass_fields__)}")
        kw = dict(d)
        for k in ("emotions", "methods", "alphas", "modulation_judges"):
            if k in kw:
                kw[k] = tuple(kw[k])
        for k in ("modulation_factors", "modulation_steer_scales"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


def default_readout_layer(run: Any, n_layers: int) -> tuple[int, str]:
    """``(layer, why)``: the probes' best layer when ``RUN/probes/summary.json`` has one, else 0.45 of the depth."""
    from psylens.probes import artifacts as pa
    from psylens.validation.suite import default_layer

    if run is not None and run.has(pa.SUMMARY):
        try:
            best = run.read_json(pa.SUMMARY).get("best_layer")
        except Exception:  # a corrupt summary: fall back, saying so
            best = None
        if isinstance(best, int) and 0 <= best < n_layers:
            return best, "probes best_layer"
    return default_layer(n_layers), "default (0.45 of the depth)"


def split_scenarios(groups: Sequence[str], n_discovery: int, n_heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """Two disjoint scenario lists drawn by ``seed`` from the distinct ``groups``."""
    uniq = sorted(set(groups))
    if n_discovery + n_heldout > len(uniq):
        raise ValueError(f"{n_discovery} discovery + {n_heldout} held-out scenarios asked; the set has {len(uniq)}")
    perm = np.random.default_rng(seed).permutation(len(uniq))
    return [uniq[i] for i in perm[:n_discovery]], [uniq[i] for i in perm[n_discovery : n_discovery + n_heldout]]


def stories_eval() -> Any:
    """The built-in ``stories`` test split (held out by topic) for the six emotions, grouped by topic."""
    from psylens import stimuli

    st = stimuli.load("stories")
    keep = [s for s in st if s.label in EMOTIONS and (s.meta or {}).get("split") == "test"]
    return stimuli.Stimuli(keep, name="stories-test")


def _load_directions(model: Any, run: Any, source: str, layer: int, batch_size: int,
                     n_expression_prompts: int | None = None) -> Any:
    from psylens.probes import Directions

    if source == "probes":
        from psylens.probes import artifacts as pa

        path = run.file(pa.DIRECTIONS)
        if not path.is_file():
            raise ValueError(f"--source probes reads {str(path)!r}, which does not exist: run `psylens probe` on this run "
                             "first or use --source expression|stories")
        dirs = Directions.load(path)
    elif source == "expression":
        from psylens.steering.expression import EXTRACTION_PROMPTS, expression_directions

        dirs = expression_directions(model, EXTRACTION_PROMPTS[:n_expression_prompts], emotions=EMOTIONS, layers=[layer],
                                     batch_size=batch_size)
    else:
        from psylens.validation.directions import load_or_fit_story_directions, story_directions

        from psylens.validation import artifacts as va

        if run is not None and run.has(va.DIRECTIONS):
            dirs = load_or_fit_story_directions(model, run)
        else:
            dirs = story_directions(model, layers=[layer])
    if layer not in dirs.layers:
        raise ValueError(f"the {source} directions have no layer {layer} (they have {list(dirs.layers)}); pick --layer among those")
    if dirs.d_model != int(model.d_model):
        raise ValueError(f"the {source} directions have d_model {dirs.d_model}; the model has {model.d_model}")
    return dirs


def _prep(model: Any, stim: Any, batch_size: int, readout: str = "mean") -> Prepared:
    return prepare(model, [s.text for s in stim], labels=[s.label for s in stim], groups=[s.group for s in stim],
                   ids=[s.id for s in stim], batch_size=batch_size, readout=readout)


def default_readout(run: Any, source: str) -> tuple[str, str]:
    """``(readout, why)``: the probes' ``positions`` when ``source`` is ``"probes"`` and
    ``RUN/probes/summary.json`` records one, else ``"mean"``."""
    from psylens.probes import artifacts as pa

    if source == "probes" and run is not None and run.has(pa.SUMMARY):
        try:
            pos = run.read_json(pa.SUMMARY).get("positions")
        except Exception:  # a corrupt summary: fall back, saying so
            pos = None
        if pos in READOUTS:
            return str(pos), "probes positions"
    return "mean", "default"


def attribution_cost(model: Any, texts: Sequence[str], *, repeats: int = 3, batch_size: int = 16) -> dict[str, float]:
    """Wall time of ``direct`` + ``atp`` for every head and neuron of every layer over one batch of ``texts``
    (read-out = the last layer) vs one plain forward pass of the same batch (both best of ``repeats``)."""
    n = min(len(texts), batch_size)
    labels = ["joy" if i % 2 == 0 else "anger" for i in range(n)]
    groups = [f"g{i // 2}" for i in range(n)]
    data = prepare(model, list(texts)[:n], labels=labels, groups=groups, batch_size=n)
    w = contrast_weights(labels, groups, "joy", ("joy", "anger"))
    L = int(model.n_layers) - 1
    v = torch.randn(int(model.d_model), generator=torch.Generator().manual_seed(0))
    v = v / v.norm()
    base = unit_baseline(model, data, range(L + 1))
    b = data.batches[0]
    hf = model.hf_model
    dev = model.device
    pos = (b.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def fwd() -> None:
        with torch.no_grad():
            hf(input_ids=b.input_ids.to(dev), attention_mask=b.attention_mask.to(dev), position_ids=pos.to(dev), use_cache=False)

    fwd()
    t_f, t_a = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fwd()
        t_f.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        attribution(model, data, w, v, L, base)
        t_a.append(time.perf_counter() - t0)
    return {"forward_seconds": min(t_f), "attribution_seconds": min(t_a), "ratio": min(t_a) / min(t_f),
            "batch": n, "tokens": int(b.attention_mask.sum())}


def _fingerprint(cfg: CircuitsConfig, extra: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps({**cfg.to_dict(), **extra}, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _top_neurons(model: Any, data: Prepared, circuit: Circuit, n: int, k: int) -> pd.DataFrame:
    from psylens.circuits.signal import _forward
    from psylens.interventions import StopForward, tap

    chosen = list(zip(circuit.neurons, circuit.neuron_scores))[:n]
    if not chosen:
        return pd.DataFrame(columns=list(art.TOP_NEURON_COLUMNS))
    layers = sorted({la for (la, _), _ in chosen})
    acts = {u: torch.zeros(len(data)) for u, _ in chosen}
    for b in data.batches:
        rec: dict[tuple[str, int], torch.Tensor] = {}

        def keep(site: str, lay: int, x: torch.Tensor, rec: dict = rec) -> None:
            rec[site, lay] = x.detach()
            if lay == layers[-1]:  # nothing above the top neuron's layer is needed (nor the unembedding)
                raise StopForward

        with torch.no_grad(), tap(model, [("mlp_post", la) for la in layers], keep):
            try:
                _forward(model, b)
            except StopForward:
                pass
        m = b.text_mask.float()
        for (la, i), _ in chosen:
            x = rec["mlp_post", la][..., i].float().cpu()
            acts[(la, i)][list(b.rows)] = (x * m).sum(1) / m.sum(1)
    rows = []
    for (la, i), s in chosen:
        order = torch.argsort(acts[(la, i)], descending=True)[:k].tolist()
        for r, j in enumerate(order):
            rows.append({"emotion": circuit.emotion, "layer": la, "neuron": i, "score": s, "rank": r,
                         "stimulus_id": data.ids[j], "label": data.labels[j], "text": data.texts[j],
                         "activation": float(acts[(la, i)][j])})
    return pd.DataFrame(rows)


def _summarise(abl: pd.DataFrame, enh: pd.DataFrame, split: str) -> dict[str, Any]:
    full = abl[(abl.split == split) & (abl.method == "mean")]
    n_max = int(full.n_units.max())
    full = full[full.n_units == n_max]
    rnd = full[full.kind == "random"]["drop"].to_numpy()
    out = {"drop": float(full[full.kind == "circuit"]["drop"].iloc[0]), "random_drop": float(rnd.mean()),
           "random_drop_std": float(rnd.std(ddof=1)), "method": "mean", "split": split, "n_units": n_max,
           "n_random": int(len(rnd))}
    z = abl[(abl.split == split) & (abl.method == "zero") & (abl.n_units == n_max)]
    if len(z):
        zr = z[z.kind == "random"]["drop"].to_numpy()
        out.update(drop_zero=float(z[z.kind == "circuit"]["drop"].iloc[0]), random_drop_zero=float(zr.mean()),
                   random_drop_zero_std=float(zr.std(ddof=1)))
    return out


def run_circuits(
    model: Any,
    run: Any,
    config: CircuitsConfig | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Find and test each emotion's circuit; write ``RUN/circuits/`` (see the module doc); return the summary.

    Footgun: every measurement hooks the model inside its own call only; nothing stays attached.
    The run takes roughly (patch_heads + patch_neurons + ~2·(L+1)·len(alphas) + the ablation grid)
    forward passes (to the read-out layer) per emotion — minutes per emotion on a CPU for SmolLM2.
    """
    from psylens import stimuli
    from psylens.probes import artifacts as pa
    from psylens.runs import Run, open_run

    t0 = time.time()
    run = run if isinstance(run, Run) else open_run(run)
    cfg = config or CircuitsConfig()
    n_layers = int(model.n_layers)
    if cfg.layer is not None:
        if not 0 <= cfg.layer < n_layers:
            raise ValueError(f"layer {cfg.layer} out of range: the model has {n_layers} layers (0–{n_layers - 1})")
        layer, layer_why = cfg.layer, "given"
    else:
        layer, layer_why = default_readout_layer(run, n_layers)
    source = cfg.source or ("probes" if run.has(pa.DIRECTIONS) else "expression")
    dirs = _load_directions(model, run, source, layer, cfg.batch_size, cfg.n_expression_prompts)
    emos = [e for e in cfg.emotions if e in dirs.emotions]
    if not emos:
        raise ValueError(f"the {source} directions have none of {list(cfg.emotions)} (they have {list(dirs.emotions)})")
    contrast = [e for e in EMOTIONS if e in dirs.emotions]
    if len(contrast) < 2:
        raise ValueError(f"the signal contrasts emotions; the {source} directions hold only {contrast}")
    readout, readout_why = (cfg.readout, "given") if cfg.readout is not None else default_readout(run, source)

    every = stimuli.load("emotions")
    disc_g, held_g = split_scenarios([s.group for s in every], cfg.n_discovery, cfg.n_heldout, cfg.seed)
    sd, sh = set(disc_g), set(held_g)
    disc = _prep(model, [s for s in every if s.group in sd and s.label in contrast], cfg.batch_size, readout)
    held = _prep(model, [s for s in every if s.group in sh and s.label in contrast], cfg.batch_size, readout)
    neutral = _prep(model, [s for s in every if s.group in sd and s.label == "neutral"], cfg.batch_size)
    if cfg.eval_file:
        ev_stim = stimuli.load(cfg.eval_file)
        eval_name = str(cfg.eval_file)
    else:
        ev_stim = stories_eval()
        eval_name = "stories-test"
    ev_stim = [s for s in ev_stim if s.label in contrast]
    if not ev_stim:
        raise ValueError(f"the eval stimuli {eval_name!r} have no texts labelled with {contrast}")
    ev = _prep(model, ev_stim, cfg.batch_size, readout)
    if cfg.baseline == "scenario":
        score_base = scenario_baseline(model, disc, neutral, range(layer + 1), progress=progress)
        baseline = Baseline(heads=score_base.heads, neurons=score_base.neurons)  # the pooled mean, for ablations
    else:
        score_base = baseline = unit_baseline(model, neutral, range(layer + 1), progress=progress)
    judges = modulation_judges(model, cfg.modulation_judges) if cfg.modulation and cfg.modulation_judges else None

    fp = _fingerprint(cfg, {"layer": layer, "source": source, "readout": readout, "model": getattr(model, "spec", None)})
    n_heads, d_mlp = int(baseline.heads.shape[1]), int(baseline.neurons.shape[1])

    step_cfg = {**cfg.to_dict(), "layer": layer, "source": source, "readout": readout}
    with run.step("circuits", step_cfg) as step:
        sel_dirs = dirs.select(emotions=list(dirs.emotions), layers=[layer])
        sel_dirs.save(step.output(art.DIRECTIONS))
        side = art.DIRECTIONS.replace(".safetensors", ".json")
        if run.has(side):
            step.output(side)
        results: dict[str, Any] = {}
        tensors: dict[str, torch.Tensor] = {}
        tables: dict[str, list[pd.DataFrame]] = {"ablation": [], "enhancement": [], "sublayers": [], "top": [],
                                                 "modulation": []}
        it: Any = emos
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(emos, desc="circuits")
        for e in it:
            part = run.file(art.partial_file(e))
            if part.is_file():
                saved = json.loads(part.read_text())
                if saved.get("fingerprint") == fp:
                    log.info("circuits %s: resumed from %s", e, part)
                    results[e] = saved["summary"]
                    tensors.update(run.read_tensors(art.partial_file(e).replace(".json", ".safetensors")))
                    for k in tables:
                        tables[k].append(pd.DataFrame(saved["tables"].get(k, [])))
                    continue
            res, ten, tab, circ = _one_emotion(model, e, source, dirs[e, layer], layer, contrast, disc, held, ev, baseline,
                                               cfg, n_heads, d_mlp, progress, score_base, judges)
            circ.save(step.output(art.circuit_file(e)))
            step.output(art.circuit_tensors_file(e))
            results[e] = res
            tensors.update(ten)
            for k in tables:
                tables[k].append(tab[k])
            from psylens.io import write_json

            run.write_tensors(art.partial_file(e).replace(".json", ".safetensors"), {k: v.contiguous() for k, v in ten.items()})
            write_json(part, {"fingerprint": fp, "summary": res,
                              "tables": {k: tab[k].to_dict(orient="records") for k in tables}}, nan="null")
        for e in emos:  # resumed emotions: their circuit files were written by the earlier run
            step.output(art.circuit_file(e))
            step.output(art.circuit_tensors_file(e))
        cost: dict[str, float] | None = None
        if cfg.measure_cost:
            cost = attribution_cost(model, disc.texts, batch_size=cfg.batch_size)
        run.write_tensors(art.SCORES, {k: v.float().contiguous() for k, v in tensors.items()},
                          {"readout_layer": str(layer), "source": source})
        step.output(art.SCORES)
        for name, rel, cols in (("ablation", art.ABLATION, art.ABLATION_COLUMNS),
                                ("enhancement", art.ENHANCEMENT, art.ENHANCEMENT_COLUMNS),
                                ("sublayers", art.SUBLAYERS, art.SUBLAYER_COLUMNS),
                                ("top", art.TOP_NEURONS, art.TOP_NEURON_COLUMNS),
                                ("modulation", art.MODULATION, art.MODULATION_COLUMNS)):
            frames = [f for f in tables[name] if len(f)]
            df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(cols))
            run.write_table(rel, df)
            step.output(rel)
        summary = {
            "schema_version": art.SCHEMA_VERSION,
            "emotions": results,
            "cost_ratio": float(cost["ratio"]) if cost else float("nan"),
            "cost": cost,
            "readout_layer": int(layer),
            "readout_layer_from": layer_why,
            "source": source,
            "baseline": cfg.baseline,
            "readout": readout,
            "readout_from": readout_why,
            "model": getattr(model, "spec", None),
            "splits": {"discovery": {"set": "emotions", "scenarios": disc_g},
                       "heldout": {"set": "emotions", "scenarios": held_g},
                       "eval": {"set": eval_name, "n": len(ev)}},
            "config": step_cfg,
            "seconds": round(time.time() - t0, 1),
        }
        run.write_json(art.SUMMARY, summary, nan="null")
        step.output(art.SUMMARY)
        step.note(emotions=emos, readout_layer=int(layer), source=source)
    shutil.rmtree(run.file(art.PARTIAL), ignore_errors=True)
    return summary


def _one_emotion(model: Any, e: str, source: str, v: torch.Tensor, layer: int, contrast: list[str], disc: Prepared,
                 held: Prepared, ev: Prepared, baseline: Any, cfg: CircuitsConfig, n_heads: int, d_mlp: int,
                 progress: bool, score_base: Any = None, judges: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, pd.DataFrame], Circuit]:
    w_d = contrast_weights(disc.labels, disc.groups, e, contrast)
    w_h = contrast_weights(held.labels, held.groups, e, contrast)
    ev_pooled = not is_grouped(ev.labels, ev.groups, contrast)
    w_e = contrast_weights(ev.labels, ev.groups, e, contrast, pooled=ev_pooled)
    sb = baseline if score_base is None else score_base
    sc: UnitScores = attribution(model, disc, w_d, v, layer, sb, progress=progress)
    sc = patching(model, disc, w_d, v, sc, sb, top_heads=cfg.patch_heads, top_neurons=cfg.patch_neurons, progress=progress)
    circ = select(e, source, sc, cfg.selection, model=getattr(model, "spec", None))
    sel_rec: dict[str, Any] = {"mode": cfg.selection.mode, "n_candidates": len(circ.units)}
    if cfg.selection.mode == "drop" and len(circ.units):
        if sc.signal > 0:
            circ, found = smallest_prefix(model, disc, w_d, v, circ, baseline, target=cfg.selection.drop,
                                          confidence=cfg.selection.confidence, seed=cfg.seed)
            sel_rec.update(found)
        else:
            sel_rec.update(reached=False, reason=f"discovery signal {sc.signal:.4g} is not positive; circuit left uncut")
    ok_h = ~torch.isnan(sc.patching_heads)
    ok_n = ~torch.isnan(sc.patching_neurons)
    rho_h = spearman(sc.atp_heads[ok_h].numpy(), sc.patching_heads[ok_h].numpy())
    rho_n = spearman(sc.atp_neurons[ok_n].numpy(), sc.patching_neurons[ok_n].numpy())

    p0 = projections(model, held, v, layer)
    s0 = float(torch.from_numpy(w_h) @ p0.double())
    sizes = curve_sizes(len(circ.units), cfg.curve_points)
    abl = ablation_curve(model, held, w_h, v, circ, baseline, methods=cfg.methods, n_random=cfg.n_random, seed=cfg.seed,
                         split="heldout", before=s0, sizes=sizes, progress=progress)
    if len(circ.units):
        p1 = projections(model, held, v, layer, Edit(circ.units, "mean"), baseline)
        ci = drop_ci(p0, p1, w_h, held.groups, seed=cfg.seed)
    else:
        ci = (float("nan"), float("nan"))
    pe0 = projections(model, ev, v, layer)
    se0 = float(torch.from_numpy(w_e) @ pe0.double())
    abl_e = ablation_curve(model, ev, w_e, v, circ, baseline, methods=("mean",), n_random=cfg.n_random, seed=cfg.seed,
                           split="eval", before=se0, sizes=[len(circ.units)] if len(circ.units) else [])
    if len(circ.units):
        pe1 = projections(model, ev, v, layer, Edit(circ.units, "mean"), baseline)
        ci_e = drop_ci(pe0, pe1, w_e, ev.ids if ev_pooled else ev.groups, strata=ev.labels if ev_pooled else None,
                       seed=cfg.seed)
    else:
        ci_e = (float("nan"), float("nan"))
    enh = enhancement(model, held, w_h, v, circ, baseline, factors=(cfg.factor,), n_random=cfg.n_random, seed=cfg.seed,
                      before=s0) if len(circ.units) else pd.DataFrame(columns=list(art.ENHANCEMENT_COLUMNS))
    fc = faithfulness_completeness(model, held, w_h, v, circ, baseline, before=s0)
    own = [i for i, lab in enumerate(held.labels) if lab == e][: cfg.n_sublayer_stimuli]
    sub = (sublayer_influence(model, held.subset(own, model, cfg.batch_size), v, layer, emotion=e, alphas=cfg.alphas,
                              progress=progress) if cfg.alphas else pd.DataFrame(columns=list(art.SUBLAYER_COLUMNS)))
    top = _top_neurons(model, _concat(disc, held, model, cfg.batch_size), circ, cfg.n_top_neurons, cfg.n_top_stimuli)

    mod = pd.DataFrame(columns=list(art.MODULATION_COLUMNS))
    mod_s: dict[str, Any] | None = None
    if cfg.modulation and len(circ.units):
        shift = unit_contrast(model, disc, w_d, range(layer + 1)) if cfg.modulation_op == "shift" else None
        mod, mod_s = modulate(model, circ, v, contrast, n_prompts=cfg.n_modulation_prompts,
                              n_contexts=cfg.n_modulation_contexts, fluency=cfg.modulation_fluency, seed=cfg.seed,
                              progress=progress, scale_reference=cfg.modulation_scale_reference,
                              op=cfg.modulation_op, shift=shift, factors=cfg.modulation_factors,
                              steer_scales=cfg.modulation_steer_scales, judges=judges)
    both = pd.concat([abl, abl_e], ignore_index=True)
    if len(circ.units):
        a_h = _summarise(both, enh, "heldout")
        a_e = _summarise(both, enh, "eval")
        r_g = enh[enh.kind == "random"]["gain"].to_numpy()
        enh_s = {"gain": float(enh[enh.kind == "circuit"]["gain"].iloc[0]), "random_gain": float(r_g.mean()),
                 "random_gain_std": float(r_g.std(ddof=1)), "factor": cfg.factor, "split": "heldout"}
    else:
        nan = float("nan")
        a_h = {"drop": nan, "random_drop": nan, "random_drop_std": nan}
        a_e = dict(a_h)
        enh_s = {"gain": nan, "random_gain": nan}
    res = {
        "n_heads": len(circ.heads), "n_neurons": len(circ.neurons),
        "selection": sel_rec,
        "ablation": {**a_h, "drop_ci95": list(ci)},
        "enhancement": enh_s,
        "atp_vs_patching_spearman": rho_h,
        "atp_vs_patching_spearman_neurons": rho_n,
        "n_patched": {"heads": int(ok_h.sum()), "neurons": int(ok_n.sum())},
        "faithfulness": fc["faithfulness"], "faithfulness_normalized": fc["faithfulness_normalized"],
        "completeness": fc["completeness"],
        "signals": {k: v_ for k, v_ in fc.items() if k.startswith("signal")},
        "signal_discovery": sc.signal,
        "eval": {"drop": a_e["drop"], "random_drop": a_e["random_drop"], "random_drop_std": a_e.get("random_drop_std"),
                 "drop_ci95": list(ci_e), "signal": se0, "pooled": ev_pooled},
        "modulation": mod_s,
    }
    ten: dict[str, torch.Tensor] = {}
    for s in art.SCORE_NAMES:
        for k in art.UNIT_KINDS:
            ten[art.score_key(e, s, k)] = sc.get(s, k).float()
    for s in art.SUBLAYER_KINDS:
        vals = torch.full((int(model.n_layers),), float("nan"))
        if len(sub):
            for lay, infl in sub[sub.sublayer == s].groupby("layer")["influence"].first().items():
                vals[int(lay)] = float(infl)
        ten[art.influence_key(e, s)] = vals
    return res, ten, {"ablation": both, "enhancement": enh, "sublayers": sub, "top": top, "modulation": mod}, circ


def modulate(
    model: Any, circ: Circuit, v: torch.Tensor, emotions: Sequence[str], *, n_prompts: int = 12, n_contexts: int = 12,
    fluency: str = "relative", seed: int = 0, progress: bool = False, scale_reference: str = "norm",
    op: str = "scale", shift: Any = None, factors: Sequence[float] | None = None,
    steer_scales: Sequence[float] | None = None, judges: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Circuit modulation vs steering with ``v`` (``[d_model]``, read-out layer) vs prompting for ``circ``'s emotion on
    the first ``n_prompts`` built-in steering prompts and ``n_contexts`` "… I feel" contexts, judged against
    ``emotions``' words: the table (:data:`~psylens.circuits.artifacts.MODULATION_COLUMNS`) and the summary's
    ``modulation`` block (see :func:`_modulation_summary`). ``op``/``shift``: the circuit op
    (:class:`~psylens.circuits.modulation.ModulationConfig`'s ``circuit_op``) and, for ``"shift"``, the per-unit
    contrast it adds (:func:`~psylens.circuits.signal.unit_contrast`); ``factors``: the circuit's strengths (``None``:
    the op's default grid, ``ModulationConfig().factors`` or ``.shift_factors``); ``steer_scales``: steering's
    strengths (``None``: ``ModulationConfig().steer_scales``); ``judges``: text judges beside the NRC lexicon
    (``{name: judge}``, e.g. :func:`modulation_judges`), each a ``judge_<name>`` hit rate per method."""
    from psylens import stimuli
    from psylens.circuits.modulation import METHODS, ModulationConfig, modulation, paired_vs
    from psylens.concepts import feel_contexts, feel_words

    mod = modulation(model, circ, v, stimuli.load("steering_prompts").texts[:n_prompts], emotions=emotions,
                     words=feel_words(), contexts=feel_contexts()[:n_contexts],
                     config=ModulationConfig(seed=seed, fluency=fluency, scale_reference=scale_reference,
                                             circuit_op=op, **_strengths(op, factors, steer_scales)),
                     shift=shift, judges=judges, progress=progress)
    return mod, _modulation_summary(mod, ("none", *METHODS), paired_vs(mod, "circuit", "steering", seed=seed))


def modulation_judges(model: Any, names: Sequence[str]) -> dict[str, Any]:
    """The text judges ``names`` (:data:`MODULATION_JUDGES`) built on ``model`` itself, unsteered (the probe judge
    trains a probe on the built-in ``emotions`` set first: about a minute on a small CPU model)."""
    from psylens.steering.judges import make_judge

    bad = [n for n in names if n not in MODULATION_JUDGES]
    if bad:
        raise ValueError(f"unknown modulation judges {bad}; valid: {MODULATION_JUDGES} (the NRC lexicon always judges)")
    return {n: make_judge(n, model=model) for n in names}


def _strengths(op: str, factors: Sequence[float] | None,
               steer_scales: Sequence[float] | None = None) -> dict[str, tuple[float, ...]]:
    """``ModulationConfig`` keywords for the circuit's strengths under ``op`` and steering's (``None``: the default grid)."""
    out: dict[str, tuple[float, ...]] = {}
    if factors is not None:
        out["shift_factors" if op == "shift" else "factors"] = tuple(float(f) for f in factors)
    if steer_scales is not None:
        out["steer_scales"] = tuple(float(s) for s in steer_scales)
    return out


def modulate_run(
    model: Any, run: Any, emotions: Sequence[str] | None = None, *, n_prompts: int = 12, n_contexts: int = 12,
    fluency: str = "relative", seed: int = 0, progress: bool = False, scale_reference: str = "norm",
    op: str = "scale", batch_size: int = 16, factors: Sequence[float] | None = None,
    steer_scales: Sequence[float] | None = None, judges: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`modulate` on the circuits a finished ``psylens circuits`` run holds (``emotions``: default all of them),
    e.g. under another fluency criterion or circuit ``op``; returns ``{emotion: modulation block}`` and writes
    nothing. With ``op="shift"`` the units' contrasts are recomputed on the run's discovery scenarios (its
    summary's ``splits``)."""
    from psylens.probes import Directions

    done = run.read_json(art.SUMMARY)["emotions"]
    emos = list(done) if emotions is None else list(emotions)
    missing = [e for e in emos if e not in done]
    if missing:
        raise ValueError(f"the run at {run.path} has no circuit for {missing} (it has {list(done)}); "
                         "run `psylens circuits` for them first or leave them out")
    dirs = Directions.load(run.file(art.DIRECTIONS))
    contrast = [e for e in EMOTIONS if e in dirs.emotions]
    disc = _discovery(model, run, contrast, batch_size) if op == "shift" else None
    out: dict[str, dict[str, Any]] = {}
    for e in emos:
        circ = Circuit.load(run.file(art.circuit_file(e)))
        shift = None
        if disc is not None:
            shift = unit_contrast(model, disc, contrast_weights(disc.labels, disc.groups, e, contrast),
                                  range(circ.readout_layer + 1))
        out[e] = modulate(model, circ, dirs[e, circ.readout_layer], contrast, n_prompts=n_prompts,
                          n_contexts=n_contexts, fluency=fluency, seed=seed, progress=progress,
                          scale_reference=scale_reference, op=op, shift=shift, factors=factors,
                          steer_scales=steer_scales, judges=judges)[1]
    return out


def _discovery(model: Any, run: Any, contrast: Sequence[str], batch_size: int) -> Prepared:
    """The discovery stimuli of a finished circuits run (its summary's ``splits``)."""
    from psylens import stimuli

    split = run.read_json(art.SUMMARY).get("splits", {}).get("discovery", {})
    if split.get("set") != "emotions" or not split.get("scenarios"):
        raise ValueError(f"the circuits summary at {run.path} records no discovery scenarios of the 'emotions' set "
                         f"(got {split!r}); re-run `psylens circuits` with this version")
    keep = set(split["scenarios"])
    return _prep(model, [s for s in stimuli.load("emotions") if s.group in keep and s.label in contrast], batch_size)


def _modulation_summary(mod: pd.DataFrame, methods: Sequence[str], paired: Mapping[str, Any]) -> dict[str, Any]:
    """``summary["emotions"][e]["modulation"]``: each method at its chosen strength, the fluency criterion and its
    reference, ``random`` (the size-matched random sets at the circuit's strength: their count, mean feels shift,
    row wins, mean read-back win rate, how many were fluent), ``circuit_op``, ``circuit_minus_steering`` (paired
    intervals) and ``circuit_at_least_steering`` (the issue's test: circuit's row win and read-back win rate ≥
    steering's, both at strengths that pass the criterion)."""
    keys = ("strength", "feels_shift", "row_win", "read_back_win", "read_back_win_ci_low", "read_back_win_ci_high",
            "fluency", "perplexity_ratio", "distinct_2", "zlib_ratio", "lexicon_hit_rate", "fluent", "n_fluency_failed")
    chosen = mod[mod.chosen]
    keys += tuple(c for c in mod.columns if str(c).startswith("judge_"))  # further text judges, when asked for
    out: dict[str, Any] = {
        m: {k: (bool(r[k]) if k in ("row_win", "fluent") else int(r[k]) if k == "n_fluency_failed" else float(r[k]))
            for k in keys if k in r}
        for m in methods for _, r in chosen[chosen.method == m].iterrows()}
    out["fluency_criterion"] = mod.attrs.get("fluency_criterion")
    out["fluency_reference"] = mod.attrs.get("fluency_reference")
    out["scale_reference"] = mod.attrs.get("scale_reference", "norm")  # what steering's strengths multiply
    out["circuit_op"] = mod.attrs.get("circuit_op", "scale")
    rnd = mod[mod.method == "random"]
    out["random"] = ({"n": int(len(rnd)), "strength": float(rnd.strength.iloc[0]),
                      "feels_shift": float(rnd.feels_shift.mean()), "row_wins": int(rnd.row_win.astype(bool).sum()),
                      "read_back_win": float(rnd.read_back_win.mean()), "fluent": int(rnd.fluent.astype(bool).sum())}
                     if len(rnd) else None)
    out["circuit_minus_steering"] = dict(paired)
    c, s = out["circuit"], out["steering"]
    out["circuit_at_least_steering"] = bool(c["fluent"] and s["fluent"] and c["row_win"] >= s["row_win"]
                                            and c["read_back_win"] >= s["read_back_win"])
    return out


def _concat(a: Prepared, b: Prepared, model: Any, batch_size: int) -> Prepared:
    return prepare(model, list(a.texts) + list(b.texts), labels=list(a.labels) + list(b.labels),
                   groups=list(a.groups) + list(b.groups), ids=list(a.ids) + list(b.ids), batch_size=batch_size,
                   readout=a.readout)

