"""Build core/data/stories.jsonl and core/data/neutral_texts.jsonl from the hand-written pieces in
scripts/stories_src/ (issue 10).

A story is a topic's context sentence (``topics.txt``, shared by every concept, so a direction cannot
be a topic detector) followed by a hand-written event for one concept (``<concept>.txt``, one line
per story: ``tNN | event``; a leading ``~`` marks an event written in the present tense). The
protagonist is written with placeholders and rendered in one of five narrations:

    {N} first mention   I / you / Maya        {s} subject   I / you / she
    {o} object          me / you / her         {p} possessive my / your / her
    {pp}                mine / yours / hers    {r} reflexive myself / yourself / herself
    {was} was / were / was    {am} am / are    {has} have / have / has    {z} "" / "" / "s" (verb ending)
    [past|present]      the alternative for the story's tense (contexts only)

Past-tense events are narrated in the first, second or third person (a named character);
present-tense ones in the first or second person (no verb agreement needed). Narrations are dealt
in the same proportions to every concept (``_narrations``); names are drawn from a generator seeded
by the story id. The output is deterministic.

Topics in TEST_TOPICS are held out: every story on them is ``split: "test"``, for every concept.
A story's ``group`` is its topic as ``tNNN`` (``t003`` for ``t03`` in the sources).

    .venv/bin/python scripts/make_stories.py          # rewrites both files
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "scripts" / "stories_src"
OUT = ROOT / "core" / "data"
sys.path.insert(0, str(ROOT))

CONCEPTS = (
    "anger", "disgust", "fear", "joy", "sadness", "surprise", "calm", "content", "proud", "grateful",
    "loving", "hopeful", "excited", "amused", "relieved", "anxious", "desperate", "guilty", "ashamed",
    "lonely", "bored", "jealous", "embarrassed", "nervous",
)  # fmt: skip
TEST_TOPICS = frozenset(
    {"t03", "t07", "t10", "t14", "t18", "t21", "t25", "t28", "t32", "t36", "t39", "t43", "t46", "t50"}
)

NAMES = (
    ("Maya", "f"), ("Daniel", "m"), ("Priya", "f"), ("Tomás", "m"), ("Grace", "f"), ("Omar", "m"),
    ("Hannah", "f"), ("Kwame", "m"), ("Lena", "f"), ("Marcus", "m"), ("Sofia", "f"), ("Ben", "m"),
    ("Aiko", "f"), ("Luis", "m"), ("Chloe", "f"), ("Ravi", "m"), ("Nadia", "f"), ("Sam", "m"),
    ("Elif", "f"), ("Jonah", "m"), ("Rosa", "f"), ("Felix", "m"), ("Amara", "f"), ("Hugo", "m"),
    ("Ingrid", "f"), ("Theo", "m"), ("Leila", "f"), ("Patrick", "m"), ("Mei", "f"), ("Idris", "m"),
)  # fmt: skip

PERSON = {
    "first": {"N": "I", "s": "I", "o": "me", "p": "my", "pp": "mine", "r": "myself", "was": "was", "am": "am", "has": "have", "z": ""},
    "second": {"N": "you", "s": "you", "o": "you", "p": "your", "pp": "yours", "r": "yourself", "was": "were", "am": "are", "has": "have", "z": ""},
    "f": {"s": "she", "o": "her", "p": "her", "pp": "hers", "r": "herself", "was": "was", "am": "is", "has": "has", "z": "s"},
    "m": {"s": "he", "o": "him", "p": "his", "pp": "his", "r": "himself", "was": "was", "am": "is", "has": "has", "z": "s"},
}  # fmt: skip


def read_pieces(path: Path) -> list[tuple[str, str]]:
    """``(topic id, text)`` for every ``tNN | text`` line (``#`` comments and blank lines skipped)."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        topic, sep, text = (part.strip() for part in line.partition("|"))
        if not sep or not re.fullmatch(r"t\d\d", topic):
            raise ValueError(f"{path}:{lineno}: expected 'tNN | text', got {line!r}")
        out.append((topic, text))
    return out


def read_topics() -> dict[str, tuple[str, str]]:
    topics = {}
    for line in (SRC / "topics.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        tid, name, context = (part.strip() for part in line.split("|", 2))
        topics[tid] = (name, context)
    return topics


def _capitalise(text: str) -> str:
    text = text[0].upper() + text[1:]
    return re.sub(r'([.!?]["”]?\s+["“]?)([a-z])', lambda m: m.group(1) + m.group(2).upper(), text)


def render(template: str, tense: str, narration: str, name: str, gender: str) -> str:
    person = narration.split("_")[0]
    slots = dict(PERSON[gender] if person == "third" else PERSON[person])
    if person == "third":
        slots["N"] = name
    text = re.sub(r"\[([^|\]]*)\|([^\]]*)\]", lambda m: m.group(1) if tense == "past" else m.group(2), template)
    text = re.sub(r"\{(\w+)\}", lambda m: slots[m.group(1)], text)
    # "I" stays capital, "you" only at a sentence start; a name after the first mention is fine as is
    return _capitalise(text)


PAST_CYCLE = ("first_past", "third_past", "first_past", "third_past", "second_past", "third_past")
PRESENT_CYCLE = ("first_present", "second_present", "first_present")


def _narrations(concept: str, present: list[bool]) -> list[str]:
    """One narration per story, the same mix for every concept (a direction must not learn "first
    person" because one concept happened to draw more of it): the concept's past-tense stories, in an
    order shuffled by a generator seeded with the concept, take PAST_CYCLE in turn; present-tense ones
    PRESENT_CYCLE."""
    out = [""] * len(present)
    rng = random.Random(f"narration-{concept}")
    for tense_is_present, cycle in ((False, PAST_CYCLE), (True, PRESENT_CYCLE)):
        idx = [i for i, p in enumerate(present) if p == tense_is_present]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            out[i] = cycle[j % len(cycle)]
    return out


def build_stories() -> list[dict]:
    topics = read_topics()
    rows = []
    for concept in CONCEPTS:
        pieces = read_pieces(SRC / f"{concept}.txt")
        narrations = _narrations(concept, [event.startswith("~") for _, event in pieces])
        seen: dict[str, int] = {}
        for i, (tid, event) in enumerate(pieces, start=1):
            if tid not in topics:
                raise ValueError(f"{concept}.txt: unknown topic {tid}")
            seen[tid] = seen.get(tid, 0) + 1
            present = event.startswith("~")
            event = event.lstrip("~ ").strip()
            tense = "present" if present else "past"
            sid = f"st-{concept}-{i:03d}"
            narration = narrations[i - 1]
            name, gender = random.Random(sid).choice(NAMES)
            topic_name, context = topics[tid]
            text = render(f"{context} {event}", tense, narration, name, gender)
            rows.append(
                {
                    "id": sid,
                    "text": text,
                    "label": concept,
                    "group": f"t{int(tid[1:]):03d}",
                    "meta": {
                        "split": "test" if tid in TEST_TOPICS else "train",
                        "topic": topic_name,
                        "narration": narration,
                    },
                }
            )
    return rows


def build_neutral() -> list[dict]:
    """``neutral.txt``: ``description | text`` or ``dialogue | text`` lines (`` // `` separates dialogue turns)."""
    rows = []
    for line in (SRC / "neutral.txt").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, _, text = (part.strip() for part in line.partition("|"))
        if kind not in ("description", "dialogue"):
            raise ValueError(f"neutral.txt: kind must be 'description' or 'dialogue', got {kind!r}")
        i = len(rows) + 1
        rows.append(
            {"id": f"neutral-{i:03d}", "text": text.replace(" // ", "\n"), "label": "neutral", "group": f"n{i:03d}",
             "meta": {"kind": kind}}
        )  # fmt: skip
    return rows


def main() -> None:
    for name, rows in (("stories.jsonl", build_stories()), ("neutral_texts.jsonl", build_neutral())):
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        (OUT / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
