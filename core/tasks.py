"""Psychological-reasoning tasks: four-choice items (theory of mind, emotions, social norms) and their evaluation.

The built-in set ``"psych"`` (``psylens/data/psych_tasks.jsonl``, 432 items) has six kinds
(:data:`KINDS`) and a ``train``/``test`` split made by story template: no test story shares a
template with a train story. One JSON object a line::

    {"id": "fb-moved-01", "kind": "false_belief", "story": "...", "question": "...",
     "choices": ["...", "...", "...", "..."], "answer": "...", "split": "train", "template": "fb-moved"}

>>> import psylens
>>> from psylens import tasks
>>> items = tasks.load("psych", split="test")                          # doctest: +SKIP
>>> tasks.evaluate(psylens.load_model(), items, method="loglik")      # doctest: +SKIP
{'accuracy': 0.41, 'by_kind': {...}, 'chance': 0.25, 'n': 144, 'parsed': 1.0, 'ci95': [...], ...}

Two methods:

- ``"loglik"``: the prompt is the story, the question and ``Answer:``; each choice is scored by
  the mean log-probability of its tokens after the prompt; the best-scoring choice is the model's.
- ``"generate"``: the prompt lists the choices as A–D and asks for a letter; the model generates
  greedily (with ``chain_of_thought=True`` it is asked to reason first and gets more tokens) and
  the letter is parsed from its output (:func:`parse_letter`). Unparsed outputs count as wrong;
  ``parsed`` in the result is the fraction that parsed.

The model never sees the ``answer`` field: prompts are built from story, question and choices
only, and :func:`predict` does not read answers at all. :func:`summarize` scores predictions
against the answers; :func:`shuffle_answers` gives the chance-level control.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psylens.models import Model

__all__ = [
    "KINDS",
    "SPLITS",
    "METHODS",
    "LETTERS",
    "Task",
    "Prediction",
    "load",
    "builtin_sets",
    "shuffle_answers",
    "predict",
    "summarize",
    "evaluate",
    "parse_letter",
    "loglik_prompt",
    "choice_prompt",
]

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = (
    "emotion_inference",
    "false_belief",
    "second_order_belief",
    "intention",
    "faux_pas",
    "mixed_emotion",
)
SPLITS: tuple[str, ...] = ("train", "test")
METHODS: tuple[str, ...] = ("loglik", "generate")
LETTERS = "ABCDEFGHIJ"
N_CHOICES = 4

_BUILTIN = {"psych": "psych_tasks.jsonl"}
_REQUIRED = ("id", "kind", "story", "question", "choices", "answer")
_OPTIONAL = ("split", "template")
_KEYS = (*_REQUIRED, *_OPTIONAL)


# --------------------------------------------------------------------------------------------
# items
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """One multiple-choice item. ``answer`` is one of ``choices``; ``split`` and ``template`` may be ``None``."""

    id: str
    kind: str
    story: str
    question: str
    choices: tuple[str, ...]
    answer: str
    split: str | None = None
    template: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.choices, tuple):
            object.__setattr__(self, "choices", tuple(self.choices))
        if len(self.choices) < 2 or len(self.choices) > len(LETTERS):
            raise ValueError(
                f"task {self.id!r} has {len(self.choices)} choices; give between 2 and {len(LETTERS)} (the built-in set has 4)"
            )
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"task {self.id!r} has duplicate choices {list(self.choices)}; make every choice distinct")
        if self.answer not in self.choices:
            raise ValueError(
                f"task {self.id!r}: answer {self.answer!r} is not one of its choices {list(self.choices)}; "
                "the answer must be the exact text of one choice"
            )
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"task {self.id!r}: split {self.split!r} is not one of {', '.join(SPLITS)} (or omit it)")

    @property
    def answer_index(self) -> int:
        return self.choices.index(self.answer)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id, "kind": self.kind, "story": self.story, "question": self.question,
            "choices": list(self.choices), "answer": self.answer,
        }
        if self.split is not None:
            out["split"] = self.split
        if self.template is not None:
            out["template"] = self.template
        return out


def builtin_sets() -> list[str]:
    return list(_BUILTIN)


def _data_path(name: str) -> Path:
    return Path(str(resources.files("psylens") / "data" / name))


def _check_text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{where}: {key!r} holds a lone surrogate (an unpaired \\ud800–\\udfff escape); "
            "write the character itself or a valid surrogate pair"
        ) from None
    return value


def _parse_line(raw: str, where: str) -> Task:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object with keys {list(_REQUIRED)}, got {type(obj).__name__}")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}; every line needs {list(_REQUIRED)} (optional: {list(_OPTIONAL)})")
    unknown = sorted(set(obj) - set(_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {list(_KEYS)}")
    fields = {k: _check_text(obj[k], k, where) for k in ("id", "kind", "story", "question", "answer")}
    choices = obj["choices"]
    if not isinstance(choices, list) or len(choices) != N_CHOICES:
        got = f"{len(choices)} choices" if isinstance(choices, list) else type(choices).__name__
        raise ValueError(f"{where}: 'choices' must be a list of {N_CHOICES} strings, got {got}")
    choices = [_check_text(c, "choices", where) for c in choices]
    dupes = sorted({c for c in choices if choices.count(c) > 1})
    if dupes:
        raise ValueError(f"{where}: duplicate choices {dupes}; the {N_CHOICES} choices must be distinct")
    if fields["answer"] not in choices:
        raise ValueError(
            f"{where}: answer {fields['answer']!r} is not one of the choices {choices}; "
            "'answer' must repeat the exact text of the correct choice"
        )
    split = obj.get("split")
    if split is not None and split not in SPLITS:
        raise ValueError(f"{where}: unknown split {split!r}; use one of {', '.join(SPLITS)} or leave 'split' out")
    template = obj.get("template")
    if template is not None:
        template = _check_text(template, "template", where)
    return Task(choices=tuple(choices), split=split, template=template, **fields)


def load(source: str | os.PathLike[str] = "psych", split: str | None = None) -> list[Task]:
    """Load the built-in set (``"psych"``) or a JSONL file of tasks; ``split`` keeps ``"train"`` or ``"test"``.

    ``split=None`` returns every item. A file whose lines have no ``split`` key is one set:
    asking it for a split raises ``ValueError``. Every line is validated; errors name the file
    and the line (bad JSON, missing or unknown keys, not 4 distinct choices, answer not among
    the choices, unknown split, invalid UTF-8, lone surrogates, duplicate ids).
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}; use split=None for every item")
    key = str(source)
    if key in _BUILTIN:
        path = _data_path(_BUILTIN[key])
    else:
        path = Path(key).expanduser()
        if not path.is_file():
            raise ValueError(
                f"tasks {key!r} is neither a built-in set ({', '.join(_BUILTIN)}) nor an existing JSONL file"
            )
    items: list[Task] = []
    seen: dict[str, int] = {}
    with_split: int | None = None  # first line with / without a split, to report a mixed file
    without_split: int | None = None
    with open(path, "rb") as f:
        for lineno, raw_bytes in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start}); save the file as UTF-8") from None
            if lineno == 1 and raw.startswith("\ufeff"):
                raw = raw[1:]
            if not raw.strip():
                continue
            task = _parse_line(raw, where)
            if task.id in seen:
                raise ValueError(f"{where}: id {task.id!r} already used on line {seen[task.id]}; ids must be unique")
            seen[task.id] = lineno
            if task.split is None:
                without_split = without_split or lineno
            else:
                with_split = with_split or lineno
            if with_split and without_split:
                raise ValueError(
                    f"{where}: some lines have a 'split' (line {with_split}) and some do not (line {without_split}); "
                    "give every line a split or none"
                )
            items.append(task)
    if not items:
        raise ValueError(f"task file {str(path)!r} has no tasks; add JSONL lines with keys {list(_REQUIRED)}")
    if split is None:
        return items
    if with_split is None:
        raise ValueError(
            f"task file {str(path)!r} has no 'split' keys, so split={split!r} cannot be selected; "
            "use split=None to load every item, or add \"split\": \"train\"/\"test\" to each line"
        )
    chosen = [t for t in items if t.split == split]
    if not chosen:
        raise ValueError(f"task file {str(path)!r} has no items in split {split!r}")
    return chosen


