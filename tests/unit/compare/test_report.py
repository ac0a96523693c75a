from __future__ import annotations

import json

import pytest

from tests.unit.compare.compare_planted import PLANT_LAYER, tiny_dirs  # noqa: F401  (fixture)
from psylens.compare import artifacts as art
from psylens.compare.activations import ActivationsConfig
from psylens.compare.pair import load_pair
from psylens.compare.pipeline import CompareConfig, parse_sections, run_compare


def test_sections_parse_and_reject():
    assert parse_sections("features,weights") == ("weights", "features")
    with pytest.raises(ValueError, match="valid: weights,activations"):
        parse_sections("weights,crosscoder")


def test_compare_writes_summary_and_report(tiny_dirs, tmp_path):
    pair = load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu")
    cfg = CompareConfig(sections=("weights", "activations", "features"), plots=False,
                        activations=ActivationsConfig(n_emotion=2, n_tasks=2, trace_tokens=2, lens_tokens=1))
    summary = run_compare(pair, tmp_path / "run", cfg)
    on_disk = json.loads((tmp_path / "run" / art.SUMMARY).read_text())
    assert on_disk["sections"].keys() == summary["sections"].keys() == {"weights", "activations", "features"}
    w = on_disk["sections"]["weights"]
    assert w["status"] == "done" and w["headline"]["modules_changed"] == 1
    assert w["headline"]["top_module"] == f"model.layers.{PLANT_LAYER}.mlp.down_proj"
    assert on_disk["sections"]["activations"]["headline"]["tasks"]["first_changed_layer"] == PLANT_LAYER
    for name in ("features",):
        sec = on_disk["sections"][name]
        assert sec["status"] == "skipped" and "SAE" in sec["reason"]
    assert on_disk["models"]["base"]["spec"] == tiny_dirs["base"]
    assert on_disk["models"]["tuned"]["spec"] == tiny_dirs["rank1"]
    report = (tmp_path / "run" / art.REPORT).read_text()
    assert "## Weights" in report and f"model.layers.{PLANT_LAYER}.mlp.down_proj" in report
    assert "## Features" in report and "*skipped*" in report
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["command_name"].startswith("psylens compare")
    steps = {p.stem for p in (tmp_path / "run" / "steps").glob("*.json")}
    assert {"compare_weights", "compare_activations", "compare_report"} <= steps
    # the same run directory refuses another pair
    other = load_pair(tiny_dirs["base"], tiny_dirs["base"], device="cpu")
    with pytest.raises(ValueError, match="another tuned model"):
        run_compare(other, tmp_path / "run", cfg)


def test_cli_compare_with_adapter(tiny_dirs, tmp_path):
    """`psylens compare --base --tuned-adapter --sections --out`, flags exactly as documented."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from psylens.cli import app

    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dirs["base"]),
                          LoraConfig(r=2, target_modules=["v_proj"], layers_to_transform=[2], init_lora_weights=False))
    peft.save_pretrained(str(tmp_path / "adapter"))
    res = CliRunner().invoke(app, ["compare", "--base", tiny_dirs["base"], "--tuned-adapter", str(tmp_path / "adapter"),
                                   "--sections", "weights,features", "--out", str(tmp_path / "run"), "--no-plots",
                                   "--no-progress", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "run" / art.SUMMARY).read_text())
    assert list(summary["sections"]) == ["weights", "features"]
    assert summary["sections"]["weights"]["headline"]["top_module"] == "model.layers.2.self_attn.v_proj"
    assert summary["sections"]["weights"]["headline"]["modules_changed"] == 1
    assert summary["sections"]["features"]["status"] == "skipped"
    assert "features: skipped" in res.output
    # a bad section name fails before any model loads
    bad = CliRunner().invoke(app, ["compare", "--base", tiny_dirs["base"], "--tuned", tiny_dirs["base"],
                                   "--sections", "weights,crosscoder", "--out", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_png_plots_beside_the_report(tiny_dirs, tmp_path):
    from psylens.compare.report import plots_available

    if plots_available() is not None:
        pytest.skip(plots_available())
    pair = load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu")
    summary = run_compare(pair, tmp_path / "run", CompareConfig(sections=("weights",), plots=True))
    files = summary["plots"]["files"]
    assert files.get("weights") == "weights_map.png", summary["plots"]
    png = tmp_path / "run" / art.plot_file("weights_map")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![weight change map](weights_map.png)" in (tmp_path / "run" / art.REPORT).read_text()


def test_no_browser_means_no_plots_and_says_why(tiny_dirs, tmp_path, monkeypatch):
    """Kaleido without a Chrome/Chromium: the report is written without PNGs and names the missing browser
    (it used to try each export and fail). Control: a browser found makes plots available again."""
    from psylens.compare import report

    monkeypatch.setattr(report, "_find_browser", lambda: None)
    why = report.plots_available()
    assert why is not None and "Chrome/Chromium" in why and "BROWSER_PATH" in why
    pair = load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu")
    summary = run_compare(pair, tmp_path / "run", CompareConfig(sections=("weights",), plots=True))
    assert summary["plots"] == {"files": {}, "note": why}
    assert (tmp_path / "run" / art.REPORT).exists() and not list((tmp_path / "run").rglob("*.png"))
    monkeypatch.setattr(report, "_find_browser", lambda: "/usr/bin/chromium")
    assert report.plots_available() is None
