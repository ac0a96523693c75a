"""What steering costs the language: perplexity under the unsteered model, repetition, non-words.

- :func:`perplexity_ratio`: perplexity of the steered continuations under the *unsteered* model
  (conditioned on the same chat-formatted prompts), divided by that of the unsteered continuations.
  Pooled over tokens: ``exp(mean NLL steered) / exp(mean NLL baseline)``.
- :func:`repetition_rate`: per text, ``1 - distinct n-grams / n-grams`` of its words (``n=3``), averaged.
- :func:`distinct_n`: distinct word ``n``-grams over all n-grams of the texts (pooled: "distinct-2" of
  Li et al. 2016); low when texts repeat themselves or each other.
- :func:`zlib_ratio`: compressed / raw bytes of the texts joined by newlines (zlib, level 9); low when
  the texts are repetitive (repeated phrases compress well).
- :func:`nonword_fraction`: the fraction of word tokens that are not English words, by a word list
  built from the lexicons TextBlob ships (a dependency of ``nrclex``) plus the NRC lexicon.
  Tokens with digits and pure punctuation are not counted; proper names missing from the list are
  counted as non-words, equally for steered and unsteered text.

.. warning:: :func:`token_nll` runs the model: call it with no steering attached.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import math
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from psylens.models import prompt_special_tokens

if TYPE_CHECKING:
    from psylens.models import Model

__all__ = [
    "distinct_n",
    "zlib_ratio",
    "token_nll",
    "perplexity",
    "perplexity_ratio",
    "repetition_rate",
    "nonword_fraction",
    "english_words",
]

_TOKEN = re.compile(r"\S+")
_STRIP = "\"'`“”‘’.,;:!?()[]{}<>*_~#|/\\—–-…"


@lru_cache(maxsize=None)
def _cache_arg(cls: type) -> str:
    """Name of the KV-cache argument of ``cls.forward``: ``cache`` (transformers 5.x), else ``past_key_values``.

    transformers 5.x still accepts ``past_key_values`` but warns that it is deprecated.
    """
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def _returned_cache(out: Any) -> Any:
    """The KV cache of a model output: ``out.cache`` (transformers 5.x) or ``out.past_key_values`` (4.x)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


