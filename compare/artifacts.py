"""File names and schema versions of ``RUN/compare/`` (writers and explorer pages import them from here).

Layout::

    RUN/compare/
      weights.json                    per linear module: relative_norm, changed_fraction, effective_rank,
                                      principal_overlap (sorted by relative_norm, descending)
      weight_directions.safetensors   per module name (the "module" of weights.json): top left singular
                                      vector of ΔW, [d_out]
      activations.json                per layer and input set: mean-difference norms and cosines, KL, lens
      layer_kl.parquet                per-layer logit-lens KL(base ‖ tuned) on the task traces, see below
      base_directions.safetensors     the base model's 24 story directions (emotion and steering sections)
      steering.json                   the base's vectors on both models, judged by the feels-matrix and
                                      read-back gates; "steering" says what steered (sweep vectors or directions)
      steering_vectors/<emotion>.safetensors  copies of the base's steering-sweep vectors the steering section used
                                      (only when it steered with them; SteeringVector files)
      features.json                   the "features" section (psylens.compare.features), see below
      feature_frequencies.parquet     one row per step-SAE feature, see below
      feature_traces.jsonl            the traces both models wrote for the features section (one a line)
      crosscoder.json                 the BatchTopK crosscoder: settings, fit, class counts, noise level
      crosscoder_latents.parquet      one row per crosscoder latent, see below
      crosscoder.safetensors          the crosscoder's weights (W_enc [2, d, L], b_enc [L], W_dec [L, 2, d],
                                      b_dec [2, d], scale [] (input scale), threshold [] (inference threshold))
      emotions.json                   probe curves of both models, transfer, direction cosines, concept shifts
      generations.json                the same prompts answered by both models (greedy), and one prompt steered
                                      by the base's vector on both (when the steering section ran)
      summary.json                    every section: status ("done" / "skipped" + reason) and headline numbers
      report.md                       the readable report; PNG plots beside it (``*.png``)

``layer_kl.parquet`` columns (one row per decoder layer): ``layer`` (int), ``kl`` (mean over texts of the
mean over the text's positions of KL(p_base ‖ p_tuned), nats, where p = softmax(unembed(final_norm(resid_post
at that layer))) of each model through its own final norm and unembedding), ``kl_lo``, ``kl_hi`` (95% bootstrap
interval over texts), ``n_texts``, ``n_positions`` (positions averaged, all texts). ``activations.json`` holds
the same rows under ``layer_kl``.

The features section's files (``psylens.compare.features``; "base"/"tuned" = ``MODEL_NAMES``):

``features.json`` keys: ``schema_version``; ``sae`` (null without a step SAE, else ``{"name", "site",
"layer", "pooling", "segmentation", "d_sae", "model"}``); ``traces`` (``{"n_tasks", "samples",
"max_new_tokens", "temperature", "n_traces": {"base", "tuned"}, "n_steps": {"base", "tuned"}}``);
``labels``: ``{label: {"base", "base_ci95", "tuned", "tuned_ci95", "difference", "difference_ci95",
"excludes_zero", "share_base", "share_tuned", "share_difference", "share_difference_ci95"}}`` — mean
number of steps carrying the label per trace (and ``share_*``: mean fraction of a trace's steps),
intervals paired over traces of the same task and sample; ``diversity`` (null without an SAE):
``{"base", "base_ci95", "tuned", "tuned_ci95", "difference", "difference_ci95"}`` — distinct active
SAE features per trace; ``frequencies`` (null without an SAE): ``{"n_changed", "top_up": [feature, ...],
"top_down": [...], "l1_distance"}``; ``crosscoder``: the headline of ``crosscoder.json`` (or null).

``feature_frequencies.parquet`` columns: ``feature`` (int), ``base``, ``tuned`` (fraction of the model's
steps on which the feature fires), ``difference`` (tuned − base), ``difference_lo``, ``difference_hi``
(95% paired bootstrap over traces), ``changed`` (bool: interval excludes 0), ``label`` (the behaviour
label this feature is the SAE's best latent for, or "").

``crosscoder.json`` keys: ``schema_version``, ``settings`` (site, layer, pooling, d_latent, k, steps,
lr, seed, batch_size, n_rows), ``fit`` (``explained_variance`` per model, ``l0``, ``dead_fraction``),
``thresholds`` (``specific``, ``shared_low``, ``shared_high``, ``nu_error``, ``nu_recon``), ``counts``
(per class), ``noise`` (the control crosscoder: ``kind``, ``sigma``, ``counts``), ``tuned_only``,
``tuned_only_noise``, ``tuned_only_beyond_noise``, ``base_only``, ``base_only_noise``,
``base_only_beyond_noise``, ``norm_ratio_only`` (tuned- or base-only by the decoder-norm ratio alone).

``crosscoder_latents.parquet`` columns: ``latent`` (int), ``norm_base``, ``norm_tuned`` (decoder norms),
``ratio`` (0.5·((‖d_tuned‖ − ‖d_base‖)/max + 1): 1 tuned-only, 0 base-only, 0.5 equal), ``frequency``
(fraction of rows where it fires), ``owner`` ("tuned" if ratio ≥ 0.5 else "base"), ``beta_base_error``,
``beta_tuned_error``, ``beta_base_recon``, ``beta_tuned_recon`` (latent scaling with the owner's decoder),
``nu_error``, ``nu_recon`` (other side's β / owner's β), ``cls`` (one of ``CROSSCODER_CLASSES``).
"""

