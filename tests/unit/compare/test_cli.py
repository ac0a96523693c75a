"""`psylens compare --sae DIR | --without-sae`: the features section's flags, checked before a model loads, and
wired into FeaturesConfig; a step SAE read from another run's folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.unit.compare.compare_planted import tiny_dirs  # noqa: F401  (fixture)
from psylens.cli import app
from psylens.compare import artifacts as art
from psylens.saes import artifacts as sart


def _sae_folder(folder, d_in: int = 32, layer: int = 1, tokens: bool = False):
    """A tiny step SAE as `psylens sae train` writes it (SAELens weights + step_sae.json)."""
    from psylens.saes.train import SAETrainConfig, build_training_sae, save_sae

    save_sae(build_training_sae(SAETrainConfig(arch="topk", d_sae=16, k=3, normalize="none"), d_in=d_in), folder)
    (folder / sart.STEP_SAE).write_text(json.dumps({
        "schema_version": sart.SCHEMA_VERSION, "model": "tiny", "site": "resid_post", "layer": layer,
        "pooling": "tokens" if tokens else "delimiter", "segmentation": "sentence", "d_sae": 16, "k": 3,
        "tokens": tokens}))
    return folder


@pytest.fixture
def no_models(monkeypatch):
    """Loading a model fails the test: bad flags must be refused before."""
    import psylens.compare.pair as pair_mod

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pair_mod, "load_pair", boom)


@pytest.fixture
def captured(monkeypatch):
    """Good flags: capture the CompareConfig `psylens compare` builds (no model loads, nothing runs)."""
    import psylens.compare.pair as pair_mod
    import psylens.compare.pipeline as pipe

    seen: dict = {}
    monkeypatch.setattr(pair_mod, "load_pair", lambda *a, **k: "pair")

    def fake_run(pair, out, cfg, **k):
        seen["cfg"] = cfg
        return {"sections": {}, "plots": {"note": None}}

    monkeypatch.setattr(pipe, "run_compare", fake_run)
    return seen


def _invoke(tmp_path, *flags, sections="weights,features"):
    return CliRunner().invoke(app, ["compare", "--base", "tiny-base", "--tuned", "tiny-tuned", "--sections", sections,
                                    "--out", str(tmp_path / "out"), "--no-plots", "--no-progress", *flags])


def test_bad_feature_flags_are_refused_before_a_model_loads(no_models, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _sae_folder(tmp_path / "tok", tokens=True)
    cases = [
        (["--sae", str(empty), "--without-sae"], "exclude each other"),
        (["--without-sae"], "only applies to the features section"),
        (["--sae", str(tmp_path / "missing" / "sae")], "no such folder"),
        (["--sae", "step-l1"], "neither a folder nor a step SAE"),
        (["--sae", str(empty)], "step_sae.json is missing"),
        (["--sae", str(tmp_path / "tok")], "trained on tokens"),
        (["--sae", ""], "is empty"),
    ]
    for flags, match in cases:
        sections = "weights" if match.startswith("only applies") else "weights,features"
        res = _invoke(tmp_path, *flags, sections=sections)
        assert res.exit_code != 0, flags
        assert isinstance(res.exception, ValueError), (flags, res.exception)
        assert match in str(res.exception), (flags, str(res.exception))
        assert not (tmp_path / "out").exists()  # nothing written either
    # the message names what was given, what is valid and how to fix it
    msg = str(_invoke(tmp_path, "--sae", "step-l1").exception)
    assert "'step-l1'" in msg and "it has none" in msg and "--without-sae" in msg


def test_good_feature_flags_reach_the_features_config(captured, tmp_path):
    folder = _sae_folder(tmp_path / "elsewhere" / "saes" / "step-l1")
    res = _invoke(tmp_path, "--sae", str(folder))
    assert res.exit_code == 0, (res.output, res.exception)
    assert captured["cfg"].features.sae == str(folder.resolve()) and not captured["cfg"].features.without_sae
    res = _invoke(tmp_path, "--without-sae", "--quick")
    assert res.exit_code == 0, (res.output, res.exception)
    f = captured["cfg"].features
    assert f.without_sae and f.sae is None and f.n_tasks == 12  # --quick sizes kept
    # a name of a step SAE already in OUT/saes/
    _sae_folder(tmp_path / "out" / sart.sae_dir("mine"))
    res = _invoke(tmp_path, "--sae", "mine")
    assert res.exit_code == 0, (res.output, res.exception)
    assert captured["cfg"].features.sae == "mine"
    # neither flag: the features config is the default one
    res = _invoke(tmp_path)
    assert res.exit_code == 0 and captured["cfg"].features.sae is None and not captured["cfg"].features.without_sae


def test_features_config_refuses_both_and_checks_a_path(tmp_path):
    from psylens.compare.features import FeaturesConfig

    with pytest.raises(ValueError, match="exclude each other"):
        FeaturesConfig(sae="mine", without_sae=True)
    with pytest.raises(ValueError, match="does not exist"):
        FeaturesConfig(sae=str(tmp_path / "nowhere"))
    assert FeaturesConfig(sae="mine").sae == "mine"  # a name is checked against the run when the section runs


def test_a_step_sae_from_another_folder_runs_the_section(tiny_dirs, tmp_path):
    """Known answer: the base against itself through an SAE outside the run — the section runs (it skips without
    one: the control), reads that SAE's layer, and every label and feature difference is exactly 0."""
    import pandas as pd

    from psylens.compare.features import FeaturesConfig
    from psylens.compare.pair import load_pair
    from psylens.compare.pipeline import CompareConfig, run_compare

    pair = load_pair(tiny_dirs["base"], tiny_dirs["base"], device="cpu")
    folder = _sae_folder(tmp_path / "base_run" / sart.sae_dir("ext"), d_in=pair.base.d_model, layer=2)
    small = dict(n_tasks=2, samples=1, max_new_tokens=16, d_latent=8, k=2, steps=10, cc_batch_size=16, n_boot=50)
    skipped = run_compare(pair, tmp_path / "ctl", CompareConfig(sections=("features",), plots=False,
                                                                features=FeaturesConfig(**small)))
    assert skipped["sections"]["features"]["status"] == "skipped" and "--sae DIR" in skipped["sections"]["features"]["reason"]
    summary = run_compare(pair, tmp_path / "run", CompareConfig(sections=("features",), plots=False,
                                                                features=FeaturesConfig(sae=str(folder), **small)))
    sec = summary["sections"]["features"]
    assert sec["status"] == "done", sec
    assert sec["headline"]["sae"] == "ext" and sec["headline"]["layer"] == 2
    res = json.loads((tmp_path / "run" / art.FEATURES).read_text())
    assert res["sae"]["path"] == str(folder) and res["where"]["layer"] == 2
    assert all(v["difference"] == 0 for v in res["labels"].values())
    freq = pd.read_parquet(tmp_path / "run" / art.FEATURE_FREQUENCIES)
    assert len(freq) == 16 and (freq["difference"] == 0).all()
    assert not (tmp_path / "run" / sart.DIR).exists()  # the SAE was read in place, not copied into the run


def test_base_run_flag_reaches_the_steering_config_and_bad_ones_are_refused(captured, tmp_path):
    from psylens.runs import create_run

    base = create_run(tmp_path / "base", command="test")
    res = _invoke(tmp_path, "--base-run", str(base.path), sections="weights,steering")
    assert res.exit_code == 0, (res.output, res.exception)
    assert captured["cfg"].steering.base_run == str(base.path)
    res = _invoke(tmp_path, sections="weights,steering")
    assert res.exit_code == 0 and captured["cfg"].steering.base_run is None  # default: look in --out
    for flags, sections, match in ((["--base-run", str(tmp_path / "nowhere")], "weights,steering", "not a run directory"),
                                   (["--base-run", str(base.path)], "weights", "only applies to the steering section")):
        res = _invoke(tmp_path, *flags, sections=sections)
        assert res.exit_code != 0 and isinstance(res.exception, ValueError) and match in str(res.exception)
