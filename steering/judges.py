"""Judges: which emotion does a text express? They read text only, never the model's activations.

A judge is any object with ``name`` and ``score(texts) -> [n, 6]``: one distribution per text over
``psylens.stimuli.EMOTIONS`` (anger, disgust, fear, joy, sadness, surprise). A row of zeros means
"no evidence" (the text expresses none of the six).

- :class:`LexiconJudge` (default, ``"nrc"``): the NRC emotion lexicon shipped inside the ``nrclex``
  package (its ``data/nrc_en.json`` is read directly; no network, no TextBlob corpora).
- :class:`LLMJudge`: any psylens ``Model`` asked which emotion the text expresses; the distribution
  is the softmax of the log-likelihoods of the six answers.

>>> judge = LexiconJudge()
>>> judge.score(["What a wonderful, happy day!"]).argmax(dim=1).tolist()   # joy
[3]
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from psylens.models import prompt_special_tokens
from psylens.stimuli import EMOTIONS

if TYPE_CHECKING:
    from psylens.models import Model

__all__ = [
    "Judge",
    "LexiconJudge",
    "LLMJudge",
    "EMOTIONS",
    "dominant",
    "success_rate",
    "judge_accuracy",
    "nrc_lexicon",
    "make_judge",
    "JUDGES",
    "words",
]

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


@runtime_checkable
class Judge(Protocol):
    """What the sweep needs of a judge."""

    name: str

    def score(self, texts: Sequence[str]) -> Float[Tensor, "n 6"]:
        """One distribution over ``EMOTIONS`` per text (a zero row: no emotion expressed)."""
        ...


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters, with an inner apostrophe: "don't")."""
    return _WORD.findall(text.lower())


def _nrc_path() -> Path:
    spec = importlib.util.find_spec("nrclex")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("the default judge needs the nrclex package (pip install nrclex); no network is used")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "nrc_en.json"
    if not path.is_file():
        raise ValueError(f"nrclex is installed but its lexicon {path} is missing; reinstall nrclex")
    return path


@lru_cache(maxsize=1)
def nrc_lexicon() -> dict[str, tuple[str, ...]]:
    """``word -> emotions`` from the NRC lexicon, restricted to the six ``EMOTIONS`` (words with none dropped)."""
    raw = json.loads(_nrc_path().read_text(encoding="utf-8"))
    keep = set(EMOTIONS)
    out: dict[str, tuple[str, ...]] = {}
    for word, tags in raw.items():
        emos = tuple(e for e in EMOTIONS if e in set(tags) & keep)
        if emos:
            out[word.lower()] = emos
    return out


