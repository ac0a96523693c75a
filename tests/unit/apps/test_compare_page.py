"""The explorer's Base vs tuned page on a run made by ``run_compare`` on a tiny planted pair (a rank-1 change in
one module of one layer), beside a control run of a model against itself; synthetic features-section files;
an empty run; missing, corrupt and wrong-typed files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from psylens.apps.views import check_page, kit  # noqa: E402
from psylens.apps.views import compare as page  # noqa: E402
from psylens.compare import artifacts as A  # noqa: E402
from psylens.runs import Run, create_run, open_run  # noqa: E402
from pages import messages, render_page
from tests.unit.compare.compare_planted import PLANT_LAYER, PLANT_MODULE, tiny_dirs  # noqa: E402,F401  (fixture)

N_LAYERS = 3


def _config(sections: tuple[str, ...]):
    from psylens.compare.activations import ActivationsConfig
    from psylens.compare.emotions import EmotionsConfig
    from psylens.compare.generations import GenerationsConfig
    from psylens.compare.pipeline import CompareConfig
    from psylens.compare.steering_transfer import SteeringTransferConfig

    return CompareConfig(sections=sections, plots=False,
                         activations=ActivationsConfig(n_emotion=2, n_tasks=2, trace_tokens=3, lens_tokens=1),
                         emotions=EmotionsConfig(n_scenarios=4, n_tasks=2, n_stories=2),
                         steering=SteeringTransferConfig(n_contexts=2, n_prompts=2, max_new_tokens=4),
                         generations=GenerationsConfig(n_prompts=2, max_new_tokens=4))


@pytest.fixture(scope="module")
def runs(tiny_dirs, tmp_path_factory) -> dict[str, Path]:  # noqa: F811
    """``planted``: every section on base vs rank-1 (features skipped: no SAE); ``control``: base vs itself."""
    from psylens.compare.pair import load_pair
    from psylens.compare.pipeline import run_compare

    root = tmp_path_factory.mktemp("compare_page")
    pair = load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu")
    run_compare(pair, root / "planted", _config(A.SECTIONS))
    same = load_pair(tiny_dirs["base"], tiny_dirs["base"], device="cpu")
    run_compare(same, root / "control", _config(("weights", "activations")))
    return {"planted": root / "planted", "control": root / "control"}


def _json(run_dir: Path, rel: str):
    return json.loads((run_dir / rel).read_text())


# -- synthetic features-section files (psylens.compare.features; the layout documented in compare/artifacts.py) --
LABELS = {"perspective": (1.0, 2.5, True), "emotion_naming": (0.8, 0.7, False), "verification": (0.5, 0.1, True)}
N_FEATURES, CHANGED = 40, {3: 0.3, 7: -0.2, 11: 0.15}
COUNTS = {"tuned_only": 5, "tuned_norm_only": 2, "base_only": 1, "base_norm_only": 0, "shared": 40, "intermediate": 10, "dead": 6}
NOISE = {"tuned_only": 1, "tuned_norm_only": 1, "base_only": 1, "base_norm_only": 0, "shared": 45, "intermediate": 12, "dead": 4}


def write_features(run: Run) -> None:
    labels = {k: {"base": b, "base_ci95": [b - 0.1, b + 0.1], "tuned": t, "tuned_ci95": [t - 0.1, t + 0.1],
                  "difference": t - b, "difference_ci95": [t - b - 0.15, t - b + 0.15], "excludes_zero": ex,
                  "share_base": b / 5, "share_tuned": t / 5, "share_difference": (t - b) / 5,
                  "share_difference_ci95": [(t - b) / 5 - 0.02, (t - b) / 5 + 0.02]} for k, (b, t, ex) in LABELS.items()}
    run.write_json(A.FEATURES, {
        "schema_version": A.SCHEMA_VERSION,
        "sae": {"name": "step-l1", "site": "resid_post", "layer": 1, "pooling": "mean", "segmentation": "sentences",
                "d_sae": N_FEATURES, "model": "tiny"},
        "traces": {"n_tasks": 4, "samples": 2, "max_new_tokens": 16, "temperature": 0.7,
                   "n_traces": {"base": 8, "tuned": 8}, "n_steps": {"base": 30, "tuned": 34}},
        "labels": labels,
        "diversity": {"base": 5.0, "base_ci95": [4.0, 6.0], "tuned": 7.0, "tuned_ci95": [6.0, 8.0], "difference": 2.0,
                      "difference_ci95": [1.0, 3.0]},
        "frequencies": {"n_changed": len(CHANGED), "top_up": [3, 11], "top_down": [7], "l1_distance": 0.65},
        "crosscoder": {"tuned_only": 5},
    })
    rng = np.random.default_rng(0)
    base = rng.uniform(0.05, 0.5, N_FEATURES)
    diff = np.array([CHANGED.get(i, 0.005 * rng.standard_normal()) for i in range(N_FEATURES)])
    run.write_table(A.FEATURE_FREQUENCIES, pd.DataFrame({
        "feature": np.arange(N_FEATURES), "base": base, "tuned": base + diff, "difference": diff,
        "difference_lo": diff - 0.05, "difference_hi": diff + 0.05, "changed": [i in CHANGED for i in range(N_FEATURES)],
        "label": ["perspective" if i == 3 else "" for i in range(N_FEATURES)]}))
    run.write_json(A.CROSSCODER, {
        "schema_version": A.SCHEMA_VERSION, "settings": {"site": "resid_post", "layer": 1, "d_latent": 64, "k": 4},
        "fit": {"explained_variance": {"base": 0.8, "tuned": 0.78}, "l0": 4.0, "dead_fraction": 0.09},
        "counts": COUNTS, "noise": {"kind": "gaussian", "sigma": 0.1, "counts": NOISE},
        "tuned_only": 5, "tuned_only_noise": 1, "tuned_only_beyond_noise": True,
        "base_only": 1, "base_only_noise": 1, "base_only_beyond_noise": False})
    cls = [c for c, n in COUNTS.items() for _ in range(n)]
    ratio = {"tuned_only": 0.95, "tuned_norm_only": 0.9, "base_only": 0.05, "base_norm_only": 0.1, "shared": 0.5,
             "intermediate": 0.7, "dead": 0.5}
    run.write_table(A.CROSSCODER_LATENTS, pd.DataFrame({
        "latent": np.arange(len(cls)), "ratio": [ratio[c] for c in cls], "frequency": 0.1, "cls": cls}))
    s = run.read_json(A.SUMMARY)
    s["sections"]["features"] = {"status": "done", "reason": None, "headline": {"n_changed": len(CHANGED)}}
    run.write_json(A.SUMMARY, s)


def copy_run(src: Path, dest: Path, *, features: bool = False) -> Run:
    shutil.copytree(src, dest)
    run = open_run(dest)
    if features:
        write_features(run)
    return run


# -- rendering helpers --------------------------------------------------------------------------------


def render(monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> AppTest:
    return render_page(monkeypatch, "compare", run_dir)



# -- contract ---------------------------------------------------------------------------------------
def test_page_contract_and_registry(runs: dict[str, Path], tmp_path: Path) -> None:
    check_page(page)
    assert page.TITLE == "Base vs tuned"
    assert "compare" in kit.PAGE_MODULES and page in kit.pages()
    assert page.available(open_run(runs["planted"]))
    assert not page.available(create_run(tmp_path / "bare", command="x"))


# -- known answers: the planted change, and a model against itself (the control) ---------------------
def test_weight_map_finds_the_planted_module(runs: dict[str, Path]) -> None:
    rows = _json(runs["planted"], A.WEIGHTS)
    kinds, layers, z = page.weight_matrix(rows, "relative_norm")
    assert layers == list(range(N_LAYERS)) and len(kinds) == 7 and kinds[0] == "self_attn.q_proj"
    assert np.unravel_index(np.nanargmax(z), z.shape) == (kinds.index(PLANT_MODULE), PLANT_LAYER)
    assert np.count_nonzero(z) == 1  # every other module is unchanged
    _, _, rank = page.weight_matrix(rows, "effective_rank")
    assert rank[kinds.index(PLANT_MODULE), PLANT_LAYER] == pytest.approx(1.0, abs=1e-3)  # a rank-1 change
    for metric in page.WEIGHT_METRICS:
        hm = page.weight_heatmap(rows, metric).data[0]
        assert np.array(hm.z, dtype=float).shape == (7, N_LAYERS) and list(hm.y) == kinds
    top = page.top_modules(rows)
    assert list(top["module"]) == [f"model.layers.{PLANT_LAYER}.{PLANT_MODULE}"]
    _, _, zc = page.weight_matrix(_json(runs["control"], A.WEIGHTS))
    assert np.count_nonzero(zc) == 0 and page.top_modules(_json(runs["control"], A.WEIGHTS)).empty  # control
    with pytest.raises(ValueError, match="valid: relative_norm"):
        page.weight_matrix(rows, "norm")
    assert page.module_kind("model.layers.12.mlp.up_proj", 12) == "mlp.up_proj"
    assert page.weight_matrix([{"module": 3}, "x", {"module": "a", "layer": "1"}])[2].size == 0


def test_activation_curves_part_at_the_planted_layer(runs: dict[str, Path]) -> None:
    res = _json(runs["planted"], A.ACTIVATIONS)
    for measure in page.ACTIVATION_MEASURES:
        fig = page.activation_figure(res, measure)
        lines = {t.name.split(" ")[0]: np.array(t.y, dtype=float) for t in fig.data if t.mode == "lines+markers"}
        assert set(lines) == {"emotions", "tasks"}
        for y in lines.values():
            assert np.all(np.abs(y[:PLANT_LAYER]) < 1e-4) and y[PLANT_LAYER] > 1e-3, (measure, y)
    tasks = [t for t in page.activation_figure(res, "relative_contribution").data if str(t.name).startswith("tasks")][0]
    assert int(np.argmax(tasks.y)) == PLANT_LAYER
    band = [t for t in page.activation_figure(res, "relative").data if t.name == "tasks: 95% interval"][0]
    line = [t for t in page.activation_figure(res, "relative").data if str(t.name).startswith("tasks (")][0]
    hi, lo = np.array(band.y[:N_LAYERS], dtype=float), np.array(band.y[N_LAYERS:][::-1], dtype=float)
    rows = res["sets"]["tasks"]["layers"]  # the band is the mean difference's interval on the relative scale
    scale = np.array([r["relative"] / r["mean_diff_norm"] if r["mean_diff_norm"] > 0 else 0.0 for r in rows])
    np.testing.assert_allclose(lo, [r["mean_diff_norm_ci95"][0] for r in rows] * scale, rtol=1e-9)
    np.testing.assert_allclose(hi, [r["mean_diff_norm_ci95"][1] for r in rows] * scale, rtol=1e-9)
    assert np.all(hi >= lo) and np.array(line.y)[0] == 0.0
    control = _json(runs["control"], A.ACTIVATIONS)
    for t in page.activation_figure(control, "relative").data:
        if t.mode == "lines+markers":
            assert np.all(np.abs(np.array(t.y, dtype=float)) < 1e-5)  # a model against itself does not part
    with pytest.raises(ValueError, match="valid: relative"):
        page.activation_figure(res, "norm")


def test_kl_bars_are_the_per_text_kl_and_zero_for_the_control(runs: dict[str, Path]) -> None:
    res = _json(runs["planted"], A.ACTIVATIONS)
    bars = page.kl_figure(res).data[0]
    assert list(bars.y) == pytest.approx(res["kl"]["per_text"]) and len(bars.x) == 2
    assert min(bars.y) > 0
    top = page.kl_top_frame(res)
    assert list(top["kl"]) == sorted(top["kl"], reverse=True) and {"base_next", "tuned_next"} <= set(top.columns)
    assert max(page.kl_figure(_json(runs["control"], A.ACTIVATIONS)).data[0].y) < 1e-6
    lens = page.lens_frame(res, PLANT_LAYER)
    assert len(lens) == res["config"]["top_tokens"] and page.lens_frame(res, 0).empty  # nothing before the plant
    assert page.lens_frame(res, 99).empty


def test_layer_kl_curve_is_zero_before_the_planted_layer(runs: dict[str, Path]) -> None:
    """The per-layer logit-lens KL: 0 before the planted layer, > 0 from it on (its band around it); a model
    against itself: 0 at every layer (the control)."""
    res = _json(runs["planted"], A.ACTIVATIONS)
    table = pd.read_parquet(runs["planted"] / A.LAYER_KL)
    assert tuple(table.columns) == A.LAYER_KL_COLUMNS and list(table["layer"]) == list(range(N_LAYERS))
    assert list(table["kl"]) == pytest.approx([r["kl"] for r in res["layer_kl"]["layers"]])
    fig = page.layer_kl_figure(table)
    line = [t for t in fig.data if t.mode == "lines+markers"][0]
    y = np.array(line.y, dtype=float)
    assert list(line.x) == list(range(N_LAYERS))
    assert np.all(y[:PLANT_LAYER] == 0.0) and np.all(y[PLANT_LAYER:] > 0), y
    band = [t for t in fig.data if t.name == "95% interval"][0]
    hi, lo = np.array(band.y[:N_LAYERS], dtype=float), np.array(band.y[N_LAYERS:][::-1], dtype=float)
    assert np.all(lo <= y + 1e-12) and np.all(y <= hi + 1e-12)
    assert res["layer_kl"]["first_nonzero_layer"] == PLANT_LAYER
    control = pd.read_parquet(runs["control"] / A.LAYER_KL)
    assert (control["kl"] == 0.0).all()
    assert np.all(np.array(page.layer_kl_figure(control).data[-1].y, dtype=float) == 0.0)
    with pytest.raises(ValueError, match="needs columns"):
        page.layer_kl_figure(pd.DataFrame({"depth": [0]}))


def test_probe_curves_and_concept_table(runs: dict[str, Path]) -> None:
    res = _json(runs["planted"], A.EMOTIONS)
    fig = page.probe_figure(res)
    names = [t.name for t in fig.data]
    for n in ("base probe (CV)", "tuned probe (CV)", "base probe on tuned (transfer)", "shuffled labels (base)"):
        assert n in names
    transfer = [t for t in fig.data if t.name == "base probe on tuned (transfer)"][0]
    assert list(transfer.y) == pytest.approx([r["base_on_tuned"] for r in res["probes"]["transfer"]])
    table = page.concept_table(res)
    assert len(table) == 24 and list(table["change"]) == sorted(table["change"], reverse=True)
    assert set(table.loc[table.verdict == "rise", "concept"]) == set(res["concepts"]["rises"])
    assert set(table.loc[table.verdict == "fall", "concept"]) == set(res["concepts"]["falls"])
    dirs = page.direction_figure(res)
    assert len([t for t in dirs.data]) == len(res["directions"]["emotions"])
    # planted verdicts: joy rises, fear falls, sadness's interval includes 0 (no verdict)
    planted = {"concepts": {"rises": ["joy"], "falls": ["fear"], "concepts": [
        {"concept": "fear", "change": -0.5, "change_ci95": [-0.7, -0.3], "beyond_random": True},
        {"concept": "sadness", "change": 0.2, "change_ci95": [-0.1, 0.5], "beyond_random": True},
        {"concept": "joy", "change": 0.9, "change_ci95": [0.6, 1.2], "beyond_random": True}]}}
    t = page.concept_table(planted)
    assert list(t["concept"]) == ["joy", "sadness", "fear"] and list(t["verdict"]) == ["rise", "—", "fall"]
    bars = page.concept_figure(t, 0.3).data[0]
    assert list(bars.y) == ["fear", "sadness", "joy"] and list(bars.error_x.array) == pytest.approx([0.2, 0.3, 0.3])
    assert page.concept_table({"concepts": 5}).empty


def test_steering_transfer_table(runs: dict[str, Path]) -> None:
    res = _json(runs["planted"], A.STEERING)
    t = page.steering_table(res).set_index("model")
    assert t.loc["base", "gap (nats)"] == pytest.approx(res["base"]["value"])
    assert t.loc["tuned", "random control"] == pytest.approx(res["tuned"]["control"])
    rb = res["read_back"]
    assert t.loc["base", "read-back win rate"] == pytest.approx(rb["base"]["value"])
    assert t.loc["tuned", "read-back random control"] == pytest.approx(rb["tuned"]["control"])
    assert t.loc["tuned", "read-back passed"] == rb["tuned"]["passed"]
    assert "story directions at layer" in page.steering_source(res)  # no sweep vectors in this run
    swept = {**res, "steering": {"from": "sweep", "vectors": {"joy": {"layer": 2, "alpha": -3.0}}}}
    assert page.steering_source(swept) == "the base's steering-sweep vectors (joy L2 α -3)"
    old = {k: v for k, v in res.items() if k not in ("read_back", "steering")}  # a run from before the read-back
    assert page.steering_table(old)["read-back 95% interval"].tolist() == ["—", "—"]
    fig = page.steering_figure(res)
    assert [tr.name for tr in fig.data] == ["base", "tuned"]
    assert list(fig.data[1].y) == pytest.approx([res["tuned"]["own_shift"][e] for e in res["emotions"]])


def test_generations_side_by_side_and_identical_for_the_control(runs: dict[str, Path]) -> None:
    gen = _json(runs["planted"], A.GENERATIONS)
    rows = page.generation_rows(gen)
    assert len(rows) == 2 and any(r["same"] == "no" for r in rows)  # the planted change shows in the text
    assert all(r["prompt"] == g["prompt"] for r, g in zip(rows, gen["prompts"]))
    steered = gen["steered"]
    assert steered["layer"] == _json(runs["planted"], A.STEERING)["layer"]
    assert all(isinstance(steered[k], str) for k in ("base", "tuned", "base_steered", "tuned_steered"))
    control = _json(runs["control"], A.GENERATIONS)
    assert all(r["same"] == "yes" for r in page.generation_rows(control))  # a model against itself
    assert control["steered"] is None and "steering section" in control["steered_reason"]
    assert page.generation_rows({"prompts": [{"prompt": 1}]}) == []


def test_feature_and_crosscoder_figures_on_planted_files(runs: dict[str, Path], tmp_path: Path) -> None:
    run = copy_run(runs["planted"], tmp_path / "run", features=True)
    feats = run.read_json(A.FEATURES)
    labels = page.label_table(feats)
    assert list(labels["label"]) == ["perspective", "verification", "emotion_naming"]  # by |difference|
    assert list(labels["excludes 0"]) == [True, True, False]
    fig = page.label_figure(feats)
    assert list(fig.data[1].y) == pytest.approx([v[1] for v in LABELS.values()])
    freq = pd.read_parquet(run.file(A.FEATURE_FREQUENCIES))
    changed = [t for t in page.frequency_figure(freq).data if str(t.name).startswith("changed")][0]
    assert sorted(int(s.split()[1]) for s in changed.text) == sorted(CHANGED)
    assert list(page.changed_features(freq)["feature"]) == [3, 7, 11]
    counts = page.crosscoder_counts(run.read_json(A.CROSSCODER)).set_index("class")
    assert counts["crosscoder"].to_dict() == {k: float(v) for k, v in COUNTS.items()}
    assert counts["noise control"].to_dict() == {k: float(v) for k, v in NOISE.items()}
    hist = page.latent_ratio_figure(pd.read_parquet(run.file(A.CROSSCODER_LATENTS)))
    assert {t.name: len(t.x) for t in hist.data} == {k: v for k, v in COUNTS.items() if v}


def test_section_status_lists_every_section_with_its_reason(runs: dict[str, Path]) -> None:
    s = page.section_status(_json(runs["planted"], A.SUMMARY)).set_index("section")
    assert list(s.index) == list(A.SECTIONS)
    assert (s.loc[["weights", "activations", "emotions", "steering"], "status"] == "done").all()
    assert s.loc["features", "status"] == "skipped" and "SAE" in s.loc["features", "reason"]
    c = page.section_status(_json(runs["control"], A.SUMMARY)).set_index("section")
    assert c.loc["emotions", "status"] == "not run" and "--sections" in c.loc["emotions", "reason"]


# -- rendering ------------------------------------------------------------------------------------
def test_renders_the_compare_run(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    at = render(monkeypatch, runs["planted"])
    assert not at.exception, at.exception
    assert not at.warning and not at.error, messages(at)
    infos = [str(i.value) for i in at.info]
    assert len(infos) == 1 and "`features` section was skipped" in infos[0] and "SAE" in infos[0]
    assert len(at.get("plotly_chart")) == 8  # weights, activations, KL, layer KL, probes, directions, concepts, steering
    at.radio(key="compare_weight_metric").set_value("effective_rank").run()
    at.radio(key="compare_act_measure").set_value("one_minus_cosine").run()
    at.selectbox(key="compare_lens_layer").set_value(0).run()
    at.selectbox(key="compare_gen_prompt").set_value(1).run()
    assert not at.exception and not at.warning, messages(at)
    texts = " ".join(str(t.value) for t in at.text)
    gen = _json(runs["planted"], A.GENERATIONS)
    assert gen["prompts"][1]["base"] in texts and gen["prompts"][1]["tuned"] in texts
    assert gen["steered"]["tuned_steered"] in texts


def test_renders_features_when_present(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(runs["planted"], tmp_path / "run", features=True)
    at = render(monkeypatch, run.path)
    assert not at.exception, at.exception
    assert not messages(at), messages(at)
    assert len(at.get("plotly_chart")) == 8 + 4  # labels, frequencies, crosscoder classes, latent ratios


def test_a_run_with_sections_not_run_says_why_in_one_line_each(runs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    at = render(monkeypatch, runs["control"])
    assert not at.exception, at.exception
    infos = [str(i.value) for i in at.info]
    assert not at.warning, messages(at)
    assert sum("was not run" in m for m in infos) == 3  # emotions, steering, features
    assert all("\n" not in m for m in infos)
    assert any("No steered text" in str(c.value) for c in at.caption)


def test_empty_run_says_what_is_missing_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = render(monkeypatch, create_run(tmp_path / "empty", command="x").path)
    assert not at.exception, at.exception
    msgs = messages(at)
    assert len(msgs) == 1 and A.SUMMARY in msgs[0] and "psylens compare" in msgs[0] and "\n" not in msgs[0]


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: max(1, len(data) // 2)])


def _write(text: str):
    return lambda p: p.write_text(text)


# Each group breaks several files of different sections at once (one render a group): every broken file must be
# named in exactly one line, and the sections it does not touch must still draw.
CORRUPTIONS: dict[str, list[tuple[str, object]]] = {
    "truncated, group 1": [(A.WEIGHTS, _truncate), (A.EMOTIONS, _truncate), (A.GENERATIONS, _truncate),
                           (A.FEATURE_FREQUENCIES, _truncate), (A.CROSSCODER, _truncate), (A.LAYER_KL, _truncate)],
    "truncated, group 2": [(A.ACTIVATIONS, _truncate), (A.STEERING, _truncate), (A.FEATURES, _truncate),
                           (A.CROSSCODER_LATENTS, _truncate)],
    "wrong-typed, group 1": [
        (A.WEIGHTS, _write('{"module": 1}')),
        (A.EMOTIONS, _write('{"probes": 3, "directions": [], "concepts": {"concepts": [1, "a"]}}')),
        (A.GENERATIONS, _write('{"prompts": "x", "steered": 5, "config": []}')),
        (A.CROSSCODER, _write('{"counts": [1, 2], "noise": 3}')),
        (A.LAYER_KL, lambda p: pd.DataFrame({"depth": [0, 1], "kl": [0.0, 0.1]}).to_parquet(p)),
    ],
    "wrong-typed, group 2": [
        (A.ACTIVATIONS, _write('{"sets": {"tasks": {"layers": [{"layer": "x", "relative": "big"}]}}, "kl": 3, "lens": []}')),
        (A.STEERING, _write('{"base": [], "tuned": {"value": "high"}, "emotions": "joy"}')),
        (A.FEATURES, _write('{"labels": {"perspective": 3}, "sae": "big"}')),
        (A.CROSSCODER_LATENTS, lambda p: pd.DataFrame({"latent": [0, 1], "cls": ["shared", "dead"]}).to_parquet(p)),
    ],
    "newer summary": [(A.SUMMARY, lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "schema_version": 9})))],
    "wrong-typed summary": [(A.SUMMARY, _write('{"models": 3, "sections": {"weights": "done"}}'))],
}


@pytest.mark.parametrize("group", list(CORRUPTIONS))
def test_each_corrupt_file_is_one_line_and_the_rest_still_shows(group: str, runs: dict[str, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(runs["planted"], tmp_path / "run", features=True)
    for rel, corrupt in CORRUPTIONS[group]:
        corrupt(run.file(rel))  # type: ignore[operator]
    at = render(monkeypatch, run.path)
    assert not at.exception, f"{group}: {at.exception}"
    msgs = messages(at)
    assert all("\n" not in m and len(m) < 600 and "Traceback" not in m for m in msgs), msgs
    for rel, _ in CORRUPTIONS[group]:
        named = [m for m in msgs if rel in m]
        assert len(named) == 1, (group, rel, msgs)
        assert any(w in named[0] for w in ("cannot be read", "wrong type", "newer psylens", "unexpected shape", "was expected")), named
    if "summary" not in group:
        assert len(at.get("plotly_chart")) >= 4, (group, msgs)  # the untouched sections still draw
    else:
        assert not at.get("plotly_chart")  # the summary is the index: nothing is guessed without it


def test_a_missing_section_file_is_an_info_line(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(runs["planted"], tmp_path / "run")
    for rel in (A.WEIGHTS, A.GENERATIONS):
        run.file(rel).unlink()
    at = render(monkeypatch, run.path)
    assert not at.exception and not at.warning, messages(at)
    infos = [str(i.value) for i in at.info]
    assert any(A.WEIGHTS in m for m in infos) and any(A.GENERATIONS in m for m in infos)


def test_renders_a_real_features_section(tiny_dirs, runs: dict[str, Path], tmp_path: Path,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The features section as ``run_compare`` writes it (labels and a crosscoder, no SAE) draws without a warning."""
    from dataclasses import replace

    from psylens.compare.features import FeaturesConfig
    from psylens.compare.pair import load_pair
    from psylens.compare.pipeline import run_compare

    run = copy_run(runs["planted"], tmp_path / "run")
    cfg = replace(_config(("features",)), features=FeaturesConfig(
        n_tasks=2, samples=1, max_new_tokens=6, without_sae=True, d_latent=8, k=2, steps=5, cc_batch_size=8, n_boot=20))
    summary = run_compare(load_pair(tiny_dirs["base"], tiny_dirs["rank1"], device="cpu"), run.path, cfg)
    assert summary["sections"]["features"]["status"] == "done"
    at = render(monkeypatch, run.path)
    assert not at.exception, at.exception
    assert not at.warning and not at.error, messages(at)
    assert not any("`features` section" in m for m in messages(at))
    assert len(at.get("plotly_chart")) >= 1
