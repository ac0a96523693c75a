"""psylens.tasks: the built-in psych set (format, balance, split), loading errors, and known-answer
evaluation on tiny random models (a planted truth scores 1.0; shuffled answers score chance)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import build_tiny_hf
from psylens import tasks
from psylens.models import Model
from psylens.tasks import KINDS, Prediction, Task, load, parse_letter, predict, shuffle_answers, summarize


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def psych() -> list[Task]:
    return load("psych")


@pytest.fixture(scope="module")
def tokenizer():
    """The SmolLM2 tokenizer alone (the embedded model itself is not loaded)."""
    from transformers import AutoTokenizer

    from psylens.models import DEFAULT_MODEL, _resolve

    tok = AutoTokenizer.from_pretrained(_resolve(DEFAULT_MODEL)[1])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


class _Planted(torch.nn.Module):
    """An LM head whose logits get ``bonus`` on ``ids``: the model 'believes' those tokens."""

    def __init__(self, head: torch.nn.Module, ids: list[int], vocab: int, bonus: float = 30.0) -> None:
        super().__init__()
        self.head = head
        bias = torch.zeros(vocab)
        bias[ids] = bonus
        self.register_buffer("bias", bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h) + self.bias


def _tiny(tokenizer, arch: str = "llama", planted: list[int] | None = None) -> Model:
    hf = build_tiny_hf(arch)
    if planted is not None:
        hf.lm_head = _Planted(hf.lm_head, planted, hf.config.vocab_size)
    return Model(hf, tokenizer, spec=f"tiny-{arch}", boot_bridge=False)


FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "melon", "peach", "pear", "plum"]
PLANT = "kumquat"


def _synthetic(n: int, seed: int = 0) -> list[Task]:
    """Tasks whose correct choice is always 'kumquat' (at a random position), distractors other fruits."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        choices = rng.sample(FRUITS, 3)
        choices.insert(rng.randrange(4), PLANT)
        story = f"Item {i}: {rng.choice(['Ana', 'Ben', 'Cy'])} walked to the market on day {rng.randrange(1, 30)}."
        out.append(Task(id=f"s{i}", kind=KINDS[i % len(KINDS)], story=story, question="Which fruit did they buy?",
                        choices=tuple(choices), answer=PLANT))
    return out


def _ids(tokenizer, word: str) -> list[int]:
    """The tokens of `` word`` as a continuation after ``Answer:``."""
    return sorted(set(tokenizer(f" {word}", add_special_tokens=False)["input_ids"]))