def shuffle_answers(tasks: Sequence[Task], seed: int = 0) -> list[Task]:
    """The chance control: each task's answer replaced by a uniformly random one of its choices (seeded)."""
    import random

    rng = random.Random(seed)
    return [replace(t, answer=rng.choice(t.choices)) for t in tasks]


# --------------------------------------------------------------------------------------------
# prompts (built from story, question and choices only — never from the answer)
# --------------------------------------------------------------------------------------------
_GEN_INSTRUCTION = "Reply with the letter of the correct choice ({letters})."
_COT_INSTRUCTION = (
    "Think step by step about what each person knows, wants and feels. Then give your final answer on "
    "its own line as \"Answer: X\", where X is one of {letters}."
)


def loglik_prompt(task: Task) -> str:
    """The user text of the ``loglik`` method (``Answer:`` is appended after chat formatting)."""
    return f"{task.story}\n\nQuestion: {task.question}"


def choice_prompt(task: Task, chain_of_thought: bool = False) -> str:
    """The user text of the ``generate`` method: story, question, lettered choices, instruction."""
    letters = LETTERS[: len(task.choices)]
    listed = "\n".join(f"{L}. {c}" for L, c in zip(letters, task.choices))
    said = ", ".join(letters[:-1]) + f" or {letters[-1]}"
    instruction = (_COT_INSTRUCTION if chain_of_thought else _GEN_INSTRUCTION).format(letters=said)
    return f"{task.story}\n\nQuestion: {task.question}\n{listed}\n\n{instruction}"


