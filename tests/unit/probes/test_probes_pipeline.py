"""The probes step end to end on a tiny random model: files, summary contract, errors, CLI, explorer page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from psylens.probes import Directions, ProbeResults
from psylens.probes.pipeline import run_probes
from psylens.runs import create_run, open_run
from psylens.stimuli import Stimuli, load

REQUIRED = ("labels", "layers", "accuracy_by_layer", "shuffled_accuracy_by_layer", "best_layer", "best_accuracy", "chance")
HELDOUT = Path(__file__).resolve().parents[2] / "data" / "heldout_emotions.jsonl"


def small_set(n_groups: int = 6) -> Stimuli:
    stim = load("emotions")
    groups = list(dict.fromkeys(stim.groups))[:n_groups]
    return stim.filter(groups=groups)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def probe_run(tiny_model, tmp_path_factory):
    model = tiny_model("llama")
    root = tmp_path_factory.mktemp("probes")
    rows = [json.loads(line) for line in HELDOUT.read_text().splitlines() if line.strip()]
    eval_file = write_jsonl(root / "eval.jsonl", rows[::10])  # 14 texts, every label
    run = create_run(root / "run", command="test", model=model.describe())
    summary = run_probes(model, run, stimuli=small_set(), eval_path=eval_file, progress=False,
                         persistence_tokens=12, persistence_groups=3, neutral_texts=4)
    return run, summary


def test_summary_has_the_contract_keys(probe_run):
    run, summary = probe_run
    on_disk = run.read_json("probes/summary.json")
    for key in REQUIRED:
        assert key in on_disk, key
    assert on_disk["labels"] == ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
    assert on_disk["layers"] == [0, 1, 2] and len(on_disk["accuracy_by_layer"]) == 3
    assert len(on_disk["shuffled_accuracy_by_layer"]) == 3
    assert on_disk["best_layer"] in on_disk["layers"] and on_disk["chance"] == pytest.approx(1 / 6, abs=1e-3)
    ev = on_disk["eval"]
    assert set(ev) >= {"accuracy_by_layer", "accuracy_at_best_layer", "n"}
    assert ev["n"] == 12 and len(ev["accuracy_by_layer"]) == 3  # the two neutral texts go to the 7-way eval
    assert ev["all_labels"]["n"] == 14
    assert on_disk["all_labels"]["labels"][-1] == "surprise" and "neutral" in on_disk["all_labels"]["labels"]
    assert set(on_disk["sites"]) == {"resid_post"}
    for section in ("geometry", "cross_format", "persistence", "system_prompt"):
        assert on_disk.get(section), section
    assert on_disk["persistence"]["max_offset"] == 12
    assert summary["best_layer"] == on_disk["best_layer"]
    assert on_disk["positions"] == "mean"  # the default read-out


def test_last_token_readout_and_mismatched_activations(tiny_model, tmp_path):
    model = tiny_model("llama")
    stim = small_set(4)
    s = run_probes(model, tmp_path / "last", stimuli=stim, positions="last", analyses=["persistence"],
                   persistence_tokens=6, persistence_groups=2, progress=False)
    assert s["positions"] == "last" and s["persistence"]["max_offset"] == 6
    acts = model.harvest(stim, positions="last", progress=False)
    with pytest.raises(ValueError, match="read out at positions='last'.*asked for positions='mean'"):
        run_probes(model, tmp_path / "mix", stimuli=stim, acts=acts, analyses=[], progress=False)
    with pytest.raises(ValueError, match="positions 'first' is not one of \\['mean', 'last'\\]"):
        run_probes(model, tmp_path / "bad", stimuli=stim, positions="first", progress=False)


def test_files_and_run_record(probe_run):
    run, _ = probe_run
    for rel in ("directions.safetensors", "directions.json", "probes.safetensors", "layer_curve.parquet",
                "confusion.json", "geometry_cosine.parquet", "geometry_pca.parquet", "geometry_valence.parquet",
                "cross_format.parquet", "persistence.parquet", "system_prompt_shift.parquet", "eval.parquet"):
        assert run.has(f"probes/{rel}"), rel
    dirs = Directions.load(run.file("probes/directions.safetensors"))
    assert dirs["joy", 1].shape == (32,) and "neutral" in dirs.emotions and dirs.model == "tiny-llama"
    res = ProbeResults.load(run.file("probes"))
    assert res.layers == (0, 1, 2)
    step = open_run(run.path).steps["probes"]
    assert step["out"] == "probes/summary.json" and step["best_layer"] in (0, 1, 2)
    curve = run.read_table("probes/layer_curve.parquet")
    assert set(curve["label_set"]) == {"headline", "all_labels"}


def test_bad_eval_files_fail_before_any_work(tiny_model, tmp_path):
    model = tiny_model("llama")
    unlabelled = write_jsonl(tmp_path / "u.jsonl", [{"text": "A day at the beach.", "label": "joy"}, {"text": "No label."}])
    with pytest.raises(ValueError, match="1 of 2 texts have no label"):
        run_probes(model, tmp_path / "r1", stimuli=small_set(2), eval_path=unlabelled, progress=False)
    unknown = write_jsonl(tmp_path / "k.jsonl", [{"text": "Hm.", "label": "love"}])
    with pytest.raises(ValueError, match="labels \\['love'\\] that the training set lacks"):
        run_probes(model, tmp_path / "r2", stimuli=small_set(2), eval_path=unknown, progress=False)
    assert not (tmp_path / "r1" / "probes").exists()
    with pytest.raises(ValueError, match="at least two labels"):
        run_probes(model, tmp_path / "r3", stimuli=small_set(3).filter(labels=["joy"]), progress=False)
    with pytest.raises(ValueError, match="unknown analyses \\['ppca'\\]"):
        run_probes(model, tmp_path / "r4", stimuli=small_set(2), analyses=["ppca"], progress=False)


def test_cli_writes_a_run(tiny_model, tmp_path):
    from conftest import build_tiny_hf  # type: ignore[import-not-found]

    from psylens.cli import main

    model_dir = tmp_path / "tiny"
    build_tiny_hf("llama").save_pretrained(model_dir)
    tiny_model("llama").tokenizer.save_pretrained(model_dir)
    stim_file = tmp_path / "stim.jsonl"
    small_set(4).to_jsonl(stim_file)
    out = tmp_path / "run"
    code = main(["probe", "--model", str(model_dir), "--stimuli", str(stim_file), "--out", str(out), "--device", "cpu",
                 "--no-persistence", "--no-system-prompt", "--no-cross-format"])
    assert code == 0
    summary = json.loads((out / "probes" / "summary.json").read_text())
    assert summary["labels"][0] == "anger" and "geometry" in summary and "persistence" not in summary
    assert main(["probe", "--out", str(tmp_path / "bad"), "--kind", "svm"]) == 2
    assert main(["probe", "--out", str(tmp_path / "bad"), "--valence", "joy>>fear"]) == 2
    assert main(["probe", "--out", str(tmp_path / "bad"), "--sites", "nope"]) == 1


def test_parse_valence():
    from psylens.probes.pipeline import parse_valence

    v = parse_valence("joy>surprise>neutral>fear=sadness=disgust=anger")
    assert v["joy"] > v["surprise"] > v["neutral"] > v["fear"] == v["anger"]
    with pytest.raises(ValueError, match="names 'joy' twice"):
        parse_valence("joy>sadness>joy")
    with pytest.raises(ValueError, match="at least three"):
        parse_valence("joy>anger")


def test_explorer_page_renders(probe_run, monkeypatch):

    from streamlit.testing.v1 import AppTest

    import psylens.apps.views as views
    from psylens.apps import EXPLORER
    from psylens.apps.views import overview, probes

    run, _ = probe_run
    assert probes.available(run) and probes in views.PAGES
    monkeypatch.setenv("PSYLENS_RUN", str(run.path))
    monkeypatch.setattr("psylens.apps.views.kit.PAGE_MODULES", [probes, overview])  # the default page is the first
    at = AppTest.from_file(str(EXPLORER), default_timeout=120).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert [t.value for t in at.title] == ["Probes"]
    heads = " ".join(s.value for s in at.subheader)
    for word in ("accuracy by layer", "confused", "Geometry", "Cross-format", "Persistence", "System-prompt"):
        assert word in heads
    assert len(at.get("plotly_chart")) >= 9
    at.select_slider(key="probes_layer").set_value(0).run()
    assert not at.exception
    at.radio(key="probes_conf_which").set_value("shuffled").run()
    assert not at.exception


def test_page_without_optional_tables(tmp_path, monkeypatch):

    from streamlit.testing.v1 import AppTest

    from psylens.apps import EXPLORER
    from psylens.apps.views import overview, probes

    run = create_run(tmp_path / "run", command="test")
    run.write_json("probes/summary.json", {"labels": ["joy", "fear"], "best_layer": 1, "best_accuracy": 0.9,
                                          "chance": 0.5, "site": "resid_post", "layers": [0, 1]})
    monkeypatch.setenv("PSYLENS_RUN", str(run.path))
    monkeypatch.setattr("psylens.apps.views.kit.PAGE_MODULES", [probes, overview])
    at = AppTest.from_file(str(EXPLORER), default_timeout=120).run()
    assert not at.exception, at.exception
    infos = " ".join(i.value for i in [*at.info, *at.warning])
    assert "layer_curve.parquet" in infos and "psylens probe" in infos
