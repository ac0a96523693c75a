"""psylens traces on a tiny random model: record format, per-trace seeds, resume after a kill equals an uninterrupted run."""

from __future__ import annotations

import json

import pytest

from psylens import tasks as T
from psylens.saes import read_traces
from psylens.saes import traces as tr
from psylens.saes.traces import TRACE_KEYS, generate_traces, trace_seed

ITEMS = T.load("psych", split="train")[:3]
KW = dict(split="train", samples=2, max_new_tokens=6, temperature=1.0, seed=3, batch_size=2, progress=False)


class Kill(Exception):
    pass


def _lines(run):
    return (run / "traces" / "traces.jsonl").read_text().splitlines()


def test_records_have_exactly_the_fields_and_parse_answers(tiny_model, tmp_path, monkeypatch):
    model = tiny_model("llama")
    # planted outputs: the parsing and scoring use psylens.tasks
    texts = iter(["She lost it.\nAnswer: B", "No idea", "Answer: D", "so (A)", "Answer: C", "Answer: A"])
    monkeypatch.setattr(tr, "_generate_batch", lambda m, prompts, seeds, n, t, **kw: [next(texts) for _ in prompts])
    summary = generate_traces(model, ITEMS, tmp_path / "run", **KW)
    recs = read_traces(tmp_path / "run")
    assert summary["n"] == len(recs) == 6
    for r in recs:
        assert tuple(r) == TRACE_KEYS
        task = next(t for t in ITEMS if t.id == r["task_id"])
        assert r["prompt"] == T.choice_prompt(task, chain_of_thought=True)
        assert r["kind"] == task.kind
        assert r["seed"] == trace_seed(3, task.id, int(r["id"].split("#")[1]))
        choice = T.parse_letter(r["text"])
        assert r["answer"] == (T.LETTERS[choice] if choice is not None else None)
        assert r["correct"] == (choice is not None and task.choices[choice] == task.answer)
    assert sum(r["answer"] is None for r in recs) == 1
    assert len({r["id"] for r in recs}) == 6
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["models"]["model"]["spec"] == "tiny-llama"
    assert (tmp_path / "run" / "steps" / "traces.json").exists()


def test_resume_after_a_kill_equals_an_uninterrupted_run(tiny_model, tmp_path):
    model = tiny_model("llama")
    full = generate_traces(model, ITEMS, tmp_path / "a", **KW)
    assert full["n"] == 6 and full["written"] == 6

    def kill_after_two(done, total):
        if done >= 4:
            raise Kill

    with pytest.raises(Kill):
        generate_traces(model, ITEMS, tmp_path / "b", callback=kill_after_two, **KW)
    assert len(_lines(tmp_path / "b")) == 4
    assert not (tmp_path / "b" / "steps" / "traces.json").exists()  # the step is not recorded yet
    # a kill in the middle of a write leaves a torn line: it is dropped on resume
    with open(tmp_path / "b" / "traces" / "traces.jsonl", "a") as f:
        f.write('{"id": "torn-wri')
    again = generate_traces(model, ITEMS, tmp_path / "b", **KW)
    assert again["written"] == 2 and again["skipped"] == 4
    assert _lines(tmp_path / "b") == _lines(tmp_path / "a")  # same traces, same order, no duplicates
    assert (tmp_path / "b" / "steps" / "traces.json").exists()
    # running once more writes nothing
    assert generate_traces(model, ITEMS, tmp_path / "b", **KW)["written"] == 0
    assert len(_lines(tmp_path / "b")) == 6


def test_seeds_matter_and_settings_must_match_on_resume(tiny_model, tmp_path):
    model = tiny_model("llama")
    generate_traces(model, ITEMS[:1], tmp_path / "a", **KW)
    generate_traces(model, ITEMS[:1], tmp_path / "b", **{**KW, "seed": 4})
    a = [r["text"] for r in read_traces(tmp_path / "a")]
    b = [r["text"] for r in read_traces(tmp_path / "b")]
    assert a != b  # control: another seed samples other traces
    assert a[0] != a[1]  # two samples of one task differ (their own seeds)
    with pytest.raises(ValueError, match="other settings"):
        generate_traces(model, ITEMS[:1], tmp_path / "a", **{**KW, "temperature": 0.5})


def test_greedy_is_the_plain_greedy_generation(tiny_model, tmp_path):
    model = tiny_model("llama")
    generate_traces(model, ITEMS[:1], tmp_path / "g", **{**KW, "temperature": 0.0, "samples": 1, "batch_size": 1})
    rec = read_traces(tmp_path / "g")[0]
    prompt = tr.format_trace_prompt(model, rec["prompt"])
    enc = model.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    out = model.hf_model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
    assert rec["text"] == model.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_bad_settings_raise_before_work(tiny_model, tmp_path):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="samples"):
        generate_traces(model, ITEMS, tmp_path / "x", **{**KW, "samples": 0})
    with pytest.raises(ValueError, match="temperature"):
        generate_traces(model, ITEMS, tmp_path / "x", **{**KW, "temperature": -1.0})
    with pytest.raises(ValueError, match="no traces"):
        read_traces(tmp_path / "nowhere")


@pytest.mark.slow
def test_cli_writes_and_resumes(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from psylens.cli import app

    model = tiny_model("llama")
    mdir = tmp_path / "tiny"
    model.hf_model.save_pretrained(mdir)
    model.tokenizer.save_pretrained(mdir)
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps(t.to_json()) + "\n" for t in ITEMS[:2]))
    args = ["traces", "--model", str(mdir), "--tasks", str(tasks_file), "--split", "train", "--samples", "2",
            "--max-new-tokens", "4", "--temperature", "0.8", "--seed", "1", "--out", str(tmp_path / "run")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    recs = read_traces(tmp_path / "run")
    assert len(recs) == 4 and all(tuple(r) == TRACE_KEYS for r in recs)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "0 new" in res.output
    assert len(read_traces(tmp_path / "run")) == 4
    bad = CliRunner().invoke(app, [*args[:-2], "--samples", "0", "--out", str(tmp_path / "r2")])
    assert bad.exit_code != 0
