"""Stimulus sets: the built-in emotions set (shape, balance, no emotion words) and JSONL loading."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from psylens import stimuli
from psylens.stimuli import LABELS, Stimuli, Stimulus, from_texts, load

SEVEN = {"anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"}


@pytest.fixture(scope="module")
def emotions() -> Stimuli:
    return load("emotions")


def _emotion_words() -> list[str]:
    # the six basic emotions' families: the file also holds the other 18 concepts' (tests/unit/core/test_stories.py)
    words = json.loads(stimuli.data_path("emotion_words.json").read_text(encoding="utf-8"))
    out = sorted({w.lower() for e in stimuli.EMOTIONS for w in words[e]})
    assert len(out) > 100  # inflections included
    return out


def _leaks(texts: list[str], words: list[str]) -> list[tuple[int, str]]:
    """(text index, word) for every whole-word, case-insensitive occurrence."""
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    hits = []
    for i, t in enumerate(texts):
        for m in pattern.finditer(t):
            hits.append((i, m.group(1)))
    return hits


# ---------------------------------------------------------------- the built-in emotions set
def test_emotions_labels_and_groups(emotions: Stimuli) -> None:
    assert set(LABELS) == SEVEN
    assert len(emotions) >= 500
    groups: dict[str, set[str]] = {}
    for s in emotions:
        assert s.group is not None and s.label is not None
        groups.setdefault(s.group, set()).add(s.label)
    assert len(groups) >= 40
    incomplete = {g: SEVEN - labs for g, labs in groups.items() if labs != SEVEN}
    assert not incomplete, incomplete


def test_emotions_balanced_and_unique(emotions: Stimuli) -> None:
    counts = Counter(emotions.labels)
    assert set(counts) == SEVEN
    assert max(counts.values()) == min(counts.values()), counts
    assert len(set(emotions.ids)) == len(emotions)
    assert len(set(emotions.texts)) == len(emotions)  # no copy-pasted texts
    assert all(t.strip() == t and len(t) > 20 for t in emotions.texts)


def test_emotions_shared_context(emotions: Stimuli) -> None:
    # One scenario's context is shared across its emotions: texts of a group start alike.
    for g in sorted(set(emotions.groups))[:10]:
        texts = emotions.filter(groups=[g]).texts
        first = texts[0].split(". ")[0]
        assert all(t.startswith(first) for t in texts), g


def test_emotions_never_name_the_emotion(emotions: Stimuli) -> None:
    hits = _leaks(emotions.texts, _emotion_words())
    assert not hits, [(emotions.ids[i], w) for i, w in hits[:20]]


def test_leak_checker_flags_planted_words(emotions: Stimuli) -> None:
    words = _emotion_words()
    planted = ["I was furious when the bus left.", "She felt SAD.", "A terrified cat hid.", "a panic-stricken, happy-go-lucky man"]
    assert len(_leaks(planted, words)) == 5
    # ... but not inside other words or in the clean texts we plant them into
    assert not _leaks(["The sadhu sang; a scarecrowd formed.", "madness"], ["sad", "scare", "mad"])
    mixed = [*emotions.texts[:5], planted[0]]
    assert [i for i, _ in _leaks(mixed, words)] == [5]


def test_explicit_set_does_name_emotions() -> None:
    # the control set: explicit statements must trip the same checker
    explicit = load("explicit")
    assert len(_leaks(explicit.texts, _emotion_words())) > len(explicit) // 2


@pytest.mark.parametrize("name", ["emotions", "explicit", "steering_prompts"])
def test_builtin_sets_load(name: str) -> None:
    assert name in stimuli.builtin_sets()
    s = load(name)
    assert len(s) > 0 and s.name == name


# ---------------------------------------------------------------- JSONL loading
def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "bad.jsonl", ['{"text": "one"}', "", '{"text": "two", oops}', '{"text": "three"}'])
    with pytest.raises(ValueError) as e:
        load(f)
    assert f"{f}:3" in str(e.value)


@pytest.mark.parametrize(
    "line, what",
    [
        ('{"label": "joy"}', "text"),
        ('{"text": ""}', "text"),
        ('{"text": "   "}', "text"),
        ('{"text": 5}', "text"),
        ('["a list"]', "object"),
        ('{"text": "x", "lable": "joy"}', "unknown keys"),
        ('{"text": "x", "label": 3}', "label"),
        ('{"text": "x", "meta": [1]}', "meta"),
    ],
)
def test_bad_records(tmp_path: Path, line: str, what: str) -> None:
    f = _write(tmp_path / "s.jsonl", ['{"text": "fine"}', line])
    with pytest.raises(ValueError, match=re.escape(what)) as e:
        load(f)
    assert f"{f}:2" in str(e.value)


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no stimuli"):
        load(f)
    _write(f, ["", "   "])
    with pytest.raises(ValueError, match="no stimuli"):
        load(f)


def test_unknown_name_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        load("emotionz")
    assert "emotions" in str(e.value)  # lists the built-in sets
    with pytest.raises(ValueError):
        load(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError):
        load(tmp_path)  # a directory is not a file


def test_duplicate_ids(tmp_path: Path) -> None:
    f = _write(tmp_path / "d.jsonl", ['{"text": "a", "id": "x"}', '{"text": "b", "id": "x"}'])
    with pytest.raises(ValueError, match="twice"):
        load(f)


def test_default_ids_and_fields(tmp_path: Path) -> None:
    f = _write(tmp_path / "mine.jsonl", ['{"text": "a"}', '{"text": "b", "label": "joy", "group": "g", "meta": {"k": 1}}'])
    s = load(f)
    assert s.ids == ["mine-1", "mine-2"]
    assert s[1] == Stimulus(text="b", label="joy", group="g", id="mine-2", meta={"k": 1})
    assert s.labels == [None, "joy"] and s.groups == [None, "g"]


# ---------------------------------------------------------------- building and transforming
def test_from_texts() -> None:
    s = from_texts(["a", "b"], labels=["joy", "fear"], groups=["g1", "g1"], name="t")
    assert len(s) == 2 and s.texts == ["a", "b"] and s.labels == ["joy", "fear"]
    assert s.ids == ["t-0", "t-1"]
    one = from_texts("only")
    assert len(one) == 1 and one.texts == ["only"]
    with pytest.raises(ValueError, match="labels"):
        from_texts(["a", "b"], labels=["joy"])
    with pytest.raises(ValueError, match="empty"):
        from_texts([])


def test_filter_and_slice(emotions: Stimuli) -> None:
    joy = emotions.filter(labels=["joy"])
    assert len(joy) == Counter(emotions.labels)["joy"] and set(joy.labels) == {"joy"}
    both = emotions.filter(labels=["joy", "fear"], groups=["s001", "s002"])
    assert sorted(both.ids) == ["s001-fear", "s001-joy", "s002-fear", "s002-joy"]
    assert len(emotions.filter()) == len(emotions)
    with pytest.raises(ValueError):
        emotions.filter(labels=["no-such-label"])  # an empty result is an error, not a silent empty set
    head = emotions[:3]
    assert isinstance(head, Stimuli) and head.ids == emotions.ids[:3]
    assert emotions.label_counts()["neutral"] == len(emotions) // 7


def test_round_trip(tmp_path: Path, emotions: Stimuli) -> None:
    sub = emotions.filter(groups=["s001", "s003"])
    f = sub.to_jsonl(tmp_path / "rt.jsonl")
    back = load(f)
    assert list(back) == list(sub)
    plain = from_texts(["x", "y"], name="p")
    assert list(load(plain.to_jsonl(tmp_path / "p.jsonl"))) == list(plain)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


# ---------------------------------------------------------------- inputs that must explain (issue 15 item 12)
def test_latin1_file_names_file_and_line(tmp_path) -> None:
    p = tmp_path / "latin.jsonl"
    p.write_bytes('{"text": "fine"}\n{"text": "caf\u00e9 cr\u00e8me"}\n'.encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.jsonl:2: not UTF-8 \(byte 0xe9"):
        stimuli.load(p)
    p.write_bytes('{"text": "fine"}\n{"text": "caf\u00e9 cr\u00e8me"}\n'.encode("utf-8"))  # control
    assert stimuli.load(p).texts[1] == "caf\u00e9 cr\u00e8me"


def test_lone_surrogate_names_file_and_line(tmp_path) -> None:
    p = tmp_path / "sur.jsonl"
    p.write_text('{"text": "ok"}\n{"text": "bad \\ud800 here"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"sur\.jsonl:2: 'text' holds a lone surrogate"):
        stimuli.load(p)
    p.write_text('{"text": "ok"}\n{"text": "pair \\ud83d\\ude00"}\n', encoding="utf-8")  # control: a valid pair
    assert stimuli.load(p).texts[1] == "pair \U0001F600"


def test_deeply_nested_json_line(tmp_path) -> None:
    p = tmp_path / "deep.jsonl"
    p.write_text('{"text": "x", "meta": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"deep\.jsonl:1: JSON nested too deeply"):
        stimuli.load(p)