def _full_prompt(model: Model, user_text: str, fmt: str, suffix: str) -> str:
    if fmt == "chat":
        return model.format_prompt(user_text, format="chat") + suffix
    return f"{user_text}\n{suffix}"


# --------------------------------------------------------------------------------------------
# parsing letters
# --------------------------------------------------------------------------------------------
def parse_letter(text: str, n_choices: int = N_CHOICES) -> int | None:
    """The index of the choice letter in a generated ``text``, or ``None`` when there is none.

    In order: the last ``Answer: X`` / ``answer is (X)``; a letter opening the text (``"B"``,
    ``"(C)"``, ``"D. sad"``; an ``"A"`` followed by a lower-case word is the article); the last
    standalone letter. Letters beyond ``n_choices`` are ignored.
    """
    letters = LETTERS[:n_choices]
    cls = f"[{letters}]"
    found = re.findall(rf"(?i:answer)\s*(?:(?i:is)\s*)?[:\-=]?\s*\**\s*[\(\[]?({cls})(?![A-Za-z'’])", text)
    if found:
        return letters.index(found[-1])
    s = text.strip().lstrip("*").strip()
    m = re.match(rf"[\(\[]?({cls})(?![A-Za-z'’])", s)
    if m and not re.match(r"A\s+[a-z]", s):
        return letters.index(m.group(1))
    last = None
    for m in re.finditer(rf"(?<![A-Za-z'’])[\(\[]?({cls})(?![A-Za-z'’])", text):
        if m.group(1) == "A" and re.match(r"A\s+[a-z]", text[m.start(1):]):
            continue  # "A person ..." is an article, not a letter
        last = m.group(1)
    return letters.index(last) if last is not None else None


