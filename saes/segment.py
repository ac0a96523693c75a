"""Split a reasoning trace into steps with character spans: sentences (Thought Anchors) or paragraphs (RISE).

>>> from psylens.saes import segment
>>> [s.text for s in segment("Dr. Lee paid 3.5 dollars. Was she upset? Not at all!\\n\\nSo the answer is B.")]
['Dr. Lee paid 3.5 dollars.', 'Was she upset?', 'Not at all!', 'So the answer is B.']
>>> s = segment("Hmm. She smiled.")[0]; (s.start, s.end, s.text)
(0, 16, 'Hmm. She smiled.')

Rules of ``mode="sentence"``:

* a step ends at a run of ``.``, ``?`` or ``!`` (with any closing quotes or brackets right after it)
  followed by white space or the end of the text, and at every blank line;
* not inside a number (``3.5``: no white space after the point), not after an abbreviation
  (:data:`ABBREVIATIONS`: ``Dr.``, ``Mr.``, ``e.g.``, ``i.e.``, ``etc.`` before a lower-case word, ...),
  not at a ``.`` followed by a lower-case word (an unknown abbreviation), and not inside quotes
  (``"Wait. Stop." and left`` is one step; ``He said "Fine." Then he left.`` is two);
* a list marker opening a line (``1.``, ``A.``, ``2)``, ``-``, ``*``) starts a new step, and its
  own ``.`` never ends one (``1. Luca knows.`` is one step);
* fragments shorter than ``min_chars`` (``"Hmm."``, ``"1."``) are merged into the step that follows in
  the same paragraph, or, when last, into the step before.

``mode="paragraph"`` splits at blank lines only (RISE's steps). Spans index the original text:
``text[s.start:s.end] == s.text`` always, with surrounding white space outside the span.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Segment", "segment", "MODES", "ABBREVIATIONS", "DEFAULT_MIN_CHARS"]

MODES: tuple[str, ...] = ("sentence", "paragraph")
DEFAULT_MIN_CHARS = 8
# lower-case keys; matched against the word (letters and inner dots) right before the point
ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "cf", "al",
        "approx", "fig", "no", "vol", "ca", "viz", "eg", "ie", "inc", "ltd", "co", "jan", "feb", "mar",
        "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "a.m", "p.m",
    }
)
# abbreviations that can also end a sentence: they split when a capitalised word follows
_SENTENCE_FINAL_ABBR = frozenset({"etc", "al", "a.m", "p.m", "u.s", "u.k", "inc", "ltd", "co"})
_BLANK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_TERM = re.compile(r"[.?!]+")
_CLOSERS = "\"'”’)]»"
_OPEN_Q = "“«"
_CLOSE_Q = "”»"
_MARKER = re.compile(r"(?:\d{1,3}|[A-Za-z])[.)]\s|[-*•]\s")
_WORD_BEFORE = re.compile(r"([A-Za-z](?:[A-Za-z.]*[A-Za-z])?)$")


@dataclass(frozen=True)
class Segment:
    """One step of a trace: ``text == trace[start:end]``; ``index`` counts steps from 0."""

    index: int
    start: int
    end: int
    text: str

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad span [{self.start}, {self.end}); need 0 <= start <= end")
        if self.end - self.start != len(self.text):
            raise ValueError(f"span [{self.start}, {self.end}) has length {self.end - self.start}, text {len(self.text)}")

    def to_json(self) -> dict[str, object]:
        return {"index": self.index, "start": self.start, "end": self.end, "text": self.text}


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _paragraphs(text: str) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for m in _BLANK.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    out = []
    for a, b in spans:
        a, b = _strip_span(text, a, b)
        if b > a:
            out.append((a, b))
    return out


def _is_marker_at(text: str, i: int, para_start: int) -> bool:
    """Does a list marker start at ``i``, which opens a line (after indentation)?"""
    j = i
    while j > para_start and text[j - 1] in " \t":
        j -= 1
    if j != para_start and text[j - 1] != "\n":
        return False
    return _MARKER.match(text, i) is not None


def _quote_depths(text: str, a: int, b: int) -> list[bool]:
    """``inside[i - a]``: is character ``i`` inside a double-quoted span of this paragraph?"""
    inside, state = [], False
    for i in range(a, b):
        c = text[i]
        if c == '"':
            # a straight quote opens when it follows space/start/opening punctuation, else closes
            prev = text[i - 1] if i > a else " "
            opening = prev.isspace() or prev in "([{-—:" or i == a
            state = True if opening and not state else False if state else state
            inside.append(True)
            continue
        if c in _OPEN_Q:
            state = True
        elif c in _CLOSE_Q:
            inside.append(True)
            state = False
            continue
        inside.append(state)
    return inside


def _sentence_ends(text: str, a: int, b: int) -> list[int]:
    """Positions (exclusive ends) where a sentence ends inside the paragraph ``text[a:b]``."""
    ends: list[int] = []
    inside = _quote_depths(text, a, b)
    # line starts with a list marker begin a new step
    for m in re.finditer(r"\n[ \t]*", text[a:b]):
        i = a + m.end()
        if i < b and _is_marker_at(text, i, a):
            ends.append(a + m.start())
    for m in _TERM.finditer(text, a, b):
        s, e = m.start(), m.end()
        quoted = inside[s - a]
        while e < b and text[e] in _CLOSERS:
            e += 1
        if quoted:
            # inside quotes only a terminator that closes the quote, before a capital, ends a step
            after = e
            while after < b and text[after].isspace():
                after += 1
            closes = any(c in '"”»' for c in text[m.end():e])
            if not (closes and (after >= b or text[after].isupper()) and (e >= b or text[e].isspace())):
                continue
        if e < b and not text[e].isspace():
            continue  # 3.5, e.g.x, "Wait."and
        nxt = e
        while nxt < b and text[nxt].isspace():
            nxt += 1
        follower = text[nxt] if nxt < b else ""
        if m.group() == "." or m.group().startswith("."):
            wm = _WORD_BEFORE.search(text, a, s)
            word = wm.group(1).lower() if wm else ""
            # the marker of a list item ("1.", "A.") is not a sentence end
            if wm is None and re.search(r"\d{1,3}$", text[a:s]):
                start_num = s - len(re.search(r"\d{1,3}$", text[a:s]).group())
                if _is_marker_at(text, start_num, a):
                    continue
            if wm is not None and len(word) == 1 and _is_marker_at(text, wm.start(1), a):
                continue
            if word in ABBREVIATIONS and m.group() == ".":
                if not (word in _SENTENCE_FINAL_ABBR and follower[:1].isupper()):
                    continue
            if follower[:1].islower():
                continue  # "approx. five", "... and then"
        ends.append(e)
    return sorted(set(ends))


def _merge(text: str, spans: list[tuple[int, int]], min_chars: int) -> list[tuple[int, int]]:
    out = list(spans)
    i = 0
    while len(out) > 1 and i < len(out):
        a, b = out[i]
        if b - a >= min_chars:
            i += 1
            continue
        if i + 1 < len(out):
            out[i : i + 2] = [(a, out[i + 1][1])]
        else:
            out[i - 1 : i + 1] = [(out[i - 1][0], b)]
            i -= 1
    return out


def segment(text: str, mode: str = "sentence", *, min_chars: int | None = None) -> list[Segment]:
    """Steps of ``text`` with character spans (see the module docstring for the rules).

    ``min_chars``: a step shorter than this (after stripping) is merged into a neighbour in its
    paragraph — default 8 for ``"sentence"``, 1 (no merging) for ``"paragraph"``. Empty or
    whitespace-only text gives no steps.
    """
    if not isinstance(text, str):
        raise ValueError(f"segment needs a string, got {type(text).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if min_chars is None:
        min_chars = DEFAULT_MIN_CHARS if mode == "sentence" else 1
    if min_chars < 0:
        raise ValueError(f"min_chars must be >= 0, got {min_chars}")
    spans: list[tuple[int, int]] = []
    for a, b in _paragraphs(text):
        if mode == "paragraph":
            spans.append((a, b))
            continue
        para: list[tuple[int, int]] = []
        pos = a
        for e in _sentence_ends(text, a, b) + [b]:
            s0, e0 = _strip_span(text, pos, e)
            if e0 > s0:
                para.append((s0, e0))
            pos = max(pos, e)
        spans.extend(_merge(text, para, min_chars))
    if mode == "paragraph":
        spans = _merge(text, spans, min_chars)
    return [Segment(index=i, start=a, end=b, text=text[a:b]) for i, (a, b) in enumerate(spans)]
