"""The explorer's Validation page on a synthetic run (no model): gates table, figures, missing and corrupt tables."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from psylens.apps.views import check_page, kit  # noqa: E402
from psylens.apps.views import validation as page  # noqa: E402
from psylens.probes.directions import Directions  # noqa: E402
from psylens.runs import Run, create_run, open_run  # noqa: E402
from psylens.validation import artifacts as VA  # noqa: E402
from pages import messages, render_page

BASIC = ["anger", "disgust", "fear", "joy", "sadness", "surprise"]
CONCEPTS = {"anger": ("negative", "high"), "disgust": ("negative", "high"), "fear": ("negative", "high"),
            "joy": ("positive", "high"), "sadness": ("negative", "low"), "surprise": ("positive", "high"),
            "calm": ("positive", "low"), "bored": ("negative", "low")}


def write_validation_outputs(run: Run, *, d: int = 8, layers: tuple[int, ...] = (0, 1, 2)) -> None:
    """What ``psylens validate`` writes, synthetic and small: summary, every table, the directions."""
    g = torch.Generator().manual_seed(0)
    names = list(CONCEPTS)
    Directions.from_raw(torch.randn(len(names), len(layers), d, generator=g), names, list(layers)).save(run.file(VA.DIRECTIONS))
    shift = {(v, w): (2.5 if v == w else -0.3) for v in BASIC for w in BASIC}
    run.write_table(VA.FEELS_MATRIX, pd.DataFrame([{"vector": v, "words": w, "shift": s, "ci_lo": s - 0.1, "ci_hi": s + 0.1}
                                                   for (v, w), s in shift.items()]))
    run.write_table(VA.FEELS_RANDOM, pd.DataFrame([{"draw": k, "words": w, "shift": 0.1} for k in range(5) for w in BASIC]))
    temps = [("painkiller_mg", "fear", 0.9), ("exam_score", "joy", 0.8), ("party_friends", "joy", 0.1)]
    run.write_table(VA.DOSE_RESPONSE, pd.DataFrame([{"template": t, "emotion": e, "level": float(k), "projection": rho * k}
                                                    for t, e, rho in temps for k in range(8)]))
    run.write_table(VA.DOSE_TEMPLATES, pd.DataFrame([{"template": t, "emotion": e, "sign": 1, "rho": rho, "rho_ci_lo": rho - 0.2,
                                                      "rho_ci_hi": min(1.0, rho + 0.2), "control_rho": 0.05,
                                                      "passed": rho >= 0.7, "n_levels": 8} for t, e, rho in temps]))
    run.write_table(VA.GEOMETRY_PCA, pd.DataFrame([{"concept": c, "pc1": (1.0 if v == "positive" else -1.0) + 0.1 * i,
                                                    "pc2": (1.0 if a == "high" else -1.0), "pc3": 0.0, "valence": v, "arousal": a}
                                                   for i, (c, (v, a)) in enumerate(CONCEPTS.items())]))
    rows = []
    for e in BASIC:
        for kind in ("direction", "random"):
            for r in range(1, 31):
                word = kind == "direction" and r <= 3
                rows.append({"emotion": e, "kind": kind, "rank": r, "token_id": r, "token": f" {e}{r}" if word else f" tok{r}",
                             "is_word": word})
    run.write_table(VA.LOGIT_LENS, pd.DataFrame(rows))
    run.write_table(VA.PREFERENCES, pd.DataFrame([{"activity": f"activity {i}", "kind": "pleasant" if i % 2 else "unpleasant",
                                                   "elo": 1000.0 + i, "proj_joy": 0.1 * i} for i in range(6)]))
    gates = {
        "feels_matrix": {"value": 2.8, "threshold": 2.0, "control": 0.1, "passed": True, "gated": True, "unit": "nats",
                         "rows_won": 6, "cols_won": 6, "n_emotions": 6, "gap_ci95": [2.5, 3.1],
                         "own_shift": {e: 2.5 for e in BASIC}, "random_mean_shift": {e: 0.1 for e in BASIC},
                         "tables": {"matrix": VA.FEELS_MATRIX, "random": VA.FEELS_RANDOM}},
        "implicit_scenarios": {"value": 0.62, "threshold": 0.8, "control": 0.18, "passed": False, "gated": True,
                               "sets": {"emotions": {"accuracy": 0.62, "ci95": [0.55, 0.69], "control": 0.18},
                                        "stories": {"accuracy": 0.7, "ci95": [0.6, 0.8], "control": 0.2}}},
        "dose_response": {"value": 2.0, "threshold": 5.0, "control": 0.0, "passed": False, "gated": True, "n_templates": 3,
                          "rate": 0.667, "rate_ci95": [0.2, 0.94], "rho_threshold": 0.7,
                          "tables": {"levels": VA.DOSE_RESPONSE, "templates": VA.DOSE_TEMPLATES}},
        "geometry": {"value": 1.0, "threshold": 0.9, "control": 0.5, "passed": True, "gated": True, "valence_auroc": 1.0,
                     "valence_auroc_ci95": [1.0, 1.0], "arousal_auroc": 1.0, "arousal_pc": 2, "control_arousal_auroc": 0.5,
                     "basic_mean_cosine": 0.1, "cosine_threshold": 0.5, "tables": {"pca": VA.GEOMETRY_PCA}},
        "logit_lens": {"value": 6.0, "threshold": 4.0, "control": 0.0, "passed": True, "gated": True, "rate": 1.0,
                       "rate_ci95": [0.61, 1.0], "tables": {"tokens": VA.LOGIT_LENS}},
        "read_back": {"value": 0.7, "threshold": 0.8, "control": 0.5, "passed": False, "gated": True, "ci95": [0.6, 0.8]},
        "preferences": {"value": 0.05, "threshold": 0.3, "control": 0.02, "passed": False, "gated": False,
                        "value_kind": "Spearman correlation of Elo with the joy projection", "n_activities": 6,
                        "strength": {"pleasant": 0.505, "unpleasant": 0.495}, "tables": {"activities": VA.PREFERENCES}},
    }
    run.write_json(VA.SUMMARY, {"schema_version": VA.SCHEMA_VERSION, "source": "stories", "layer": 1, "gates": gates,
                                "passed": 3, "total": 6, "quick": True, "model": "tiny-random-llama",
                                "directions": {"file": VA.DIRECTIONS}, "config": {"scale": 0.5}})


def make_run(root: Path) -> Run:
    run = create_run(root, command="psylens validate", model={"spec": "tiny-random-llama"})
    write_validation_outputs(run)
    return run




def render(monkeypatch: pytest.MonkeyPatch, run: Run) -> AppTest:
    return render_page(monkeypatch, "validation", run)



# -- contract and pure helpers ----------------------------------------------------------------------
def test_page_contract_and_registry(tmp_path: Path) -> None:
    check_page(page)
    assert page.TITLE == "Validation"
    assert "validation" in kit.PAGE_MODULES and page in kit.pages()
    assert page.available(make_run(tmp_path / "run"))
    assert not page.available(create_run(tmp_path / "bare", command="x"))


def test_gates_table_values_verdicts_and_intervals(tmp_path: Path) -> None:
    summary = open_run(make_run(tmp_path / "run").path).read_json(VA.SUMMARY)
    t = page.gates_table(summary).set_index("gate")
    assert list(t.index) == list(page.GATE_ORDER)
    assert t.loc["feels_matrix", "value"] == pytest.approx(2.8) and t.loc["feels_matrix", "control"] == pytest.approx(0.1)
    assert t.loc["feels_matrix", "threshold"] == pytest.approx(2.0)
    assert t.loc["feels_matrix", "passed"] == "✓ passed"
    assert t.loc["read_back", "passed"] == "✗ failed"  # the control: a failing gate never shows a tick
    assert t.loc["preferences", "passed"] == "reported, not gated — for larger models"
    assert t.loc["feels_matrix", "95% interval"] == "gap 2.80 [2.50, 3.10]"
    assert t.loc["read_back", "95% interval"] == "0.70 [0.60, 0.80]"
    assert t.loc["implicit_scenarios", "95% interval"] == "emotions 0.62 [0.55, 0.69]"  # the lowest set's, as gated
    assert t.loc["dose_response", "95% interval"].startswith("rate 0.67 [0.20, 0.94]")
    assert t.loc["geometry", "95% interval"] == "AUROC 1.00 [1.00, 1.00]"
    assert page.verdict({"skipped": "no steering vectors"}) == "skipped (no steering vectors)"
    # read_back that fails on fluency alone says so; failing the win rates too is a plain failure
    flu = {"criterion": "relative", "n_fluent": 2, "per_emotion": {e: {} for e in "abcdef"}}
    said = page.verdict({"passed": False, "passed_ignoring_fluency": True, "fluency": flu})
    assert said.startswith("✗ failed") and "2 of 6 emotions pass relative" in said
    assert page.verdict({"passed": False, "passed_ignoring_fluency": False, "fluency": flu}) == "✗ failed"
    assert page.gates_table({"gates": {"x": 3}}).empty and page.gates_table([]).empty


def test_feels_heatmap_puts_each_shift_in_its_cell(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    fig = page.feels_figure(pd.read_parquet(run.file(VA.FEELS_MATRIX)))
    hm = fig.data[0]
    assert list(hm.y) == BASIC and list(hm.x) == BASIC
    for i in range(6):
        for j in range(6):
            assert hm.z[i][j] == pytest.approx(2.5 if i == j else -0.3)
    with pytest.raises(ValueError, match="columns"):
        page.feels_figure(pd.DataFrame({"a": [1]}))


def test_dose_curves_one_panel_per_template_titled_with_rho(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    fig = page.dose_figure(pd.read_parquet(run.file(VA.DOSE_RESPONSE)), pd.read_parquet(run.file(VA.DOSE_TEMPLATES)))
    assert len(fig.data) == 3
    titles = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("painkiller_mg ρ 0.9") and "✓" in t for t in titles)
    assert any(t.startswith("party_friends ρ 0.1") and "✗" in t for t in titles)
    assert list(fig.data[0].x) == [float(k) for k in range(8)]
    assert list(fig.data[1].y) == pytest.approx([0.8 * k for k in range(8)])
    assert fig.layout.xaxis.type != "log"  # 0..7: linear
    wide = pd.DataFrame([{"template": "lottery", "emotion": "joy", "level": 10.0 ** k, "projection": k} for k in range(6)])
    assert page.dose_figure(wide).layout.xaxis.type == "log"


def test_pca_coloured_by_valence_and_arousal(tmp_path: Path) -> None:
    pca = pd.read_parquet(make_run(tmp_path / "run").file(VA.GEOMETRY_PCA))
    by_v = {t.name: set(t.text) for t in page.pca_figure(pca, "valence").data}
    assert by_v == {"valence positive": {"joy", "surprise", "calm"},
                    "valence negative": {"anger", "disgust", "fear", "sadness", "bored"}}
    by_a = {t.name: set(t.text) for t in page.pca_figure(pca, "arousal").data}
    assert by_a["arousal low"] == {"sadness", "calm", "bored"}
    with pytest.raises(ValueError, match="valence"):
        page.pca_figure(pca, "dominance")


def test_logit_lens_lists_mark_emotion_words(tmp_path: Path) -> None:
    tokens = pd.read_parquet(make_run(tmp_path / "run").file(VA.LOGIT_LENS))
    frame = page.logit_lens_frame(tokens, "direction", k=10)
    assert list(frame.columns) == BASIC and len(frame) == 10
    assert frame.loc[1, "joy"] == "✓ ' joy1'" and frame.loc[4, "joy"] == "' tok4'"
    control = page.logit_lens_frame(tokens, "random", k=10)
    assert not control.apply(lambda c: c.str.startswith("✓")).any().any()


# -- rendering ------------------------------------------------------------------------------------
def test_renders_a_run_with_validation_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = render(monkeypatch, make_run(tmp_path / "run"))
    assert not at.exception, at.exception
    assert not at.warning and not at.error, messages(at)
    assert len(at.get("plotly_chart")) == 4  # feels, dose, PCA × 2
    assert any("not gated — for larger models" in m for m in messages(at))
    assert any("3 of 6 gates passed" in m for m in messages(at))


def test_empty_run_says_what_is_missing_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = render(monkeypatch, create_run(tmp_path / "empty", command="x"))
    assert not at.exception, at.exception
    msgs = messages(at)
    assert len(msgs) == 1 and VA.SUMMARY in msgs[0] and "psylens validate" in msgs[0] and "\n" not in msgs[0]


@pytest.mark.parametrize("rel", [VA.FEELS_MATRIX, VA.DOSE_RESPONSE, VA.GEOMETRY_PCA, VA.LOGIT_LENS])
def test_a_missing_or_corrupt_table_is_one_line_and_the_rest_still_shows(rel: str, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")
    data = run.file(rel).read_bytes()
    run.file(rel).write_bytes(data[: len(data) // 2])
    at = render(monkeypatch, run)
    assert not at.exception, at.exception
    bad = [m for m in at.warning.values if rel in m]
    assert len(bad) == 1 and "cannot be read" in bad[0] and "\n" not in bad[0], messages(at)
    assert len(at.get("plotly_chart")) >= 2 and len(at.dataframe) >= 1
    run.file(rel).unlink()
    at = render(monkeypatch, run)
    assert not at.exception and not at.warning, messages(at)
    assert any(rel in m for m in at.info.values)


def test_wrong_typed_gates_are_named_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")
    s = json.loads(run.file(VA.SUMMARY).read_text())
    s["gates"]["feels_matrix"] = {"value": "high", "passed": "yes", "own_shift": [1]}
    s["gates"]["geometry"] = 7
    run.file(VA.SUMMARY).write_text(json.dumps(s))
    at = render(monkeypatch, run)
    assert not at.exception, at.exception
    assert any("wrong type" in m and "feels_matrix" in m for m in at.warning.values), messages(at)
