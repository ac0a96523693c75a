"""The 24 emotion concepts and the data for validating emotion directions inside the model (issue 10).

- ``CONCEPTS``: the six basic emotions (``psylens.stimuli.EMOTIONS``) and 18 more, in a fixed order.
- ``concept_info()``: each concept's place on Russell's circumplex (``concepts.json``: valence
  positive/negative, arousal high/low, and ordinal scores in [-1, 1]; its ``source`` says where the
  values come from — the authors' placement, not a lexicon's ratings).
- ``concept_words()``: each concept's word family (``emotion_words.json``), the words the ``stories``
  set never uses for its own concept.
- ``feel_words()`` / ``feel_contexts()``: "… I feel" continuations and neutral contexts for the
  next-token check (``feels_matrix``).
- ``dose_templates()``: numeric templates whose expected emotion rises (or falls) with a number.

The stories themselves are a stimulus set: ``psylens.stimuli.load("stories")`` (label = concept,
group = topic, ``meta["split"]`` = ``"train"``/``"test"``) and ``load("neutral_texts")``.
``docs/data.md`` describes every built-in file.

Every loader re-reads its file and returns a fresh object: mutate the result freely.
"""

from __future__ import annotations

import json
from typing import Any

from psylens.stimuli import EMOTIONS, data_path

__all__ = [
    "CONCEPTS",
    "concept_info",
    "concept_source",
    "concept_words",
    "feel_words",
    "feel_contexts",
    "dose_templates",
]

CONCEPTS: tuple[str, ...] = (
    *EMOTIONS,
    "calm",
    "content",
    "proud",
    "grateful",
    "loving",
    "hopeful",
    "excited",
    "amused",
    "relieved",
    "anxious",
    "desperate",
    "guilty",
    "ashamed",
    "lonely",
    "bored",
    "jealous",
    "embarrassed",
    "nervous",
)

_INFO_KEYS = ("valence", "arousal", "valence_score", "arousal_score")


def _read(name: str) -> Any:
    return json.loads(data_path(name).read_text(encoding="utf-8"))


def concept_info() -> dict[str, dict[str, Any]]:
    """``{concept: {"valence": "positive"|"negative", "arousal": "high"|"low", "valence_score": float,
    "arousal_score": float}}`` for the 24 concepts, in ``CONCEPTS`` order.

    The scores are ordinal placements by the psylens authors (signs agree with the labels), not
    ratings from a lexicon: use them to order or plot, not as measurements. Surprise's valence is
    ambiguous; it is placed slightly positive. Where the values come from: ``concept_source()``.
    """
    raw = _read("concepts.json")
    return {c: {k: raw[c][k] for k in _INFO_KEYS} for c in CONCEPTS}


def concept_source() -> str:
    """Where ``concept_info()``'s labels and scores come from (``concepts.json``'s ``"source"``)."""
    return str(_read("concepts.json")["source"])


def concept_words() -> dict[str, list[str]]:
    """Each concept's word family (inflections and close synonyms), lower case, in ``CONCEPTS`` order.

    Families overlap where the words do (``nervous`` is in fear's, anxious' and nervous' families).
    """
    raw = _read("emotion_words.json")
    return {c: [w.lower() for w in raw[c]] for c in CONCEPTS}


def feel_words() -> dict[str, list[str]]:
    """``{emotion: [word, ...]}`` for the six basic emotions: adjectives that continue "… I feel".

    Words are given without a leading space; a model sees them after one (" angry"). Most are one
    token for common BPE tokenizers, not all for every tokenizer: score a multi-token word by its
    first token or its whole continuation, and say which.
    """
    raw = _read("feel_words.json")
    return {e: list(raw[e]) for e in EMOTIONS}


def feel_contexts() -> list[str]:
    """Neutral contexts, each ending with "I feel" (no trailing space), for next-token checks."""
    return list(_read("feel_contexts.json")["contexts"])


def dose_templates() -> list[dict[str, Any]]:
    """``[{"id", "template", "levels", "emotion", "sign", "doc"}]``: ``template.format(n=level)`` for each
    of the (increasing) ``levels``; ``emotion``'s projection should move with n in the direction of
    ``sign`` (+1 rises, -1 falls).

    Footgun: format with ``template.replace("{n}", str(level))`` or ``format(n=...)``; levels may be
    floats (0.5 hours), so do not cast them to ``int``.
    """
    return [dict(t) for t in _read("dose_templates.json")["templates"]]
