"""Story directions: emotion-concept directions from stories that never name the emotion.

The recipe of "Emotion Concepts and their Function in a Large Language Model" (Anthropic, 2026):

1. read every story (``resid_post`` at every requested layer) and average its tokens from
   ``start_offset`` on (:func:`text_means`) — the first tokens of a short text carry little of its
   situation, so skipping them sharpens the mean; a story shorter than the offset keeps all its tokens;
2. average the story means per concept (training split only) and subtract the mean over concepts
   (what all stories share: narration, length, topic mix);
3. optionally (``denoise=True``) project out the top principal components of the *neutral* texts'
   means that together explain ``denoise_variance`` (50%) of their variance — directions that vary
   with any text at all, not with emotion;
4. unit-normalise, keeping the raw norm (:meth:`psylens.probes.Directions.from_raw`).

The result is a :class:`psylens.probes.Directions` with ``meta["kind"] == "stories"`` over every
concept and layer, so :meth:`SteeringVector.from_directions` and the steering sweep
(``SweepConfig(directions="stories")``) take it like the probes' and expression directions.

Default ``start_offset``: **2** tokens. The built-in stories are short (two to four sentences,
~40–80 tokens); the paper's offset of tens of tokens would drop most of such a story, while the first
two tokens ("I", "The", "She") carry only the narration. Use 0 for texts of a few words.

>>> dirs = story_directions(model)                                   # doctest: +SKIP
>>> dirs.meta["kind"], len(dirs.emotions)                            # doctest: +SKIP
('stories', 24)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from psylens.models import Model
    from psylens.probes import Directions
    from psylens.stimuli import Stimuli

__all__ = [
    "StoryConfig",
    "text_means",
    "directions_from_means",
    "story_directions",
    "load_or_fit_story_directions",
    "neutral_components",
    "DEFAULT_START_OFFSET",
]

log = logging.getLogger(__name__)

DEFAULT_START_OFFSET = 2


@dataclass(frozen=True)
class StoryConfig:
    """How story directions are read and fitted.

    ``start_offset``: text tokens skipped at the start of each story before averaging (default 2; see
    the module doc). ``denoise``: project out the neutral texts' top principal components explaining
    ``denoise_variance`` of their variance. ``format``: ``"raw"`` (stories as plain text, default) or
    ``"chat"``/``"auto"`` (as a user turn). ``split``: the ``meta["split"]`` value of the stories the
    directions are fitted on (``None``: all stories).
    """

    start_offset: int = DEFAULT_START_OFFSET
    denoise: bool = True
    denoise_variance: float = 0.5
    format: str = "raw"
    split: str | None = "train"
    batch_size: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.start_offset, bool) or not isinstance(self.start_offset, int) or self.start_offset < 0:
            raise ValueError(f"start_offset must be a non-negative integer (tokens skipped), got {self.start_offset!r}")
        if not 0 < self.denoise_variance < 1:
            raise ValueError(
                f"denoise_variance must lie strictly between 0 and 1 (0.5: the components explaining half the "
                f"neutral texts' variance), got {self.denoise_variance!r}"
            )
        if self.format not in ("raw", "chat", "auto"):
            raise ValueError(f"format {self.format!r} is not one of 'raw', 'chat', 'auto'")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_layers(model: Model, layers: Sequence[int] | None) -> list[int]:
    n = int(model.n_layers)
    if layers is None:
        return list(range(n))
    ls = list(layers)
    if not ls:
        raise ValueError(f"layers is empty; give decoder-layer indices in 0–{n - 1}, or None for all")
    bad = [v for v in ls if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < n]
    if bad:
        raise ValueError(f"layer {bad[0]!r} out of range: the model has {n} layers (0–{n - 1})")
    return sorted({int(v) for v in ls})


@torch.no_grad()
def text_means(
    model: Model,
    texts: Sequence[str],
    layers: Sequence[int] | None = None,
    *,
    start_offset: int = DEFAULT_START_OFFSET,
    format: str = "raw",
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "reading texts",
) -> Float[Tensor, "n layer d_model"]:
    """Mean ``resid_post`` over each text's own tokens from ``start_offset`` on: ``[n, L, d_model]`` (float32).

    Reads through :func:`psylens.interventions.tap` and stops each forward after the deepest layer;
    memory grows with texts × layers × width, never with tokens. A text with at most ``start_offset``
    tokens keeps all of them (never an empty mean).
    """
    from psylens.harvest import encode
    from psylens.interventions import StopForward, tap

    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string; wrap it: [text]")
    items = list(texts)
    if not items or not all(isinstance(t, str) and t.strip() for t in items):
        raise ValueError(f"texts must be one or more non-empty strings, got {len(items)} item(s)")
    ls = _check_layers(model, layers)
    encs = [encode(model, t, format=format) for t in items]
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    out = torch.zeros(len(items), len(ls), int(model.d_model))
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
    chunks = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    it: Any = chunks
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(chunks, desc=desc, leave=False)
    keys = [("resid_post", v) for v in ls]
    for idx in it:
        t = max(len(encs[i].ids) for i in idx)
        ids = torch.full((len(idx), t), pad, dtype=torch.long)
        att = torch.zeros((len(idx), t), dtype=torch.long)
        keep = torch.zeros((len(idx), t), dtype=torch.bool)  # the tokens averaged
        for r, i in enumerate(idx):
            e = encs[i]
            n = len(e.ids)
            ids[r, :n] = torch.tensor(e.ids)
            att[r, :n] = 1
            first = e.text_start + start_offset if e.n_text > start_offset else e.text_start
            keep[r, first:n] = True
        w_bt1 = keep.float().unsqueeze(-1).to(model.device)
        got: dict[int, Tensor] = {}

        def take(site: str, layer: int, x: Tensor) -> None:
            got[layer] = ((x.float() * w_bt1).sum(1) / w_bt1.sum(1)).cpu()  # [b, d]
            if len(got) == len(ls):
                raise StopForward

        try:
            with tap(model.hf_model, keys, take):
                model.hf_model(input_ids=ids.to(model.device), attention_mask=att.to(model.device), use_cache=False)
        except StopForward:
            pass
        out[idx] = torch.stack([got[v] for v in ls], dim=1)
    return out


def neutral_components(
    neutral: Float[Tensor, "n d"], variance: float = 0.5
) -> Float[Tensor, "k d"]:
    """The top principal components of ``neutral`` (rows centred) that together explain ``variance``."""
    if neutral.ndim != 2 or neutral.shape[0] < 2:
        raise ValueError(f"neutral activations must be [n >= 2, d], got {list(neutral.shape)}")
    x = neutral.double() - neutral.double().mean(0, keepdim=True)
    _, s, vt = torch.linalg.svd(x, full_matrices=False)
    var = s**2
    frac = torch.cumsum(var, 0) / var.sum().clamp_min(1e-30)
    k = int(torch.searchsorted(frac, torch.tensor(variance, dtype=frac.dtype)).item()) + 1
    return vt[: min(k, vt.shape[0])].float()


def directions_from_means(
    means: Float[Tensor, "n layer d"],
    labels: Sequence[str],
    layers: Sequence[int],
    *,
    concepts: Sequence[str] | None = None,
    neutral: Float[Tensor, "m layer d"] | None = None,
    denoise_variance: float = 0.5,
    shuffle_seed: int | None = None,
    model: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Directions:
    """Story directions from per-story means (steps 2–4 of the recipe); pure tensor maths.

    Args:
        means: each story's mean activation ``[n, L, d]`` (:func:`text_means`).
        labels: each story's concept.
        layers: the layer index of each of the ``L`` slices.
        concepts: the concepts, in order (default: sorted labels). Each needs at least one story.
        neutral: neutral texts' means ``[m, L, d]``; given, their top principal components explaining
            ``denoise_variance`` of their variance are projected out at each layer.
        shuffle_seed: when set, the labels are permuted with this seed first — the shuffled-label
            control (directions that carry no concept information by construction).
    """
    from psylens.probes import Directions

    labs = [str(v) for v in labels]
    if means.ndim != 3 or means.shape[0] != len(labs):
        raise ValueError(f"means must be [n, layer, d] with one row per label; got {list(means.shape)} and {len(labs)} labels")
    if means.shape[1] != len(layers):
        raise ValueError(f"means have {means.shape[1]} layers but {len(layers)} layer indices were given")
    cs = list(concepts) if concepts is not None else sorted(set(labs))
    missing = [c for c in cs if c not in labs]
    if missing:
        raise ValueError(f"concepts {missing} have no stories; every concept needs at least one (labels have {sorted(set(labs))})")
    if shuffle_seed is not None:
        perm = np.random.default_rng(shuffle_seed).permutation(len(labs))
        labs = [labs[i] for i in perm]
    lab = np.asarray(labs)
    x = means.double()
    raw = torch.stack([x[torch.as_tensor(np.nonzero(lab == c)[0])].mean(0) for c in cs])  # [C, L, d]
    raw = raw - raw.mean(0, keepdim=True)
    n_pcs: list[int] = []
    if neutral is not None:
        if neutral.ndim != 3 or neutral.shape[1:] != means.shape[1:]:
            raise ValueError(f"neutral must be [m, {means.shape[1]}, {means.shape[2]}] like means, got {list(neutral.shape)}")
        for li in range(len(layers)):
            pcs = neutral_components(neutral[:, li], denoise_variance).double()  # [k, d]
            raw[:, li] = raw[:, li] - (raw[:, li] @ pcs.T) @ pcs
            n_pcs.append(int(pcs.shape[0]))
    info = {
        "kind": "stories",
        "denoised": neutral is not None,
        "denoise_variance": denoise_variance if neutral is not None else None,
        "neutral_components": n_pcs,
        "n_stories": len(labs),
        "shuffled_labels": shuffle_seed is not None,
        **(meta or {}),
    }
    return Directions.from_raw(
        raw.float(), cs, list(layers), site="resid_post", method="mean_diff", center_by=None, model=model, meta=info
    )


def _stimuli(name: str) -> Stimuli:
    from psylens import stimuli

    try:
        return stimuli.load(name)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(
            f"the built-in {name!r} set is not available ({e}); story directions need the built-in 'stories' and "
            "'neutral_texts' sets (psylens.concepts), or pass stories=/neutral= yourself"
        ) from None


def story_directions(
    model: Model,
    stories: Stimuli | None = None,
    neutral: Stimuli | Sequence[str] | None = None,
    *,
    config: StoryConfig | None = None,
    layers: Sequence[int] | None = None,
    concepts: Sequence[str] | None = None,
    progress: bool = False,
) -> Directions:
    """Story directions for every concept at ``layers`` (default all); see the module doc.

    Args:
        model: a psylens ``Model``.
        stories: stimuli labelled by concept (default: the built-in ``stories`` set); with
            ``config.split`` set, only stories whose ``meta["split"]`` equals it are used.
        neutral: neutral texts for denoising (default: the built-in ``neutral_texts``); ignored when
            ``config.denoise`` is false.
        concepts: the concepts in order (default: ``psylens.concepts.CONCEPTS`` when every one has
            stories, else the sorted labels).

    Footgun: fit on the training split and evaluate on the held-out one; fitting on every story
    and scoring the same stories flatters every gate.
    """
    cfg = config or StoryConfig()
    st = stories if stories is not None else _stimuli("stories")
    picked = [s for s in st if s.label and (cfg.split is None or (s.meta or {}).get("split") == cfg.split)]
    if not picked:
        raise ValueError(
            f"no labelled stories with split {cfg.split!r} in {getattr(st, 'name', 'the stories')!r}; "
            "give stories with meta.split, or StoryConfig(split=None) to use all"
        )
    labels = [str(s.label) for s in picked]
    if concepts is None:
        try:
            from psylens.concepts import CONCEPTS

            concepts = list(CONCEPTS) if set(CONCEPTS) <= set(labels) else sorted(set(labels))
        except ImportError:
            concepts = sorted(set(labels))
    ls = _check_layers(model, layers)
    kw = dict(start_offset=cfg.start_offset, format=cfg.format, batch_size=cfg.batch_size, progress=progress)
    means = text_means(model, [s.text for s in picked], ls, desc="reading stories", **kw)
    neutral_means = None
    if cfg.denoise:
        nt = neutral if neutral is not None else _stimuli("neutral_texts")
        texts = list(nt.texts) if hasattr(nt, "texts") else list(nt)
        neutral_means = text_means(model, texts, ls, desc="reading neutral texts", **kw)
    log.info("story directions: %d stories, %d concepts, %d layers", len(picked), len(concepts), len(ls))
    return directions_from_means(
        means, labels, ls, concepts=concepts, neutral=neutral_means, denoise_variance=cfg.denoise_variance,
        model=getattr(model, "spec", None),
        meta={"start_offset": cfg.start_offset, "format": cfg.format, "split": cfg.split,
              "position": f"mean over the story's tokens from token {cfg.start_offset}"},
    )


def load_or_fit_story_directions(model: Model, run: Any, *, progress: bool = False) -> Directions:
    """The run's story directions (``RUN/validation/directions.safetensors`` when ``psylens validate
    --source stories`` wrote them for this model), else story directions fitted now (not saved).

    What ``SweepConfig(directions="stories")`` steers with.
    """
    from psylens.probes import Directions
    from psylens.validation.artifacts import DIRECTIONS

    path = run.file(DIRECTIONS) if hasattr(run, "file") else None
    if path is not None and path.is_file():
        dirs = Directions.load(path)
        if dict(dirs.meta).get("kind") == "stories" and dirs.d_model == int(model.d_model):
            return dirs
        log.info("%s holds %s directions, not story directions of this model: fitting story directions",
                 path, dict(dirs.meta).get("kind"))
    return story_directions(model, progress=progress)
