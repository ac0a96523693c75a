"""The "features" section of ``psylens compare``: reasoning steps of both models through the base step SAE
and a BatchTopK crosscoder.

>>> headline = run_features(run, pair, FeaturesConfig(n_tasks=12, samples=2))     # doctest: +SKIP

1. **Traces.** Both models write chain-of-thought traces for the *same* ``psych`` test tasks
   (``n_tasks`` spread over the task kinds, ``samples`` each, ``max_new_tokens``) with the *same per-trace
   seeds* — the trace generator of :mod:`psylens.saes.traces` (chat template, ``Let's think step by step.``,
   per-row Gumbel sampling) — so a model against itself writes identical traces. Base trace ``i`` and tuned
   trace ``i`` are of the same task and sample: every interval below resamples these pairs.
2. **Behaviour labels** (:func:`psylens.saes.labels.label_step` on each step, the task as context): per
   trace the number of steps carrying each label, and the share of the trace's steps; the mean per model,
   and tuned − base, with 95% paired bootstrap intervals (:func:`label_frequencies`). Does RL add
   perspective-taking or reflection?
3. **The base step SAE** (``RUN/saes/<name>/``, trained by ``psylens sae train``; its site, layer, pooling
   and segmentation are used for everything here): each model's step activations *on its own traces*
   (:func:`psylens.saes.step_activations`) → SAE codes → per-feature firing frequency per model and its
   difference with an interval (``feature_frequencies.parquet``); **diversity**: distinct features active
   in a trace, per model (:func:`feature_frequencies`).
4. **The crosscoder** (:mod:`psylens.compare.crosscoder`): both models read *every* trace (both models'
   traces), giving paired step activations at one layer; a BatchTopK crosscoder is trained on them; its
   latents are classed by decoder-norm ratio *and* latent scaling, beside a noise-control crosscoder.

Without a step SAE in the run, step 3 is left out (``sae``, ``frequencies``, ``diversity`` are null) and
the crosscoder reads ``layer`` (default: the middle layer) at ``site`` with ``pooling``; the section then
runs only when asked (``without_sae=True``) or when the run holds traces (``RUN/traces/traces.jsonl``).

Footguns: the labels are cue rules (read their accuracy in docs/saes.md); an SAE trained on the base model's
activations reads the tuned model's activations off-distribution — a feature that fires less on the tuned
model may have moved rather than vanished (the crosscoder is the symmetric view); traces from a tiny
``max_new_tokens`` are cut mid-thought.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from psylens.compare import artifacts as art

__all__ = [
    "FeaturesConfig",
    "find_step_sae",
    "is_sae_path",
    "check_sae_folder",
    "sae_folder",
    "feature_traces",
    "trace_labels",
    "label_frequencies",
    "feature_frequencies",
    "paired_mean_ci",
    "run_features",
    "features_reason",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeaturesConfig:
    """Settings of the features section (defaults sized for SmolLM2 on a CPU; ``quick`` ones in the pipeline).

    Attributes:
        n_tasks, samples, max_new_tokens, temperature, batch_size, format: the traces (per model).
        sae: the step SAE: its folder name under ``RUN/saes/``, or the path of a step-SAE folder anywhere (a
            value with a ``/`` — e.g. another run's ``runs/base/saes/step-l15`` — checked here: it must hold
            ``step_sae.json`` of a step, not token, SAE); ``None``: the run's only one, else the first by name.
            ``psylens compare --sae``.
        without_sae: run the labels and the crosscoder even when the run has no SAE and no traces
            (``psylens compare --without-sae``); with ``sae`` set it is refused (``ValueError``).
        layer, site, pooling, segmentation: where the crosscoder reads without an SAE (``layer=None``: the
            middle layer); with an SAE its own settings are used.
        crosscoder: train the crosscoder (and its noise control).
        d_latent, k, steps, lr, cc_batch_size: the crosscoder's size and training.
        n_boot: bootstrap resamples for every interval.
        seed: trace seeds, crosscoder initialisation, bootstrap.
    """

    n_tasks: int = 24
    samples: int = 2
    max_new_tokens: int = 160
    temperature: float = 0.7
    batch_size: int = 8
    format: str = "auto"
    sae: str | None = None
    without_sae: bool = False
    layer: int | None = None
    site: str = "resid_post"
    pooling: str = "delimiter"
    segmentation: str = "sentence"
    crosscoder: bool = True
    d_latent: int = 512
    k: int = 16
    steps: int = 2000
    lr: float = 1e-3
    cc_batch_size: int = 256
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_tasks", "samples", "max_new_tokens", "batch_size", "d_latent", "k", "steps", "cc_batch_size",
                     "n_boot"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"features.{name} must be a positive integer, got {v!r}")
        if self.k > self.d_latent:
            raise ValueError(f"features.k={self.k} is larger than d_latent={self.d_latent}; choose k <= d_latent")
        if not isinstance(self.temperature, (int, float)) or not self.temperature >= 0:
            raise ValueError(f"features.temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"features.lr must be a positive number, got {self.lr!r}")
        if self.format not in ("auto", "chat", "raw"):
            raise ValueError(f"features.format {self.format!r} is not one of 'auto', 'chat', 'raw'")
        if self.segmentation not in ("sentence", "paragraph"):
            raise ValueError(f"features.segmentation {self.segmentation!r} is not one of 'sentence', 'paragraph'")
        if self.pooling not in ("delimiter", "mean"):
            raise ValueError(f"features.pooling {self.pooling!r} is not one of 'delimiter', 'mean'")
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0):
            raise ValueError(f"features.layer must be a non-negative integer or None (the middle layer), got {self.layer!r}")
        if self.sae is not None:
            if not isinstance(self.sae, str) or not self.sae.strip():
                raise ValueError(f"features.sae must be a step SAE's folder name under RUN/saes/ or a folder path, got "
                                 f"{self.sae!r}; leave it None to use the run's own step SAE")
            if self.without_sae:
                raise ValueError(f"features.sae={self.sae!r} and features.without_sae=True exclude each other: set sae to "
                                 "read that step SAE, or without_sae=True (and sae=None) for the labels and crosscoder alone")
            if is_sae_path(self.sae):
                check_sae_folder(self.sae)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# what the run holds
# --------------------------------------------------------------------------------------------
def is_sae_path(sae: str) -> bool:
    """Whether ``FeaturesConfig.sae`` names a folder path (a ``/`` or the OS separator in it, or ``~``-rooted)
    rather than a folder name under ``RUN/saes/``."""
    return "/" in sae or os.sep in sae or sae.startswith("~")


def check_sae_folder(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``step_sae.json`` of a step-SAE folder (what ``psylens sae train`` writes), or a ``ValueError`` that says
    what is wrong with it: no such folder, not an SAE folder, an SAE trained on tokens."""
    from psylens.saes import artifacts as sart

    d = Path(folder).expanduser()
    if not d.is_dir():
        raise ValueError(f"step SAE folder {str(folder)!r} does not exist; give the folder `psylens sae train` wrote "
                         f"(RUN/saes/<name>/, holding {sart.STEP_SAE}), or its name when it is in this run's saes/")
    info = sart.read_step_info(d)
    if info.get("tokens") or info.get("pooling") == "tokens":
        raise ValueError(f"the SAE in {str(folder)!r} was trained on tokens (--tokens); the comparison reads one vector "
                         "a step: give a step SAE (trained without --tokens)")
    return info


