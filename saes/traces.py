"""Chain-of-thought traces: sampled, seeded, batched reasoning on the psychological-reasoning tasks.

    RUN/traces/traces.jsonl     one trace a line: id, task_id, kind, prompt, text, answer, correct, seed
    RUN/traces/config.json      the settings the file was generated with (a resume must match them)

>>> from psylens.saes.traces import generate_traces          # doctest: +SKIP
>>> generate_traces(model, "psych", "runs/traces", split="train", samples=4)   # doctest: +SKIP

* ``prompt`` is the task as the user turn (:func:`psylens.tasks.choice_prompt` with chain of
  thought); the model sees it formatted by :func:`format_trace_prompt` — the chat template and the
  assistant's opening ``Let's think step by step.``, exactly as ``psylens tasks eval --cot`` does.
  :func:`psylens.saes.step_activations` formats it the same way, so a trace's steps are read in the
  context they were written in.
* ``text`` is the generated reasoning (the final ``Answer: X`` line included); ``answer`` is the
  letter parsed by :func:`psylens.tasks.parse_letter` (``None`` when nothing parsed) and
  ``correct`` whether it is the task's answer.
* **Seeds are per trace.** Sampling draws Gumbel noise from a generator seeded by the trace's own
  ``seed`` (argmax of ``logits / T + Gumbel`` is an exact sample of ``softmax(logits / T)``), so a
  trace does not depend on which other traces shared its batch or on the global RNG. Batches are
  fixed from the job list, so a resumed run recomputes exactly the batches an uninterrupted run
  would have.
* **Resumable.** Every finished batch is appended and fsync'ed; a restart skips the ids already in
  the file (a torn last line, left by a kill mid-write, is dropped first). Nothing is lost or
  written twice.

Footgun: the per-row noise makes traces reproducible on one machine and dtype; float differences
between devices (or a different batch size, which changes padding) can still flip a sampled token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psylens.models import prompt_special_tokens

if TYPE_CHECKING:
    import torch

    from psylens.models import Model
    from psylens.tasks import Task

__all__ = [
    "TRACES_DIR",
    "TRACES_FILE",
    "TRACES_CONFIG_FILE",
    "TRACE_KEYS",
    "COT_SUFFIX",
    "TraceConfig",
    "format_trace_prompt",
    "trace_seed",
    "generate_traces",
    "read_traces",
]

log = logging.getLogger(__name__)

TRACES_DIR = "traces"
TRACES_FILE = "traces/traces.jsonl"
TRACES_CONFIG_FILE = "traces/config.json"
TRACE_KEYS: tuple[str, ...] = ("id", "task_id", "kind", "prompt", "text", "answer", "correct", "seed")
COT_SUFFIX = "Let's think step by step."  # what psylens.tasks puts at the start of the assistant turn


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TraceConfig:
    """Settings of one trace generation; a resume must use the same ones (``batch_size`` included:
    it fixes the batches, hence the padding and the floats)."""

    tasks: str = "psych"
    split: str | None = "train"
    samples: int = 4
    max_new_tokens: int = 256
    temperature: float = 0.7
    seed: int = 0
    batch_size: int = 16
    format: str = "auto"

    def __post_init__(self) -> None:
        from psylens.tasks import SPLITS

        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split {self.split!r} is not one of {', '.join(SPLITS)}; or None for every item")
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.format not in ("auto", "chat", "raw"):
            raise ValueError(f"format {self.format!r} is not one of auto, chat, raw")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> TraceConfig:
        return cls(**obj)


def trace_seed(seed: int, task_id: str, sample: int) -> int:
    """The seed of one trace: a hash of the run seed, the task id and the sample index (31 bits)."""
    h = hashlib.sha256(f"{seed}\x00{task_id}\x00{sample}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def format_trace_prompt(model: Model, prompt: str, format: str = "auto") -> str:
    """The text a trace continues: ``prompt`` as the user turn, then the assistant's ``Let's think step by step.``

    The same string :func:`psylens.tasks.predict` builds with ``chain_of_thought=True``.
    """
    from psylens.tasks import _full_prompt

    return _full_prompt(model, prompt, model.resolve_format(format), COT_SUFFIX)


# --------------------------------------------------------------------------------------------
# sampling with per-row seeds
# --------------------------------------------------------------------------------------------
class _RowGumbel:
    """A logits processor: ``scores / T + Gumbel(generator_row)`` so that greedy decoding samples.

    Each row has its own ``torch.Generator``, seeded by its trace's seed.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, device: torch.device) -> None:
        import torch

        self.temperature = temperature
        self.gens = []
        for s in seeds:
            g = torch.Generator(device=device)
            g.manual_seed(int(s))
            self.gens.append(g)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        b, v = scores.shape
        u_BV = torch.stack([torch.rand(v, generator=g, device=scores.device) for g in self.gens[:b]])
        gumbel_BV = -torch.log(-torch.log(u_BV.clamp_(1e-20, 1.0 - 1e-7)))
        return scores.float() / self.temperature + gumbel_BV