def _candidates(word: str) -> list[str]:
    """The word and simple de-inflections of it (plural, past, -ing, -ly), most specific first."""
    out = [word]
    if word.endswith("'s"):
        out.append(word[:-2])
    for suffix, repl in (
        ("ies", "y"), ("ied", "y"), ("ily", "y"), ("iness", "y"), ("ier", "y"), ("iest", "y"), ("ness", ""),
        ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"), ("ly", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: len(word) - len(suffix)] + repl
            out.append(stem)
            if repl == "" and len(stem) >= 4 and stem[-1] == stem[-2]:  # stopped -> stop
                out.append(stem[:-1])
    return out


class LexiconJudge:
    """Emotion distribution from a word → emotions lexicon (default: NRC, via ``nrclex``'s data file).

    Each lexicon word in the text adds ``1/k`` to each of its ``k`` emotions (so every word counts
    once, however many emotions it carries); the sums divided by the text's word count are the
    per-word intensities (:meth:`intensity`); :meth:`score` normalises them to a distribution.
    Unknown words are looked up again after removing a common inflection (``-s``, ``-ed``, ``-ing``, …).
    Negation and context are ignored: this is a bag-of-words judge, cheap and transparent.
    """

    name = "nrc"

    def __init__(self, lexicon: dict[str, Sequence[str]] | None = None) -> None:
        lex = nrc_lexicon() if lexicon is None else lexicon
        index = {e: i for i, e in enumerate(EMOTIONS)}
        self._weights: dict[str, list[tuple[int, float]]] = {}
        for word, emos in lex.items():
            ids = sorted({index[e] for e in emos if e in index})
            if ids:
                self._weights[word.lower()] = [(i, 1.0 / len(ids)) for i in ids]
        if not self._weights:
            raise ValueError(f"the lexicon has no word tagged with any of {list(EMOTIONS)}")
        self._cache: dict[str, list[tuple[int, float]] | None] = {}

    def _lookup(self, word: str) -> list[tuple[int, float]] | None:
        if word not in self._cache:
            self._cache[word] = next((self._weights[c] for c in _candidates(word) if c in self._weights), None)
        return self._cache[word]

    def matches(self, text: str) -> list[tuple[str, list[str]]]:
        """The text's lexicon words and their emotions (to show why a text was judged as it was)."""
        out = []
        for w in words(text):
            hit = self._lookup(w)
            if hit:
                out.append((w, [EMOTIONS[i] for i, _ in hit]))
        return out

    def intensity(self, texts: Sequence[str]) -> Float[Tensor, "n 6"]:
        """Per-word emotion intensity: lexicon mass per emotion divided by the text's word count."""
        texts = _as_texts(texts)
        out = torch.zeros(len(texts), len(EMOTIONS), dtype=torch.float64)
        for r, text in enumerate(texts):
            ws = words(text)
            for w in ws:
                for i, wt in self._lookup(w) or ():
                    out[r, i] += wt
            if ws:
                out[r] /= len(ws)
        return out.float()

    def score(self, texts: Sequence[str]) -> Float[Tensor, "n 6"]:
        """Distribution over ``EMOTIONS`` per text; all zeros when the text has no lexicon word."""
        raw = self.intensity(texts).double()
        total = raw.sum(dim=1, keepdim=True)
        return torch.where(total > 0, raw / total.clamp_min(1e-300), torch.zeros_like(raw)).float()

    def __repr__(self) -> str:
        return f"LexiconJudge({len(self._weights)} words)"


_DEFAULT_TEMPLATE = (
    "Which emotion does the following text express most strongly? Choose one of: "
    "anger, disgust, fear, joy, sadness, surprise.\n\nText: \"{text}\"\n\nAnswer with one word."
)


class LLMJudge:
    """Ask a language model which emotion a text expresses; score = softmax over the six answers.

    The prompt (``template`` with ``{text}``) is chat-formatted by the model; each emotion name is
    scored by its summed log-likelihood as the reply (one forward pass per text and emotion, batched).
    The judge model runs unsteered: do not pass a model that is being steered.
    """

    def __init__(
        self,
        model: Model,
        *,
        template: str = _DEFAULT_TEMPLATE,
        answers: Sequence[str] | None = None,
        batch_size: int = 16,
        max_text_chars: int = 2000,
    ) -> None:
        if "{text}" not in template:
            raise ValueError("template must contain '{text}' where the judged text goes")
        self.model = model
        self.template = template
        self.answers = list(answers) if answers is not None else [e.capitalize() for e in EMOTIONS]
        if len(self.answers) != len(EMOTIONS):
            raise ValueError(f"answers must give one word per emotion ({len(EMOTIONS)}), got {len(self.answers)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.max_text_chars = max_text_chars
        self.name = f"llm:{getattr(model, 'spec', 'model')}"

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> Float[Tensor, "n 6"]:
        texts = _as_texts(texts)
        tok = self.model.tokenizer
        hf = self.model.hf_model
        answer_ids = [tok(a, add_special_tokens=False)["input_ids"] for a in self.answers]
        seqs: list[tuple[list[int], int]] = []  # (ids, number of answer tokens at the end)
        for text in texts:
            prompt = self.model.format_prompt(self.template.format(text=text[: self.max_text_chars]))
            p_ids = tok(prompt, add_special_tokens=prompt_special_tokens(self.model))["input_ids"]
            seqs.extend((p_ids + a, len(a)) for a in answer_ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        logl = torch.zeros(len(seqs), dtype=torch.float64)
        for start in range(0, len(seqs), self.batch_size):
            chunk = seqs[start : start + self.batch_size]
            width = max(len(s) for s, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (s, _) in enumerate(chunk):
                ids[r, : len(s)] = torch.tensor(s)
                attn[r, : len(s)] = 1
            logits = hf(input_ids=ids.to(self.model.device), attention_mask=attn.to(self.model.device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()
            for r, (s, n_ans) in enumerate(chunk):
                pos = torch.arange(len(s) - n_ans, len(s))  # answer tokens, predicted from the position before
                logl[start + r] = logp[r, pos - 1, torch.tensor(s)[pos]].double().sum()
        return torch.softmax(logl.view(len(texts), len(EMOTIONS)), dim=1).float()

    def __repr__(self) -> str:
        return f"LLMJudge({self.name!r})"


def _as_texts(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    bad = [type(t).__name__ for t in out if not isinstance(t, str)]
    if bad:
        raise ValueError(f"judges score strings; got {bad[0]} in texts")
    return out


def dominant(scores: Float[Tensor, "n 6"]) -> Int[Tensor, " n"]:
    """Index of the single highest emotion per row; ``-1`` when the row is all zeros or the top is tied."""
    top, idx = scores.max(dim=1)
    ties = (scores == top.unsqueeze(1)).sum(dim=1) > 1
    return torch.where((top > 0) & ~ties, idx, torch.full_like(idx, -1))


def success_rate(scores: Float[Tensor, "n 6"], emotion: str) -> float:
    """Fraction of rows whose (unique) dominant emotion is ``emotion``."""
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; valid: {list(EMOTIONS)}")
    if scores.shape[0] == 0:
        return float("nan")
    return float((dominant(scores) == EMOTIONS.index(emotion)).float().mean())


def judge_accuracy(judge: Judge, texts: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """How often ``judge`` names the labelled emotion of texts that plainly express it — its ceiling.

    A steering success rate judged by ``judge`` cannot be read without this: if the judge calls
    only 40% of plain statements ("I am absolutely furious right now.") right, 40% is about the
    most any steered text can score. Rows labelled outside ``EMOTIONS`` are left out.

    Returns ``{"accuracy", "by_emotion", "no_call" (fraction tied or with no emotion), "n"}``.
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts for {len(labels)} labels; give one label per text")
    keep = [(t, lab) for t, lab in zip(texts, labels) if lab in EMOTIONS]
    if not keep:
        raise ValueError(f"no text is labelled with one of {list(EMOTIONS)}; nothing to validate the judge on")
    d = dominant(judge.score([t for t, _ in keep]))
    hit = [bool(k >= 0 and EMOTIONS[k] == lab) for k, (_, lab) in zip(d.tolist(), keep)]
    by = {e: [h for h, (_, lab) in zip(hit, keep) if lab == e] for e in EMOTIONS}
    return {
        "accuracy": sum(hit) / len(hit),
        "by_emotion": {e: (sum(v) / len(v) if v else None) for e, v in by.items()},
        "no_call": float((d < 0).float().mean()),
        "n": len(hit),
    }


JUDGES = ("nrc", "llm", "probe")


def make_judge(name: str = "nrc", model: Model | None = None, **kwargs: Any) -> Judge:
    """A judge by name: ``"nrc"`` (default), ``"llm"`` or ``"probe"`` (both need a judge ``model``).

    ``"probe"`` trains :class:`psylens.steering.probe_judge.ProbeJudge` on the built-in ``emotions``
    set read through ``model`` (about a minute on a small CPU model).
    """
    if name == "nrc":
        return LexiconJudge(**kwargs)
    if name in ("llm", "probe") and model is None:
        raise ValueError(f"the {name!r} judge needs a model: make_judge({name!r}, model=psylens.load_model(...))")
    if name == "llm":
        return LLMJudge(model, **kwargs)
    if name == "probe":
        from psylens.steering.probe_judge import ProbeJudge

        return ProbeJudge.fit(model, **kwargs)
    raise ValueError(f"unknown judge {name!r}; valid judges: {', '.join(JUDGES)}")