# --------------------------------------------------------------------------------------------
# predicting
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """The model's choice for one task: ``choice`` is an index or ``None`` (unparsed output).

    ``scores``: mean log-probability per choice (``loglik``); ``output``: generated text (``generate``).
    """

    id: str
    choice: int | None
    scores: tuple[float, ...] | None = None
    output: str | None = None


def _progress(iterable: Any, total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False)


def _loglik(model: Model, tasks: Sequence[Task], fmt: str, batch_size: int, progress: bool) -> list[Prediction]:
    tok = model.tokenizer
    add_special = fmt == "raw"  # a chat template writes its own special tokens (BOS included)
    encoded: list[tuple[list[int], list[list[int]]]] = []
    for t in tasks:
        prompt = _full_prompt(model, loglik_prompt(t), fmt, "Answer:")
        p_ids = list(tok(prompt, add_special_tokens=add_special)["input_ids"])
        conts = []
        for c in t.choices:
            full = list(tok(f"{prompt} {c}", add_special_tokens=add_special)["input_ids"])
            if full[: len(p_ids)] == p_ids and len(full) > len(p_ids):
                cont = full[len(p_ids):]
            else:  # the join merged across the boundary: encode the choice on its own
                cont = list(tok(f" {c}", add_special_tokens=False)["input_ids"])
            if not cont:
                raise ValueError(f"task {t.id!r}: choice {c!r} produced no tokens")
            conts.append(cont)
        encoded.append((p_ids, conts))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    order = sorted(range(len(tasks)), key=lambda i: -(len(encoded[i][0]) + max(map(len, encoded[i][1]))))
    scores: dict[int, list[float]] = {}
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    shared = True  # the prompt once (cached), then its continuations; else every row in full
    for batch in _progress(batches, len(batches), "tasks (loglik)", progress):
        if shared:
            try:
                scores.update(_loglik_shared(model, [encoded[i] for i in batch], batch, pad))
                continue
            except (AttributeError, TypeError, NotImplementedError) as e:  # a model or cache without the API
                log.debug("shared-prompt scoring unavailable (%s); scoring full rows", e)
                shared = False
        scores.update(_loglik_rows(model, [encoded[i] for i in batch], batch, pad))
    out = []
    for i, t in enumerate(tasks):
        sc = scores[i]
        best = max(range(len(sc)), key=lambda j: sc[j])
        out.append(Prediction(id=t.id, choice=best, scores=tuple(sc)))
    return out


def _loglik_rows(
    model: Model, encoded: list[tuple[list[int], list[list[int]]]], owners: list[int], pad: int
) -> dict[int, list[float]]:
    """Mean log-probabilities: every prompt+choice as a row of its own, left-padded, one forward."""
    import torch

    rows = [(p + c, len(c)) for p, conts in encoded for c in conts]
    owner = [o for o, (_, conts) in zip(owners, encoded) for _ in conts]  # the task of each row
    width = max(len(s) for s, _ in rows)
    keep = max(k for _, k in rows) + 1
    ids_BT = torch.full((len(rows), width), pad, dtype=torch.long)
    attn_BT = torch.zeros((len(rows), width), dtype=torch.long)
    for r, (s, _) in enumerate(rows):  # left padding: every continuation ends at the last position
        ids_BT[r, width - len(s):] = torch.tensor(s)
        attn_BT[r, width - len(s):] = 1
    pos_BT = (attn_BT.cumsum(-1) - 1).clamp(min=0)  # positions count real tokens only
    kwargs = {"input_ids": ids_BT.to(model.device), "attention_mask": attn_BT.to(model.device),
              "position_ids": pos_BT.to(model.device)}
    with torch.no_grad():
        try:
            logits_BKV = model.hf_model(**kwargs, logits_to_keep=keep).logits[:, -keep:]
        except TypeError:  # a model without logits_to_keep
            logits_BKV = model.hf_model(**kwargs).logits[:, -keep:]
        logp_BKV = torch.log_softmax(logits_BKV.float(), dim=-1)
    out: dict[int, list[float]] = {}
    for r, (s, k) in enumerate(rows):
        target = torch.tensor(s[-k:], device=logp_BKV.device)
        # the token at position width-k+j is predicted at width-k+j-1, i.e. kept index keep-1-k+j
        lp = logp_BKV[r, keep - 1 - k : keep - 1].gather(-1, target[:, None]).squeeze(-1)
        out.setdefault(owner[r], []).append(float(lp.mean()))
    return out


