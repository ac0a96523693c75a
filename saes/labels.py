"""Behaviour labels for reasoning steps: documented cue rules, an optional LLM judge, and their accuracy.

>>> from psylens.saes import label_step
>>> label_step("Wait, that is not right: Sally never saw the marble move, so she still thinks it is in the basket.")
['perspective_taking', 'backtracking']
>>> label_step("So the answer is D, relieved.")
['emotion_attribution', 'conclusion']

Labels (:data:`LABELS`; a step may have several, or none):

``emotion_attribution``
    a feeling is attributed to a person: an emotion word (:data:`EMOTION_WORDS`) with a
    predicate that gives it to someone — ``feel(s)/felt``, ``is/was/be/seems/looks/become +
    (up to 3 words) + emotion``, ``makes/made … emotion``, ``tears of``, ``(his|her) feelings``,
    an answer naming an emotion (``Answer: C, hurt``);
    or an emotion noun such as ``grief``, ``annoyance`` after ``with/of/in/is``. Steps that only
    list the choices (``The options are happy, sad …``, ``B. scared - …``) do not count.
``perspective_taking``
    a mental state of someone other than the reasoner: ``knows``, ``believes``, ``thinks``,
    ``expects``, ``realizes``, ``notices``, ``sees/saw``, ``wants``, ``is trying to``, ``meant to``,
    ``is unaware``, ``has no idea``, ``point of view``, ``in X's mind``, ``on purpose``, ``by accident``,
    ``sarcastic``, ``pretends``, ``lies`` — with a subject that is not ``I``/``we``/``you``/``let's``.
``reflection``
    the reasoner checks or evaluates their own reasoning: ``let me check/double-check/verify/make
    sure/look … again/reconsider``, ``to be sure``, ``does that make sense``, ``is that right``,
    ``(that|this) seems right``, ``on the other hand``, ``I should think/consider``, ``is there
    another``, ``which of these``, ``does any option``, ``still seems``; or a self-question (a step
    ending in ``?`` that is not a quoted question of the task).
``backtracking``
    the reasoner abandons or corrects what came before: ``wait``, ``actually`` (opening the step
    or after ``no``/``but``, or followed by a comma — not "he is actually annoyed"), ``hold on``,
    ``scratch that``, ``on second thought``, ``I made a mistake``, ``I misread``, ``that's (not right
    | wrong | incorrect)``, ``doesn't make sense``, ``let me start over / try again / try another``,
    ``change my answer``, a step opening with ``No,``.
``conclusion``
    the final answer or verdict: ``Answer: X``, ``(the|my|final|correct|best) (answer|choice|option) is``,
    ``therefore``, ``thus``, ``in conclusion``, ``I will go with``, ``so … (option|choice) X``,
    a step that is just a choice letter.
``restatement``
    the task restated: ``the question (asks|is)``, ``the story (says|tells)``, ``the options are``,
    ``we need to (decide|find|figure|understand)``, a choice listed with its meaning
    (``B. scared - …``); and, when the task ``context`` is given, a step whose content words are
    ≥ 70% words of the context (at least 4 content words) — a retold story fact.

Footguns: rules see one step at a time (``context`` only adds the restatement overlap); they
key on English cue phrases, so a paraphrase without a cue is missed and a cue used for something
else is a false positive. The measured accuracy on the hand-labelled sample
(``psylens/data/step_labels_gold.jsonl``) is in docs/saes.md — read it before trusting a rate.
For a larger model, :func:`make_llm_judge` builds a judge callable to use instead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "LABELS",
    "EMOTION_WORDS",
    "GOLD_FILE",
    "label_step",
    "label_steps",
    "load_gold",
    "labeller_accuracy",
    "make_llm_judge",
]

LABELS: tuple[str, ...] = (
    "emotion_attribution",
    "perspective_taking",
    "reflection",
    "backtracking",
    "conclusion",
    "restatement",
)
GOLD_FILE = "step_labels_gold.jsonl"

EMOTION_WORDS: frozenset[str] = frozenset(
    """
    happy happier happiest glad joyful joy cheerful delighted pleased content thrilled excited elated
    ecstatic sad sadder unhappy sorrowful miserable heartbroken depressed gloomy grieving grief
    lonely angry mad furious annoyed annoyance irritated frustrated frustration upset resentful bitter
    hurt offended scared afraid frightened fearful fear terrified nervous anxious anxiety worried worry
    tense uneasy panicked stressed disgusted disgust surprised surprise shocked amazed astonished
    confused puzzled embarrassed embarrassment ashamed shame guilty guilt awkward uncomfortable
    humiliated jealous jealousy envious envy proud pride grateful gratitude thankful relieved relief
    hopeful hope disappointed disappointment disappointing regretful regret sorry betrayed calm
    peaceful bored boredom curious love loved affection lonely homesick nostalgic insecure
    confident excitement sympathetic
    """.split()
)
_EMO = r"(?:" + "|".join(sorted(EMOTION_WORDS, key=len, reverse=True)) + r")"

_I = re.IGNORECASE


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), _I)


_CHOICE_LINE = re.compile(r"^\s*(?:\(?[A-D][.):]\s+\w+(?:\s+\w+)?\s*[-–—:]|the (?:options|choices) are)", _I)
_EMOTION = _rx(
    rf"\b(?:feel|feels|felt|feeling)\b[^.?!]*?\b{_EMO}\b",
    rf"\b{_EMO}\b[^.?!]*?\b(?:feel|feels|felt|feeling)\b",
    rf"\b(?:is|are|was|were|be|been|being|am|seems?|seemed|looks?|looked|become|becomes|became|gets?|got|stays?)\s+(?:\w+[ ,]+){{0,3}}?{_EMO}\b",
    rf"\b(?:makes?|made|making|leaves?|left)\s+(?:\w+\s+){{1,3}}?{_EMO}\b",
    r"\b(?:tears of|with|of|in|out of|full of)\s+(?:\w+\s+)?(?:joy|grief|fear|guilt|shame|pride|relief|envy|jealousy|annoyance|frustration|embarrassment|disappointment|anger|excitement|anxiety)\b",
    r"\b(?:his|her|their|\w+'s) (?:feelings|emotions|mood)\b",
    rf"\bfeelings? (?:is|are|was|were) (?:\w+\s+){{0,3}}?{_EMO}\b",
    rf"\banswer\b[^\n]*?\b{_EMO}\b",  # "Answer: C, hurt." names the feeling as the answer
)
_MENTAL = (
    r"knows?|knew|believes?|believed|thinks|thought|expects?|expected|realizes?|realized|realises?|"
    r"notices?|noticed|sees|saw|seen|wants?|wanted|wishes|intends?|intended|hopes|assumes?|assumed|"
    r"remembers?|forgot|forgets|understands?|understood|suspects?|doubts?|worries that|imagines?|"
    r"did not see|didn't see|has not seen|hasn't seen|does not know|doesn't know|did not know|didn't know|"
    r"is unaware|was unaware|has no idea|had no idea|is trying to|was trying to|tries to|tried to|"
    r"meant to|did not mean|didn't mean|does not mean|pretends?|pretended|lies|lied|is lying|"
    r"is being sarcastic|was being sarcastic|mind"
)
_NOT_OTHER = re.compile(r"\b(?:I|we|you|let's|let us)\s+(?:\w+\s+){0,2}$", _I)
_MENTAL_RX = re.compile(rf"\b(?:{_MENTAL})\b", _I)
_PERSPECTIVE_PHRASES = _rx(
    r"\bpoint of view\b", r"\bperspective\b", r"\bin (?:his|her|their|\w+'s) (?:mind|eyes|view)\b",
    r"\bfrom (?:his|her|their|\w+'s) (?:view|side)\b", r"\bon purpose\b", r"\bby accident\b", r"\baccidentally\b",
    r"\bsarcastic\b", r"\bdoes not really think\b", r"\bhis (?:plan|goal|intention)\b", r"\bher (?:plan|goal|intention)\b",
)
_REFLECTION = _rx(
    r"\blet me (?:check|double[- ]check|verify|make sure|look (?:at|over)? ?(?:\w+ )*again|re-?read|reconsider|re-?check|re-?think|think (?:again|about|more))",
    r"\bdouble[- ]check", r"\bto be sure\b", r"\bmake sure\b", r"\bdoes (?:this|that|it) make sense\b",
    r"\bis (?:this|that|it) (?:right|correct)\b", r"\b(?:this|that|it) (?:seems|sounds|looks) (?:right|correct|reasonable)\b",
    r"\bon the other hand\b", r"\bI should (?:think|check|consider|be careful|focus)\b", r"\bis there (?:another|any other)\b",
    r"\bwhich of (?:these|the options|the choices)\b", r"\bdoes any (?:option|choice)\b", r"\bstill seems\b",
    r"\bI think this is right\b", r"\blet me (?:see|think)\b", r"\breconsider", r"\bre-?examine",
)
_BACKTRACK = _rx(
    r"^\W*wait\b", r"\bbut wait\b", r"\bwait,", r"^\W*actually\b", r"\b(?:no|but|oh),? actually\b", r"\bactually,", r"\bhold on\b", r"\bscratch that\b",
    r"\bon second thought", r"\bI made a mistake\b", r"\bmy mistake\b", r"\bI misread\b", r"\bI was wrong\b",
    r"\b(?:that|this|that's|this is|that is)\s*(?:is\s+)?(?:not right|wrong|incorrect|not correct)\b",
    r"\bdoesn't make sense\b", r"\bdoes not make sense\b", r"\blet me (?:start over|try again|try another|redo)\b",
    r"\bchange my answer\b", r"^\W*no,", r"\bcorrection\b", r"\bI was going to say\b",
)
_CONCLUSION = _rx(
    r"\banswer\s*(?:is\s*)?[:\-=]?\s*\(?[A-D]\b", r"\b(?:the|my|final|correct|best|right) (?:answer|choice|option) is\b",
    r"\btherefore\b", r"\bthus\b", r"\bin conclusion\b", r"\bI(?:'ll| will) go with\b", r"\bfinal answer\b",
    r"\b(?:option|choice)\s+\(?[A-D]\)?\s*[.!]?\s*$", r"^\s*\(?[A-D]\)?[.)]?\s*$", r"\bso,? (?:the )?answer\b",
    r"\bthe answer\b[^.?!]*\b[A-D]\b",
)
_RESTATE = _rx(
    r"\bthe question (?:asks|is|says|wants)\b", r"\bthe (?:story|text|passage|problem) (?:says|tells|states|describes|is about)\b",
    r"\bthe (?:options|choices) are\b", r"\bwe (?:need|have) to (?:decide|find|figure|understand|determine|work out)\b",
    r"^\s*\(?[A-D][.)]\s+\w+(?:\s+\w+)?\s*[-–—:]", r"\baccording to the story\b", r"\bin the story\b",
    r"\bthe question is\b",
)
_STOP = frozenset(
    """a an the and or but so of to in on at for with from by is are was were be been being it its this that
    these those he she they his her their him them i we you my our your as if then than not no do does did
    has have had will would can could should may might just also very too there here what which who when
    where why how about into out up down over after before again all any some one most more""".split()
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'’]+")


def _content(text: str) -> list[str]:
    return [w.lower().strip("'’") for w in _WORD.findall(text) if w.lower() not in _STOP]


def _perspective(text: str) -> bool:
    if _PERSPECTIVE_PHRASES.search(text):
        return True
    for m in _MENTAL_RX.finditer(text):
        if not _NOT_OTHER.search(text[: m.start()]):
            return True
    return False


def _restatement(text: str, context: str | None) -> bool:
    if _RESTATE.search(text):
        return True
    if context:
        words = _content(text)
        if len(words) >= 4:
            ctx = set(_content(context))
            return sum(w in ctx for w in words) / len(words) >= 0.7
    return False


def label_step(text: str, context: str | None = None) -> list[str]:
    """The behaviour labels of one step by the rules in the module docstring (in :data:`LABELS` order).

    ``context``: the task (story and question), used only for the restatement overlap rule.
    """
    if not isinstance(text, str):
        raise ValueError(f"a step must be a string, got {type(text).__name__}")
    choice_line = bool(_CHOICE_LINE.search(text))
    out = []
    if _EMOTION.search(text) and not choice_line:
        out.append("emotion_attribution")
    if _perspective(text):
        out.append("perspective_taking")
    s = text.strip()
    self_question = s.endswith("?") and not re.search(r"\bthe question\b|\"[^\"]*\?\"?$", s, _I)
    if _REFLECTION.search(text) or self_question:
        out.append("reflection")
    if _BACKTRACK.search(text):
        out.append("backtracking")
    if _CONCLUSION.search(text):
        out.append("conclusion")
    if _restatement(text, context) or choice_line:
        out.append("restatement")
    return out


Judge = Callable[[str, str | None], Iterable[str]]


def label_steps(
    steps: Sequence[str], context: str | None = None, *, judge: Judge | None = None
) -> list[list[str]]:
    """Labels of every step: the rules, or ``judge(step, context) -> labels`` when given.

    A judge's labels are checked against :data:`LABELS` (an unknown label raises ``ValueError``).
    """
    if isinstance(steps, str):
        raise ValueError("label_steps takes a list of steps; for one step use label_step(text)")
    if judge is None:
        return [label_step(s, context) for s in steps]
    out = []
    for s in steps:
        got = list(judge(s, context))
        bad = [g for g in got if g not in LABELS]
        if bad:
            raise ValueError(f"the judge returned unknown labels {bad}; valid labels: {', '.join(LABELS)}")
        out.append([lab for lab in LABELS if lab in got])
    return out


_JUDGE_PROMPT = """Label one step of someone's reasoning about a story. Possible labels:
emotion_attribution: says what a person feels
perspective_taking: says what a person (not the reasoner) knows, believes, sees, wants or intends
reflection: the reasoner checks or questions their own reasoning
backtracking: the reasoner abandons or corrects an earlier step
conclusion: gives the final answer
restatement: repeats the question, the choices or facts of the story
{context}Step: {step}
Reply with the labels that apply, separated by commas, or "none"."""


def make_llm_judge(model: Any, *, max_new_tokens: int = 24, format: str = "auto") -> Judge:
    """A judge for :func:`label_steps` that asks ``model`` (a psylens ``Model``; a larger one than
    the 135M model — small models answer this poorly) for the labels, greedily.

    The reply is parsed for label names (also their first word: ``emotion``, ``perspective``, …).
    """
    keys = {lab: re.compile(rf"\b{lab.split('_')[0]}", _I) for lab in LABELS}

    def judge(step: str, context: str | None = None) -> list[str]:
        ctx = f"Story: {context}\n" if context else ""
        reply = model.generate(_JUDGE_PROMPT.format(context=ctx, step=step), max_new_tokens=max_new_tokens,
                               do_sample=False, format=format)
        reply = reply[0] if isinstance(reply, list) else reply
        return [lab for lab in LABELS if keys[lab].search(reply)]

    return judge


# --------------------------------------------------------------------------------------------
# accuracy on a hand-labelled sample
# --------------------------------------------------------------------------------------------
def load_gold(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The hand-labelled steps: ``{"trace", "step", "text", "labels"}`` a line (default: the built-in sample)."""
    p = Path(path) if path is not None else Path(str(resources.files("psylens") / "data" / GOLD_FILE))
    rows = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("text"), str) or not isinstance(row.get("labels"), list):
            raise ValueError(f"{p}:{i}: each line needs 'text' (str) and 'labels' (list of {', '.join(LABELS)})")
        bad = [lab for lab in row["labels"] if lab not in LABELS]
        if bad:
            raise ValueError(f"{p}:{i}: unknown labels {bad}; valid labels: {', '.join(LABELS)}")
        rows.append(row)
    return rows


