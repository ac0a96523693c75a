"""The explorer's Circuits page on a synthetic circuits run (no model): heatmap, top neurons, ablation band,
sublayer bars, modulation bars, the summary table against the targets, missing and corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from psylens.apps.views import check_page, kit  # noqa: E402
from psylens.apps.views import circuits as page  # noqa: E402
from psylens.circuits import artifacts as CA  # noqa: E402
from psylens.probes.directions import Directions  # noqa: E402
from psylens.runs import Run, create_run  # noqa: E402
from pages import messages, render_page

EMOS = ("joy", "anger")
N_LAYERS, N_HEADS, D_MLP, D = 3, 4, 6, 8
RANDOM_STD = {"joy": 0.05, "anger": 0.08}  # planted spread of the random draws' drop (ddof 1)
RANDOM_DROPS = {e: 0.04 + s * np.array([-1.0, 0.0, 1.0, 0.5, -0.5]) / np.std([-1.0, 0.0, 1.0, 0.5, -0.5], ddof=1)
                for e, s in RANDOM_STD.items()}
SIZES = (2, 5, 10)
CIRCUIT_DROP = {2: 0.3, 5: 0.55, 10: 0.8}


def head_scores(e: str, score: str) -> torch.Tensor:
    """A known answer: head (layer 1, head 2) highest; patching NaN except for the top units."""
    g = torch.Generator().manual_seed(hash((e, score)) % 1000)
    t = 0.01 * torch.randn(N_LAYERS, N_HEADS, generator=g)
    t[1, 2] = 1.0 if e == "joy" else 0.7
    if score == "patching":
        keep = torch.zeros_like(t, dtype=torch.bool)
        keep[1, 2] = keep[0, 0] = keep[2, 3] = True
        t = torch.where(keep, t, torch.full_like(t, float("nan")))
    return t


def write_circuits_outputs(run: Run, *, emotions: tuple[str, ...] = EMOS, modulation: bool = True) -> None:
    """What ``psylens circuits`` writes (circuits/artifacts.py), synthetic and small."""
    g = torch.Generator().manual_seed(1)
    Directions.from_raw(torch.randn(6, 1, D, generator=g), ["anger", "disgust", "fear", "joy", "sadness", "surprise"],
                        [1], site="resid_post").save(run.file(CA.DIRECTIONS))
    tensors: dict[str, torch.Tensor] = {}
    for e in emotions:
        for s in CA.SCORE_NAMES:
            tensors[CA.score_key(e, s, "heads")] = head_scores(e, s)
            tensors[CA.score_key(e, s, "neurons")] = torch.randn(N_LAYERS, D_MLP, generator=g)
        tensors[CA.influence_key(e, "attn")] = torch.tensor([0.2, 0.9, 0.1])
        tensors[CA.influence_key(e, "mlp")] = torch.tensor([0.6, 0.3, 1.1])
    run.write_tensors(CA.SCORES, tensors, {"readout_layer": "1", "source": "probes"})
    abl, enh, sub, top = [], [], [], []
    for e in emotions:
        for split in ("heldout", "eval"):
            for method in ("mean", "zero"):
                for n in SIZES:
                    bump = 0.05 if method == "zero" else 0.0
                    abl.append({"emotion": e, "split": split, "method": method, "kind": "circuit", "draw": -1,
                                "n_units": n, "drop": CIRCUIT_DROP[n] + bump, "signal_before": 1.0,
                                "signal_after": 1 - CIRCUIT_DROP[n] - bump})
                    for k, d in enumerate(RANDOM_DROPS[e]):
                        abl.append({"emotion": e, "split": split, "method": method, "kind": "random", "draw": k,
                                    "n_units": n, "drop": float(d) + bump, "signal_before": 1.0,
                                    "signal_after": 1 - float(d) - bump})
        enh.append({"emotion": e, "split": "heldout", "kind": "circuit", "draw": -1, "factor": 2.0, "gain": 0.4,
                    "signal_before": 1.0, "signal_after": 1.4})
        for k in range(5):
            enh.append({"emotion": e, "split": "heldout", "kind": "random", "draw": k, "factor": 2.0, "gain": 0.01 * k,
                        "signal_before": 1.0, "signal_after": 1 + 0.01 * k})
        for layer in range(N_LAYERS):
            for s, infl in (("attn", [0.2, 0.9, 0.1][layer]), ("mlp", [0.6, 0.3, 1.1][layer])):
                for alpha in (0.5, 1.0):
                    sub.append({"emotion": e, "layer": layer, "sublayer": s, "alpha": alpha, "sigma": 2.0,
                                "change": infl * alpha * 2.0, "influence": infl})
        for n_i, (layer, neuron, score) in enumerate(((1, 3, 0.9), (0, 5, 0.4))):
            for r in range(3):
                top.append({"emotion": e, "layer": layer, "neuron": neuron, "score": score, "rank": r,
                            "stimulus_id": f"s{n_i}{r}", "label": e if r < 2 else "neutral",
                            "text": f"A {e} text {n_i}-{r}.", "activation": 3.0 - r})
    run.write_table(CA.ABLATION, pd.DataFrame(abl, columns=list(CA.ABLATION_COLUMNS)))
    run.write_table(CA.ENHANCEMENT, pd.DataFrame(enh, columns=list(CA.ENHANCEMENT_COLUMNS)))
    run.write_table(CA.SUBLAYERS, pd.DataFrame(sub, columns=list(CA.SUBLAYER_COLUMNS)))
    run.write_table(CA.TOP_NEURONS, pd.DataFrame(top, columns=list(CA.TOP_NEURON_COLUMNS)))
    if modulation:
        mod = []
        for e in emotions:
            for m, shift, win in (("circuit", 1.2, 0.8), ("steering", 1.0, 0.7), ("prompting", 0.6, 0.6), ("none", 0.0, 0.5)):
                mod.append({"emotion": e, "method": m, "strength": 2.0, "feels_shift": shift, "row_win": shift > 0.5,
                            "read_back_win": win, "read_back_win_ci_low": win - 0.1, "read_back_win_ci_high": win + 0.1,
                            "fluency": -2.5, "lexicon_hit_rate": 0.3, "n_prompts": 8})
        run.write_table(CA.MODULATION, pd.DataFrame(mod, columns=list(CA.MODULATION_COLUMNS)))
    summ = {}
    for e in emotions:
        good = e == "joy"  # joy meets every target, anger misses the ablation target: the control
        summ[e] = {"n_heads": 3, "n_neurons": 7,
                   "ablation": {"drop": 0.8 if good else 0.3, "random_drop": float(RANDOM_DROPS[e].mean()),
                                "random_drop_std": RANDOM_STD[e], "drop_ci95": [0.7, 0.9] if good else [0.2, 0.4],
                                "drop_zero": 0.85, "random_drop_zero": 0.09},
                   "enhancement": {"gain": 0.4, "random_gain": 0.02},
                   "atp_vs_patching_spearman": 0.9 if good else 0.5, "faithfulness": 0.7, "completeness": 0.8,
                   "eval": {"drop": 0.6, "random_drop": 0.05, "random_drop_std": 0.02}}
        circ = {"emotion": e, "source": "probes", "readout_layer": 1, "heads": [[1, 2], [0, 0], [2, 3]],
                "neurons": [[1, 3], [0, 5]], "head_scores": [1.0, 0.1, 0.05], "neuron_scores": [0.9, 0.4]}
        run.write_json(CA.circuit_file(e), circ)
    run.write_json(CA.SUMMARY, {"schema_version": CA.SCHEMA_VERSION, "emotions": summ, "cost_ratio": 3.2,
                                "readout_layer": 1, "source": "probes", "model": "tiny-random-llama"})


def make_run(root: Path, **kw: object) -> Run:
    run = create_run(root, command="psylens circuits", model={"spec": "tiny-random-llama"})
    write_circuits_outputs(run, **kw)  # type: ignore[arg-type]
    return run




def render(monkeypatch: pytest.MonkeyPatch, run: Run) -> AppTest:
    return render_page(monkeypatch, "circuits", run)



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("circ") / "run").path


def _tables(run_dir: Path, rel: str) -> pd.DataFrame:
    return pd.read_parquet(run_dir / rel)


# -- contract and pure helpers ----------------------------------------------------------------------
def test_page_contract_and_registry(tmp_path: Path, run_dir: Path) -> None:
    from psylens.runs import open_run

    check_page(page)
    assert page.TITLE == "Circuits"
    assert "circuits" in kit.PAGE_MODULES and page in kit.pages()
    assert page.available(open_run(run_dir))
    assert not page.available(create_run(tmp_path / "bare", command="x"))


def test_heatmap_holds_every_heads_score(run_dir: Path) -> None:
    from psylens.io import read_tensors

    scores = read_tensors(run_dir / CA.SCORES)
    for e in EMOS:
        for s in CA.SCORE_NAMES:
            hm = page.score_heatmap(scores, e, s, readout_layer=1).data[0]
            z = np.array([[np.nan if v is None else v for v in row] for row in hm.z], dtype=float)
            assert z.shape == (N_LAYERS, N_HEADS) and list(hm.y) == list(range(N_LAYERS))
            np.testing.assert_allclose(z, head_scores(e, s).numpy(), rtol=1e-6, equal_nan=True)
            assert np.unravel_index(np.nanargmax(z), z.shape) == (1, 2)  # the planted head
    patched = page.heads_matrix(scores, "joy", "patching")
    assert np.isnan(patched).sum() == N_LAYERS * N_HEADS - 3  # NaN (blank), never zero, where not patched
    with pytest.raises(KeyError, match="fear"):
        page.heads_matrix(scores, "fear", "atp")


def test_top_neurons_in_score_then_rank_order(run_dir: Path) -> None:
    frame = page.top_neurons_frame(_tables(run_dir, CA.TOP_NEURONS), "joy")
    assert list(frame["unit"]) == ["L1.n3"] * 3 + ["L0.n5"] * 3
    assert list(frame["rank"]) == [0, 1, 2] * 2 and list(frame["activation"]) == [3.0, 2.0, 1.0] * 2
    assert frame["text"].str.contains("joy").all()
    assert page.top_neurons_frame(_tables(run_dir, CA.TOP_NEURONS), "fear").empty


def test_ablation_band_width_is_the_planted_std(run_dir: Path) -> None:
    table = _tables(run_dir, CA.ABLATION)
    for e in EMOS:
        bands = page.ablation_bands(table, e, "heldout")
        assert set(bands["method"]) == {"mean", "zero"} and sorted(set(bands["n_units"])) == list(SIZES)
        np.testing.assert_allclose(bands["random_std"], RANDOM_STD[e], rtol=1e-9)
        fig = page.ablation_figure(table, e, "heldout")
        band = [t for t in fig.data if str(t.name).startswith("random sets, mean ± std (mean")][0]
        ys = np.array(band.y, dtype=float)
        n = len(SIZES)
        width = ys[:n] - ys[n:][::-1]  # upper edge minus lower edge at each size
        np.testing.assert_allclose(width, 2 * RANDOM_STD[e], rtol=1e-9)
        circ = {t.name: list(t.y) for t in fig.data if str(t.name).startswith("circuit")}
        assert circ["circuit (mean ablation)"] == pytest.approx([CIRCUIT_DROP[n] for n in SIZES])
        assert circ["circuit (zero ablation)"] == pytest.approx([CIRCUIT_DROP[n] + 0.05 for n in SIZES])
        zero = [t for t in fig.data if t.name == "circuit (zero ablation)"][0]
        assert zero.line.dash == "dash"
    # control: the band follows the draws — widen one draw and the band widens
    wider = table.copy()
    sel = (wider.emotion == "joy") & (wider.kind == "random") & (wider.draw == 0)
    wider.loc[sel, "drop"] = wider.loc[sel, "drop"] - 1.0
    assert (page.ablation_bands(wider, "joy")["random_std"] > RANDOM_STD["joy"] * 2).all()


def test_enhancement_circuit_vs_random(run_dir: Path) -> None:
    fig = page.enhancement_figure(_tables(run_dir, CA.ENHANCEMENT), "joy")
    circ, rnd = fig.data
    assert list(circ.y) == pytest.approx([0.4]) and list(rnd.y) == pytest.approx([0.02])
    assert list(rnd.error_y.array) == pytest.approx([float(np.std([0, 0.01, 0.02, 0.03, 0.04], ddof=1))])


def test_sublayer_bars_per_layer_from_table_and_from_scores(run_dir: Path) -> None:
    from psylens.io import read_tensors

    table = _tables(run_dir, CA.SUBLAYERS)
    frame = page.sublayer_frame(table, None, "joy")
    assert list(frame.index) == [0, 1, 2] and list(frame.columns) == ["attn", "mlp"]
    fig = page.sublayer_figure(frame, "joy")
    by = {t.name: list(t.y) for t in fig.data}
    assert by["attention"] == pytest.approx([0.2, 0.9, 0.1]) and by["MLP"] == pytest.approx([0.6, 0.3, 1.1])
    from_scores = page.sublayer_frame(None, read_tensors(run_dir / CA.SCORES), "joy")
    np.testing.assert_allclose(from_scores.to_numpy(), frame.to_numpy(), rtol=1e-6)
    assert page.sublayer_frame(table, None, "fear").empty


def test_modulation_grouped_bars_with_read_back_intervals(run_dir: Path) -> None:
    fig = page.modulation_figure(_tables(run_dir, CA.MODULATION))
    feels = {t.name: list(t.y) for t in fig.data if t.xaxis == "x"}
    assert list(feels) == ["circuit", "steering", "prompting", "none"]
    assert feels["circuit"] == pytest.approx([1.2, 1.2]) and feels["none"] == pytest.approx([0.0, 0.0])
    rb = [t for t in fig.data if t.name == "circuit" and t.error_y is not None and t.error_y.array is not None]
    assert len(rb) == 1 and list(rb[0].y) == pytest.approx([0.8, 0.8])
    assert list(rb[0].error_y.array) == pytest.approx([0.1, 0.1]) and list(rb[0].error_y.arrayminus) == pytest.approx([0.1, 0.1])
    assert len({t.xaxis for t in fig.data}) == len(page.MODULATION_METRICS)  # one panel a measure
    # several strengths a method: only the chosen one (equal fluency) is drawn
    table = _tables(run_dir, CA.MODULATION)
    weak = table[table.method == "circuit"].assign(strength=8.0, feels_shift=9.0, read_back_win=0.99)
    both = pd.concat([table.assign(chosen=True), weak.assign(chosen=False)], ignore_index=True)
    circ = [t for t in page.modulation_figure(both).data if t.name == "circuit" and t.xaxis == "x"][0]
    assert list(circ.y) == pytest.approx([1.2, 1.2])
    flipped = [t for t in page.modulation_figure(both.assign(chosen=~both.chosen.astype(bool))).data
               if t.name == "circuit" and t.xaxis == "x"][0]
    assert list(flipped.y) == pytest.approx([9.0, 9.0])  # control: the pick follows `chosen`
    # the random-units control rows are drawn as one bar an emotion: their mean, whatever `chosen` says
    rnd = pd.concat([table[table.method == "circuit"].assign(method="random", feels_shift=f, chosen=False) for f in (0.1, 0.3)],
                    ignore_index=True)
    with_rnd = page.modulation_figure(pd.concat([table.assign(chosen=True), rnd], ignore_index=True))
    r = [t for t in with_rnd.data if t.name == "random" and t.xaxis == "x"]
    assert len(r) == 1 and list(r[0].y) == pytest.approx([0.2, 0.2])


def test_summary_table_and_targets(run_dir: Path) -> None:
    summary = json.loads((run_dir / CA.SUMMARY).read_text())
    t = page.summary_table(summary).set_index("emotion")
    assert t.loc["joy", "drop"] == pytest.approx(0.8) and t.loc["anger", "random drop std"] == pytest.approx(0.08)
    assert t.loc["joy", "drop 95%"] == "0.80 [0.70, 0.90]"
    met = page.targets_met(page.summary_table(summary)).set_index("emotion")
    assert met.loc["joy", "ablation"] is True and met.loc["joy", "ρ atp~patching"] is True
    assert met.loc["anger", "ablation"] is False and met.loc["anger", "ρ atp~patching"] is False  # the control
    assert page.summary_table({"emotions": {"x": 3}}).empty and page.summary_table([]).empty
    gaps = page.targets_met(page.summary_table({"emotions": {"joy": {"n_heads": 1}}}))
    assert gaps.loc[0, "ablation"] is None  # not measured is neither pass nor fail
    assert t.loc["joy", "selection"] == "—"  # written before selections were recorded


def test_selection_text_says_how_the_circuit_was_cut() -> None:
    cut = {"mode": "drop", "n_candidates": 2060, "target": 0.5, "n": 96, "drop": 0.512, "reached": True}
    assert page.selection_text(cut) == "drop 0.5: 96 of 2060 candidates (discovery drop 0.51)"
    assert page.selection_text({**cut, "reached": False, "n": 2060}) == "drop 0.5: not reached, all 2060 candidates kept"
    assert page.selection_text({"mode": "drop", "n_candidates": 5, "reason": "signal -1 is not positive"}) == (
        "drop: left uncut (signal -1 is not positive)")
    sure = {**cut, "confidence": 0.95, "drop_lower": 0.503, "drop": 0.61}
    assert page.selection_text(sure) == "drop 0.5 at 95% confidence: 96 of 2060 candidates (discovery drop 0.61, lower end 0.50)"
    assert page.selection_text({**sure, "confidence": None}) == "drop 0.5: 96 of 2060 candidates (discovery drop 0.61)"
    assert page.selection_text({"mode": "threshold", "n_candidates": 9}) == "threshold"
    assert page.selection_text(None) == "—" and page.selection_text({"mode": 3}) == "—"


# -- rendering ------------------------------------------------------------------------------------
def test_renders_a_full_synthetic_run(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from psylens.runs import open_run

    at = render(monkeypatch, open_run(run_dir))
    assert not at.exception, at.exception
    assert not at.warning and not at.error, messages(at)
    assert len(at.get("plotly_chart")) == 5  # heatmap, ablation, enhancement, sublayers, modulation
    assert len(at.dataframe) == 2  # summary, top neurons
    assert any("met for 1 of 2 emotions" in m for m in messages(at))
    at.selectbox(key="circuits_emotion").set_value("anger").run()
    at.radio(key="circuits_score").set_value("patching").run()
    at.radio(key="circuits_split").set_value("eval").run()
    assert not at.exception and not at.warning, messages(at)
    assert "3.20× one forward pass" in " ".join(str(c.value) for c in at.caption)


def test_empty_run_says_what_is_missing_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = render(monkeypatch, create_run(tmp_path / "empty", command="x"))
    assert not at.exception, at.exception
    msgs = messages(at)
    assert len(msgs) == 1 and CA.SUMMARY in msgs[0] and "psylens circuits" in msgs[0] and "\n" not in msgs[0]


@pytest.mark.parametrize("rel", [CA.ABLATION, CA.MODULATION])  # summary, scores, top neurons: test_kit.py CORRUPTIONS
def test_a_missing_or_corrupt_file_is_one_line_and_the_rest_still_shows(rel: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")
    data = run.file(rel).read_bytes()
    run.file(rel).write_bytes(data[: len(data) // 2])
    at = render(monkeypatch, run)
    assert not at.exception, at.exception
    bad = [m for m in at.warning.values if rel in m]
    assert len(bad) == 1 and "cannot be read" in bad[0] and "\n" not in bad[0], messages(at)
    assert len(at.get("plotly_chart")) >= 3 and len(at.dataframe) >= 1
    run.file(rel).unlink()
    at = render(monkeypatch, run)
    assert not at.exception and not at.warning, messages(at)
    assert any(rel in m for m in at.info.values)


def test_wrong_typed_summary_fields_are_named_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")
    s = json.loads(run.file(CA.SUMMARY).read_text())
    s["emotions"]["joy"]["ablation"] = "big"
    s["emotions"]["anger"] = 7
    run.file(CA.SUMMARY).write_text(json.dumps(s))
    at = render(monkeypatch, run)
    assert not at.exception, at.exception
    assert any("wrong type" in m and "emotions.joy" in m for m in at.warning.values), messages(at)
