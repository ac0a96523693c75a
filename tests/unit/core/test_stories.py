"""The issue-10 data: the 24 concepts, the ``stories`` and ``neutral_texts`` sets, the word families,
the "… I feel" words and contexts, and the dose-response templates."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from psylens import concepts, stimuli
from psylens.concepts import CONCEPTS
from psylens.stimuli import EMOTIONS, Stimuli, load

ROOT = Path(__file__).resolve().parents[3]
# verb agreement the placeholders get wrong when misused ("{s} was" for "{s} {was}"), in subject position
_BAD_AGREEMENT = re.compile(
    r"(?:^|[.!?;,]\s+|\b(?:and|but|when|while|as|that|because|until|if|so)\s+)(you was|I is|I has|I are)\b",
    re.IGNORECASE,
)
NARRATIONS = {"first_past", "first_present", "second_past", "second_present", "third_past"}


@pytest.fixture(scope="module")
def stories() -> Stimuli:
    return load("stories")


@pytest.fixture(scope="module")
def neutral() -> Stimuli:
    return load("neutral_texts")


@pytest.fixture(scope="module")
def families() -> dict[str, list[str]]:
    return concepts.concept_words()


def _pattern(words: list[str]) -> re.Pattern[str]:
    """Whole-word, case-insensitive match of any of ``words`` (the same check as test_stimuli's)."""
    return re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)


def _own_leaks(items: Stimuli, families: dict[str, list[str]]) -> list[tuple[str, str]]:
    patterns = {c: _pattern(ws) for c, ws in families.items()}
    return [(s.id, m.group(1)) for s in items for m in patterns[str(s.label)].finditer(s.text)]


# ---------------------------------------------------------------- concepts
def test_concepts_are_the_24_in_order() -> None:
    assert len(CONCEPTS) == 24 == len(set(CONCEPTS))
    assert CONCEPTS[:6] == EMOTIONS
    assert CONCEPTS[6:] == (
        "calm", "content", "proud", "grateful", "loving", "hopeful", "excited", "amused", "relieved",
        "anxious", "desperate", "guilty", "ashamed", "lonely", "bored", "jealous", "embarrassed", "nervous",
    )  # fmt: skip


def test_concepts_json_has_every_concept_with_valid_fields() -> None:
    raw = json.loads(stimuli.data_path("concepts.json").read_text(encoding="utf-8"))
    assert isinstance(raw["source"], str) and "Russell" in raw["source"]
    assert set(raw) - {"source", "_doc"} == set(CONCEPTS)
    info = concepts.concept_info()
    assert list(info) == list(CONCEPTS)
    for c, v in info.items():
        assert set(v) == {"valence", "arousal", "valence_score", "arousal_score"}, c
        assert v["valence"] in ("positive", "negative") and v["arousal"] in ("high", "low"), c
        assert isinstance(v["valence_score"], float) and isinstance(v["arousal_score"], float), c
        assert -1.0 <= v["valence_score"] <= 1.0 and -1.0 <= v["arousal_score"] <= 1.0, c
        # the scores' signs agree with the labels
        assert (v["valence_score"] > 0) == (v["valence"] == "positive"), c
        assert (v["arousal_score"] > 0) == (v["arousal"] == "high"), c
    # known placements on the circumplex, and both halves of each axis populated
    assert info["joy"]["valence"] == "positive" and info["sadness"]["valence"] == "negative"
    assert info["anger"]["arousal"] == "high" and info["calm"]["arousal"] == "low" and info["bored"]["arousal"] == "low"
    for axis in ("valence", "arousal"):
        counts = Counter(v[axis] for v in info.values())
        assert min(counts.values()) >= 8, (axis, counts)
    assert concepts.concept_source() == raw["source"]


def test_loaders_return_fresh_objects() -> None:
    a = concepts.feel_words()
    a["joy"].append("x")
    assert "x" not in concepts.feel_words()["joy"]


# ---------------------------------------------------------------- word families
def test_every_concept_has_a_word_family(families: dict[str, list[str]]) -> None:
    raw = json.loads(stimuli.data_path("emotion_words.json").read_text(encoding="utf-8"))
    assert set(raw) == set(CONCEPTS)
    for c in CONCEPTS:
        ws = families[c]
        assert len(ws) >= 6 and len(ws) == len(set(ws)), c
    # each family holds its own name (or, for the basic six, the adjective) and inflections
    for c, word in {**{c: c for c in CONCEPTS[6:]}, "anger": "angry", "fear": "afraid", "joy": "happy",
                    "sadness": "sad", "disgust": "disgusted", "surprise": "surprised"}.items():  # fmt: skip
        assert word in families[c], c
    assert {"loved", "lovingly", "love"} <= set(families["loving"])
    assert {"relief", "relieve"} <= set(families["relieved"])


