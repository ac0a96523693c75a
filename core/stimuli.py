"""Stimulus sets: JSONL files of texts with labels, groups and ids.

One JSON object a line::

    {"text": "...", "label": "joy", "group": "s012", "id": "s012-joy", "meta": {...}}

``text`` is required; the rest is optional (``id`` defaults to ``<set>-<line>``).
``group`` names the scenario a text belongs to: texts of one group share a context,
so analyses can separate emotion from situation (and cross-validation holds out groups).

Built-in sets (``psylens.stimuli.builtin_sets()``): ``emotions`` (160 scenarios × 7 labels = 1,120 texts,
events that never name the emotion), ``explicit`` (statements that do name it),
``steering_prompts`` (neutral open prompts), ``stories`` (short stories for the 24 concepts of
``psylens.concepts.CONCEPTS``, ≥ 40 each, that never name their concept; label = concept, group = topic,
``meta["split"]`` = ``"train"``/``"test"`` held out by topic) and ``neutral_texts`` (plain descriptions
and dialogues, label ``"neutral"``, for denoising story directions). ``docs/data.md`` describes every file.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

__all__ = [
    "EMOTIONS",
    "LABELS",
    "Stimulus",
    "Stimuli",
    "load",
    "from_texts",
    "builtin_sets",
    "data_path",
    "read_text_resource",
]

EMOTIONS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
LABELS: tuple[str, ...] = (*EMOTIONS, "neutral")

_BUILTIN = {
    "emotions": "emotions.jsonl",
    "explicit": "explicit.jsonl",
    "steering_prompts": "steering_prompts.jsonl",
    "stories": "stories.jsonl",
    "neutral_texts": "neutral_texts.jsonl",
}
_KEYS = {"text", "label", "group", "id", "meta"}


def _warn_if_shadowed() -> None:
    """Say so when ``psylens`` is a namespace package (a folder named ``psylens`` without this code,
    typically a clone in the working directory) instead of the installed package."""
    pkg = sys.modules.get("psylens")
    if pkg is not None and getattr(pkg, "__file__", None) is None:
        where = list(getattr(pkg, "__path__", []))
        warnings.warn(
            f"`psylens` was imported from {where} (a folder named psylens without psylens' code, e.g. a clone "
            f"in the working directory), not from the installed package in {Path(__file__).parent}; "
            "`psylens.load_model` and friends will be missing. Run from another directory, rename the folder, "
            "or reinstall with `make setup` (its editable install wins over such a folder).",
            stacklevel=3,
        )


_warn_if_shadowed()


def data_path(name: str) -> Path:
    """Path of a file shipped in ``psylens/data`` (next to this module, whatever shadows ``psylens``)."""
    return Path(__file__).resolve().parent / "data" / name


def read_text_resource(name: str) -> str:
    return data_path(name).read_text(encoding="utf-8")


def builtin_sets() -> list[str]:
    return list(_BUILTIN)


@dataclass(frozen=True)
class Stimulus:
    text: str
    label: str | None = None
    group: str | None = None
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class Stimuli(Sequence[Stimulus]):
    """An ordered, immutable set of stimuli with a name (the built-in name or the file path)."""

    def __init__(self, items: Iterable[Stimulus], name: str = "stimuli") -> None:
        self._items = tuple(items)
        self.name = name
        if not self._items:
            raise ValueError(f"stimulus set {name!r} is empty; give at least one text")
        seen: set[str] = set()
        for s in self._items:
            if s.id in seen:
                raise ValueError(f"stimulus set {name!r} has the id {s.id!r} twice; ids must be unique")
            seen.add(s.id)

    @overload
    def __getitem__(self, i: int) -> Stimulus: ...
    @overload
    def __getitem__(self, i: slice) -> Stimuli: ...
    def __getitem__(self, i: int | slice) -> Stimulus | Stimuli:
        if isinstance(i, slice):
            return Stimuli(self._items[i], name=self.name)
        return self._items[i]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Stimulus]:
        return iter(self._items)

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self._items]

    @property
    def labels(self) -> list[str | None]:
        return [s.label for s in self._items]

    @property
    def groups(self) -> list[str | None]:
        return [s.group for s in self._items]

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self._items]

    def label_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self._items:
            key = s.label if s.label is not None else "(none)"
            out[key] = out.get(key, 0) + 1
        return out

    def filter(self, *, labels: Iterable[str] | None = None, groups: Iterable[str] | None = None) -> Stimuli:
        """Stimuli whose label is in ``labels`` and group in ``groups`` (``None``: no constraint)."""
        ls = set(labels) if labels is not None else None
        gs = set(groups) if groups is not None else None
        items = [s for s in self._items if (ls is None or s.label in ls) and (gs is None or s.group in gs)]
        return Stimuli(items, name=self.name)

    def to_jsonl(self, path: str | os.PathLike[str]) -> Path:
        from psylens.io import atomic_write_text

        lines = [
            json.dumps({"id": s.id, "text": s.text, "label": s.label, "group": s.group, "meta": s.meta})
            for s in self._items
        ]
        return atomic_write_text(path, "\n".join(lines) + "\n")

    def __repr__(self) -> str:
        return f"Stimuli({self.name!r}, n={len(self)}, labels={self.label_counts()})"


def _parse_line(raw: str, where: str, default_id: str) -> Stimulus:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply to read; each line must be one flat JSON object") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object with a 'text' key, got {type(obj).__name__}")
    unknown = set(obj) - _KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; valid keys: {sorted(_KEYS)}")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: 'text' is missing or empty; every line needs a non-empty string 'text'")
    for key in ("text", "label", "group", "id"):
        value = obj.get(key)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:  # "\ud800" escapes decode to lone surrogates
                raise ValueError(
                    f"{where}: {key!r} holds a lone surrogate {value[e.start]!r} at character {e.start} "
                    "(an unpaired \\uXXXX escape); it is not text a tokenizer can read: fix or drop it"
                ) from None
    for key in ("label", "group", "id"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {obj[key]!r}")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: 'meta' must be an object, got {type(meta).__name__}")
    return Stimulus(text=text, label=obj.get("label"), group=obj.get("group"), id=obj.get("id") or default_id, meta=meta)


def load(name_or_path: str | os.PathLike[str]) -> Stimuli:
    """Load a built-in set by name (``"emotions"``) or a JSONL file by path.

    Raises ``ValueError`` for an unknown name, a missing file, a malformed line
    (naming file and line number) or an empty set.
    """
    key = str(name_or_path)
    if key in _BUILTIN:
        path, name = data_path(_BUILTIN[key]), key
    else:
        path, name = Path(key).expanduser(), key
        if not path.is_file():
            raise ValueError(
                f"stimuli {key!r} is neither a built-in set ({', '.join(_BUILTIN)}) nor an existing JSONL file"
            )
    items: list[Stimulus] = []
    stem = Path(name).stem
    with open(path, "rb") as f:
        for lineno, raw_bytes in enumerate(f, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not UTF-8 (byte {raw_bytes[e.start]:#04x} at column {e.start + 1}); "
                    "JSONL stimuli must be UTF-8: re-save the file as UTF-8 (e.g. "
                    "iconv -f latin1 -t utf-8 in.jsonl > out.jsonl)"
                ) from None
            if not raw.strip():
                continue
            items.append(_parse_line(raw, f"{path}:{lineno}", f"{stem}-{lineno}"))
    if not items:
        raise ValueError(f"stimulus file {str(path)!r} has no stimuli; add JSONL lines with a 'text' key")
    return Stimuli(items, name=name)


def from_texts(
    texts: Sequence[str] | str,
    labels: Sequence[str | None] | None = None,
    groups: Sequence[str | None] | None = None,
    ids: Sequence[str] | None = None,
    name: str = "texts",
) -> Stimuli:
    """Build ``Stimuli`` from plain lists (a single string is one text)."""
    if isinstance(texts, str):
        texts = [texts]
    n = len(texts)
    for what, seq in (("labels", labels), ("groups", groups), ("ids", ids)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{what} has {len(seq)} entries for {n} texts; give one per text")
    return Stimuli(
        (
            Stimulus(
                text=t,
                label=labels[i] if labels is not None else None,
                group=groups[i] if groups is not None else None,
                id=ids[i] if ids is not None else f"{name}-{i}",
            )
            for i, t in enumerate(texts)
        ),
        name=name,
    )
