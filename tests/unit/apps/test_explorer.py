"""The Streamlit explorer, driven headlessly by ``streamlit.testing.v1.AppTest``.

Fixture runs are built with the run API from synthetic tensors: no model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from psylens.activations import Activations  # noqa: E402
from psylens.apps import EXPLORER, explorer_command, launch  # noqa: E402
from psylens.apps import cache  # noqa: E402
from psylens.apps.views import PAGES, check_page, kit  # noqa: E402
from psylens.apps.views.overview import parse_layer_summary  # noqa: E402
from psylens.runs import Run, create_run  # noqa: E402

LABELS = ["joy", "sadness", "anger"]
LAYERS = [0, 1, 2, 3]
TIMEOUT = 60


def make_run(root: Path, *, summary: bool = True, activations: bool = True) -> Run:
    """A small run: 12 stimuli x 4 layers x d=8, synthetic; optional summary/layers.json."""
    run = create_run(
        root,
        command="psylens demo --out " + str(root),
        model={"spec": "tiny-random-llama", "n_layers": 4, "d_model": 8},
        config={"sites": ["resid_post"], "positions": "last", "stimuli": {"set": "explicit", "limit": 12}},
        seed=0,
    )
    n = 12
    g = torch.Generator().manual_seed(0)
    labels = [LABELS[i % 3] for i in range(n)]
    if activations:
        Activations(
            tensors={"resid_post": torch.randn(n, len(LAYERS), 8, generator=g)},
            layers=LAYERS,
            labels=labels,
            groups=["first-person" if i < 6 else "third-person" for i in range(n)],
            ids=[f"s{i:02d}" for i in range(n)],
            texts=[f"I feel {labels[i]} about example {i}." for i in range(n)],
            meta={"positions": "last"},
        ).save(run.path / "activations")
        run.record_step("harvest", n=n, sites=["resid_post"])
    if summary:
        run.write_json(
            "summary/layers.json",
            {
                "n": n,
                "label_counts": {lab: labels.count(lab) for lab in LABELS},
                "sites": {
                    "resid_post": {
                        "layers": LAYERS,
                        "mean_norm": [1.0, 2.0, 3.5, 5.0],
                        "fisher_ratio": [0.2, 0.9, 1.6, 1.1],
                        "shuffled_fisher_ratio": [0.1, 0.12, 0.09, 0.11],
                    }
                },
            },
        )
        run.record_step("summary", out="summary/layers.json")
    return run


def run_app(monkeypatch: pytest.MonkeyPatch, path: Path | str) -> AppTest:
    monkeypatch.setenv("PSYLENS_RUN", str(path))
    at = AppTest.from_file(str(EXPLORER), default_timeout=TIMEOUT)
    return at.run()


def texts(elements: Any) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_overview_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")
    at = run_app(monkeypatch, run.path)
    assert not at.exception, at.exception
    assert not at.error, texts(at.error)
    assert "Overview" in texts(at.title)
    headers = [h.value for h in at.subheader]
    assert headers[0] == "Headline results"  # results lead; metadata comes last
    for section in ("Run", "Stimuli", "Per-layer summary"):
        assert section in headers
    assert headers.index("Run") > headers.index("Per-layer summary")
    assert any("Metadata and versions" in e.label for e in at.expander)
    assert "tiny-random-llama" in texts(at.markdown)
    assert "psylens demo" in texts(at.code)
    assert len(at.get("plotly_chart")) == 3  # label counts, Fisher (real + control), norm
    # the examples table follows the label picker
    assert any("groups × 6 stimuli each" in c.value for c in at.caption)  # one line, not a per-group table
    at.selectbox(key="overview_example_label").select("sadness").run()
    assert not at.exception
    shown = at.table[-1].value
    assert set(shown["label"]) == {"sadness"}
    assert all(t.startswith("I feel sadness") for t in shown["text"])  # full texts


def test_not_a_run_shows_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = tmp_path / "not-a-run"
    bogus.mkdir()
    at = run_app(monkeypatch, bogus)
    assert not at.exception, at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert str(bogus) in message and "run.json" in message and "PSYLENS_RUN" in message
    assert not at.title  # no page rendered


def test_missing_path_and_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(monkeypatch, tmp_path / "nowhere")
    assert not at.exception
    assert "does not exist" in at.error[0].value
    make_run(tmp_path / "runs" / "a", summary=False, activations=False)
    at = run_app(monkeypatch, tmp_path / "runs")
    assert not at.exception
    assert "runs" + "/a" in at.error[0].value.replace("\\", "/")  # suggests the run inside


def test_corrupt_run_json_is_an_error_not_an_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "run.json").write_text("{not json")
    at = run_app(monkeypatch, tmp_path)
    assert not at.exception
    assert "cannot be read" in at.error[0].value


def test_no_run_given_asks_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PSYLENS_RUN", raising=False)
    at = AppTest.from_file(str(EXPLORER), default_timeout=TIMEOUT).run()
    assert not at.exception and not at.error
    assert "No run selected" in texts(at.info)


def test_sidebar_text_input_opens_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")
    monkeypatch.delenv("PSYLENS_RUN", raising=False)
    monkeypatch.setenv("PSYLENS_ROOT", str(tmp_path))
    at = AppTest.from_file(str(EXPLORER), default_timeout=TIMEOUT).run()
    at.sidebar.text_input[0].input(str(run.path)).run()
    assert not at.exception
    assert "Overview" in texts(at.title)
    assert "tiny-random-llama" in texts(at.sidebar.caption)


def test_run_without_summary_still_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run", summary=False)
    at = run_app(monkeypatch, run.path)
    assert not at.exception, at.exception
    assert not at.error
    assert "Overview" in texts(at.title)
    assert "summary/layers.json" in texts(at.info)
    assert len(at.get("plotly_chart")) == 1  # label counts only


def test_bare_run_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run", summary=False, activations=False)
    at = run_app(monkeypatch, run.path)
    assert not at.exception, at.exception
    assert "activations/" in texts(at.info)


def test_summary_without_activations_shows_label_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run", activations=False)
    at = run_app(monkeypatch, run.path)
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 3


def test_malformed_summary_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")
    bad = run.read_json("summary/layers.json")
    bad["sites"]["resid_post"]["fisher_ratio"] = [1.0]  # wrong length
    bad["sites"]["mlp_post"] = {"mean_norm": [1, 2]}  # no layers
    run.write_json("summary/layers.json", bad)
    at = run_app(monkeypatch, run.path)
    assert not at.exception, at.exception
    warnings = texts(at.warning)
    assert "fisher_ratio" in warnings and "mlp_post" in warnings


def test_reads_are_refreshed_when_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")
    at = run_app(monkeypatch, run.path)
    run.update_meta(model={"spec": "another-model"})
    at.run()
    assert "another-model" in texts(at.markdown)


def test_parse_layer_summary_never_raises() -> None:
    for obj in (None, [], {"sites": 3}, {"sites": {"x": {"layers": [0], "fisher_ratio": ["a"]}}}):
        curves, problems = parse_layer_summary(obj)
        assert problems
    curves, problems = parse_layer_summary(json.loads(json.dumps({"sites": {"r": {"layers": [0, 1], "mean_norm": [1, 2]}}})))
    assert not problems and curves[0].mean_norm == [1.0, 2.0] and curves[0].fisher_ratio is None


def test_pages_follow_the_plugin_contract() -> None:
    assert PAGES, "PAGES is empty"
    for page in PAGES:
        check_page(page)


def test_launch_refuses_a_non_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a psylens run"):
        launch(tmp_path, block=False)
    run = make_run(tmp_path / "run", summary=False, activations=False)
    with pytest.raises(ValueError, match="out of range"):
        launch(run.path, port=70000, block=False)


def test_explorer_command(tmp_path: Path) -> None:
    cmd = explorer_command(tmp_path, port=8123)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4] == str(EXPLORER)
    assert cmd[cmd.index("--server.port") + 1] == "8123"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"  # this machine only, unless host= says otherwise
    assert cmd[-2:] == ["--", str(tmp_path)]
    cmd = explorer_command(tmp_path, port=8123, host="0.0.0.0", root=tmp_path.parent)
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0"
    assert cmd[-4:] == ["--", str(tmp_path), "--root", str(tmp_path.parent)]


def _plugin(title: str, needs: str) -> ModuleType:
    """A page module made on the fly: shown when ``needs`` is in the run."""
    page = ModuleType(f"fake_{title.lower()}")
    page.TITLE = title  # type: ignore[attr-defined]
    page.available = lambda run: run.has(needs)  # type: ignore[attr-defined]
    page.render = lambda run: __import__("streamlit").title(f"{title} page")  # type: ignore[attr-defined]
    return page


def test_pages_are_plugins_shown_when_available(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run")
    run.write_json("probes/results.json", {})
    steering = _plugin("Steering", "steering/results.json")  # its file is not in the run
    probes = _plugin("Probes", "probes/results.json")
    # AppTest cannot switch to callable pages, so check which page comes first (the default).
    names = list(kit.PAGE_MODULES)
    monkeypatch.setattr(kit, "PAGE_MODULES", [steering, probes, *names])
    at = run_app(monkeypatch, run.path)
    assert not at.exception, at.exception
    assert texts(at.title) == "Probes page"  # Steering skipped: not available
    monkeypatch.setattr(kit, "PAGE_MODULES", [steering, *names])
    at = run_app(monkeypatch, run.path)
    assert not at.exception, at.exception
    assert texts(at.title) == "Overview"


def test_page_without_render_is_named(tmp_path: Path) -> None:
    broken = ModuleType("broken_page")
    broken.TITLE = "Broken"  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="available"):
        check_page(broken)


def test_no_streamlit_pages_folder_beside_the_explorer() -> None:
    # Streamlit runs the files of a pages/ folder beside the main script as old-style pages
    # (blank pages, "Page not found", every AppTest rerun blank); explorer pages live in views/.
    assert not (EXPLORER.parent / "pages").exists(), "rename apps/pages/ (see psylens.apps.views)"


def test_cached_reads_follow_the_files(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    acts = cache.activations(run)
    assert len(acts) == 12 and acts.sites == ["resid_post"] and cache.activations(run) is acts
    assert cache.json_file(run, "summary/layers.json")["n"] == 12
    run.write_json("summary/layers.json", {"n": 5, "sites": {}})
    assert cache.json_file(run, "summary/layers.json")["n"] == 5  # new mtime, new read
    assert cache.run_meta(run)["model"]["spec"] == "tiny-random-llama"


def test_paths_outside_the_root_say_nothing_about_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    make_run(root / "mine", summary=False, activations=False)
    outside_run = make_run(tmp_path / "elsewhere" / "theirs", summary=False, activations=False)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-dir").mkdir()
    monkeypatch.setenv("PSYLENS_ROOT", str(root))
    said = set()
    for given in (tmp_path / "a-file", tmp_path / "a-dir", tmp_path / "nowhere", outside_run.path,
                  tmp_path / "elsewhere", Path("/etc/passwd"), root / ".." / "a-file"):
        at = run_app(monkeypatch, given)
        assert not at.exception, at.exception
        message = at.error[0].value.replace(str(given), "GIVEN")  # echoing what was typed is fine
        for leak in ("is a file", "not a psylens run", "does not exist", "Runs inside", "theirs", "cannot be read"):
            assert leak not in message, (given, message)
        assert "not inside the explorer's root" in message
        said.add(message)
        assert not at.title  # nothing rendered
    assert len(said) == 1  # the same words whatever is (or is not) there
    # control: inside the root the details are given, and a run opens
    (root / "a-file").write_text("x")
    at = run_app(monkeypatch, root / "a-file")
    assert "is a file" in at.error[0].value
    at = run_app(monkeypatch, root / "mine")
    assert not at.exception and "Overview" in texts(at.title)
    # a symlink inside the root that points out of it is outside
    (root / "link").symlink_to(outside_run.path)
    at = run_app(monkeypatch, root / "link")
    assert "not inside the explorer's root" in at.error[0].value


def test_the_root_defaults_to_the_directory_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PSYLENS_ROOT", raising=False)
    run = make_run(tmp_path / "runs" / "a", summary=False, activations=False)
    make_run(tmp_path / "runs" / "b", summary=False, activations=False)
    at = run_app(monkeypatch, run.path)
    assert not at.exception and "Overview" in texts(at.title)
    at.sidebar.text_input[0].input(str(tmp_path / "runs" / "b")).run()  # a sibling: outside the run given
    assert "not inside the explorer's root" in at.error[0].value
    at = run_app(monkeypatch, tmp_path / "runs")  # a folder of runs: its runs are listed and can be opened
    assert "runs/a" in at.error[0].value.replace("\\", "/") and "runs/b" in at.error[0].value.replace("\\", "/")
    at.sidebar.text_input[0].input(str(tmp_path / "runs" / "b")).run()
    assert not at.exception and "Overview" in texts(at.title)


def test_launch_binds_localhost_and_checks_the_root(tmp_path: Path) -> None:
    run = make_run(tmp_path / "runs" / "a", summary=False, activations=False)
    with pytest.raises(ValueError, match="not inside --root"):
        launch(run.path, root=tmp_path / "other", block=False)
