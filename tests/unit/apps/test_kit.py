"""The explorer kit: load-or-explain on every page, paths kept inside the run, the playground's lock.

Every page is opened on an empty run and on a run with each artifact corrupted in turn; it must
show no exception and explain the problem in one line naming the file. Fixture runs are built from
synthetic tensors (no model), except the lock test, which generates with a tiny random model.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from psylens.activations import Activations
from psylens.apps.views import kit
from psylens.apps.views import steering as steering_page
from psylens.circuits import artifacts as CA
from psylens.probes import artifacts as PA
from psylens.probes.directions import Directions
from psylens.probes.fit import fit_probes
from psylens.runs import Run, create_run
from psylens.steering import artifacts as SA
from psylens.validation import artifacts as VA
from pages import messages, render_page
from tests.unit.apps.test_circuits_page import write_circuits_outputs
from tests.unit.apps.test_validation_page import write_validation_outputs

EMOS = ["anger", "joy", "sadness"]
LAYERS = [0, 1, 2]


# -- fixture runs ------------------------------------------------------------------------------------
def make_full_run(root: Path) -> Run:
    """A run holding every artifact the pages read (synthetic, small)."""
    run = create_run(root, command="psylens demo", model={"spec": "tiny-random-llama", "n_layers": 3}, seed=0)
    n, d = 36, 8
    g = torch.Generator().manual_seed(0)
    labels = [EMOS[i % 3] for i in range(n)]
    x = torch.randn(n, len(LAYERS), d, generator=g)
    for i, lab in enumerate(labels):  # plant a signal so probes are not at chance
        x[i, :, EMOS.index(lab)] += 3.0
    acts = Activations(
        tensors={"resid_post": x}, layers=LAYERS, labels=labels, groups=[f"g{i // 3}" for i in range(n)],
        ids=[f"s{i:02d}" for i in range(n)], texts=[f"Text {i} about {labels[i]}." for i in range(n)],
        meta={"positions": "mean"},
    )
    acts.save(run.path / "activations")
    run.write_json("summary/layers.json", {"n": n, "sites": {"resid_post": {
        "layers": LAYERS, "mean_norm": [1.0, 2.0, 3.0], "fisher_ratio": [0.2, 0.9, 1.6],
        "shuffled_fisher_ratio": [0.1, 0.1, 0.1]}}})
    res = fit_probes(acts, site="resid_post", labels=EMOS, seed=0)
    res.save(run.path / PA.DIR, name="probes")
    summary = {**res.summary(), "site": "resid_post", "positions": "mean", "format": "raw",
               "schema_version": PA.SCHEMA_VERSION,
               "geometry": {"layer": 2, "pc1_order": ["joy", "sadness", "anger"], "valence_rho": -0.9,
                            "valence_p": 0.04, "valence": {"joy": 1.0, "sadness": -0.7, "anger": -0.6}}}
    run.write_json(PA.SUMMARY, summary)
    run.write_table(PA.LAYER_CURVE, res.table().assign(label_set="headline"))
    run.write_json(PA.CONFUSION, {"resid_post": {"headline": {
        "labels": list(res.classes), "layers": list(res.layers), "real": res.confusion.tolist(),
        "shuffled": None if res.shuffled_confusion is None else res.shuffled_confusion.tolist()}}})
    dirs = Directions.from_raw(torch.randn(3, 3, d, generator=g), EMOS, LAYERS, site="resid_post", method="mean_diff")
    dirs.save(run.file(PA.DIRECTIONS))
    cos = pd.DataFrame([{"layer": layer, "a": a, "b": b, "cosine": 1.0 if a == b else 0.1}
                        for layer in LAYERS for a in EMOS for b in EMOS])
    run.write_table(PA.GEOMETRY_COSINE, cos)
    run.write_table(PA.GEOMETRY_PCA, pd.DataFrame([{"layer": layer, "emotion": e, "pc1": i, "pc2": -i, "valence": 0.0,
                                                     "explained_pc1": 0.5, "explained_pc2": 0.3}
                                                    for layer in LAYERS for i, e in enumerate(EMOS)]))
    run.write_table(PA.PERSISTENCE, pd.DataFrame([{"layer": layer, "offset": k, "accuracy": 0.5, "transfer_accuracy": 0.4,
                                                    "shuffled_accuracy": 0.33, "chance": 0.33}
                                                   for layer in (0, 2) for k in range(3)]))
    emotions = {e: {"best_layer": 1, "best_alpha": 4.0, "best_scale": 0.1, "success": 0.5, "ci95": [0.2, 0.8],
                    "perplexity_ratio": 1.2, "baselines": {"prompting": 0.3, "random": 0.0, "none": 0.0},
                    "baselines_ci95": {"prompting": [0.1, 0.6], "random": [0.0, 0.2], "none": [0.0, 0.2]},
                    "vs": {"random": {"diff": 0.5, "ci95": [0.2, 0.8], "beats": True, "n": 8},
                           "prompting": {"diff": 0.2, "ci95": [-0.1, 0.5], "beats": False, "n": 8}},
                    "meets_fluency": True, "beats_random": True, "beats_prompting": False} for e in EMOS}
    run.write_json(SA.SUMMARY, {"schema_version": SA.SCHEMA_VERSION, "emotions": emotions, "mean_success": 0.5,
                                "mean_success_ci95": [0.3, 0.7],
                                "mean_baselines": {"prompting": 0.3, "random": 0.0, "none": 0.0},
                                "targets": {"success": 0.8, "max_perplexity_ratio": 1.5}, "meets_target": False,
                                "model": "tiny-random-llama", "judge": "nrc", "n_prompts": {"dev": 2, "test": 8},
                                "directions": {"source": "probes", "file": PA.DIRECTIONS}})
    run.write_json(SA.GRID, {"cells": [{"emotion": e, "layer": layer, "scale": s, "alpha": s * 40, "success": 0.5,
                                        "perplexity_ratio": 1.1} for e in EMOS for layer in (0, 1) for s in (0.1, 0.2)]})
    gens = [{"split": "test", "condition": c, "sampled": False, "emotion": None if c == "none" else e,
             "prompt_index": 0, "prompt": "p", "text": f"{c} text", "judged": "joy"}
            for e in EMOS for c in ("none", "steer", "prompting", "random")]
    run.file(SA.GENERATIONS).write_text("\n".join(json.dumps(x) for x in gens) + "\n")
    write_validation_outputs(run, d=d, layers=tuple(LAYERS))
    write_circuits_outputs(run)
    return run


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, len(data) // 2)])


def write(path: Path, text: str) -> None:
    path.write_text(text)


PAGES = ("overview", "probes", "steering", "lens", "validation", "circuits", "saes", "compare")


def test_every_registered_page_is_checked_here() -> None:
    assert set(PAGES) == {m for m in kit.PAGE_MODULES if isinstance(m, str)}, "add the new page to PAGES"

# (name, file it breaks, how) — each applied alone to a fresh full run
CORRUPTIONS: list[tuple[str, str, Callable[[Path], None]]] = [
    ("truncated manifest", "activations/manifest.json", truncate),
    ("truncated rows.json", "activations/rows.json", truncate),
    ("truncated confusion.json", PA.CONFUSION, truncate),
    ("wrong-typed run.json", "run.json", lambda p: write(p, "[1, 2, 3]")),
    ("wrong-typed layer summary", "summary/layers.json", lambda p: write(p, '"layers"')),
    ("wrong-typed layer summary fields", "summary/layers.json",
     lambda p: write(p, '{"sites": {"resid_post": {"layers": ["a", "b"], "fisher_ratio": 3}}}')),
    ("wrong-typed probe summary", PA.SUMMARY, lambda p: write(p, "[]")),
    ("wrong-typed probe summary fields", PA.SUMMARY,
     lambda p: write(p, '{"site": 3, "layers": "abc", "labels": 5, "best_layer": "x", "accuracy_by_layer": {"a": 1},'
                        ' "best_accuracy": "high", "geometry": [1], "persistence": 7}')),
    ("truncated probe summary", PA.SUMMARY, truncate),
    ("newer probe summary", PA.SUMMARY, lambda p: write(p, json.dumps({"schema_version": 99, "best_layer": 1}))),
    ("truncated layer curve", PA.LAYER_CURVE, truncate),
    ("truncated saved probes", f"{PA.PROBES}.safetensors", truncate),
    ("truncated directions file", PA.DIRECTIONS, truncate),
    ("bad steering summary", SA.SUMMARY, truncate),
    ("wrong-typed steering summary", SA.SUMMARY,
     lambda p: write(p, '{"emotions": {"joy": {"best_layer": "x", "best_scale": "y", "baselines": 3, "vs": 1}},'
                        ' "targets": 2, "mean_baselines": [1], "directions": {"file": 7}}')),
    ("steering summary naming a directions file outside the run", SA.SUMMARY,
     lambda p: write(p, json.dumps({**json.loads(p.read_text()), "directions": {"file": "/etc/passwd"}}))),
    ("newer steering summary", SA.SUMMARY,
     lambda p: write(p, json.dumps({**json.loads(p.read_text()), "schema_version": 7}))),
    ("bad grid", SA.GRID, lambda p: write(p, '{"cells": [{"emotion": "joy", "layer": "x", "scale": null}]}')),
    ("garbage generations", SA.GENERATIONS, lambda p: p.write_bytes(b"\xff\xfe\x00garbage")),
    ("truncated validation summary", VA.SUMMARY, truncate),
    ("truncated feels matrix", VA.FEELS_MATRIX, truncate),
    ("truncated validation directions", VA.DIRECTIONS, truncate),
    ("truncated circuits summary", CA.SUMMARY, truncate),
    ("truncated circuit scores", CA.SCORES, truncate),
    ("truncated top neurons table", CA.TOP_NEURONS, truncate),
]


@pytest.fixture(scope="module")
def full_run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_full_run(tmp_path_factory.mktemp("full") / "run").path


def fresh_run(template: Path, dest: Path) -> Run:
    import shutil

    from psylens.runs import open_run

    shutil.copytree(template, dest)
    return open_run(dest)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_the_full_run(page: str, full_run_template: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = fresh_run(full_run_template, tmp_path / "run")
    at = render_page(monkeypatch, page, run)
    assert not at.exception, at.exception
    assert not at.error, messages(at)
    assert not [w for w in at.warning if "cannot" in str(w.value) or "unexpected" in str(w.value)], messages(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_on_an_empty_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = create_run(tmp_path / "empty", command="psylens harvest", model={"spec": "tiny"})
    at = render_page(monkeypatch, page, run)
    assert not at.exception, at.exception
    msgs = messages(at)
    assert msgs, "an empty run must say what is missing"
    assert all("\n" not in m for m in msgs), msgs


@pytest.fixture(scope="module")
def pages_reading(full_run_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Which files each page reads through the kit on the full run: page → artifact paths.

    Pages read run files only through ``kit.read`` (directly or by ``kit.load``), so a corrupted
    file needs checking only on the pages that read it; ``run.json`` is read by every page.
    """
    out: dict[str, set[str]] = {}
    real_read = kit.read
    with pytest.MonkeyPatch.context() as mp:
        for page in PAGES:
            seen: set[str] = set()

            def recording(run: Run, art: kit.Artifact, _seen: set[str] = seen) -> Any:
                _seen.add(art.rel)
                return real_read(run, art)

            mp.setattr(kit, "read", recording)
            run = fresh_run(full_run_template, tmp_path_factory.mktemp("reads") / "run")
            at = render_page(mp, page, run)
            assert not at.exception, at.exception
            out[page] = seen
    return out