def _generate_batch(
    model: Model, prompts: list[str], seeds: list[int], max_new_tokens: int, temperature: float,
    min_new_tokens: int | None = None, special: bool = False,
) -> list[str]:
    """Continue each formatted prompt (left-padded batch); row ``i`` is sampled with ``seeds[i]``. ``special``:
    tokenize with the tokenizer's special tokens (a raw prompt, :meth:`psylens.models.Model.prompt_special_tokens`)."""
    import torch
    from transformers import LogitsProcessorList

    tok = model.tokenizer
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=special).to(model.device)
    finally:
        tok.padding_side = old_side
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens, "do_sample": False, "temperature": None, "top_p": None, "top_k": None,
        "pad_token_id": tok.pad_token_id,
    }
    if min_new_tokens is not None:  # benchmarks: a fixed amount of work
        kwargs["min_new_tokens"] = min_new_tokens
    if temperature > 0:
        kwargs["logits_processor"] = LogitsProcessorList([_RowGumbel(seeds, temperature, model.device)])
    with torch.no_grad():
        out = model.hf_model.generate(**enc, **kwargs)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


# --------------------------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------------------------
def _repair(path: Path) -> None:
    """Drop a torn last line (no trailing newline, or not valid JSON) left by a kill mid-write."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data:
        return
    keep = len(data)
    if not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
    else:
        last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        try:
            json.loads(data[last_start:])
        except ValueError:
            keep = last_start
    if keep != len(data):
        log.warning("%s: dropping a torn last line (%d bytes)", path, len(data) - keep)
        with open(path, "r+b") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())


def read_traces(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The traces of ``RUN/traces/traces.jsonl`` (give the file or the run directory).

    A torn last line is skipped (not repaired: reading never writes); any other bad line raises.
    """
    p = Path(path)
    if p.is_dir():
        p = p / TRACES_FILE
    if not p.is_file():
        raise ValueError(f"no traces at {str(p)!r}; generate them with `psylens traces --out RUN`")
    lines = p.read_bytes().split(b"\n")
    out: list[dict[str, Any]] = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except ValueError:
            if i == len(lines) - 1:  # torn last line (no newline after it)
                continue
            raise ValueError(f"{p}:{i + 1}: not valid JSON; the traces file is damaged") from None
        out.append(rec)
    return out