from __future__ import annotations

__all__ = [
    "SCHEMA_VERSION",
    "COMPARE_DIR",
    "WEIGHTS",
    "WEIGHT_DIRECTIONS",
    "ACTIVATIONS",
    "EMOTIONS",
    "STEERING",
    "STEERING_VECTORS",
    "steering_vector_file",
    "LAYER_KL",
    "LAYER_KL_COLUMNS",
    "BASE_DIRECTIONS",
    "FEATURES",
    "GENERATIONS",
    "FEATURE_FREQUENCIES",
    "FEATURE_TRACES",
    "CROSSCODER",
    "CROSSCODER_LATENTS",
    "CROSSCODER_WEIGHTS",
    "CROSSCODER_CLASSES",
    "SUMMARY",
    "REPORT",
    "SECTIONS",
    "WEIGHT_KEYS",
    "MODEL_NAMES",
    "plot_file",
]

SCHEMA_VERSION = 1
COMPARE_DIR = "compare"
WEIGHTS = f"{COMPARE_DIR}/weights.json"
WEIGHT_DIRECTIONS = f"{COMPARE_DIR}/weight_directions.safetensors"
ACTIVATIONS = f"{COMPARE_DIR}/activations.json"
EMOTIONS = f"{COMPARE_DIR}/emotions.json"
STEERING = f"{COMPARE_DIR}/steering.json"
STEERING_VECTORS = f"{COMPARE_DIR}/steering_vectors"
LAYER_KL = f"{COMPARE_DIR}/layer_kl.parquet"
#: the columns of ``layer_kl.parquet``, in order
LAYER_KL_COLUMNS: tuple[str, ...] = ("layer", "kl", "kl_lo", "kl_hi", "n_texts", "n_positions")
BASE_DIRECTIONS = f"{COMPARE_DIR}/base_directions.safetensors"
FEATURES = f"{COMPARE_DIR}/features.json"
GENERATIONS = f"{COMPARE_DIR}/generations.json"
FEATURE_FREQUENCIES = f"{COMPARE_DIR}/feature_frequencies.parquet"
FEATURE_TRACES = f"{COMPARE_DIR}/feature_traces.jsonl"
CROSSCODER = f"{COMPARE_DIR}/crosscoder.json"
CROSSCODER_LATENTS = f"{COMPARE_DIR}/crosscoder_latents.parquet"
CROSSCODER_WEIGHTS = f"{COMPARE_DIR}/crosscoder.safetensors"
SUMMARY = f"{COMPARE_DIR}/summary.json"
REPORT = f"{COMPARE_DIR}/report.md"

#: the report's sections, in order (``--sections``)
SECTIONS: tuple[str, ...] = ("weights", "activations", "emotions", "steering", "features")
#: the keys of one ``weights.json`` row, in order
WEIGHT_KEYS: tuple[str, ...] = ("module", "layer", "relative_norm", "changed_fraction", "effective_rank", "principal_overlap")
#: a crosscoder latent's class (``cls`` of ``crosscoder_latents.parquet``): ``tuned_only`` / ``base_only`` need
#: the decoder-norm ratio AND latent scaling (the other model's β ≈ 0); ``*_norm_only`` pass the ratio but
#: fail latent scaling (Minder et al. 2025: shrinkage or decoupling, not a model-specific latent)
CROSSCODER_CLASSES: tuple[str, ...] = ("tuned_only", "tuned_norm_only", "base_only", "base_norm_only", "shared",
                                       "intermediate", "dead")
#: the names of the two models in ``run.json``'s ``"models"``
MODEL_NAMES: tuple[str, str] = ("base", "tuned")


def plot_file(name: str) -> str:
    """``RUN/compare/<name>.png`` (plots sit beside ``report.md``)."""
    return f"{COMPARE_DIR}/{name}.png"


def steering_vector_file(emotion: str) -> str:
    """``RUN/compare/steering_vectors/<emotion>.safetensors``: the base's sweep vector the steering section used.

    ``ValueError`` when ``emotion`` cannot name a file (a ``/``, ``..``): give a plain name such as ``"joy"``."""
    if not isinstance(emotion, str) or not emotion or "/" in emotion or "\\" in emotion or emotion in (".", ".."):
        raise ValueError(f"emotion {emotion!r} cannot name a vector file; give a plain name such as 'joy'")
    return f"{STEERING_VECTORS}/{emotion}.safetensors"