def _reads(rel: str, read: set[str]) -> bool:
    return rel == "run.json" or any(rel == r or rel.startswith((r + "/", r + ".")) for r in read)


def test_the_read_recorder_sees_each_pages_files(pages_reading: dict[str, set[str]]) -> None:
    """Control for the filter below: every page whose analysis the full run holds reads something, and only
    the validation page the feels matrix. (The template holds no step SAE and no model comparison: the Step
    SAEs and Base vs tuned pages have their own corruption tests.)"""
    assert all(pages_reading[p] for p in PAGES if p not in ("saes", "compare")), pages_reading
    assert [p for p in PAGES if _reads(VA.FEELS_MATRIX, pages_reading[p])] == ["validation"], pages_reading


@pytest.mark.parametrize("name,rel,corrupt", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_each_corrupted_artifact_is_one_line_never_a_traceback(
    name: str, rel: str, corrupt: Callable[[Path], None], full_run_template: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, pages_reading: dict[str, set[str]],
) -> None:
    run = fresh_run(full_run_template, tmp_path / "run")
    corrupt(run.file(rel))
    named = False
    readers = [p for p in PAGES if _reads(rel, pages_reading[p])] or list(PAGES)  # none recorded: check them all
    for page in readers:
        at = render_page(monkeypatch, page, run)
        assert not at.exception, f"{page} page on a run with a {name}: {at.exception}"
        msgs = messages(at)
        assert all("\n" not in m and len(m) < 600 for m in msgs), (page, msgs)
        assert not any("Traceback" in m for m in msgs)
        named = named or any(rel in m or Path(rel).name in m for m in msgs)
    if rel != SA.SUMMARY or "outside" not in name:  # a bad pointer falls back silently to the run's own file
        assert named, f"no page named `{rel}` after a {name}"


def test_newer_schema_says_upgrade(full_run_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = fresh_run(full_run_template, tmp_path / "run")
    summary = run.read_json(PA.SUMMARY)
    run.write_json(PA.SUMMARY, {**summary, "schema_version": PA.SCHEMA_VERSION + 1})
    at = render_page(monkeypatch, "probes", run)
    assert not at.exception
    assert f"written by a newer psylens (schema {PA.SCHEMA_VERSION + 1} > {PA.SCHEMA_VERSION}); upgrade psylens" in \
        " ".join(messages(at))
    run.write_json(PA.SUMMARY, {**summary, "schema_version": PA.SCHEMA_VERSION})  # control: the known schema reads
    at = render_page(monkeypatch, "probes", run)
    assert "newer psylens" not in " ".join(messages(at))


def test_read_reports_each_problem_level(tmp_path: Path) -> None:
    run = create_run(tmp_path / "r", command="x")
    art = kit.Artifact("probes/summary.json", "json", "probe summary", "`psylens probe` writes it", schema=1)
    with pytest.raises(kit.ArtifactProblem) as e:
        kit.read(run, art)
    assert e.value.level == "info" and "No probe summary" in e.value.message
    run.file("probes").mkdir()
    run.file("probes/summary.json").write_text('{"a": ')
    with pytest.raises(kit.ArtifactProblem) as e:
        kit.read(run, art)
    assert e.value.level == "warning" and "cannot be read" in e.value.message and "probes/summary.json" in e.value.message
    run.file("probes/summary.json").write_text('{"schema_version": 1, "a": 2}')
    assert kit.read(run, art) == {"schema_version": 1, "a": 2}
    with pytest.raises(ValueError, match="unknown"):
        kit.Artifact("x", "pickle")


# -- paths stay inside the run ---------------------------------------------------------------------
def test_resolve_inside_refuses_paths_out_of_the_run(tmp_path: Path) -> None:
    run = create_run(tmp_path / "a", command="x")
    other = create_run(tmp_path / "b", command="x")
    other.write_json("secret.json", {"s": 1})
    assert kit.resolve_inside(run, "probes/summary.json") == (run.path / "probes/summary.json").resolve()
    for bad in ("../b/secret.json", "/etc/passwd", "probes/../../b/secret.json", str(other.path / "secret.json")):
        with pytest.raises(ValueError, match="inside the run only"):
            kit.resolve_inside(run, bad)
    os.symlink(other.path, run.path / "link")
    with pytest.raises(ValueError, match="outside the run"):
        kit.resolve_inside(run, "link/secret.json")
    art = kit.Artifact("link/secret.json")
    with pytest.raises(kit.ArtifactProblem, match="not read"):
        kit.read(run, art)


def test_sweep_directions_never_follow_a_path_out_of_the_run(full_run_template: Path, tmp_path: Path) -> None:
    run = fresh_run(full_run_template, tmp_path / "run")
    other = fresh_run(full_run_template, tmp_path / "other")
    expr = Directions.from_raw(torch.randn(3, 2, 8), EMOS, [5, 6], site="resid_post", method="mean_diff")
    expr.save(other.file(SA.EXPRESSION_DIRECTIONS))
    summary = run.read_json(SA.SUMMARY)
    for bad in (f"../other/{SA.EXPRESSION_DIRECTIONS}", str(other.file(SA.EXPRESSION_DIRECTIONS)), "/etc/passwd"):
        assert steering_page.sweep_directions(run, {**summary, "directions": {"file": bad}}) == SA.PROBE_DIRECTIONS
    expr.save(run.file(SA.EXPRESSION_DIRECTIONS))  # control: the same file inside the run is followed
    assert steering_page.sweep_directions(run, {**summary, "directions": {"file": SA.EXPRESSION_DIRECTIONS}}) == \
        SA.EXPRESSION_DIRECTIONS


def test_the_playground_takes_the_model_from_run_json_not_the_summary() -> None:
    assert kit.run_model({"model": {"spec": "mine"}}) == ("mine", None, None)
    assert kit.run_model({"models": {"model": {"spec": "base", "adapter": "ad"}, "tuned": {"spec": "t"}},
                          "model": {"spec": "old"}}) == ("base", "ad", None)
    assert kit.run_model({"models": {"tuned": {"spec": "t"}}}) == ("t", None, None)
    assert kit.run_model({"model": "plain"}) == ("plain", None, None)
    assert kit.run_model({}) is None and kit.run_model([1]) is None
    # the dtype the run was made in, so a GPU's bfloat16 default does not change the numbers; junk is ignored
    assert kit.run_model({"models": {"model": {"spec": "m", "dtype": "float32"}}}) == ("m", None, "float32")
    assert kit.run_model({"models": {"model": {"spec": "m", "dtype": "float7"}}}) == ("m", None, None)


def test_playground_caption_names_the_runs_model(full_run_template: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = fresh_run(full_run_template, tmp_path / "run")
    run.write_json(SA.SUMMARY, {**run.read_json(SA.SUMMARY), "model": "evil/model-from-summary"})
    at = render_page(monkeypatch, "steering", run)
    assert not at.exception
    captions = " ".join(str(c.value) for c in at.caption)
    assert "tiny-random-llama" in captions and "evil/model-from-summary" not in captions


# -- pages: known answers ---------------------------------------------------------------------------
def test_probes_page_one_layer_selector_and_misclassified_texts(full_run_template: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run = fresh_run(full_run_template, tmp_path / "run")
    at = render_page(monkeypatch, "probes", run)
    assert not at.exception, at.exception
    assert len(at.select_slider) == 1  # one layer selector for the whole page
    assert "3 probed: 0–2" in at.select_slider[0].label
    at.select_slider(key="probes_layer").set_value(1).run()
    assert not at.exception
    captions = " ".join(str(c.value) for c in at.caption)
    assert "Persistence was measured at layers 0, 2 only" in captions  # says which layers it has
    assert "twice chance" not in captions
    assert "{" not in " ".join(c.value for c in at.caption if "PC1 orders" in c.value)  # no raw dict
    assert "joy +1.0" in captions


def test_misclassified_lists_exactly_the_wrong_texts(full_run_template: Path) -> None:
    from psylens.apps.views import probes as page
    from psylens.probes.fit import ProbeResults

    res = ProbeResults.load(full_run_template / PA.DIR)
    rows = json.loads((full_run_template / "activations" / "rows.json").read_text())
    for i, layer in enumerate(res.layers):
        wrong = page.misclassified(res, rows, layer)
        expected = int((res.predictions[i] != res.y).sum())
        assert len(wrong) == expected
        assert (wrong["true"] != wrong["predicted"]).all()
        texts = dict(zip(rows["ids"], rows["texts"]))
        assert all(texts[r.id] == r.text for r in wrong.itertuples())
        if len(wrong):
            t, p = wrong.iloc[0]["true"], wrong.iloc[0]["predicted"]
            cell = page.misclassified(res, rows, layer, t, p)
            assert set(zip(cell["true"], cell["predicted"])) == {(t, p)}
            assert len(cell) == int(np.asarray(res.confusion[i])[res.classes.index(t), res.classes.index(p)])


def test_heatmap_axes_are_categorical() -> None:
    frame = steering_page.grid_frame({"cells": [{"emotion": "joy", "layer": layer, "scale": s, "success": 0.1}
                                                for layer in (9, 13, 17) for s in (0.1, 0.15, 0.2)]})
    fig = steering_page.heatmap(frame, "joy")
    assert fig.layout.xaxis.type == "category" and fig.layout.yaxis.type == "category"
    assert list(fig.layout.yaxis.categoryarray) == ["9", "13", "17"]
    assert list(fig.layout.xaxis.categoryarray) == ["0.1", "0.15", "0.2"]


def test_intervals_and_beats_ticks() -> None:
    entry = {"success": 0.19, "ci95": [0.11, 0.28],
             "vs": {"random": {"diff": 0.125, "ci95": [0.0, 0.25]}, "prompting": {"diff": 0.3, "ci95": [0.1, 0.5]}}}
    assert kit.fmt_interval(entry["success"], kit.interval(entry, "success")) == "0.19 [0.11, 0.28]"
    assert kit.beats_text(entry, "random").startswith("✗")  # 1 of 8 vs 0 of 8: the interval touches zero
    assert kit.beats_text(entry, "prompting").startswith("✓")
    old = {"success": 0.19, "beats_random": True}  # an old run: no interval, so no tick
    assert kit.fmt_interval(old["success"], kit.interval(old, "success")) == "0.19"
    assert "✓" not in kit.beats_text(old, "random") and "no interval" in kit.beats_text(old, "random")
    table = steering_page.summary_table({"emotions": {"joy": {**entry, "beats_random": True}}})
    assert table.loc[0, "beats random"].startswith("✗") and table.loc[0, "steering [95%]"] == "0.19 [0.11, 0.28]"


def test_lexical_baseline_is_a_dashed_line_when_present() -> None:
    from psylens.apps.views import probes as page

    curve = pd.DataFrame({"site": "r", "layer": [0, 1], "accuracy": [0.5, 0.8], "shuffled_accuracy": [0.2, 0.2],
                          "chance": 1 / 6})
    names = [t.name for t in page.layer_curve_figure(curve).data]
    assert not any("bag-of-words" in str(n) for n in names)  # old runs: no baseline drawn
    with_lex = page.layer_curve_figure(curve.assign(lexical_accuracy=0.6)).data
    lex = [t for t in with_lex if "bag-of-words" in str(t.name)]
    assert len(lex) == 1 and lex[0].line.dash == "dash"


# -- the playground's lock ---------------------------------------------------------------------------
def test_two_sessions_steering_at_once_leave_the_unsteered_text_unchanged(tiny_model: Any) -> None:
    from psylens.steering.vector import SteeringVector

    model = tiny_model("llama")
    d = model.d_model
    prompt, n_tokens = "Tell me about your day.", 12
    reference = model.generate(prompt, max_new_tokens=n_tokens)[0]
    strong = SteeringVector(layers=(1,), vectors=torch.ones(1, d), alpha=50.0, label="joy")
    other = SteeringVector(layers=(0,), vectors=-torch.ones(1, d), alpha=50.0, label="anger")
    steered_ref = steering_page.generate_pair(model, strong, prompt, n_tokens)[1]
    assert steered_ref != reference  # the vector does change the text, so a leak would show
    results: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def session(name: str, sv: SteeringVector) -> None:
        try:
            for _ in range(6):
                results[name].append(steering_page.generate_pair(model, sv, prompt, n_tokens)[0])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=session, args=("a", strong)), threading.Thread(target=session, args=("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert results["a"] and results["b"]
    assert set(results["a"]) == {reference} and set(results["b"]) == {reference}
    assert model.generate(prompt, max_new_tokens=n_tokens)[0] == reference  # and no hook is left behind


def test_accuracy_band_drawn_only_with_recorded_intervals() -> None:
    from psylens.apps.views import probes as page

    curve = pd.DataFrame({"site": "r", "layer": [0, 1], "accuracy": [0.5, 0.8], "chance": 1 / 6})
    assert not [t for t in page.layer_curve_figure(curve).data if t.name == "95% interval"]  # old runs: no band
    banded = curve.assign(accuracy_ci95_lo=[0.4, 0.7], accuracy_ci95_hi=[0.6, 0.9])  # what ProbeResults.table writes
    band = [t for t in page.layer_curve_figure(banded).data if t.name == "95% interval"]
    assert len(band) == 1 and list(band[0].y) == [0.6, 0.9, 0.7, 0.4]