def sae_folder(run: Any, sae: str) -> Path:
    """The folder of the step SAE ``sae`` (a name under ``RUN/saes/`` or a folder path, see :func:`is_sae_path`)."""
    from psylens.saes import artifacts as sart

    return Path(sae).expanduser() if is_sae_path(sae) else run.file(sart.sae_dir(sae))


def find_step_sae(run: Any, name: str | None = None) -> str | None:
    """The name of a step SAE in ``RUN/saes/`` (one with ``step_sae.json``): ``name`` if given, else the first.
    A folder path (:func:`is_sae_path`) is checked (:func:`check_sae_folder`) and returned as given."""
    from psylens.saes import artifacts as sart

    if name is not None and is_sae_path(name):
        check_sae_folder(name)
        return name
    root = run.file(sart.DIR)
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and (d / sart.STEP_SAE).is_file()) if root.is_dir() else []
    if name is not None:
        if name not in names:
            raise ValueError(f"no step SAE {name!r} in {str(root)!r}; the run has {names or 'none'} "
                             "(train one with `psylens sae train`)")
        return name
    return names[0] if names else None


def features_reason(run: Any, cfg: FeaturesConfig) -> str | None:
    """Why the section cannot run on ``run`` (``None`` when it can)."""
    from psylens.saes import artifacts as sart

    if find_step_sae(run, cfg.sae) is not None or cfg.without_sae or run.has(sart.TRACES):
        return None
    return ("no step SAE in this run (RUN/saes/<name>/step_sae.json) and no traces (RUN/traces/traces.jsonl): train "
            "one on the base model's traces (`psylens traces`, then `psylens sae train`) into this run or point at one "
            "(`psylens compare --sae DIR`, FeaturesConfig(sae=DIR)), or run the behaviour labels and the crosscoder "
            "alone (`psylens compare --without-sae`, FeaturesConfig(without_sae=True))")