# ---------------------------------------------------------------- stories
def test_stories_counts_and_labels(stories: Stimuli) -> None:
    counts = Counter(stories.labels)
    assert set(counts) == set(CONCEPTS)
    assert min(counts.values()) >= 40, counts
    assert len(set(stories.ids)) == len(stories)
    assert len(set(stories.texts)) == len(stories)  # no copy-pasted stories
    for s in stories:
        assert re.fullmatch(rf"st-{s.label}-\d{{3}}", s.id), s.id
        assert s.group is not None and re.fullmatch(r"t\d{3}", s.group), s.group
        assert set(s.meta) == {"split", "topic", "narration"}, s.id
        assert s.meta["split"] in ("train", "test") and s.meta["narration"] in NARRATIONS, s.id
        assert isinstance(s.meta["topic"], str) and s.meta["topic"], s.id


def test_stories_are_short_and_fully_rendered(stories: Stimuli) -> None:
    for s in stories:
        n_sentences = len(re.findall(r'[.!?]["”]?(?:\s|$)', s.text))
        assert 2 <= n_sentences <= 4, (s.id, s.text)
        assert not re.search(r"[{}\[\]]", s.text), s.id  # no placeholder left
        assert not _BAD_AGREEMENT.search(s.text), s.id
        assert s.text == s.text.strip() and s.text[0].isupper(), s.id


def test_agreement_check_flags_planted_mistakes() -> None:
    assert _BAD_AGREEMENT.search("You was next in the race.") and _BAD_AGREEMENT.search("I ran, and I has won.")
    assert not _BAD_AGREEMENT.search("The woman beside you was kind. Everyone around you is talking.")


def test_stories_mix_narrations(stories: Stimuli) -> None:
    assert set(Counter(s.meta["narration"] for s in stories)) == NARRATIONS
    for c in CONCEPTS:
        ns = Counter(s.meta["narration"] for s in stories if s.label == c)
        assert len(ns) >= 3 and max(ns.values()) <= 0.75 * sum(ns.values()), (c, ns)


def test_narrations_are_balanced_across_concepts(stories: Stimuli) -> None:
    # every concept gets the same mix of persons: otherwise "mean minus the mean over concepts" keeps a
    # first-person-vs-third-person axis (drawn at random per story, the first-person share ranged
    # 0.31–0.46 across concepts and showed up on the concept directions' first principal component)
    person = {s.id: s.meta["narration"].split("_")[0] for s in stories}
    overall = Counter(person.values())
    for c in CONCEPTS:
        ids = [s.id for s in stories if s.label == c]
        mine = Counter(person[i] for i in ids)
        for p in ("first", "second", "third"):
            share, expected = mine[p] / len(ids), overall[p] / len(stories)
            assert abs(share - expected) <= 0.05, (c, p, round(share, 2), round(expected, 2))


def test_stories_hold_out_a_quarter_by_topic(stories: Stimuli) -> None:
    for c in CONCEPTS:
        splits = Counter(s.meta["split"] for s in stories if s.label == c)
        assert splits["test"] >= 0.25 * (splits["test"] + splits["train"]), (c, splits)
        assert splits["train"] >= 0.5 * (splits["test"] + splits["train"]), (c, splits)
    test_topics = {s.group for s in stories if s.meta["split"] == "test"}
    train_topics = {s.group for s in stories if s.meta["split"] == "train"}
    assert test_topics and not test_topics & train_topics
    # a group is one topic: the same name everywhere
    names: dict[str | None, set[str]] = {}
    for s in stories:
        names.setdefault(s.group, set()).add(s.meta["topic"])
    assert all(len(v) == 1 for v in names.values())


def test_topics_are_shared_across_concepts(stories: Stimuli) -> None:
    # so a concept direction cannot be a topic detector: most topics carry most concepts
    per_topic: dict[str | None, set[str | None]] = {}
    for s in stories:
        per_topic.setdefault(s.group, set()).add(s.label)
    assert len(per_topic) >= 40
    assert sum(len(v) >= 18 for v in per_topic.values()) >= 0.8 * len(per_topic)
    for c in CONCEPTS:
        assert len({s.group for s in stories if s.label == c}) >= 40, c  # ≥ 40 topics per concept


def test_stories_never_name_their_own_concept(stories: Stimuli, families: dict[str, list[str]]) -> None:
    hits = _own_leaks(stories, families)
    assert not hits, hits[:20]


def test_stories_name_no_concept_at_all(stories: Stimuli, families: dict[str, list[str]]) -> None:
    # stricter than the issue asks: no story uses any concept's family (so no story is labelled by a word)
    every = _pattern(sorted({w for ws in families.values() for w in ws}))
    hits = [(s.id, m.group(1)) for s in stories for m in every.finditer(s.text)]
    assert not hits, hits[:20]


