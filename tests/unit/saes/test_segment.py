"""segment(): sentences and paragraphs with spans, on tricky text."""

from __future__ import annotations

import pytest

from psylens.saes import Segment, segment


def texts(t: str, mode: str = "sentence", **kw) -> list[str]:
    return [s.text for s in segment(t, mode, **kw)]


def test_spans_index_the_original_text():
    t = "  Mia lost her keys.  She looks everywhere!\n\n\nWhere could they be?   \n"
    steps = segment(t)
    assert [s.text for s in steps] == ["Mia lost her keys.", "She looks everywhere!", "Where could they be?"]
    for i, s in enumerate(steps):
        assert t[s.start : s.end] == s.text and s.index == i
    assert steps[0].start == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        # numbers are not sentence ends
        ("The ticket cost 3.5 dollars. He paid 10.25 more.", ["The ticket cost 3.5 dollars.", "He paid 10.25 more."]),
        # abbreviations
        ("Dr. Lee met Mr. Smith at noon. They talked.", ["Dr. Lee met Mr. Smith at noon.", "They talked."]),
        ("She likes fruit, e.g. apples and pears. He does not.", ["She likes fruit, e.g. apples and pears.", "He does not."]),
        ("He was upset, i.e. angry at her. Then he calmed down.", ["He was upset, i.e. angry at her.", "Then he calmed down."]),
        ("Pens, paper, etc. were on the desk. Etc. can end one too, etc. Then more.",
         ["Pens, paper, etc. were on the desk.", "Etc. can end one too, etc.", "Then more."]),
        # quotes
        ('She said "Wait. Stop." and left the room.', ['She said "Wait. Stop." and left the room.']),
        ('He said "I am fine." Then he left the room.', ['He said "I am fine."', "Then he left the room."]),
        ("She whispered “Is it over? Really?” and smiled.", ["She whispered “Is it over? Really?” and smiled."]),
        # ? and ! and runs of them
        # (short "Maybe." merges into the next step, short "So yes." into the one before)
        ("Is she sad?! Maybe. She cried!!! So yes.", ["Is she sad?!", "Maybe. She cried!!! So yes."]),
        ("Is she sad?! Perhaps a bit. She cried!!!", ["Is she sad?!", "Perhaps a bit.", "She cried!!!"]),
        # an ellipsis before a lower-case word continues the sentence
        ("Wait... maybe she did not know. She was away.", ["Wait... maybe she did not know.", "She was away."]),
        # blank lines always split, even without punctuation
        ("First thought without a stop\n\nSecond thought", ["First thought without a stop", "Second thought"]),
        # list markers start steps; their own point does not end one
        ("1. Luca lost his passport.\n2. He found it today\n3. So he is relieved",
         ["1. Luca lost his passport.", "2. He found it today", "3. So he is relieved"]),
        ("A. disappointed - no.\nB. relieved - yes\n- C is wrong", ["A. disappointed - no.", "B. relieved - yes", "- C is wrong"]),
        # a choice letter that ends a sentence still ends it
        ("So the answer is B. She feels upset.", ["So the answer is B.", "She feels upset."]),
    ],
)
def test_tricky_sentences(text, expected):
    assert texts(text) == expected


def test_short_fragments_merge_forward_then_backward():
    assert texts("Hmm. She smiled at him.") == ["Hmm. She smiled at him."]
    assert texts("She smiled at him. Yes.") == ["She smiled at him. Yes."]
    # a fragment alone in its paragraph stays a step (merging does not cross blank lines)
    assert texts("She smiled at him.\n\nOk.") == ["She smiled at him.", "Ok."]
    # min_chars=0 keeps every fragment; a large one merges the whole paragraph
    assert texts("Hmm. She smiled at him.", min_chars=0) == ["Hmm.", "She smiled at him."]
    assert texts("Hmm. She smiled at him.", min_chars=1000) == ["Hmm. She smiled at him."]


def test_paragraph_mode_splits_on_blank_lines_only():
    t = "Mia lost her keys. She is upset.\nShe looks around.\n\n  \n\nSo the answer is B.\n\n"
    assert texts(t, "paragraph") == ["Mia lost her keys. She is upset.\nShe looks around.", "So the answer is B."]
    assert len(segment(t, "sentence")) == 4


def test_empty_and_bad_input():
    assert segment("") == [] and segment(" \n\n \n") == []
    with pytest.raises(ValueError, match="mode"):
        segment("x", mode="word")
    with pytest.raises(ValueError, match="string"):
        segment(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="span"):
        Segment(index=0, start=3, end=1, text="")


def test_a_real_trace_round_trips():
    t = (
        "\n\n1. Luca does not know what the question is asking.\n2. Luca is actually relieved that he found the "
        "passport.\n3. He feels disappointed because he cannot find the passport.\n\nSo, the answer is D."
    )
    steps = segment(t)
    assert len(steps) == 4 and steps[-1].text == "So, the answer is D."
    assert all(t[s.start : s.end] == s.text for s in steps)
    # spans are ordered and disjoint
    assert all(a.end <= b.start for a, b in zip(steps, steps[1:]))
