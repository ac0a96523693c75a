"""``psylens sae train`` as a function: traces of a run → step activations → SAE → metrics and features.

>>> train_step_sae("runs/traces", layer=12, arch="batchtopk", d_sae=1024, k=16)   # doctest: +SKIP
PosixPath('runs/traces/saes/L12-resid_post-delimiter-batchtopk-1024')

Writes ``RUN/saes/<name>/`` (see :mod:`psylens.saes.artifacts`) through ``run.step("sae-<name>")``:
SAELens' own files, ``step_sae.json``, ``metrics.json`` (held-out steps), ``features.json`` and
``held_out.json``. Step activations are cached in ``RUN/saes/steps/`` per (site, layer, pooling,
segmentation), so a sweep over SAE sizes reads the model once per layer.

The held-out traces (``held_out`` of them, by a seeded hash of the trace id) never reach the
trainer; latents are matched to labels on the training steps and scored on the held-out ones.

Footgun: ``--tokens`` trains on every reasoning token instead of one vector per step (many more
rows; slower), and adds the cross-entropy loss recovered when the reconstruction is spliced in.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from psylens.saes import artifacts as art
from psylens.saes.data import StepSet, split_by_trace
from psylens.saes.train import SAETrainConfig, encode, evaluate_sae, load_sae, save_sae, train_sae, training_warnings

__all__ = ["train_step_sae", "default_name", "step_labels"]

log = logging.getLogger(__name__)

def default_name(layer: int, site: str, pooling: str, arch: str, d_sae: int, tokens: bool = False) -> str:
    return f"L{layer}-{site}-{'tokens' if tokens else pooling}-{arch}-{d_sae}"


def step_labels(texts: Sequence[str], contexts: Sequence[str | None] | None = None) -> dict[str, Tensor]:
    """Behaviour labels of each step by ``psylens.saes.labels.label_step`` (the rules): ``{label: bool [n_steps]}``.

    ``contexts``: each step's task prompt (the labeller's restatement rule compares against it).
    """
    from psylens.saes.labels import LABELS as names
    from psylens.saes.labels import label_step

    ctx = list(contexts) if contexts is not None else [None] * len(texts)
    if len(ctx) != len(texts):
        raise ValueError(f"{len(texts)} step texts but {len(ctx)} contexts; give one context per step")
    out = {k: torch.zeros(len(texts), dtype=torch.bool) for k in names}
    for i, (t, c) in enumerate(zip(texts, ctx)):
        for k in label_step(t, c):
            out[k][i] = True
    return out


def _traces_digest(traces: Sequence[Mapping[str, Any]]) -> str:
    h = hashlib.sha256()
    for t in traces:
        h.update(str(t.get("id")).encode())
        h.update(b"\0")
        h.update(str(t.get("text", "")).encode())
        h.update(b"\1")
    return h.hexdigest()[:16]


def _model_spec(run: Any, model: Any) -> str:
    if model is not None and not isinstance(model, str):
        return str(getattr(model, "spec", "custom"))
    if isinstance(model, str):
        return model
    rec = run.models.get("model")
    if not rec or not rec.get("spec"):
        raise ValueError(f"run {str(run.path)!r} names no model; pass --model (the model that wrote the traces)")
    return str(rec["spec"])


class _LazyModel:
    """Load the model only when something needs it (a cache miss, the logit lens, --tokens).

    ``device``, ``dtype`` and ``device_map`` are :func:`psylens.load_model`'s, used when ``model`` is a spec or
    ``None``; a loaded model is used as it is.
    """

    def __init__(self, model: Any, spec: str, *, device: str = "auto", dtype: str | None = None,
                 device_map: str | None = None) -> None:
        from psylens.model_options import model_kwargs

        self._model = model if model is not None and not isinstance(model, str) else None
        self.spec = spec
        self._load = model_kwargs(device, dtype, device_map)  # checked before anything loads or is written

    @property
    def dtype(self) -> str:
        """The dtype the model has, or will have once loaded (``"float32"``): step caches are kept per dtype."""
        if self._model is not None:
            return str(self._model.dtype).removeprefix("torch.")
        from psylens.models import resolve_dtype

        return str(resolve_dtype(**self._load)).removeprefix("torch.")

    def get(self) -> Any:
        if self._model is None:
            from psylens.models import load_model

            log.info("loading %s (%s)", self.spec, ", ".join(f"{k}={v}" for k, v in self._load.items() if v is not None))
            self._model = load_model(self.spec, **self._load)
        return self._model


def _step_set(run: Any, lazy: _LazyModel, traces: list[dict[str, Any]], *, site: str, layer: int, pooling: str,
              segmentation: str, progress: bool) -> StepSet:
    rel = art.steps_file(site, layer, f"{pooling}-{segmentation}")
    digest = _traces_digest(traces)
    p = run.file(rel)
    if p.is_file():
        try:
            steps, meta = StepSet.load(p)
            # caches written before the dtype was recorded were all made in float32 on the CPU
            if (meta.get("traces_digest") == digest and meta.get("model") == lazy.spec
                    and meta.get("dtype", "float32") == lazy.dtype):
                return steps
        except ValueError:
            pass
    from psylens.saes.steps import step_activations

    acts, index = step_activations(lazy.get(), traces, site=site, layer=layer, pooling=pooling, mode=segmentation,
                                   progress=progress)
    steps = StepSet.from_index(acts, index, trace_ids=[str(t.get("id", i)) for i, t in enumerate(traces)])
    p.parent.mkdir(parents=True, exist_ok=True)
    steps.save(p, meta={"traces_digest": digest, "model": lazy.spec, "dtype": lazy.dtype, "site": site, "layer": layer,
                        "pooling": pooling, "segmentation": segmentation})
    return steps


def _step_texts(traces: list[dict[str, Any]], segmentation: str) -> dict[tuple[str, int], str]:
    from psylens.saes.steps import trace_steps

    out: dict[tuple[str, int], str] = {}
    for i, t in enumerate(traces):
        tid = str(t.get("id", i))
        try:
            for s, text in enumerate(trace_steps(t, segmentation).steps):
                out[(tid, s)] = text.strip()
        except ValueError:
            continue
    return out


def train_step_sae(
    run: Any,
    *,
    layer: int,
    site: str = "resid_post",
    pooling: str = "delimiter",
    arch: str = "batchtopk",
    d_sae: int = 1024,
    k: int = 16,
    name: str | None = None,
    model: Any = None,
    segmentation: str = "sentence",
    held_out: float = 0.2,
    seed: int = 0,
    tokens: bool = False,
    features: bool = True,
    train_overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    dtype: str | None = None,
    device_map: str | None = None,
) -> Path:
    """Train one SAE on a run's traces and write its folder; returns ``RUN/saes/<name>``.

    ``run``: a run directory (or ``psylens.runs.Run``) holding ``traces/traces.jsonl``.
    ``model``: a loaded psylens ``Model``, a spec, or ``None`` (the run's model).
    ``device``, ``dtype``, ``device_map``: how ``load_model`` loads a model given by spec (or the run's).
    ``train_overrides``: other :class:`SAETrainConfig` fields (``epochs``, ``lr``, ``batch_size``, ...).
    ``overwrite``: replace an SAE already saved under ``name`` (its whole folder, steering results
    included); without it an existing SAE is a ``ValueError`` before anything loads.
    """
    from psylens.runs import Run, open_run
    from psylens.saes.traces import read_traces

    r = run if isinstance(run, Run) else open_run(run)
    if not r.has(art.TRACES):
        raise ValueError(f"run {str(r.path)!r} has no {art.TRACES}; generate traces first: psylens traces --out {r.path}")
    if segmentation not in ("sentence", "paragraph"):
        raise ValueError(f"segmentation {segmentation!r} is not one of 'sentence', 'paragraph'")
    cfg = SAETrainConfig(arch=arch, d_sae=d_sae, k=k, seed=seed, **dict(train_overrides or {}))
    name = name or default_name(layer, site, pooling, arch, d_sae, tokens)
    folder_rel = art.sae_dir(name)
    existing = r.file(folder_rel)
    if existing.exists() and not overwrite:
        what = ""
        if (existing / art.STEP_SAE).is_file():
            import json

            try:
                old = json.loads((existing / art.STEP_SAE).read_text())
                what = (f" (layer {old.get('layer')}, {old.get('site')}, {old.get('pooling')} pooling, {old.get('arch')} "
                        f"{old.get('d_sae')} latents, {old.get('n_train_steps')} training steps)")
            except (ValueError, OSError):
                what = " (its step_sae.json is unreadable)"
        raise ValueError(f"{existing} already holds an SAE{what}; give another --name, or --overwrite "
                         "(overwrite=True) to replace it and everything in its folder")
    spec = _model_spec(r, model)
    lazy = _LazyModel(model, spec, device=device, dtype=dtype, device_map=device_map)
    traces = read_traces(r.path)
    if len(traces) < 2:
        raise ValueError(f"only {len(traces)} traces in {str(r.path)!r}; an SAE with a held-out split needs more")
    ids = [str(t.get("id", i)) for i, t in enumerate(traces)]
    train_ids, held_ids = split_by_trace(ids, held_out=held_out, seed=seed)
    config = {"layer": layer, "site": site, "pooling": pooling, "arch": arch, "d_sae": d_sae, "k": k,
              "segmentation": segmentation, "held_out": held_out, "seed": seed, "tokens": tokens,
              "train": cfg.to_json()}
    with r.step(f"sae-{name}", config) as step:
        folder = r.file(folder_rel)
        if overwrite and folder.exists():
            import shutil

            shutil.rmtree(folder)  # nothing of the old SAE (features, steering) may sit beside the new one
        if tokens:
            from psylens.saes.tokens import token_activations

            by_id = dict(zip(ids, traces))
            data = token_activations(lazy.get(), [by_id[i] for i in train_ids + held_ids], site=site, layer=layer,
                                     trace_ids=train_ids + held_ids, progress=progress)
        else:
            data = _step_set(r, lazy, traces, site=site, layer=layer, pooling=pooling, segmentation=segmentation,
                             progress=progress)
        train, held = data.only(train_ids), data.only(held_ids)
        if len(held) == 0 or len(train) == 0:
            raise ValueError(f"the split left {len(train)} training and {len(held)} held-out rows; add traces")
        result = train_sae(train, cfg, exclude_traces=held_ids, progress=progress)
        save_sae(result.sae, folder)
        sae = load_sae(folder)  # what users get back: metrics are measured on the saved SAE
        metrics = evaluate_sae(sae, held, seed=seed)
        metrics.update({"schema_version": art.SCHEMA_VERSION, "train_dead_fraction": result.train_dead_fraction,
                        "train_seconds": round(result.seconds, 2), "n_train_samples": result.n_samples,
                        "sae_class": type(sae).__name__})
        problems = training_warnings(metrics, n_batches=result.n_samples // cfg.batch_size, arch=arch, k=k)
        if problems:
            metrics["warnings"] = problems
            for w in problems:
                log.warning("SAE %s: %s", name, w)
        if tokens:
            from psylens.saes.tokens import ce_loss_recovered

            by_id = dict(zip(ids, traces))
            metrics.update(ce_loss_recovered(lazy.get(), sae, [by_id[i] for i in held_ids], site=site, layer=layer,
                                             progress=progress))
        info = {
            "schema_version": art.SCHEMA_VERSION,
            "model": spec,
            "dtype": lazy.dtype,  # the dtype the step activations were read in
            "site": site,
            "layer": layer,
            "pooling": "tokens" if tokens else pooling,
            "segmentation": segmentation,
            "n_train_steps": len(train),
            "n_held_out_steps": len(held),
            "n_train_traces": len(set(train.trace_ids)),
            "n_held_out_traces": len(held_ids),
            "arch": arch,
            "saved_as": type(sae).__name__,
            "d_in": data.d,
            "d_sae": d_sae,
            "k": k,
            "tokens": tokens,
            "train": cfg.to_json(),
        }
        r.write_json(f"{folder_rel}/{art.STEP_SAE}", info)
        r.write_json(f"{folder_rel}/{art.METRICS}", metrics, nan="null")
        r.write_json(f"{folder_rel}/{art.HELD_OUT}", {"held_out": held_ids, "train": train_ids})
        for f in (art.SAE_CFG, art.SAE_WEIGHTS, art.STEP_SAE, art.METRICS, art.HELD_OUT):
            step.output(f"{folder_rel}/{f}")
        if features and not tokens:
            report = _features(lazy, sae, data, held_ids, traces, segmentation, seed)
            r.write_json(f"{folder_rel}/{art.FEATURES}", report, nan="null")
            step.output(f"{folder_rel}/{art.FEATURES}")
            step.note(labels={k: {kk: v.get(kk) for kk in ("feature", "auroc", "control_auroc")}
                              for k, v in report["labels"].items()})
        step.note(explained_variance=metrics["explained_variance"], l0=metrics["l0"],
                  dead_fraction=metrics["dead_fraction"], mse=metrics["mse"])
    return folder


def _features(lazy: _LazyModel, sae: Any, data: StepSet, held_ids: list[str], traces: list[dict[str, Any]],
              segmentation: str, seed: int) -> dict[str, Any]:
    from psylens.saes.features import features_report, logit_lens_tokens, norm_gain

    z, _ = encode(sae, data.acts)
    texts = _step_texts(traces, segmentation)
    prompts = {str(t.get("id", i)): t.get("prompt") for i, t in enumerate(traces)}
    labels = step_labels([texts.get((t, s), "") for t, s in zip(data.trace_ids, data.steps)],
                         [prompts.get(t) for t in data.trace_ids])
    m = lazy.get()
    unembed = m.hf_model.get_output_embeddings().weight
    norm = getattr(getattr(m.hf_model, "model", None), "norm", None)
    lens = logit_lens_tokens(sae.W_dec.detach(), unembed, m.tokenizer, norm_weight=norm_gain(norm, m.d_model), k=8)
    return features_report(
        z_all=z, trace_ids=data.trace_ids, steps=data.steps, positions=data.positions(),
        held_rows=data.mask(held_ids), labels=labels, decoder=sae.W_dec.detach(), texts=texts,
        logit_lens=lens, seed=seed,
    )