def test_leak_check_flags_planted_words(stories: Stimuli, families: dict[str, list[str]]) -> None:
    # the control: the same checker catches a family word planted in a story, in any case,
    # but not a word that merely contains one ("calmness" is in the family, "becalmed" is not)
    planted = []
    for c, word in (("lonely", "Alone"), ("calm", "calmly"), ("anger", "FURIOUS"), ("bored", "tedious")):
        s = next(s for s in stories if s.label == c)
        planted.append(stimuli.Stimulus(text=f"{s.text} It was {word}.", label=c, id=f"planted-{c}"))
    clean = [stimuli.Stimulus(text="The ship lay becalmed; a hopeless-looking sailor.", label="calm", id="clean")]
    hits = _own_leaks(Stimuli([*planted, *clean]), families)
    assert sorted(i for i, _ in hits) == sorted(p.id for p in planted)


def test_stories_file_is_what_the_generator_writes(stories: Stimuli) -> None:
    # core/data/stories.jsonl is generated (scripts/make_stories.py): edit the sources, not the file
    spec = importlib.util.spec_from_file_location("make_stories", ROOT / "scripts" / "make_stories.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.CONCEPTS == CONCEPTS
    rows = mod.build_stories()
    assert [r["id"] for r in rows] == stories.ids
    assert [r["text"] for r in rows] == stories.texts
    assert [r["meta"] for r in rows] == [s.meta for s in stories]
    assert [r["text"] for r in mod.build_neutral()] == load("neutral_texts").texts


# ---------------------------------------------------------------- neutral texts
def test_neutral_texts(neutral: Stimuli, families: dict[str, list[str]]) -> None:
    assert len(neutral) >= 100
    assert set(neutral.labels) == {"neutral"}
    assert len(set(neutral.texts)) == len(neutral) and len(set(neutral.groups)) == len(neutral)
    assert all(re.fullmatch(r"n\d{3}", str(g)) for g in neutral.groups)
    kinds = Counter(s.meta["kind"] for s in neutral)
    assert set(kinds) == {"dialogue", "description"} and min(kinds.values()) >= 30, kinds
    every = _pattern(sorted({w for ws in families.values() for w in ws}))
    hits = [(s.id, m.group(1)) for s in neutral for m in every.finditer(s.text)]
    assert not hits, hits
    # control: the same check flags the explicit statements
    assert any(every.search(t) for t in load("explicit").texts)


# ---------------------------------------------------------------- feel words and contexts
def test_feel_words() -> None:
    fw = concepts.feel_words()
    raw = json.loads(stimuli.data_path("feel_words.json").read_text(encoding="utf-8"))
    assert isinstance(raw["_doc"], str) and raw["_doc"]
    assert list(fw) == list(EMOTIONS) and set(raw) == {*EMOTIONS, "_doc"}
    all_words = [w for ws in fw.values() for w in ws]
    assert len(all_words) == len(set(all_words))  # disjoint lists
    for e, ws in fw.items():
        assert len(ws) >= 5, e
        assert all(re.fullmatch(r"[a-z]+", w) for w in ws), ws  # single words, no leading space
    assert {"angry", "furious"} <= set(fw["anger"]) and {"happy", "glad"} <= set(fw["joy"])


def test_feel_words_mostly_single_tokens(smollm_tokenizer) -> None:
    for e, ws in concepts.feel_words().items():
        single = [w for w in ws if len(smollm_tokenizer(" " + w, add_special_tokens=False).input_ids) == 1]
        assert len(single) >= 4, (e, single)


def test_feel_contexts(families: dict[str, list[str]]) -> None:
    ctx = concepts.feel_contexts()
    assert len(ctx) >= 20 and len(set(ctx)) == len(ctx)
    assert all(c.endswith("I feel") for c in ctx)
    every = _pattern(sorted({w for ws in families.values() for w in ws}))
    assert not [(c, m.group(1)) for c in ctx for m in every.finditer(c)]


# ---------------------------------------------------------------- dose-response templates
def test_dose_templates() -> None:
    ts = concepts.dose_templates()
    assert len(ts) >= 6
    assert len({t["id"] for t in ts}) == len(ts)
    for t in ts:
        assert set(t) == {"id", "template", "levels", "emotion", "sign", "doc"}, t["id"]
        assert t["template"].count("{n}") == 1, t["id"]
        assert t["emotion"] in EMOTIONS and t["sign"] in (1, -1), t["id"]
        levels = t["levels"]
        assert len(levels) >= 8 and all(isinstance(x, (int, float)) for x in levels), t["id"]
        assert all(a < b for a, b in zip(levels, levels[1:])), t["id"]  # strictly increasing
        texts = [t["template"].format(n=x) for x in levels]
        assert len(set(texts)) == len(levels) and all("{" not in x for x in texts), t["id"]
        assert isinstance(t["doc"], str) and len(t["doc"]) > 20
    assert len({t["emotion"] for t in ts}) >= 5