def _loglik_shared(
    model: Model, encoded: list[tuple[list[int], list[list[int]]]], owners: list[int], pad: int
) -> dict[int, list[float]]:
    """The same numbers as :func:`_loglik_rows` for ~1/4 of the work: each prompt goes through the
    model once (left-padded, cached); the cache is repeated for its choices, which follow right-padded."""
    import torch

    n_choices = len(encoded[0][1])
    if any(len(conts) != n_choices for _, conts in encoded):
        raise NotImplementedError("tasks with different numbers of choices in one batch")
    dev = model.device
    hf = model.hf_model
    b, width = len(encoded), max(len(p) for p, _ in encoded)
    ids_BT = torch.full((b, width), pad, dtype=torch.long)
    attn_BT = torch.zeros((b, width), dtype=torch.long)
    for r, (p, _) in enumerate(encoded):
        ids_BT[r, width - len(p):] = torch.tensor(p)
        attn_BT[r, width - len(p):] = 1
    pos_BT = (attn_BT.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        first = hf(input_ids=ids_BT.to(dev), attention_mask=attn_BT.to(dev), position_ids=pos_BT.to(dev),
                   use_cache=True, logits_to_keep=1)
        cache = getattr(first, "past_key_values", None) or getattr(first, "cache", None)
        if cache is None:
            raise NotImplementedError("the model returned no cache")
        cache.batch_repeat_interleave(n_choices)  # row r of the batch becomes rows r*n .. r*n+n-1
        logp0_RV = torch.log_softmax(first.logits[:, -1].float(), dim=-1).repeat_interleave(n_choices, dim=0)
        conts = [c for _, cs in encoded for c in cs]
        kmax = max(len(c) for c in conts)
        cont_RK = torch.full((len(conts), kmax), pad, dtype=torch.long)
        cmask_RK = torch.zeros((len(conts), kmax), dtype=torch.long)
        for r, c in enumerate(conts):  # right padding after the prompt
            cont_RK[r, : len(c)] = torch.tensor(c)
            cmask_RK[r, : len(c)] = 1
        attn_RT = torch.cat([attn_BT.repeat_interleave(n_choices, dim=0), cmask_RK], dim=1)
        start_R = attn_BT.sum(-1).repeat_interleave(n_choices)  # real prompt lengths
        pos_RK = start_R[:, None] + torch.arange(kmax)[None, :]
        logp_RKV = None
        if kmax > 1:  # the first choice token is predicted by the prompt's last position
            # transformers 5.x renames ``past_key_values`` to ``cache`` (the old name warns until 5.40)
            cache_kw = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
            second = hf(input_ids=cont_RK[:, :-1].to(dev), attention_mask=attn_RT[:, :-1].to(dev),
                        position_ids=pos_RK[:, :-1].to(dev), use_cache=True, **{cache_kw: cache})
            logp_RKV = torch.log_softmax(second.logits.float(), dim=-1)
    out: dict[int, list[float]] = {}
    for r, c in enumerate(conts):
        lps = [logp0_RV[r, c[0]]]
        if len(c) > 1:
            assert logp_RKV is not None
            target = torch.tensor(c[1:], device=logp_RKV.device)
            lps.extend(logp_RKV[r, : len(c) - 1].gather(-1, target[:, None]).squeeze(-1))
        out.setdefault(owners[r // n_choices], []).append(float(torch.stack(lps).mean()))
    return out


def _generate(
    model: Model, tasks: Sequence[Task], fmt: str, chain_of_thought: bool, batch_size: int, max_new_tokens: int,
    progress: bool,
) -> list[Prediction]:
    import torch

    tok = model.tokenizer
    add_special = fmt == "raw"
    suffix = "Let's think step by step." if chain_of_thought else "Answer:"
    prompts = [_full_prompt(model, choice_prompt(t, chain_of_thought), fmt, suffix) for t in tasks]
    lengths = [len(tok(p, add_special_tokens=add_special)["input_ids"]) for p in prompts]
    order = sorted(range(len(tasks)), key=lambda i: -lengths[i])
    outputs: dict[int, str] = {}
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        for batch in _progress(batches, len(batches), "tasks (generate)", progress):
            enc = tok([prompts[i] for i in batch], return_tensors="pt", padding=True,
                      add_special_tokens=add_special).to(model.device)
            with torch.no_grad():
                out = model.hf_model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                    pad_token_id=tok.pad_token_id,
                )
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            outputs.update(zip(batch, texts))
    finally:
        tok.padding_side = old_side
    return [
        Prediction(id=t.id, choice=parse_letter(outputs[i], len(t.choices)), output=outputs[i])
        for i, t in enumerate(tasks)
    ]


def _as_tasks(tasks: Sequence[Task] | str | os.PathLike[str]) -> list[Task]:
    if isinstance(tasks, (str, os.PathLike)):
        return load(tasks)
    items = list(tasks)
    if not items:
        raise ValueError("no tasks to evaluate; load some with psylens.tasks.load('psych')")
    bad = [type(t).__name__ for t in items if not isinstance(t, Task)]
    if bad:
        raise ValueError(f"tasks must be psylens.tasks.Task objects, got {bad[0]}; load them with psylens.tasks.load(...)")
    return items


def predict(
    model: Model,
    tasks: Sequence[Task] | str | os.PathLike[str],
    method: str = "loglik",
    *,
    chain_of_thought: bool = False,
    batch_size: int = 4,
    progress: bool = True,
    format: str = "auto",
    max_new_tokens: int | None = None,
) -> list[Prediction]:
    """The model's choice for each task, in order. Reads story, question and choices only.

    ``batch_size`` counts tasks (a ``loglik`` batch holds 4 rows a task). ``format``: ``"auto"``
    (the chat template where the tokenizer has one, plain text otherwise), ``"chat"`` or ``"raw"``.
    ``max_new_tokens`` (``generate`` only): default 8, or 256 with ``chain_of_thought``.
    """
    items = _as_tasks(tasks)
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if chain_of_thought and method != "generate":
        raise ValueError("chain_of_thought needs method='generate' (loglik scores the choices directly)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    fmt = model.resolve_format(format)
    if method == "loglik":
        return _loglik(model, items, fmt, batch_size, progress)
    n_new = max_new_tokens if max_new_tokens is not None else (256 if chain_of_thought else 8)
    if n_new < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {n_new}")
    return _generate(model, items, fmt, chain_of_thought, batch_size, n_new, progress)


def _bootstrap(correct: Any, n_boot: int, rng: Any) -> list[float]:
    import numpy as np

    if len(correct) == 0:
        return [float("nan"), float("nan")]
    idx = rng.integers(0, len(correct), size=(n_boot, len(correct)))
    means = correct[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def _position_shares(choices: Sequence[int | None], n_positions: int) -> dict[str, float]:
    """The share of ``choices`` at each position, by letter (``None``, unparsed, counts in the denominator)."""
    n = len(choices)
    return {LETTERS[i]: sum(c == i for c in choices) / n for i in range(n_positions)}


def summarize(
    tasks: Sequence[Task],
    predictions: Sequence[Prediction],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    return_items: bool = False,
) -> dict[str, Any]:
    """Score ``predictions`` against the tasks' answers.

    Returns ``accuracy``, ``by_kind`` (kinds in :data:`KINDS` order, then any others), ``chance``
    (mean of 1/number of choices), ``n``, ``parsed`` (fraction of predictions with a choice),
    ``ci95`` and ``by_kind_ci95`` (bootstrap 95% intervals over items, seeded), ``letters`` (the
    share of all predictions that chose each position, ``{"A": ..., "B": ...}``, beside
    ``answer_letters``, the same for the answers) and with ``return_items`` a ``per_item`` list.

    ``letters`` shows a position habit at a glance: a model that answers "D" to everything scores
    exactly the share of "D" answers (``answer_letters["D"]``), which is chance on a balanced set.
    """
    import numpy as np

    items = list(tasks)
    preds = list(predictions)
    if len(items) != len(preds):
        raise ValueError(f"{len(preds)} predictions for {len(items)} tasks; give one prediction a task, in order")
    for t, p in zip(items, preds):
        if t.id != p.id:
            raise ValueError(f"prediction {p.id!r} does not belong to task {t.id!r}; keep predictions in task order")
    if not items:
        raise ValueError("no tasks to summarize")
    correct = np.array([p.choice is not None and t.choices[p.choice] == t.answer for t, p in zip(items, preds)], float)
    kinds = [k for k in KINDS if any(t.kind == k for t in items)]
    kinds += sorted({t.kind for t in items} - set(kinds))
    n_positions = max(len(t.choices) for t in items)
    rng = np.random.default_rng(seed)
    by_kind: dict[str, float] = {}
    by_kind_ci: dict[str, list[float]] = {}
    for k in kinds:
        mask = np.array([t.kind == k for t in items])
        by_kind[k] = float(correct[mask].mean())
        by_kind_ci[k] = _bootstrap(correct[mask], n_boot, rng)
    result: dict[str, Any] = {
        "accuracy": float(correct.mean()),
        "by_kind": by_kind,
        "chance": float(np.mean([1.0 / len(t.choices) for t in items])),
        "n": len(items),
        "parsed": float(np.mean([p.choice is not None for p in preds])),
        "ci95": _bootstrap(correct, n_boot, np.random.default_rng(seed)),
        "by_kind_ci95": by_kind_ci,
        "letters": _position_shares([p.choice for p in preds], n_positions),
        "answer_letters": _position_shares([t.answer_index for t in items], n_positions),
    }
    if return_items:
        result["per_item"] = [
            {
                "id": t.id,
                "kind": t.kind,
                "predicted": t.choices[p.choice] if p.choice is not None else None,
                "answer": t.answer,
                "correct": bool(c),
                **({"scores": list(p.scores)} if p.scores is not None else {}),
                **({"output": p.output} if p.output is not None else {}),
            }
            for t, p, c in zip(items, preds, correct)
        ]
    return result


def evaluate(
    model: Model,
    tasks: Sequence[Task] | str | os.PathLike[str],
    method: str = "loglik",
    chain_of_thought: bool = False,
    batch_size: int = 4,
    progress: bool = True,
    *,
    return_items: bool = False,
    format: str = "auto",
    max_new_tokens: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``tasks`` (a list of :class:`Task`, ``"psych"`` or a JSONL path).

    Returns ``{"accuracy", "by_kind", "chance", "n", "parsed", "ci95", "by_kind_ci95", "letters",
    "answer_letters"}`` (and
    ``"per_item"`` with ``return_items=True``); see :func:`predict` for the methods and options
    and :func:`summarize` for the fields. ``seed`` fixes the bootstrap.
    """
    items = _as_tasks(tasks)
    preds = predict(model, items, method, chain_of_thought=chain_of_thought, batch_size=batch_size,
                    progress=progress, format=format, max_new_tokens=max_new_tokens)
    return summarize(items, preds, seed=seed, return_items=return_items)