# --------------------------------------------------------------------------------------------
# traces
# --------------------------------------------------------------------------------------------
def feature_traces(pair: Any, cfg: FeaturesConfig, *, progress: bool = False) -> dict[str, list[dict[str, Any]]]:
    """``{"base": [...], "tuned": [...]}``: trace records (``psylens traces`` keys + ``"model"``), row for row paired.

    Same tasks, same per-trace seeds, same batches for both models (so identical models write identical traces).
    """
    from tqdm.auto import tqdm

    from psylens import tasks as T
    from psylens.compare.activations import balanced_tasks
    from psylens.saes.traces import _generate_batch, format_trace_prompt, trace_seed

    items = balanced_tasks(cfg.n_tasks, cfg.seed)
    jobs = [(t, k, f"{t.id}#{k}", trace_seed(cfg.seed, t.id, k)) for t in items for k in range(cfg.samples)]
    prompts = {t.id: T.choice_prompt(t, chain_of_thought=True) for t in items}
    out: dict[str, list[dict[str, Any]]] = {}
    for name in art.MODEL_NAMES:
        model = getattr(pair, name)
        formatted = {tid: format_trace_prompt(model, p, cfg.format) for tid, p in prompts.items()}
        recs: list[dict[str, Any]] = []
        batches = [jobs[i : i + cfg.batch_size] for i in range(0, len(jobs), cfg.batch_size)]
        for batch in tqdm(batches, desc=f"traces ({name})", disable=not progress, leave=False):
            texts = _generate_batch(model, [formatted[j[0].id] for j in batch], [j[3] for j in batch],
                                    cfg.max_new_tokens, float(cfg.temperature))
            for (task, _k, tid, s), text in zip(batch, texts):
                choice = T.parse_letter(text, len(task.choices))
                recs.append({"id": tid, "task_id": task.id, "kind": task.kind, "prompt": prompts[task.id], "text": text,
                             "answer": T.LETTERS[choice] if choice is not None else None,
                             "correct": choice is not None and task.choices[choice] == task.answer, "seed": s,
                             "model": name})
        out[name] = recs
    return out


def trace_labels(traces: Sequence[Mapping[str, Any]], segmentation: str = "sentence") -> list[list[list[str]]]:
    """Behaviour labels of every step of every trace: ``[trace][step] -> [label, ...]`` (the task as context)."""
    from psylens.saes.labels import label_step
    from psylens.saes.steps import trace_steps

    out = []
    for t in traces:
        steps = trace_steps(t, segmentation).steps
        out.append([label_step(s.strip(), t.get("prompt")) for s in steps])
    return out


# --------------------------------------------------------------------------------------------
# statistics (paired over traces of the same task and sample)
# --------------------------------------------------------------------------------------------
def _resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, n]`` multiplicities of each pair in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, size=(n_boot, n))
    w = np.zeros((n_boot, n))
    np.add.at(w, (np.repeat(np.arange(n_boot), n), pick.ravel()), 1.0)
    return w