@torch.no_grad()
def token_nll(
    model: Model,
    prompts: Sequence[str],
    texts: Sequence[str],
    *,
    format: str = "auto",
    system_prompt: str | None = None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "perplexity",
) -> tuple[Float[Tensor, " n"], Int[Tensor, " n"]]:
    """Summed negative log-likelihood of each ``texts[i]`` after ``prompts[i]``, and its token count.

    Prompts are formatted as :meth:`Model.generate` formats them (chat template by default).
    Empty texts give ``(0.0, 0)``. Texts that share a prompt share one forward pass over it (its KV
    cache is reused), so scoring many continuations of few prompts costs little more than the
    continuations themselves; texts with a prompt of their own are scored as whole sequences,
    ``batch_size`` at a time (left-padded with explicit position ids, sorted by length). ``progress`` shows a bar (stderr) counting the scored tokens.
    """
    if len(prompts) != len(texts):
        raise ValueError(f"got {len(prompts)} prompts for {len(texts)} texts; give one prompt per text")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tok = model.tokenizer
    hf = model.hf_model
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    cache_arg = _cache_arg(type(hf))
    cont = [tok(t, add_special_tokens=False)["input_ids"] if t else [] for t in texts]
    nll = torch.zeros(len(texts), dtype=torch.float64)
    count = torch.tensor([len(c) for c in cont], dtype=torch.long)
    by_prompt: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        if cont[i]:
            by_prompt.setdefault(p, []).append(i)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(sum(len(cont[i]) for rows in by_prompt.values() for i in rows)), desc=desc, unit="tok", leave=False)

    def prompt_ids(p: str) -> list[int]:
        ids = tok(model.format_prompt(p, format=format, system_prompt=system_prompt),
                  add_special_tokens=prompt_special_tokens(model, format))["input_ids"]
        if not ids:
            raise ValueError(f"prompt {p!r} formats to no tokens; give a non-empty prompt")
        return ids

    # prompts with one text each: whole sequences (prompt + text) batched together, no cache to share;
    # left padding puts every text at the end, so only the last positions' logits are computed
    single = [(rows[0], prompt_ids(p)) for p, rows in by_prompt.items() if len(rows) == 1]
    single.sort(key=lambda item: len(item[1]) + len(cont[item[0]]))
    keep_arg = "logits_to_keep" in inspect.signature(type(hf).forward).parameters
    for start in range(0, len(single), batch_size):
        chunk = single[start : start + batch_size]
        width = max(len(p_ids) + len(cont[i]) for i, p_ids in chunk)
        keep = max(len(cont[i]) for i, _ in chunk) + 1  # the last `keep` positions predict every text token
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attn = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (i, p_ids) in enumerate(chunk):
            seq = p_ids + cont[i]
            ids[r, width - len(seq) :] = torch.tensor(seq)
            attn[r, width - len(seq) :] = 1
        positions = (attn.cumsum(-1) - 1).clamp(min=0)  # each row's real tokens at 0, 1, …
        extra = {"logits_to_keep": keep} if keep_arg else {}
        logits = hf(input_ids=ids.to(model.device), attention_mask=attn.to(model.device),
                    position_ids=positions.to(model.device), use_cache=False, **extra).logits[:, -keep:]
        logp = torch.log_softmax(logits.float(), dim=-1).cpu()  # [B, keep, V]: column k predicts column k+1
        for r, (i, _) in enumerate(chunk):
            t = torch.tensor(cont[i])
            nll[i] = -logp[r, torch.arange(keep - len(t) - 1, keep - 1), t].double().sum()
        if bar is not None:
            bar.update(sum(len(cont[i]) for i, _ in chunk))

    # prompts shared by several texts: one forward over the prompt, its KV cache reused by each batch
    for p, rows in by_prompt.items():
        if len(rows) == 1:
            continue
        p_ids = prompt_ids(p)
        pre = hf(input_ids=torch.tensor([p_ids], device=model.device), use_cache=True)
        first_logp = torch.log_softmax(pre.logits[0, -1].float(), dim=-1).cpu()  # predicts each text's first token
        prompt_cache = _returned_cache(pre)
        rows = sorted(rows, key=lambda i: len(cont[i]))
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(cont[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            attn = torch.ones((len(chunk), len(p_ids) + width), dtype=torch.long)
            for r, i in enumerate(chunk):
                ids[r, : len(cont[i])] = torch.tensor(cont[i])
                attn[r, len(p_ids) + len(cont[i]) :] = 0  # right padding after the text
            cache = copy.deepcopy(prompt_cache)
            cache.batch_repeat_interleave(len(chunk))
            logits = hf(
                input_ids=ids.to(model.device), attention_mask=attn.to(model.device), use_cache=True, **{cache_arg: cache},
            ).logits
            logp = torch.log_softmax(logits.float(), dim=-1).cpu()  # [B, T, V]: position j predicts token j+1
            for r, i in enumerate(chunk):
                t = torch.tensor(cont[i])
                total = -first_logp[t[0]].double()
                if len(t) > 1:
                    total -= logp[r, torch.arange(len(t) - 1), t[1:]].double().sum()
                nll[i] = total
            if bar is not None:
                bar.update(sum(len(cont[i]) for i in chunk))
    if bar is not None:
        bar.close()
    return nll.float(), count


def perplexity(model: Model, prompts: Sequence[str], texts: Sequence[str], **kwargs: object) -> float:
    """Token-pooled perplexity of ``texts`` after ``prompts`` (``nan`` when every text is empty)."""
    nll, n = token_nll(model, prompts, texts, **kwargs)  # type: ignore[arg-type]
    total = int(n.sum())
    return float("nan") if total == 0 else math.exp(float(nll.double().sum()) / total)


def perplexity_ratio(
    model: Model,
    prompts: Sequence[str],
    steered: Sequence[str],
    baseline: Sequence[str],
    **kwargs: object,
) -> float:
    """``perplexity(steered) / perplexity(baseline)``, both under the unsteered ``model`` and the same prompts."""
    if len(steered) != len(prompts) or len(baseline) != len(prompts):
        raise ValueError(
            f"got {len(prompts)} prompts, {len(steered)} steered and {len(baseline)} baseline texts; give one of each per prompt"
        )
    return perplexity(model, prompts, steered, **kwargs) / perplexity(model, prompts, baseline, **kwargs)


def _words(text: str) -> list[str]:
    return [w for w in (t.strip(_STRIP).lower() for t in _TOKEN.findall(text)) if w]


def repetition_rate(texts: Sequence[str] | str, n: int = 3) -> float:
    """Mean over texts of ``1 - distinct/total`` word ``n``-grams (texts shorter than ``n`` words count 0)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        return float("nan")
    rates = []
    for text in items:
        ws = _words(text)
        grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
        rates.append(1.0 - len(set(grams)) / len(grams) if grams else 0.0)
    return sum(rates) / len(rates)


def distinct_n(texts: Sequence[str] | str, n: int = 2) -> float:
    """Distinct word ``n``-grams / all word ``n``-grams, pooled over ``texts`` (``nan`` when there are none).

    Words as :func:`repetition_rate` reads them (whitespace tokens, lower-cased, edge punctuation
    stripped); n-grams never cross from one text into the next. ``distinct_n(["a b a b"])`` is 2/3.

    Footgun: pooled over texts, the value falls as the number of texts grows (common bigrams recur),
    so compare sets of the same size on the same prompts — the sweep does.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (2 for distinct-2), got {n!r}")
    items = [texts] if isinstance(texts, str) else list(texts)
    total = 0
    seen: set[tuple[str, ...]] = set()
    for text in items:
        ws = _words(text)
        grams = [tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return float("nan") if total == 0 else len(seen) / total


def zlib_ratio(texts: Sequence[str] | str) -> float:
    """``len(zlib.compress(raw, 9)) / len(raw)`` of the texts' UTF-8 bytes joined by ``"\\n"`` (``nan`` if empty).

    Lower is more repetitive. Footgun: zlib adds a fixed ~8 bytes, so very short inputs score above 1;
    compare sets of similar size and length (the sweep compares sets of the same prompts and length cap).
    """
    import zlib

    items = [texts] if isinstance(texts, str) else list(texts)
    raw = "\n".join(items).encode("utf-8")
    if not raw.strip():
        return float("nan")
    return len(zlib.compress(raw, 9)) / len(raw)


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.is_file() else None


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Lower-case English word list: TextBlob's Brill lexicon and spelling list, plus the NRC lexicon."""
    vocab: set[str] = set()
    for parts in (("en", "en-lexicon.txt"), ("en", "en-spelling.txt")):
        path = _package_file("textblob", *parts)
        if path is None:
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(";;;") or not line.strip():
                continue
            vocab.add(line.split()[0].lower())
    nrc = _package_file("nrclex", "data", "nrc_en.json")
    if nrc is not None:
        import json

        vocab.update(w.lower() for w in json.loads(nrc.read_text(encoding="utf-8")))
    if not vocab:
        raise ValueError("no English word list found: install nrclex (it brings textblob), e.g. pip install nrclex")
    return frozenset(vocab)


def _is_word(token: str, vocab: frozenset[str]) -> bool:
    if token in vocab:
        return True
    for sep in ("-", "/", "'"):
        if sep in token:
            parts = [p for p in token.split(sep) if p]
            if sep == "'":
                parts = parts[:1]  # don't -> don, it's -> it
            if parts and all(p in vocab for p in parts):
                return True
    return False


def nonword_fraction(texts: Sequence[str] | str) -> float:
    """Fraction of word tokens (over all texts) not found in :func:`english_words` (``nan`` if no tokens)."""
    items = [texts] if isinstance(texts, str) else list(texts)
    vocab = english_words()
    total = bad = 0
    for text in items:
        for raw in _TOKEN.findall(text):
            w = raw.strip(_STRIP).lower().replace("’", "'")
            if not w or any(c.isdigit() for c in w):
                continue
            if not any(c.isalpha() for c in w):
                total += 1
                bad += 1  # symbol soup such as "$$%" or "@@"
                continue
            total += 1
            bad += not _is_word(w, vocab)
    return float("nan") if total == 0 else bad / total
