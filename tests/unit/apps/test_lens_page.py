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
from psylens.steering.vector import SteeringVector  # noqa: E402
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


def planted_vector(d: int, emotion: str = "joy", layers: tuple[int, ...] = (1, 2),
                   alpha: float = 3.5) -> SteeringVector:
    """What `psylens steer sweep` saves: a band of layers, non-unit rows, its own alpha and notes."""
    g = torch.Generator().manual_seed(7)
    return SteeringVector(layers=layers, vectors=torch.randn(len(layers), d, generator=g), alpha=alpha,
                          positions="all", label=emotion,
                          meta={"source": "psylens steer sweep", "scale": 0.25, "scale_reference": "norm"})


def plant(run: Run, sv: SteeringVector) -> SteeringVector:
    sv.save(run.file(SA.vector_file(str(sv.label))))
    return sv


class ApplySpy:
    """Records every SteeringVector that is applied — the only way the page steers."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.applied: list[SteeringVector] = []
        original = SteeringVector.apply

        def apply(sv: SteeringVector, model):  # noqa: ANN001, ANN202
            self.applied.append(sv)
            return original(sv, model)

        monkeypatch.setattr(SteeringVector, "apply", apply)




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


# -- the sweep's picked vectors ---------------------------------------------------------------------
def test_picked_vectors_are_listed_loaded_as_saved_and_scaled_on_alpha_only(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", "tiny")
    assert page.present_vectors(run) == []  # no sweep: nothing to offer
    calm, joy = plant(run, planted_vector(32, "calm")), plant(run, planted_vector(32, "joy", layers=(0,), alpha=-2.0))
    run.file(f"{SA.VECTORS}/notes.txt").write_text("not a vector")
    assert page.present_vectors(run) == ["joy", "calm"]  # the basic six first, other files ignored
    loaded = page.load_vector(run, "calm")
    assert loaded.equal(calm)  # exactly as saved: layers, rows, alpha, mode, positions, site, meta
    doubled = page.scaled_vector(loaded, 2.0)
    assert doubled.equal(calm.replace(alpha=7.0)) and loaded.alpha == 3.5  # alpha × multiplier, nothing else
    assert page.scaled_vector(page.load_vector(run, "joy"), 1).equal(joy)
    assert "layers 1–2" not in page.describe_vector(loaded) and "layers 1, 2" in page.describe_vector(loaded)
    assert "alpha 3.5 = 0.25 × the residual norm" in page.describe_vector(loaded)
    with pytest.raises(ValueError, match=r"multiplier .* finite number, got nan.*1\.0"):
        page.scaled_vector(loaded, float("nan"))
    with pytest.raises(ValueError, match=r"no picked vector for 'fear'.*\['joy', 'calm'\].*steer sweep"):
        page.load_vector(run, "fear")
    run.file(SA.vector_file("joy")).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="joy.safetensors"):
        page.load_vector(run, "joy")


def test_generation_is_steered_by_exactly_the_picked_vector(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    m = tiny_model("llama")
    dirs = _dirs(m.d_model, [0, 1, 2])
    saved = planted_vector(m.d_model, alpha=6.0)
    expected = saved.replace(alpha=9.0)
    plain, _, none_alpha = page.generate_and_read(m, dirs, 1, "Say something.", max_new_tokens=4, read_steered=True)
    spy = ApplySpy(monkeypatch)
    lens, text, alpha = page.generate_and_read(m, dirs, 1, "Say something.", max_new_tokens=4,
                                               vector=page.scaled_vector(saved, 1.5), read_steered=True)
    assert none_alpha is None and alpha == pytest.approx(9.0)
    assert len(spy.applied) == 2 and all(sv.equal(expected) for sv in spy.applied)  # generation, then the read
    with expected.apply(m):
        assert text == m.generate("Say something.", max_new_tokens=4)[0]
    formatted = m.format_prompt("Say something.")
    from psylens.models import prompt_special_tokens

    want = token_lens(m, text or " ", dirs, 1, prompt=formatted, add_special_tokens=prompt_special_tokens(m),
                      steer=expected)
    assert torch.equal(lens.matrix, want.matrix)
    n = plain.n_prompt  # the control: the same prompt unsteered reads differently at the steered layer
    assert not torch.allclose(lens.matrix[:n], plain.matrix[:n])
    with pytest.raises(ValueError, match="steer with one thing.*steer_emotion=None"):
        page.generate_and_read(m, dirs, 1, "Say something.", steer_emotion="joy", vector=saved)


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
    # no picked vectors in the run: today's controls only
    assert "lens_steer_by" not in [r.key for r in at.radio] and "lens_vector" not in [s.key for s in at.selectbox]
    assert page.VECTOR_STEERING not in str([r.options for r in at.radio])
    at.selectbox(key="lens_steer").set_value("joy").run()
    at.slider(key="lens_tokens").set_value(6).run()
    at.button(key="lens_generate").click().run()
    assert not at.exception and not at.error, (at.exception, messages(at))
    assert any("Steered with joy at layer" in c for c in at.caption.values), at.caption.values
    at.toggle(key="lens_show_prompt").set_value(True).run()  # the result survives a rerun
    assert not at.exception and len(at.get("plotly_chart")) == 2


def test_the_page_offers_picked_vectors_and_steers_with_exactly_them(model_dir: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run", str(model_dir))
    saved = plant(run, planted_vector(32, "joy", layers=(1, 2), alpha=3.5))
    plant(run, planted_vector(32, "sadness", layers=(0,), alpha=2.0))
    spy = ApplySpy(monkeypatch)
    at = render(monkeypatch, run)
    at.radio(key="lens_mode").set_value("Generate from a prompt").run()
    assert not at.exception, at.exception
    by = at.radio(key="lens_steer_by")
    assert list(by.options) == [page.DIRECTION_STEERING, page.VECTOR_STEERING]
    assert by.value == page.DIRECTION_STEERING and at.selectbox(key="lens_steer")  # today's option stays the default
    by.set_value(page.VECTOR_STEERING).run()
    assert list(at.selectbox(key="lens_vector").options) == ["joy", "sadness"]
    assert any("picked joy vector as saved: layers 1, 2, alpha 3.5" in c for c in at.caption.values), at.caption.values
    at.number_input(key="lens_vector_mult").set_value(2.0).run()
    at.slider(key="lens_tokens").set_value(4).run()
    at.button(key="lens_generate").click().run()
    assert not at.exception and not at.error, (at.exception, messages(at))
    assert spy.applied and all(sv.equal(saved.replace(alpha=7.0)) for sv in spy.applied)
    assert any("picked joy vector at layers 1, 2, alpha 7 (2 × the saved 3.5)" in c for c in at.caption.values), \
        at.caption.values
    # a corrupt vector file is one line, not a traceback
    run.file(SA.vector_file("sadness")).write_bytes(b"garbage")
    at.selectbox(key="lens_vector").set_value("sadness").run()
    assert not at.exception
    assert [w for w in at.warning.values if SA.vector_file("sadness") in w and "\n" not in w], messages(at)