def _append(path: Path, records: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------
# generating
# --------------------------------------------------------------------------------------------
def _jobs(items: Sequence[Task], samples: int, seed: int) -> list[tuple[Task, int, str, int]]:
    return [(t, k, f"{t.id}#{k}", trace_seed(seed, t.id, k)) for t in items for k in range(samples)]


def generate_traces(
    model: Model,
    tasks: str | os.PathLike[str] | Sequence[Task],
    out: str | os.PathLike[str],
    *,
    split: str | None = "train",
    samples: int = 4,
    max_new_tokens: int = 256,
    temperature: float = 0.7,
    seed: int = 0,
    batch_size: int = 16,
    format: str = "auto",
    progress: bool = True,
    callback: Callable[[int, int], None] | None = None,
    run_step: bool = True,
) -> dict[str, Any]:
    """Generate ``samples`` chain-of-thought traces a task into ``out/traces/traces.jsonl`` (resumable).

    ``tasks``: ``"psych"``, a JSONL file, or a list of :class:`~psylens.tasks.Task` (then ``split``
    filters the list when the tasks have splits). ``out`` is a run directory (created if absent; the
    model is recorded in its ``run.json`` and the generation as step ``traces``). ``callback(done,
    total)`` is called after each written batch (a raise there stops the run, resumably).

    Returns a summary: ``n``, ``written`` (this call), ``skipped`` (already present), ``accuracy``,
    ``parsed``, ``new_tokens``, ``seconds`` and ``tokens_per_second`` (this call).

    Footgun: a resume with other settings would mix two distributions in one file, so it raises;
    ``batch_size`` counts as a setting (it fixes the padding of each batch).
    """
    import time

    from tqdm.auto import tqdm

    from psylens import tasks as T
    from psylens.io import read_json, write_json
    from psylens.runs import now, open_or_create_run

    source = tasks if isinstance(tasks, (str, os.PathLike)) else "custom"
    cfg = TraceConfig(tasks=str(source), split=split, samples=samples, max_new_tokens=max_new_tokens,
                      temperature=float(temperature), seed=seed, batch_size=batch_size, format=format)
    if isinstance(tasks, (str, os.PathLike)):
        items = T.load(tasks, split=split)
    else:
        items = [t for t in tasks if split is None or t.split in (None, split)]
        if not items:
            raise ValueError(f"no tasks to trace (split {split!r}); give psylens.tasks.Task objects")
    model.resolve_format(format)
    started = now()
    run = open_or_create_run(out, command="psylens traces", model=model, config=cfg.to_json(), seed=seed,
                             started=started)
    path = run.path / TRACES_FILE
    cfg_path = run.path / TRACES_CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    if cfg_path.exists():
        old = read_json(cfg_path)
        if old != cfg.to_json():
            diff = {k: (old.get(k), v) for k, v in cfg.to_json().items() if old.get(k) != v}
            raise ValueError(
                f"{str(path)!r} was generated with other settings {diff} (old, new); resume with the same "
                "settings or choose another --out"
            )
    else:
        if path.exists() and path.stat().st_size:
            raise ValueError(f"{str(path)!r} exists without {TRACES_CONFIG_FILE}; choose another --out")
        write_json(cfg_path, cfg.to_json())
    _repair(path)
    done_ids = {r["id"] for r in read_traces(path)} if path.exists() else set()

    jobs = _jobs(items, samples, seed)
    ids = [j[2] for j in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate task ids; every task needs a unique id")
    # fixed batches: samples of one task sit together (same prompt, no padding), tasks by prompt length
    prompts = {t.id: T.choice_prompt(t, chain_of_thought=True) for t in items}
    formatted = {tid: format_trace_prompt(model, p, format) for tid, p in prompts.items()}
    special = prompt_special_tokens(model, format)
    n_tok = {tid: len(model.tokenizer(s, add_special_tokens=special)["input_ids"]) for tid, s in formatted.items()}
    jobs.sort(key=lambda j: (-n_tok[j[0].id], j[0].id, j[1]))
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]

    step = run.begin_step("traces", cfg.to_json()) if run_step else None
    written = new_tokens = 0
    seconds = 0.0
    bar = tqdm(total=len(jobs), desc="traces", disable=not progress, initial=sum(i in done_ids for i in ids))
    try:
        for batch in batches:
            todo = [j for j in batch if j[2] not in done_ids]
            if not todo:
                continue
            t0 = time.perf_counter()
            texts = _generate_batch(model, [formatted[j[0].id] for j in batch], [j[3] for j in batch],
                                    max_new_tokens, float(temperature), special=special)
            seconds += time.perf_counter() - t0
            recs = []
            for (task, _k, tid, s), text in zip(batch, texts):
                if tid in done_ids:
                    continue
                choice = T.parse_letter(text, len(task.choices))
                recs.append({
                    "id": tid, "task_id": task.id, "kind": task.kind, "prompt": prompts[task.id], "text": text,
                    "answer": T.LETTERS[choice] if choice is not None else None,
                    "correct": choice is not None and task.choices[choice] == task.answer, "seed": s,
                })
                new_tokens += len(model.tokenizer(text, add_special_tokens=False)["input_ids"])
            _append(path, recs)
            done_ids.update(r["id"] for r in recs)
            written += len(recs)
            bar.update(len(recs))
            if callback is not None:
                callback(len(done_ids & set(ids)), len(jobs))
    finally:
        bar.close()
    all_recs = [r for r in read_traces(path) if r["id"] in set(ids)]
    n = len(all_recs)
    summary = {
        "n": n,
        "written": written,
        "skipped": len(jobs) - written,
        "accuracy": sum(bool(r["correct"]) for r in all_recs) / n if n else float("nan"),
        "parsed": sum(r["answer"] is not None for r in all_recs) / n if n else float("nan"),
        "new_tokens": new_tokens,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(new_tokens / seconds, 1) if seconds else None,
    }
    if step is not None:
        step.output(TRACES_FILE)
        step.output(TRACES_CONFIG_FILE)
        step.note(n_traces=n, accuracy=summary["accuracy"] if n else None, parsed=summary["parsed"] if n else None)
        run.finish_step(step)
    return summary