# ---------------------------------------------------------------- the built-in data file
def test_psych_file_format_size_and_kinds(psych: list[Task]) -> None:
    raw = tasks._data_path("psych_tasks.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(raw) == len(psych) >= 400
    for line in raw:
        obj = json.loads(line)
        assert {"id", "kind", "story", "question", "choices", "answer", "split"} <= set(obj) <= set(tasks._KEYS)
        assert len(obj["choices"]) == 4 and len(set(obj["choices"])) == 4
        assert obj["choices"].count(obj["answer"]) == 1
    assert len({t.id for t in psych}) == len(psych)
    counts = Counter(t.kind for t in psych)
    assert set(counts) == set(KINDS)
    assert min(counts.values()) >= 60
    templates = defaultdict(set)
    for t in psych:
        templates[t.kind].add(t.template)
    assert all(len(v) >= 8 for v in templates.values()), {k: len(v) for k, v in templates.items()}
    assert len({t.story for t in psych}) == len(psych)  # no repeated story
    assert not [t.id for t in psych if "{" in t.story + t.question + "".join(t.choices)]  # no unfilled slot


def test_split_by_template_no_leakage(psych: list[Task]) -> None:
    test = load("psych", split="test")
    train = load("psych", split="train")
    assert len(test) >= 100 and len(train) + len(test) == len(psych)
    assert {t.split for t in test} == {"test"} and {t.split for t in train} == {"train"}
    assert not {t.template for t in test} & {t.template for t in train}
    assert not {t.story for t in test} & {t.story for t in train}
    assert set(Counter(t.kind for t in test)) == set(KINDS)  # every kind is tested


def test_answer_positions_balanced(psych: list[Task]) -> None:
    for kind in KINDS:
        for split in (None, "test"):
            items = [t for t in psych if t.kind == kind and (split is None or t.split == split)]
            pos = Counter(t.answer_index for t in items)
            expected = len(items) / 4
            assert all(abs(pos[i] - expected) <= 2 for i in range(4)), (kind, split, pos)


def test_answers_not_guessable_from_length(psych: list[Task]) -> None:
    for kind in KINDS:
        items = [t for t in psych if t.kind == kind]
        longest = sum(len(t.answer) == max(map(len, t.choices)) for t in items) / len(items)
        shortest = sum(len(t.answer) == min(map(len, t.choices)) for t in items) / len(items)
        assert longest < 0.5 and shortest < 0.6, (kind, longest, shortest)


# ---------------------------------------------------------------- loading errors
GOOD = {"id": "x1", "kind": "false_belief", "story": "S.", "question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "b"}


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "bad, needles",
    [
        ("{not json", ["not valid JSON"]),
        ('["a list"]', ["JSON object"]),
        ({k: v for k, v in GOOD.items() if k != "question"}, ["missing keys", "question"]),
        ({**GOOD, "colour": "red"}, ["unknown keys", "colour"]),
        ({**GOOD, "answer": "z"}, ["'z'", "not one of the choices"]),
        ({**GOOD, "choices": ["a", "b", "c"], "answer": "a"}, ["4 strings", "3 choices"]),
        ({**GOOD, "choices": ["a", "b", "b", "d"]}, ["duplicate choices", "'b'"]),
        ({**GOOD, "split": "dev"}, ["unknown split", "'dev'", "train"]),
        ({**GOOD, "story": ""}, ["'story'", "non-empty"]),
        ({**GOOD, "id": "x0"}, ["'x0'", "already used on line 1"]),
    ],
)
def test_load_errors_name_file_and_line(tmp_path: Path, bad, needles) -> None:
    first = {**GOOD, "id": "x0"}
    path = _write(tmp_path / "t.jsonl", [first, bad])
    with pytest.raises(ValueError) as e:
        load(path)
    msg = str(e.value)
    assert f"{path}:2" in msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def test_load_encoding_errors(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes((json.dumps(GOOD) + "\n").encode() + json.dumps({**GOOD, "id": "x2"}).replace("S.", "caf\u00e9").encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:2: not valid UTF-8"):
        load(path)
    path = tmp_path / "surrogate.jsonl"
    _write(path, [json.dumps(GOOD), json.dumps({**GOOD, "id": "x2"}).replace("S.", "\\ud800")])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:2: .*lone surrogate"):
        load(path)


def test_load_splits(tmp_path: Path) -> None:
    plain = _write(tmp_path / "plain.jsonl", [GOOD, {**GOOD, "id": "x2"}, ""])
    assert [t.id for t in load(plain)] == ["x1", "x2"] and load(plain)[0].split is None
    with pytest.raises(ValueError, match="no 'split' keys.*split=None"):
        load(plain, split="test")
    mixed = _write(tmp_path / "mixed.jsonl", [{**GOOD, "split": "train"}, {**GOOD, "id": "x2"}])
    with pytest.raises(ValueError, match=rf"{re.escape(str(mixed))}:2: some lines have a 'split'"):
        load(mixed)
    split = _write(tmp_path / "split.jsonl", [{**GOOD, "split": "train"}, {**GOOD, "id": "x2", "split": "test"}])
    assert [t.id for t in load(split, split="test")] == ["x2"]
    with pytest.raises(ValueError, match="'valid' is not one of train, test"):
        load(split, split="valid")
    with pytest.raises(ValueError, match="neither a built-in set"):
        load(tmp_path / "missing.jsonl")
    empty = _write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(ValueError, match="has no tasks"):
        load(empty)


def test_task_validates_itself() -> None:
    t = Task(id="a", kind="k", story="s", question="q", choices=["x", "y"], answer="y")  # type: ignore[arg-type]
    assert t.choices == ("x", "y") and t.answer_index == 1
    with pytest.raises(ValueError, match="not one of its choices"):
        replace(t, answer="z")
    with pytest.raises(ValueError, match="duplicate choices"):
        replace(t, choices=("x", "x"), answer="x")
    with pytest.raises(Exception):
        t.answer = "x"  # type: ignore[misc]  # frozen


# ---------------------------------------------------------------- parsing letters
@pytest.mark.parametrize(
    "text, expected",
    [("B", 1), (" C.", 2), ("Answer: C", 2), ("answer: d", None), ("The answer is (D).", 3), ("(B) sad", 1),
     ("A", 0), ("A. happy", 0), ("**C**", 2), ("Let me think. Sally left.\nAnswer: A", 0),
     ("First B seems wrong, so the best is C", 2), ("A dog ran away", None), ("I think she feels happy", None),
     ("", None), ("E", None), ("Answer: B\nAnswer: D", 3)],
)
def test_parse_letter(text: str, expected) -> None:
    assert parse_letter(text) == expected


def test_summarize_counts_unparsed_as_wrong() -> None:
    items = _synthetic(4)
    preds = [Prediction(t.id, t.answer_index) for t in items[:2]] + [Prediction(t.id, None, output="?") for t in items[2:]]
    r = summarize(items, preds)
    assert set(r) == {"accuracy", "by_kind", "chance", "n", "parsed", "ci95", "by_kind_ci95", "letters",
                      "answer_letters"}
    assert r["accuracy"] == 0.5 and r["parsed"] == 0.5 and r["n"] == 4 and r["chance"] == 0.25
    assert list(r["by_kind"]) == list(KINDS[:4])
    assert "per_item" in summarize(items, preds, return_items=True)
    with pytest.raises(ValueError, match="task order"):
        summarize(items, preds[::-1])


def test_summarize_shows_a_position_habit() -> None:
    """Known answer: a model that always answers "D" scores exactly the share of D answers; the letters say why."""
    items = shuffle_answers(_synthetic(240), seed=3)
    habit = summarize(items, [Prediction(t.id, 3) for t in items])
    assert habit["letters"] == {"A": 0.0, "B": 0.0, "C": 0.0, "D": 1.0}
    assert habit["accuracy"] == pytest.approx(habit["answer_letters"]["D"])
    assert sum(habit["answer_letters"].values()) == pytest.approx(1.0)
    # control: a model that knows the answers chooses each position as often as it is the answer
    oracle = summarize(items, [Prediction(t.id, t.answer_index) for t in items])
    assert oracle["letters"] == oracle["answer_letters"] and max(oracle["letters"].values()) < 0.5
    # unparsed answers stay in the denominator
    half = summarize(items, [Prediction(t.id, 3 if i % 2 else None) for i, t in enumerate(items)])
    assert half["letters"]["D"] == 0.5 and sum(half["letters"].values()) == 0.5


# ---------------------------------------------------------------- loglik on tiny models
def _reference_scores(model: Model, task: Task, fmt: str) -> list[float]:
    """Each choice alone, unpadded, full logits: the definition the batched code must match."""
    tok = model.tokenizer
    prompt = tasks._full_prompt(model, tasks.loglik_prompt(task), fmt, "Answer:")
    p_ids = tok(prompt, add_special_tokens=fmt == "raw")["input_ids"]
    out = []
    for c in task.choices:
        ids = tok(f"{prompt} {c}", add_special_tokens=fmt == "raw")["input_ids"]
        assert ids[: len(p_ids)] == p_ids
        with torch.no_grad():
            logp = torch.log_softmax(model.hf_model(torch.tensor([ids])).logits[0].float(), -1)
        k = len(ids) - len(p_ids)
        out.append(float(torch.stack([logp[len(ids) - k - 1 + j, ids[len(ids) - k + j]] for j in range(k)]).mean()))
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("path", ["shared-prompt", "full-rows"])
def test_loglik_batched_with_padding_matches_unpadded(tokenizer, psych: list[Task], arch: str, path: str,
                                                      monkeypatch) -> None:
    model = _tiny(tokenizer, arch)
    if path == "full-rows":  # a model without a usable cache falls back to scoring every row in full
        def refuse(*a, **k):
            raise NotImplementedError("no cache")

        monkeypatch.setattr(tasks, "_loglik_shared", refuse)
    # prompts of different lengths and choices of different lengths in one batch
    items = sorted(psych, key=lambda t: len(t.story))[::97][:5]
    for fmt in ("chat", "raw"):
        preds = predict(model, items, "loglik", batch_size=3, progress=False, format=fmt)
        for t, p in zip(items, preds):
            ref = _reference_scores(model, t, fmt)
            assert p.scores is not None
            assert torch.allclose(torch.tensor(p.scores), torch.tensor(ref), atol=1e-4), (arch, fmt, p.scores, ref)
            assert p.choice == max(range(4), key=lambda j: p.scores[j])


def test_planted_truth_scores_one_and_shuffled_answers_score_chance(tokenizer) -> None:
    items = _synthetic(240)
    planted_ids = _ids(tokenizer, PLANT)
    assert not set(planted_ids) & {i for f in FRUITS for i in _ids(tokenizer, f)}  # the plant marks only the truth
    model = _tiny(tokenizer, planted=planted_ids)
    preds = predict(model, items, "loglik", batch_size=16, progress=False)
    truth = summarize(items, preds)
    assert truth["accuracy"] == 1.0 and truth["parsed"] == 1.0
    assert all(v == 1.0 for v in truth["by_kind"].values())
    # the control: the same predictions scored against answers shuffled among the choices
    control = summarize(shuffle_answers(items, seed=1), preds)
    lo, hi = control["ci95"]
    assert lo <= 0.25 <= hi and hi < 0.4, control
    # an unplanted random model is at chance on the truth as well
    plain = summarize(items, predict(_tiny(tokenizer), items, "loglik", batch_size=16, progress=False))
    assert plain["ci95"][0] <= 0.25 <= plain["ci95"][1] or plain["accuracy"] < 0.45


def test_predictions_never_see_the_answer(tokenizer) -> None:
    items = _synthetic(8)
    moved = [replace(t, answer=t.choices[(t.answer_index + 1) % 4]) for t in items]
    model = _tiny(tokenizer, planted=_ids(tokenizer, PLANT))
    for method in ("loglik", "generate"):
        a = predict(model, items, method, progress=False, max_new_tokens=2)
        b = predict(model, moved, method, progress=False, max_new_tokens=2)
        assert [(p.choice, p.scores, p.output) for p in a] == [(p.choice, p.scores, p.output) for p in b]
    assert tasks.evaluate(model, items, progress=False)["accuracy"] == 1.0
    assert tasks.evaluate(model, moved, progress=False)["accuracy"] == 0.0


# ---------------------------------------------------------------- generate on tiny models
def test_generate_planted_letter_is_parsed(tokenizer) -> None:
    items = [replace(t, choices=_move(t.choices, t.answer_index, 2)) for t in _synthetic(6)]  # answer always C
    letter_ids = tokenizer(" C", add_special_tokens=False)["input_ids"]  # says " C C C ..."
    assert len(letter_ids) == 1
    model = _tiny(tokenizer, planted=letter_ids)
    r = tasks.evaluate(model, items, method="generate", progress=False, return_items=True, batch_size=4)
    assert r["accuracy"] == 1.0 and r["parsed"] == 1.0
    assert all(row["output"].strip().startswith("C") for row in r["per_item"])
    cot = tasks.evaluate(model, items, method="generate", chain_of_thought=True, max_new_tokens=4, progress=False)
    assert cot["accuracy"] == 1.0


def test_generate_unparsable_counts_wrong(tokenizer) -> None:
    items = _synthetic(4)
    model = _tiny(tokenizer, planted=_ids(tokenizer, "zebra"))  # says 'zebra zebra ...': no letter
    r = tasks.evaluate(model, items, method="generate", progress=False, return_items=True)
    assert r["parsed"] == 0.0 and r["accuracy"] == 0.0 and r["n"] == 4
    assert all("zebra" in row["output"] for row in r["per_item"])


def _move(choices: tuple[str, ...], src: int, dst: int) -> tuple[str, ...]:
    c = list(choices)
    c.insert(dst, c.pop(src))
    return tuple(c)


def test_bad_arguments(tokenizer) -> None:
    model = _tiny(tokenizer)
    items = _synthetic(2)
    with pytest.raises(ValueError, match="'ranking' is not one of loglik, generate"):
        predict(model, items, "ranking")
    with pytest.raises(ValueError, match="chain_of_thought needs method='generate'"):
        predict(model, items, "loglik", chain_of_thought=True)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        predict(model, items, batch_size=0)
    with pytest.raises(ValueError, match="no tasks"):
        predict(model, [])


def test_prompts_hold_no_answer(psych: list[Task]) -> None:
    t = psych[0]
    assert "answer" not in tasks.loglik_prompt(t).lower().replace("answer:", "")
    text = tasks.choice_prompt(t)
    for letter, c in zip("ABCD", t.choices):
        assert f"{letter}. {c}" in text
    assert tasks.choice_prompt(replace(t, answer=t.choices[(t.answer_index + 1) % 4])) == text