def _q(samples: np.ndarray) -> list[float]:
    lo, hi = np.quantile(samples, [0.025, 0.975], axis=0)
    return [float(lo), float(hi)]


def paired_mean_ci(base: Sequence[float] | np.ndarray, tuned: Sequence[float] | np.ndarray, *, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """Means of ``base`` and ``tuned`` (one value a pair) and of ``tuned − base``, each with a 95% paired bootstrap interval."""
    b, t = np.asarray(base, dtype=np.float64), np.asarray(tuned, dtype=np.float64)
    if b.shape != t.shape or b.ndim != 1 or len(b) == 0:
        raise ValueError(f"base and tuned need one value per pair and the same length, got {b.shape} and {t.shape}")
    w = _resample_weights(len(b), n_boot, seed) / len(b)  # [B, n]
    sb, st = w @ b, w @ t
    diff = float(t.mean() - b.mean())
    ci = _q(st - sb)
    return {"base": float(b.mean()), "base_ci95": _q(sb), "tuned": float(t.mean()), "tuned_ci95": _q(st),
            "difference": diff, "difference_ci95": ci, "excludes_zero": bool(ci[0] > 0 or ci[1] < 0)}


def label_frequencies(
    base: Sequence[Sequence[Sequence[str]]],
    tuned: Sequence[Sequence[Sequence[str]]],
    *,
    labels: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per label: mean steps carrying it per trace (``base``, ``tuned``, ``difference`` with paired intervals) and
    the mean share of a trace's steps (``share_*``; a trace without steps counts 0).

    ``base[i]`` and ``tuned[i]``: the steps' labels of the two models' traces of the same task and sample.
    """
    from psylens.saes.labels import LABELS

    if len(base) != len(tuned) or not base:
        raise ValueError(f"give one labelled trace per pair for both models; got {len(base)} base and {len(tuned)} tuned")
    names = tuple(labels) if labels is not None else LABELS
    out: dict[str, dict[str, Any]] = {}
    for lab in names:
        cnt = [np.array([sum(lab in s for s in tr) for tr in side], dtype=np.float64) for side in (base, tuned)]
        share = [np.array([sum(lab in s for s in tr) / len(tr) if tr else 0.0 for tr in side]) for side in (base, tuned)]
        rec = paired_mean_ci(cnt[0], cnt[1], n_boot=n_boot, seed=seed)
        sh = paired_mean_ci(share[0], share[1], n_boot=n_boot, seed=seed)
        rec.update({"share_base": sh["base"], "share_tuned": sh["tuned"], "share_difference": sh["difference"],
                    "share_difference_ci95": sh["difference_ci95"]})
        out[lab] = rec
    return out


def feature_frequencies(
    z_base: Float[Tensor, "n_b f"],
    trace_base: Int[Tensor, " n_b"],
    z_tuned: Float[Tensor, "n_t f"],
    trace_tuned: Int[Tensor, " n_t"],
    n_pairs: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Per-feature firing frequency of each model and per-trace diversity, paired over traces.

    ``z_*``: SAE codes of each model's steps; ``trace_*``: the pair (trace) index of each row, in ``[0, n_pairs)``.
    Frequency = steps where the feature fires / steps (pooled; the interval resamples pairs). Returns the table
    (columns of ``feature_frequencies.parquet`` without ``label``) and the diversity record
    (:func:`paired_mean_ci` of distinct active features per trace).
    """
    import pandas as pd

    def per_trace(z: Tensor, tr: Tensor) -> tuple[np.ndarray, np.ndarray]:
        if z.shape[0] != tr.shape[0]:
            raise ValueError(f"{z.shape[0]} code rows but {tr.shape[0]} trace indices; give one trace index per row")
        if tr.numel() and (int(tr.min()) < 0 or int(tr.max()) >= n_pairs):
            raise ValueError(f"trace indices must lie in [0, {n_pairs}), got [{int(tr.min())}, {int(tr.max())}]")
        fire = (z > 0).double()
        c = torch.zeros(n_pairs, z.shape[1], dtype=torch.float64).index_add_(0, tr.long(), fire)
        steps = torch.bincount(tr.long(), minlength=n_pairs).double()
        return c.numpy(), steps.numpy()

    if z_base.shape[1] != z_tuned.shape[1]:
        raise ValueError(f"z_base has {z_base.shape[1]} features, z_tuned {z_tuned.shape[1]}: use one SAE for both")
    cb, sb = per_trace(z_base, trace_base)
    ct, st = per_trace(z_tuned, trace_tuned)
    w = _resample_weights(n_pairs, n_boot, seed)  # [B, P]
    fb = (w @ cb) / np.maximum(w @ sb, 1e-12)[:, None]
    ft = (w @ ct) / np.maximum(w @ st, 1e-12)[:, None]
    base = cb.sum(0) / max(sb.sum(), 1e-12)
    tuned = ct.sum(0) / max(st.sum(), 1e-12)
    lo, hi = np.quantile(ft - fb, [0.025, 0.975], axis=0)
    table = pd.DataFrame({"feature": np.arange(cb.shape[1], dtype=np.int64), "base": base, "tuned": tuned,
                          "difference": tuned - base, "difference_lo": lo, "difference_hi": hi,
                          "changed": (lo > 0) | (hi < 0)})
    diversity = paired_mean_ci((cb > 0).sum(1), (ct > 0).sum(1), n_boot=n_boot, seed=seed)
    return table, diversity


# --------------------------------------------------------------------------------------------
# the section
# --------------------------------------------------------------------------------------------
def _steps(model: Any, traces: list[dict[str, Any]], where: dict[str, Any], progress: bool) -> tuple[Tensor, Tensor]:
    from psylens.saes.steps import step_activations

    return step_activations(model, traces, site=where["site"], layer=where["layer"], pooling=where["pooling"],
                            mode=where["segmentation"], progress=progress)


def _sae_labels(folder: Path) -> dict[int, str]:
    """feature → the behaviour label it is the SAE's best latent for (from the SAE folder's features.json)."""
    from psylens.saes import artifacts as sart

    path = folder / sart.FEATURES
    if not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text(encoding="utf-8")).get("labels") or {}
    except (ValueError, OSError, AttributeError):
        return {}
    out: dict[int, str] = {}
    for lab, rec in table.items():
        if isinstance(rec, dict) and rec.get("feature") is not None:
            out.setdefault(int(rec["feature"]), lab)
    return out


def run_features(run: Any, pair: Any, cfg: FeaturesConfig | None = None, *, progress: bool = False) -> dict[str, Any]:
    """Write the features section's files (:mod:`psylens.compare.artifacts`); return the headline numbers.

    ``ValueError`` when nothing applies (see :func:`features_reason`) or the SAE was trained on tokens.
    """
    from psylens.io import atomic_write_text
    from psylens.saes import artifacts as sart

    cfg = cfg or FeaturesConfig()
    why = features_reason(run, cfg)
    if why is not None:
        raise ValueError(why)
    found = find_step_sae(run, cfg.sae)
    name = folder = None
    sae = sae_info = None
    if found is not None:
        from psylens.saes.train import load_sae

        folder = sae_folder(run, found)
        name = folder.name
        sae_info = sart.read_step_info(folder)
        if sae_info.get("tokens") or sae_info.get("pooling") == "tokens":
            raise ValueError(f"the step SAE {found!r} was trained on tokens (--tokens); the comparison reads one vector "
                             "a step: train a step SAE (without --tokens) or name another with FeaturesConfig(sae=...)")
        sae = load_sae(folder)
        where = {k: sae_info[k] for k in ("site", "layer", "pooling", "segmentation")}
        base_spec = str(getattr(pair.base, "spec", ""))
        if sae_info.get("model") and base_spec and sae_info["model"] != base_spec:
            log.warning("the step SAE %r was trained on %r, the base here is %r", name, sae_info["model"], base_spec)
    else:
        layer = cfg.layer if cfg.layer is not None else pair.n_layers // 2
        if not 0 <= layer < pair.n_layers:
            raise ValueError(f"features.layer {layer} out of range: the models have {pair.n_layers} layers "
                             f"(0–{pair.n_layers - 1})")
        where = {"site": cfg.site, "layer": layer, "pooling": cfg.pooling, "segmentation": cfg.segmentation}

    with run.step("compare_features", {**cfg.to_dict(), "sae_name": name, "where": where}) as step:
        traces = feature_traces(pair, cfg, progress=progress)
        lines = [json.dumps(r, ensure_ascii=False) for m in art.MODEL_NAMES for r in traces[m]]
        atomic_write_text(run.file(art.FEATURE_TRACES), "\n".join(lines) + "\n")
        step.output(art.FEATURE_TRACES)
        n_pairs = len(traces["base"])
        labels = label_frequencies(trace_labels(traces["base"], where["segmentation"]),
                                   trace_labels(traces["tuned"], where["segmentation"]), n_boot=cfg.n_boot, seed=cfg.seed)
        # step activations: acts[(reader, writer)] = reader model on writer's traces
        acts: dict[tuple[str, str], tuple[Tensor, Tensor]] = {}
        for reader in art.MODEL_NAMES:
            for writer in art.MODEL_NAMES:
                acts[(reader, writer)] = _steps(getattr(pair, reader), traces[writer], where, progress)
        n_steps = {m: int(acts[(m, m)][0].shape[0]) for m in art.MODEL_NAMES}
        result: dict[str, Any] = {
            "schema_version": art.SCHEMA_VERSION,
            "sae": None if name is None else {"name": name, **where, "d_sae": sae_info.get("d_sae"),
                                              "model": sae_info.get("model"),
                                              # the folder it was read from when it is not this run's saes/<name>/
                                              "path": str(folder) if is_sae_path(str(found)) else None},
            "where": where,
            "traces": {"n_tasks": cfg.n_tasks, "samples": cfg.samples, "max_new_tokens": cfg.max_new_tokens,
                       "temperature": cfg.temperature, "n_traces": {m: len(traces[m]) for m in art.MODEL_NAMES},
                       "n_steps": n_steps},
            "labels": labels, "diversity": None, "frequencies": None, "crosscoder": None,
        }
        if sae is not None:
            from psylens.saes.train import encode

            zs = {}
            for m in art.MODEL_NAMES:
                a, idx = acts[(m, m)]
                if a.shape[0] == 0:
                    raise ValueError(f"the {m} model's traces have no steps; raise features.max_new_tokens")
                zs[m] = (encode(sae, a)[0], idx[:, 0])
            table, diversity = feature_frequencies(zs["base"][0], zs["base"][1], zs["tuned"][0], zs["tuned"][1],
                                                   n_pairs, n_boot=cfg.n_boot, seed=cfg.seed)
            lab_of = _sae_labels(folder)
            table["label"] = [lab_of.get(int(f), "") for f in table["feature"]]
            run.write_table(art.FEATURE_FREQUENCIES, table)
            step.output(art.FEATURE_FREQUENCIES)
            changed = table[table["changed"]]
            result["diversity"] = diversity
            result["frequencies"] = {
                "n_features": int(len(table)), "n_changed": int(len(changed)),
                "l1_distance": float(table["difference"].abs().sum()),
                "top_up": [int(f) for f in changed.sort_values("difference", ascending=False)["feature"].head(10)
                           if table.loc[f, "difference"] > 0],
                "top_down": [int(f) for f in changed.sort_values("difference")["feature"].head(10)
                             if table.loc[f, "difference"] < 0],
            }
        if cfg.crosscoder:
            xb = torch.cat([acts[("base", w)][0] for w in art.MODEL_NAMES])
            xt = torch.cat([acts[("tuned", w)][0] for w in art.MODEL_NAMES])
            result["crosscoder"] = _crosscoder(run, step, xb, xt, cfg, where, progress)
        run.write_json(art.FEATURES, result, nan="null")
        step.output(art.FEATURES)
        headline = _headline(result)
        step.note(**{k: v for k, v in headline.items() if not isinstance(v, (dict, list))})
    return headline


def _crosscoder(run: Any, step: Any, xb: Tensor, xt: Tensor, cfg: FeaturesConfig, where: dict[str, Any],
                progress: bool) -> dict[str, Any]:
    from psylens.compare.crosscoder import crosscoder_fit, latent_classes, noise_control, train_crosscoder

    if xb.shape[0] < 2:
        raise ValueError(f"only {xb.shape[0]} paired steps for the crosscoder; raise features.n_tasks or max_new_tokens")
    k = min(cfg.k, cfg.d_latent)
    kw = {"d_latent": cfg.d_latent, "k": k, "steps": cfg.steps, "lr": cfg.lr, "seed": cfg.seed,
          "batch_size": cfg.cc_batch_size, "progress": progress}
    cc = train_crosscoder(xb, xt, **kw)
    classes = latent_classes(cc, xb, xt)
    control, sigma = noise_control(xb, xt, **kw)
    run.write_tensors(art.CROSSCODER_WEIGHTS, cc.state(), metadata={"k": str(k), "layer": str(where["layer"]),
                                                                   "site": str(where["site"])})
    run.write_table(art.CROSSCODER_LATENTS, classes.table)
    c, n = classes.counts, control.counts
    norm_only = sum(int(((classes.table["ratio"] >= t) if side == "t" else (classes.table["ratio"] <= 1 - t)).sum())
                    for side, t in (("t", classes.thresholds["specific"]), ("b", classes.thresholds["specific"])))
    rec = {
        "schema_version": art.SCHEMA_VERSION,
        "settings": {**where, "d_latent": cfg.d_latent, "k": k, "steps": cfg.steps, "lr": cfg.lr, "seed": cfg.seed,
                     "batch_size": min(cfg.cc_batch_size, int(xb.shape[0])), "n_rows": int(xb.shape[0])},
        "fit": crosscoder_fit(cc, xb, xt),
        "thresholds": classes.thresholds,
        "counts": c,
        "noise": {"kind": "crosscoder on (x_base, x_base + Gaussian noise with the per-dimension variance of "
                          "x_tuned − x_base), next seed", "sigma": sigma, "counts": n},
        "tuned_only": c["tuned_only"], "tuned_only_noise": n["tuned_only"],
        "tuned_only_beyond_noise": max(0, c["tuned_only"] - n["tuned_only"]),
        "base_only": c["base_only"], "base_only_noise": n["base_only"],
        "base_only_beyond_noise": max(0, c["base_only"] - n["base_only"]),
        "norm_ratio_only": norm_only,
        "top_tuned_only": [int(i) for i in classes.table[classes.table["cls"] == "tuned_only"]
                           .sort_values("frequency", ascending=False)["latent"].head(10)],
    }
    run.write_json(art.CROSSCODER, rec, nan="null")
    for f in (art.CROSSCODER, art.CROSSCODER_LATENTS, art.CROSSCODER_WEIGHTS):
        step.output(f)
    return {k: rec[k] for k in ("counts", "tuned_only", "tuned_only_noise", "tuned_only_beyond_noise", "base_only",
                                "base_only_noise", "base_only_beyond_noise", "norm_ratio_only")} | {"fit": rec["fit"]}


def _headline(result: dict[str, Any]) -> dict[str, Any]:
    labs = result["labels"]
    h: dict[str, Any] = {
        "sae": result["sae"]["name"] if result["sae"] else None,
        "layer": result["where"]["layer"],
        "n_traces": result["traces"]["n_traces"]["base"],
        "labels_changed": sorted(k for k, v in labs.items() if v["excludes_zero"]),
        "label_difference": {k: v["difference"] for k, v in labs.items()},
    }
    if result["diversity"] is not None:
        h["diversity_difference"] = result["diversity"]["difference"]
        h["diversity_difference_ci95"] = result["diversity"]["difference_ci95"]
        h["features_changed"] = result["frequencies"]["n_changed"]
    cc = result["crosscoder"]
    if cc is not None:
        h.update({k: cc[k] for k in ("tuned_only", "tuned_only_noise", "tuned_only_beyond_noise", "base_only_beyond_noise",
                                     "norm_ratio_only")})
    return h
