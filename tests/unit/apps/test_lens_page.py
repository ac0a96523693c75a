"""The explorer's Emotion lens page: sources, figures, the button-loaded model under the lock (tiny model on disk)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from psylens.apps.views import check_page, kit  # noqa: E402
from psylens.apps.views import lens as page  # noqa: E402
from psylens.probes import artifacts as PA  # noqa: E402
from psylens.probes.directions import Directions  # noqa: E402
from psylens.runs import Run, create_run  # noqa: E402
from psylens.steering import artifacts as SA  # noqa: E402
from psylens.validation import artifacts as VA  # noqa: E402
from psylens.validation.lens import TokenLens, token_lens  # noqa: E402
from pages import messages, render_page
from tests.conftest import build_tiny_hf  # noqa: E402

EMOS = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "calm"]


def _dirs(d: int, layers: list[int], emotions: list[str] = EMOS) -> Directions:
    g = torch.Generator().manual_seed(0)
    return Directions.from_raw(torch.randn(len(emotions), len(layers), d, generator=g), emotions, layers)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, smollm_tokenizer) -> Path:
    d = tmp_path_factory.mktemp("tinymodel") / "model"
    build_tiny_hf("llama").save_pretrained(d)
    smollm_tokenizer.save_pretrained(d)
    return d


def make_run(root: Path, spec: str, *, sources: tuple[str, ...] = (VA.DIRECTIONS,), d: int = 32) -> Run:
    run = create_run(root, command="psylens validate", model={"spec": spec})
    for rel in sources:
        _dirs(d, [0, 1, 2]).save(run.file(rel))
    return run




def render(monkeypatch: pytest.MonkeyPatch, run: Run) -> AppTest:
    return render_page(monkeypatch, "lens", run, timeout=120)



def _lens() -> TokenLens:
    matrix = torch.tensor([[0.0, 1.0], [2.0, -1.0], [3.0, 0.5], [-4.0, 0.0]])
    return TokenLens(("<p>", "Hi", " there", "!"), (1, 2, 3, 4), ("joy", "fear"), matrix, layer=1, n_prompt=1)


# -- contract and pure helpers ----------------------------------------------------------------------
def test_page_contract_and_sources_in_order(tmp_path: Path) -> None:
    check_page(page)
    assert page.TITLE == "Emotion lens"
    assert "lens" in kit.PAGE_MODULES and page in kit.pages()
    bare = create_run(tmp_path / "bare", command="x")
    assert not page.available(bare) and page.present_sources(bare) == []
    run = make_run(tmp_path / "run", "tiny", sources=(SA.EXPRESSION_DIRECTIONS, PA.DIRECTIONS))
    assert page.available(run)
    labels = page.present_sources(run)
    assert [page.DIRECTION_SOURCES[x].rel for x in labels] == [PA.DIRECTIONS, SA.EXPRESSION_DIRECTIONS]
    _dirs(8, [0]).save(run.file(VA.DIRECTIONS))
    assert page.DIRECTION_SOURCES[page.present_sources(run)[0]].rel == VA.DIRECTIONS  # validated ones first
    assert page.default_emotions(tuple(EMOS)) == EMOS[:6]
    assert page.default_emotions(("joy", "calm")) == ["joy", "calm"]


def test_heatmap_is_tokens_by_emotions_with_the_token_on_hover() -> None:
    fig = page.heatmap_figure(_lens(), ["fear", "joy"])
    hm = fig.data[0]
    assert list(hm.y) == ["fear", "joy"] and list(hm.x) == [0, 1, 2, 3]
    assert hm.z[1][2] == pytest.approx(3.0) and hm.z[0][0] == pytest.approx(1.0)  # joy at " there"; fear at the prompt
    assert hm.customdata[0][2][0] == " there" and hm.customdata[0][0][1] == "prompt"
    assert "customdata[0]" in hm.hovertemplate
    text_only = page.heatmap_figure(_lens(), ["joy"], show_prompt=False).data[0]
    assert list(text_only.x) == [0, 1, 2] and text_only.z[0] == pytest.approx([2.0, 3.0, -4.0])
    assert text_only.customdata[0][0][0] == "Hi"


def test_a_line_per_emotion_with_tokens_on_hover() -> None:
    fig = page.lines_figure(_lens(), ["joy", "fear"])
    assert [t.name for t in fig.data] == ["joy", "fear"]
    assert list(fig.data[0].y) == pytest.approx([0.0, 2.0, 3.0, -4.0])
    assert list(fig.data[0].customdata) == ["<p>", "Hi", " there", "!"]
    assert "customdata" in fig.data[0].hovertemplate
    assert fig.data[0].line.color == kit.emotion_color("joy")
    assert len(fig.layout.shapes) == 1  # the prompt shaded
    hidden = page.lines_figure(_lens(), ["joy"], show_prompt=False)
    assert list(hidden.data[0].y) == pytest.approx([2.0, 3.0, -4.0]) and not hidden.layout.shapes


def test_model_use_holds_the_lock(tiny_model) -> None:
    m = tiny_model("llama")
    dirs = _dirs(m.d_model, [0, 1, 2])
    seen: list[bool] = []
    hooks_before = len(m.hf_model.model.layers[1]._forward_hooks)
    handle = m.hf_model.register_forward_pre_hook(lambda mod, args: seen.append(kit.MODEL_LOCK.locked()))
    try:
        token_lens(m, "A plain sentence.", dirs, 1)  # the control: the library itself takes no lock
        assert seen == [False]
        seen.clear()
        page.read_text(m, dirs, 1, "A plain sentence.")
        lens, text, alpha = page.generate_and_read(m, dirs, 1, "Say something.", max_new_tokens=3, steer_emotion="joy",
                                                   scale=0.5)
    finally:
        handle.remove()
    assert len(seen) >= 3 and all(seen), seen
    assert alpha is not None and alpha > 0 and lens.n_prompt > 0 and len(lens.tokens) > lens.n_prompt
    assert len(m.hf_model.model.layers[1]._forward_hooks) == hooks_before  # the steering was removed


def test_steered_generation_reads_differently_from_unsteered(tiny_model) -> None:
    m = tiny_model("llama")
    dirs = _dirs(m.d_model, [0, 1, 2])
    plain, _, none_alpha = page.generate_and_read(m, dirs, 1, "Say something.", max_new_tokens=4)
    same, _, _ = page.generate_and_read(m, dirs, 1, "Say something.", max_new_tokens=4, steer_emotion="joy", scale=0.5,
                                        read_steered=True)
    assert none_alpha is None
    col = list(dirs.emotions).index("joy")
    n = plain.n_prompt
    # read with the steering on at the read layer: every prompt token's joy projection rises by alpha
    assert (same.matrix[:n, col] - plain.matrix[:n, col]).min() > 0


# -- rendering ------------------------------------------------------------------------------------
def test_empty_run_and_a_run_without_a_model_say_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = render(monkeypatch, create_run(tmp_path / "empty", command="x"))
    assert not at.exception, at.exception
    msgs = messages(at)
    assert len(msgs) == 1 and VA.DIRECTIONS in msgs[0] and "\n" not in msgs[0]
    run = create_run(tmp_path / "nomodel", command="x")
    _dirs(32, [0, 1, 2]).save(run.file(PA.DIRECTIONS))
    at = render(monkeypatch, run)
    assert not at.exception and any("does not name the run's model" in m for m in messages(at)), messages(at)


def test_corrupt_directions_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run", "tiny")
    data = run.file(VA.DIRECTIONS).read_bytes()
    run.file(VA.DIRECTIONS).write_bytes(data[: len(data) // 2])
    at = render(monkeypatch, run)
    assert not at.exception, at.exception
    assert [m for m in at.warning.values if VA.DIRECTIONS in m and "\n" not in m], messages(at)


def test_read_and_generate_in_the_page(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run", str(model_dir))
    at = render(monkeypatch, run)
    assert not at.exception, at.exception
    assert not at.get("plotly_chart")  # no model is loaded before the button
    assert any(str(model_dir) in c for c in at.caption.values)
    at.button(key="lens_read").click().run()
    assert not at.exception and not at.error, (at.exception, messages(at))
    assert len(at.get("plotly_chart")) == 2
    at.radio(key="lens_mode").set_value("Generate from a prompt").run()
    at.selectbox(key="lens_steer").set_value("joy").run()
    at.slider(key="lens_tokens").set_value(6).run()
    at.button(key="lens_generate").click().run()
    assert not at.exception and not at.error, (at.exception, messages(at))
    assert any("Steered with joy at layer" in c for c in at.caption.values), at.caption.values
    at.toggle(key="lens_show_prompt").set_value(True).run()  # the result survives a rerun
    assert not at.exception and len(at.get("plotly_chart")) == 2
