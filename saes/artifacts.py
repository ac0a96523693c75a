"""The files ``psylens sae train`` (``psylens.saes.train``) writes, relative to the run.

Writers (``saes/train.py``, ``saes/features.py``) and readers (``SteeringVector.from_sae``, the
explorer's feature browser) import these names. Bump ``SCHEMA_VERSION`` when the meaning or layout
of ``step_sae.json``, ``metrics.json`` or ``features.json`` changes; it is written into each of them
as ``schema_version``.

Layout of one SAE (``RUN/saes/<name>/``)::

    cfg.json, sae_weights.safetensors      SAELens' own files: ``SAE.load_from_disk(dir)`` opens them
    step_sae.json                          model, site, layer, pooling, segmentation, n_train_steps, arch, ...
    metrics.json                           held-out explained_variance, l0, dead_fraction, mse (+ intervals)
    features.json                          per-label best feature (auroc, control_auroc) and per-feature data
    held_out.json                          the held-out trace ids (kept out of training)
    steering/summary.json                  feature steering of new traces (``psylens sae steer``):
                                           conditions, paired effects vs no steering, the target
    steering/<condition>/traces/           each condition's traces (a resumable trace run); the folder
                                           is the condition's name with ``@`` written ``_at_``

Steering conditions (keys of ``summary.json``'s ``conditions`` and ``effects``) are
``<kind>@<setting>`` (:func:`steering_condition`), besides ``none`` (no steering): kind ``feature``
(the steered latent), ``random`` (a random direction of the same norm — the first control; for
clamps, another latent of similar frequency) and ``random_feature`` (another latent's decoder column
rescaled to the same norm — the second control of additive steering); setting an alpha (``-8``),
``ablate`` or ``clamp<v>``.

Step activations are cached per (site, layer, pooling) under ``RUN/saes/steps/`` so a sweep over
SAE sizes reads the model once.

Step importance (``psylens sae anchors``, :mod:`psylens.saes.anchors`)::

    saes/anchors.parquet                   one row a step: importance (+ TV, null, KL, answer counts), labels
    saes/anchors.json                      by-label means with CIs, feature correlations, cost
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "DIR",
    "TRACES",
    "STEPS_DIR",
    "STEP_SAE",
    "METRICS",
    "FEATURES",
    "HELD_OUT",
    "SAE_CFG",
    "SAE_WEIGHTS",
    "ANCHORS",
    "ANCHORS_SUMMARY",
    "STEERING",
    "STEERING_SUMMARY",
    "STEERING_NONE",
    "FEATURE",
    "RANDOM",
    "RANDOM_FEATURE",
    "STEERING_KINDS",
    "steering_condition",
    "condition_folder",
    "sae_dir",
    "sae_file",
    "steps_file",
    "read_step_info",
]

SCHEMA_VERSION = 1
DIR = "saes"
TRACES = "traces/traces.jsonl"  # written by `psylens traces`
STEPS_DIR = f"{DIR}/steps"
STEP_SAE = "step_sae.json"
METRICS = "metrics.json"
FEATURES = "features.json"
HELD_OUT = "held_out.json"
SAE_CFG = "cfg.json"  # SAELens' config file name
SAE_WEIGHTS = "sae_weights.safetensors"  # SAELens' weights file name
ANCHORS = f"{DIR}/anchors.parquet"  # step importance table (psylens sae anchors)
ANCHORS_SUMMARY = f"{DIR}/anchors.json"  # its summary: by label, feature correlations, cost
STEERING = "steering"  # inside an SAE's folder: feature steering of new traces (psylens sae steer)
STEERING_SUMMARY = f"{STEERING}/summary.json"
STEERING_NONE = "none"  # the unsteered condition
FEATURE = "feature"  # conditions steering with the chosen latent
RANDOM = "random"  # control: a random direction of the same norm (clamps: a latent of similar frequency)
RANDOM_FEATURE = "random_feature"  # control: another latent's decoder column rescaled to the same norm
STEERING_KINDS = (FEATURE, RANDOM, RANDOM_FEATURE)


def _plain(name: str, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise ValueError(f"{what} {name!r} cannot name a folder; give a plain name such as 'L12-batchtopk-512'")
    return name


def sae_dir(name: str) -> str:
    """``saes/<name>`` — one trained SAE's folder. Footgun: ``name`` must be a plain folder name."""
    return f"{DIR}/{_plain(name, 'SAE name')}"


def sae_file(name: str, file: str) -> str:
    """``saes/<name>/<file>`` (``file`` one of ``STEP_SAE``, ``METRICS``, ``FEATURES``, ...)."""
    return f"{sae_dir(name)}/{file}"


def steps_file(site: str, layer: int, pooling: str) -> str:
    """``saes/steps/<site>-L<layer>-<pooling>.safetensors`` — cached step activations with their index."""
    return f"{STEPS_DIR}/{_plain(site, 'site')}-L{int(layer)}-{_plain(pooling, 'pooling')}.safetensors"


def steering_condition(kind: str, setting: float | str) -> str:
    """A steering condition's name: ``feature@-8``, ``random_feature@-8``, ``random@ablate``, ``feature@clamp0``.

    ``kind`` is one of :data:`STEERING_KINDS`; ``setting`` an alpha (a number, written with ``:g``),
    ``"ablate"`` or ``"clamp<v>"``.
    """
    if kind not in STEERING_KINDS:
        raise ValueError(f"steering condition kind {kind!r} is not one of {', '.join(STEERING_KINDS)}")
    if isinstance(setting, bool) or not isinstance(setting, (int, float, str)):
        raise ValueError(f"a condition's setting is an alpha (a number), 'ablate' or 'clamp<v>', got {setting!r}")
    return f"{kind}@{setting}" if isinstance(setting, str) else f"{kind}@{float(setting):g}"


def condition_folder(condition: str) -> str:
    """The folder of a condition's trace run inside ``steering/``: ``feature@-8`` → ``feature_at_-8``."""
    return _plain(condition.replace("@", "_at_"), "steering condition")


def read_step_info(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``<folder>/step_sae.json`` checked: a dict with a non-negative integer ``layer``; ``ValueError``s
    say which file is missing or corrupt and how to fix it."""
    d = Path(folder)
    path = d / STEP_SAE
    if not path.is_file():
        raise ValueError(f"{str(d)!r} is not an SAE folder written by `psylens sae train`: {STEP_SAE} is missing")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON ({e}); re-run `psylens sae train`") from None
    layer = info.get("layer") if isinstance(info, dict) else None
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"{str(path)!r} has no integer 'layer'; it is corrupt or not from `psylens sae train`")
    return info