def labeller_accuracy(
    gold: Sequence[Mapping[str, Any]] | None = None,
    labeller: Callable[[str], Iterable[str]] | None = None,
    *,
    level: float = 0.95,
) -> dict[str, Any]:
    """Precision and recall per label, with Wilson intervals, of ``labeller`` (default :func:`label_step`) on ``gold``.

    Returns ``{"n", "per_label": {label: {"support", "tp", "fp", "fn", "precision", "precision_ci",
    "recall", "recall_ci", "f1"}}, "micro": {...}, "exact_match", "exact_match_ci"}``. A precision
    with no predicted positives is ``None`` (interval ``None``). Intervals treat steps as independent
    (steps of one trace are not quite).
    """
    from psylens.stats import wilson_ci

    rows = list(gold) if gold is not None else load_gold()
    if not rows:
        raise ValueError("no gold steps; give rows with 'text' and 'labels'")
    lab_fn = labeller or label_step
    preds = [set(lab_fn(r["text"])) for r in rows]
    golds = [set(r["labels"]) for r in rows]

    def block(tp: int, fp: int, fn: int) -> dict[str, Any]:
        prec = tp / (tp + fp) if tp + fp else None
        rec = tp / (tp + fn) if tp + fn else None
        f1 = 2 * prec * rec / (prec + rec) if prec and rec else 0.0
        return {
            "support": tp + fn, "tp": tp, "fp": fp, "fn": fn,
            "precision": prec, "precision_ci": list(wilson_ci(tp, tp + fp, level=level)) if tp + fp else None,
            "recall": rec, "recall_ci": list(wilson_ci(tp, tp + fn, level=level)) if tp + fn else None,
            "f1": f1,
        }

    per: dict[str, Any] = {}
    tot = [0, 0, 0]
    for lab in LABELS:
        tp = sum(lab in p and lab in g for p, g in zip(preds, golds))
        fp = sum(lab in p and lab not in g for p, g in zip(preds, golds))
        fn = sum(lab not in p and lab in g for p, g in zip(preds, golds))
        per[lab] = block(tp, fp, fn)
        tot = [tot[0] + tp, tot[1] + fp, tot[2] + fn]
    exact = sum(p == g for p, g in zip(preds, golds))
    return {
        "n": len(rows),
        "per_label": per,
        "micro": block(*tot),
        "exact_match": exact / len(rows),
        "exact_match_ci": list(wilson_ci(exact, len(rows), level=level)),
    }
