"""The files ``psylens circuits`` (``psylens.circuits.pipeline.run_circuits``) writes, relative to the run.

Writers (``circuits/pipeline.py``) and readers (the explorer's circuits page, notebook 03, the
benchmark) import these names. Bump ``SCHEMA_VERSION`` when the meaning or layout of a file changes;
it is written into ``summary.json`` as ``schema_version`` and into every table's columns as nothing
else (tables carry the columns listed here, in this order; extra columns may follow).

Layout::

    RUN/circuits/summary.json             {"schema_version", "emotions": {e: {...}}, "cost_ratio", ...}
    RUN/circuits/<emotion>.json           the Circuit (emotion, source, readout_layer, heads, neurons, ...)
    RUN/circuits/<emotion>.safetensors    the Circuit's unit scores (head_scores [n_heads_sel], neuron_scores [n_neurons_sel])
    RUN/circuits/directions.safetensors   the directions used (psylens.probes.Directions format, + .json sidecar)
    RUN/circuits/scores.safetensors       every unit's scores, keys from score_key()
    RUN/circuits/ablation.parquet         ablation curves and the size-matched random draws
    RUN/circuits/enhancement.parquet      enhancement (scaling the circuit's units) vs random sets
    RUN/circuits/sublayers.parquet        sublayer influence per layer, attention vs MLP, per alpha
    RUN/circuits/modulation.parquet       circuit modulation vs steering vs prompting (generation)
    RUN/circuits/top_neurons.parquet      the top neurons' top-activating stimuli
    RUN/circuits/partial/<emotion>.json   per-emotion checkpoint of a run in progress (deleted at the end)

``scores.safetensors`` keys (float32; NaN where a unit was not scored — ``patching`` is computed
only for the top-K units by ``atp``)::

    "{emotion}.{score}.heads"     [n_layers, n_heads]   score in SCORES
    "{emotion}.{score}.neurons"   [n_layers, d_mlp]
    "{emotion}.influence.attn"    [n_layers]            sublayer influence (slope, read-out units per unit of injection / σ)
    "{emotion}.influence.mlp"     [n_layers]

The scores are signed contributions to the emotion signal (positive: the unit writes toward the
emotion); a unit's importance is ranked by the score itself (not its absolute value) for
``direct`` and by ``atp``/``patching`` too, so a circuit holds the units that *raise* the signal.
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "DIR",
    "SUMMARY",
    "DIRECTIONS",
    "SCORES",
    "ABLATION",
    "ENHANCEMENT",
    "SUBLAYERS",
    "MODULATION",
    "TOP_NEURONS",
    "PARTIAL",
    "SCORE_NAMES",
    "UNIT_KINDS",
    "SUBLAYER_KINDS",
    "ABLATION_COLUMNS",
    "ENHANCEMENT_COLUMNS",
    "SUBLAYER_COLUMNS",
    "MODULATION_COLUMNS",
    "TOP_NEURON_COLUMNS",
    "SUMMARY_EMOTION_KEYS",
    "circuit_file",
    "circuit_tensors_file",
    "partial_file",
    "score_key",
    "influence_key",
]

SCHEMA_VERSION = 1
DIR = "circuits"
SUMMARY = f"{DIR}/summary.json"
DIRECTIONS = f"{DIR}/directions.safetensors"  # + the .json sidecar beside it
SCORES = f"{DIR}/scores.safetensors"
ABLATION = f"{DIR}/ablation.parquet"
ENHANCEMENT = f"{DIR}/enhancement.parquet"
SUBLAYERS = f"{DIR}/sublayers.parquet"
MODULATION = f"{DIR}/modulation.parquet"
TOP_NEURONS = f"{DIR}/top_neurons.parquet"
PARTIAL = f"{DIR}/partial"

#: the per-unit scores (see the module doc of psylens.circuits.scores)
SCORE_NAMES: tuple[str, ...] = ("direct", "atp", "patching")
#: unit kinds in scores.safetensors: attention heads ([n_layers, n_heads]) and MLP neurons ([n_layers, d_mlp])
UNIT_KINDS: tuple[str, ...] = ("heads", "neurons")
#: sublayers whose influence is measured
SUBLAYER_KINDS: tuple[str, ...] = ("attn", "mlp")

#: ablation.parquet — one row per (emotion, split, method, kind, draw, n_units).
#: split: "discovery" (the scenarios the scores came from), "heldout" (built-in held-out scenarios),
#: "eval" (the --eval file); method: "zero" | "mean"; kind: "circuit" | "random" (draw -1 for the circuit,
#: 0.. for random sets of the same size drawn from the same layers); drop = 1 - signal_after / signal_before.
ABLATION_COLUMNS: tuple[str, ...] = ("emotion", "split", "method", "kind", "draw", "n_units", "drop", "signal_before", "signal_after")
#: enhancement.parquet — one row per (emotion, split, kind, draw, factor); gain = signal_after / signal_before - 1
ENHANCEMENT_COLUMNS: tuple[str, ...] = ("emotion", "split", "kind", "draw", "factor", "gain", "signal_before", "signal_after")
#: sublayers.parquet — one row per (emotion, layer, sublayer, alpha): the change of the read-out projection
#: after injecting alpha * sigma * v at that sublayer's output, and the per-unit-of-injection slope
SUBLAYER_COLUMNS: tuple[str, ...] = ("emotion", "layer", "sublayer", "alpha", "sigma", "change", "influence")
#: modulation.parquet — one row per (emotion, method): method "circuit" | "steering" | "prompting" | "none";
#: feels_shift: the emotion's "… I feel" word log-prob shift (nats) minus the mean shift of the other emotions'
#: words (the feels_matrix row margin); row_win: that margin is the row's largest; read_back_win: share of prompts
#: whose generated text re-read at the read-out layer projects higher on the emotion than the unsteered text;
#: fluency: mean log-prob per token of the generated text under the unmodified model; strength: the knob used.
MODULATION_COLUMNS: tuple[str, ...] = ("emotion", "method", "strength", "feels_shift", "row_win", "read_back_win",
                                       "read_back_win_ci_low", "read_back_win_ci_high", "fluency", "lexicon_hit_rate", "n_prompts")
#: top_neurons.parquet — one row per (emotion, neuron, rank of stimulus): the circuit's top neurons by score
#: and the stimuli on which they fire most (mean activation over the read-out positions)
TOP_NEURON_COLUMNS: tuple[str, ...] = ("emotion", "layer", "neuron", "score", "rank", "stimulus_id", "label", "text", "activation")

#: the keys every summary["emotions"][e] has (issue #11); more may follow (intervals, sizes, ...)
SUMMARY_EMOTION_KEYS: tuple[str, ...] = ("n_heads", "n_neurons", "ablation", "enhancement", "atp_vs_patching_spearman",
                                         "faithfulness", "completeness", "eval")


def _plain(emotion: str) -> str:
    if not emotion or "/" in emotion or "\\" in emotion or emotion in (".", "..") or "." in emotion:
        raise ValueError(f"emotion {emotion!r} cannot name a circuit file or key; give a plain name such as 'joy'")
    return emotion


def circuit_file(emotion: str) -> str:
    """``circuits/<emotion>.json`` — the circuit of ``emotion`` (``psylens.circuits.circuit.Circuit.save``)."""
    return f"{DIR}/{_plain(emotion)}.json"


def circuit_tensors_file(emotion: str) -> str:
    """``circuits/<emotion>.safetensors`` — the circuit's unit scores beside its JSON."""
    return f"{DIR}/{_plain(emotion)}.safetensors"


def partial_file(emotion: str) -> str:
    """``circuits/partial/<emotion>.json`` — one emotion's finished results while a run is in progress."""
    return f"{PARTIAL}/{_plain(emotion)}.json"


def score_key(emotion: str, score: str, kind: str) -> str:
    """``"{emotion}.{score}.{kind}"`` in ``scores.safetensors``; ``ValueError`` names the valid parts."""
    if score not in SCORE_NAMES:
        raise ValueError(f"score {score!r} is not one of {SCORE_NAMES}")
    if kind not in UNIT_KINDS:
        raise ValueError(f"unit kind {kind!r} is not one of {UNIT_KINDS}")
    return f"{_plain(emotion)}.{score}.{kind}"


def influence_key(emotion: str, sublayer: str) -> str:
    """``"{emotion}.influence.{sublayer}"`` in ``scores.safetensors`` (``[n_layers]``)."""
    if sublayer not in SUBLAYER_KINDS:
        raise ValueError(f"sublayer {sublayer!r} is not one of {SUBLAYER_KINDS}")
    return f"{_plain(emotion)}.influence.{sublayer}"
