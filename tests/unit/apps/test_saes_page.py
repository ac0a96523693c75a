"""The explorer's Step SAEs page on a planted run (no model): label table, feature histogram, top steps
highlighted in their traces, position profile, decoder map, trace viewer; an empty run; corrupt files.

The planted run: traces whose sentences each carry one behaviour (the rule labeller's cues), step
vectors ``2 · e_slot + noise`` with one slot a behaviour, and a JumpReLU SAE whose latent ``j`` reads
slot ``j`` — so latent 0 *is* reflection, 1 emotion attribution, 2 conclusion, 3 the unlabelled
steps, and latents 4–5 are dead. ``features.json`` is written by the real ``features_report``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from psylens.apps.views import check_page, kit  # noqa: E402
from psylens.apps.views import saes as page  # noqa: E402
from psylens.runs import Run, create_run  # noqa: E402
from psylens.saes import artifacts as SA  # noqa: E402
from pages import messages, render_page

NAME = "L1-resid_post-delimiter-batchtopk-6"
D_IN, D_SAE = 8, 6
#: sentence → (behaviour slot): 0 reflection, 1 emotion attribution, 2 conclusion, 3 no label
SENTENCES = {
    0: ["Let me check that again.", "Let me verify this once more.", "Does that make sense?"],
    1: ["Mia feels sad about the gift.", "Tom felt angry at the referee.", "She is upset now."],
    2: ["Answer: B", "Therefore the answer is A.", "So the answer is C."],
    3: ["The bus left at noon.", "It rained on Tuesday morning.", "The shop sells bread."],
}
SLOT_LABEL = {0: "reflection", 1: "emotion_attribution", 2: "conclusion"}
PROMPT = "A short story about a day out. What happened? (A) one (B) two (C) three"


def _trace_slots(i: int) -> list[int]:
    """Trace i's steps: a fixed, varied order that ends with a conclusion."""
    g = np.random.default_rng(i)
    return [int(s) for s in g.choice([0, 1, 3], size=3 + i % 3)] + [2]


def write_sae_outputs(run: Run, n_traces: int = 12, name: str = NAME) -> None:
    """What ``psylens traces`` + ``psylens sae train`` write (saes/artifacts.py), planted and small."""
    from safetensors.torch import save_file

    from psylens.saes.data import StepSet, split_by_trace
    from psylens.saes.features import features_report

    traces, rows, texts = [], [], {}
    for i in range(n_traces):
        slots = _trace_slots(i)
        sents = [SENTENCES[s][(i + k) % 3] for k, s in enumerate(slots)]
        tid = f"task{i}#0"
        traces.append({"id": tid, "task_id": f"task{i}", "kind": "emotion", "prompt": PROMPT, "text": " ".join(sents),
                       "answer": "B", "correct": i % 2 == 0, "seed": i})
        for k, (s, text) in enumerate(zip(slots, sents)):
            rows.append((tid, k, s))
            texts[(tid, k)] = text
    run.file(SA.TRACES).parent.mkdir(parents=True, exist_ok=True)
    run.file(SA.TRACES).write_text("".join(json.dumps(t) + "\n" for t in traces))
    g = torch.Generator().manual_seed(0)
    acts = 0.05 * torch.randn(len(rows), D_IN, generator=g)
    for r, (_, _, s) in enumerate(rows):
        acts[r, s] += 2.0
    steps = StepSet(acts, tuple(r[0] for r in rows), tuple(r[1] for r in rows))
    steps.save(run.file(SA.steps_file("resid_post", 1, "delimiter-sentence")),
               meta={"traces_digest": "x", "model": "tiny-llama", "site": "resid_post", "layer": 1})
    folder = SA.sae_dir(name)
    run.file(folder).mkdir(parents=True, exist_ok=True)
    eye = torch.eye(D_IN)[:, :D_SAE].contiguous()  # latent j reads slot j
    weights = {"W_enc": eye, "b_enc": torch.zeros(D_SAE), "W_dec": eye.T.contiguous(), "b_dec": torch.zeros(D_IN),
               "threshold": torch.full((D_SAE,), 0.5)}
    save_file(weights, str(run.file(SA.sae_file(name, SA.SAE_WEIGHTS))))
    run.write_json(SA.sae_file(name, SA.SAE_CFG), {"architecture": "jumprelu", "d_in": D_IN, "d_sae": D_SAE,
                                                    "apply_b_dec_to_input": True, "normalize_activations": "none",
                                                    "dtype": "float32", "device": "cpu"})
    train_ids, held_ids = split_by_trace(steps.trace_ids, held_out=0.34, seed=0)
    run.write_json(SA.sae_file(name, SA.HELD_OUT), {"held_out": held_ids, "train": train_ids})
    run.write_json(SA.sae_file(name, SA.STEP_SAE), {
        "schema_version": SA.SCHEMA_VERSION, "model": "tiny-llama", "site": "resid_post", "layer": 1,
        "pooling": "delimiter", "segmentation": "sentence", "n_train_steps": len(steps.only(train_ids)),
        "n_held_out_steps": len(steps.only(held_ids)), "arch": "batchtopk", "saved_as": "JumpReLUSAE", "d_in": D_IN,
        "d_sae": D_SAE, "k": 1, "tokens": False})
    run.write_json(SA.sae_file(name, SA.METRICS), {
        "schema_version": SA.SCHEMA_VERSION, "explained_variance": 0.97, "explained_variance_ci": [0.95, 0.98],
        "l0": 1.0, "l0_ci": [1.0, 1.0], "dead_fraction": 2 / 6, "mse": 0.002, "train_dead_fraction": 2 / 6})
    z = page.encode_steps(weights, run.read_json(SA.sae_file(name, SA.SAE_CFG)), acts)
    from psylens.saes.labels import LABELS, label_step

    labels = {lab: torch.tensor([lab in label_step(texts[(t, s)], PROMPT) for t, s, _ in rows]) for lab in LABELS}
    report = features_report(z_all=z, trace_ids=steps.trace_ids, steps=steps.steps, positions=steps.positions(),
                             held_rows=steps.mask(held_ids), labels=labels, decoder=weights["W_dec"], texts=texts,
                             logit_lens=[[f" tok{j}", f" word{j}"] for j in range(D_SAE)], seed=0)
    run.write_json(SA.sae_file(name, SA.FEATURES), report, nan="null")


def make_run(root: Path, **kw: object) -> Run:
    run = create_run(root, command="psylens sae train", model={"spec": "tiny-llama"})
    write_sae_outputs(run, **kw)  # type: ignore[arg-type]
    return run




def render(monkeypatch: pytest.MonkeyPatch, run: Run) -> AppTest:
    return render_page(monkeypatch, "saes", run)



@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("saes") / "run").path


def _fresh(run_dir: Path, dest: Path) -> Run:
    import shutil

    from psylens.runs import open_run

    shutil.copytree(run_dir, dest)
    return open_run(dest)


def _features(run_dir: Path) -> dict:
    return json.loads((run_dir / SA.sae_file(NAME, SA.FEATURES)).read_text())


# -- contract and pure helpers ----------------------------------------------------------------------
def test_page_contract_and_registry(tmp_path: Path, run_dir: Path) -> None:
    from psylens.runs import open_run

    check_page(page)
    assert page.TITLE == "Step SAEs"
    assert "saes" in kit.PAGE_MODULES and page in kit.pages()
    assert page.sae_names(open_run(run_dir)) == [NAME]  # the step cache folder is not an SAE
    assert page.available(open_run(run_dir))
    assert not page.available(create_run(tmp_path / "bare", command="x"))


def test_label_table_recovers_the_planted_latents_and_the_control_does_not(run_dir: Path) -> None:
    t = page.label_table(_features(run_dir)).set_index("label")
    for slot, lab in SLOT_LABEL.items():
        assert t.loc[lab, "feature"] == slot and t.loc[lab, "AUROC (held-out)"] == pytest.approx(1.0)
        assert t.loc[lab, "control AUROC (shuffled)"] < 0.9  # the shuffled-label control fails
    assert page.label_table({"labels": {"x": 3}}).empty and page.label_table([]).empty
    opts = page.feature_options(_features(run_dir))
    assert opts[:3] == [2, 1, 0] or set(opts[:3]) == {0, 1, 2}  # labels' best latents first
    assert sorted(opts) == list(range(D_SAE))
    frame = page.feature_frame(_features(run_dir)).set_index("feature")
    assert frame.loc[0, "best for"] == "reflection" and "' tok0'" in frame.loc[0, "logit lens"]
    assert frame.loc[4, "frequency"] == 0.0 and frame.loc[4, "cluster"] == -1  # dead


def test_encode_steps_known_answers() -> None:
    x = torch.tensor([[2.0, 0.1, 0.0], [0.2, 0.0, 3.0]])
    w = {"W_enc": torch.eye(3), "b_enc": torch.zeros(3), "b_dec": torch.zeros(3), "W_dec": torch.eye(3) * 2,
         "threshold": torch.full((3,), 0.5)}
    z = page.encode_steps(w, {"architecture": "jumprelu"}, x)
    assert torch.equal(z, torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]))  # 0.1, 0.2 are under the threshold
    z = page.encode_steps(w, {"architecture": "standard"}, x)
    assert torch.equal(z, torch.relu(x))
    z = page.encode_steps(w, {"architecture": "topk", "k": 1, "rescale_acts_by_decoder_norm": True}, x)
    assert torch.equal(z, torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 6.0]]))  # × ‖W_dec row‖ = 2
    b = {**w, "b_dec": torch.tensor([1.0, 0.0, 0.0])}  # subtracted from the input before encoding
    assert page.encode_steps(b, {"architecture": "standard"}, x)[0, 0] == pytest.approx(1.0)
    assert page.encode_steps(b, {"architecture": "standard", "apply_b_dec_to_input": False}, x)[0, 0] == 2.0
    for bad, match in (({"architecture": "gated"}, "gated"),
                       ({"architecture": "standard", "normalize_activations": "layer_norm"}, "layer_norm"),
                       ({"architecture": "topk"}, "'k'")):
        with pytest.raises(ValueError, match=match):
            page.encode_steps(w, bad, x)
    with pytest.raises(ValueError, match="d_in 3"):
        page.encode_steps(w, {"architecture": "standard"}, torch.zeros(2, 4))


@pytest.mark.slow
def test_encode_steps_matches_saelens_for_every_saved_architecture(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from psylens.saes.train import SAETrainConfig, build_training_sae, encode, load_sae, save_sae

    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    for arch in ("batchtopk", "topk", "jumprelu", "standard"):
        sae = build_training_sae(SAETrainConfig(arch=arch, d_sae=32, k=4, normalize="none"), 16)
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(0.3 * torch.randn_like(p))
            if hasattr(sae, "threshold"):
                sae.threshold.data = 0.2 * torch.rand_like(sae.threshold)
        save_sae(sae, tmp_path / arch)
        want, _ = encode(load_sae(tmp_path / arch), x)
        cfg = json.loads((tmp_path / arch / SA.SAE_CFG).read_text())
        got = page.encode_steps(load_file(str(tmp_path / arch / SA.SAE_WEIGHTS)), cfg, x)
        assert (want != 0).sum() > 0, arch
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=arch)


def test_histogram_separates_the_planted_label_and_the_control_latent_does_not(run_dir: Path) -> None:
    from psylens.runs import open_run
    from psylens.saes.data import StepSet

    steps, _ = StepSet.load(run_dir / SA.steps_file("resid_post", 1, "delimiter-sentence"))
    run = open_run(run_dir)
    w = run.read_tensors(SA.sae_file(NAME, SA.SAE_WEIGHTS))
    z = page.encode_steps(w, run.read_json(SA.sae_file(NAME, SA.SAE_CFG)), steps.acts).numpy()
    traces = {json.loads(line)["id"]: json.loads(line) for line in (run_dir / SA.TRACES).read_text().splitlines()}
    flags = [("reflection" in page.step_labels(traces[t])[s]["labels"]) for t, s in zip(steps.trace_ids, steps.steps)]
    fig = page.histogram_figure(z[:, 0], 0, labelled=flags, label="reflection")
    lab, rest = fig.data
    assert len(lab.x) == sum(flags) and len(rest.x) == 0  # latent 0 fires on every reflection step, nowhere else
    control = page.histogram_figure(z[:, 3], 3, labelled=flags, label="reflection").data
    assert len(control[0].x) == 0 and len(control[1].x) > 0  # the unlabelled-steps latent: never on reflection
    plain = page.histogram_figure(z[:, 4], 4).data
    assert len(plain) == 1 and len(plain[0].x) == 0  # dead
    with pytest.raises(ValueError, match="one flag a step"):
        page.histogram_figure(z[:, 0], 0, labelled=flags[:-1], label="reflection")


def test_top_features_and_trace_html(run_dir: Path) -> None:
    top, val = page.top_features(np.array([[0.0, 2.0, 1.0], [0.0, 0.0, 0.0]]))
    assert top.tolist() == [1, -1] and val.tolist() == [2.0, 0.0]
    trace = json.loads((run_dir / SA.TRACES).read_text().splitlines()[0])
    steps = page.step_labels(trace)
    slots = _trace_slots(0)
    assert len(steps) == len(slots)
    for s, slot in zip(steps, slots):  # the labeller gives each planted sentence its behaviour
        assert (SLOT_LABEL.get(slot) in s["labels"]) if slot in SLOT_LABEL else s["labels"] == []
    out = page.trace_html(trace["text"], steps, [(slot, 2.0) for slot in slots])
    assert out.count("<span") == len(steps) and out.count("<sup") == len(steps)
    assert f'{page.LABEL_COLORS["conclusion"]}33' in out and "top feature 2" in out
    hl = page.highlight_step_html("a <b> c & d", 2, 5, note='step "1"')
    assert "<mark" in hl and "&lt;b&gt;</mark>" in hl and "&amp; d" in hl and "&quot;1&quot;" in hl


def test_position_profile_and_decoder_map(run_dir: Path) -> None:
    feats = _features(run_dir)
    rec = feats["features"][2]  # conclusion: always the last step
    fig = page.position_figure(rec["position_profile"], 2)
    bars = fig.data[0]
    assert bars.y[-1] > 0.5 and sum(bars.y[:-1]) == pytest.approx(0.0)  # only in the last bin (it shares it)
    with pytest.raises(ValueError, match="bin edges"):
        page.position_figure({"bin_edges": [0, 1], "rate": [0.1, 0.2]}, 0)
    fig = page.decoder_map_figure(feats, selected=0)
    names = [t.name for t in fig.data]
    assert "dead" in names and names[-1] == "feature 0"
    assert sum(len(t.x) for t in fig.data if t.name != "feature 0") == D_SAE
    with pytest.raises(ValueError, match="xy"):
        page.decoder_map_figure({"features": [{"feature": 0}]})


# -- rendering ------------------------------------------------------------------------------------
def test_renders_the_planted_run(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from psylens.runs import open_run

    at = render(monkeypatch, open_run(run_dir))
    assert not at.exception, at.exception
    assert not at.warning and not at.error, messages(at)
    assert len(at.get("plotly_chart")) == 3  # histogram, position profile, decoder map
    assert len(at.dataframe) == 2  # label table, trace steps
    at.selectbox(key="saes_feature").set_value(0).run()
    assert not at.exception and not at.warning, messages(at)
    md = " ".join(str(m.value) for m in at.markdown)
    assert "<mark" in md and "' tok0'" in md
    tid = "task1#0"
    at.selectbox(key="saes_trace").set_value(tid).run()
    assert not at.exception and not at.warning, messages(at)
    steps = at.dataframe[1].value
    slots = _trace_slots(1)
    assert steps["top feature"].tolist() == slots  # each step's top latent is its planted behaviour's
    assert "f2</sup>" in " ".join(str(m.value) for m in at.markdown)


def test_empty_run_says_what_is_missing_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = render(monkeypatch, create_run(tmp_path / "empty", command="x"))
    assert not at.exception, at.exception
    msgs = messages(at)
    assert len(msgs) == 1 and "step_sae.json" in msgs[0] and "psylens sae train" in msgs[0] and "\n" not in msgs[0]


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: max(1, len(data) // 2)])


def _set(rel: str, fn) -> tuple[str, object]:  # noqa: ANN001
    return rel, fn


STEPS_REL = SA.steps_file("resid_post", 1, "delimiter-sentence")
CORRUPTIONS = {
    "truncated features": (SA.sae_file(NAME, SA.FEATURES), _truncate),
    "features a list": (SA.sae_file(NAME, SA.FEATURES), lambda p: p.write_text("[1, 2]")),
    "newer features": (SA.sae_file(NAME, SA.FEATURES),
                       lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "schema_version": 99}))),
    "wrong-typed features fields": (SA.sae_file(NAME, SA.FEATURES), lambda p: p.write_text(json.dumps(
        {"labels": {"reflection": {"feature": "x", "auroc": "high"}, "b": 3},
         "features": [{"feature": 0, "frequency": "often", "top_steps": 5, "position_profile": [1], "xy": "here",
                       "logit_lens": 7}, 3, "x"], "clusters": 2}))),
    "truncated weights": (SA.sae_file(NAME, SA.SAE_WEIGHTS), _truncate),
    "unknown architecture": (SA.sae_file(NAME, SA.SAE_CFG), lambda p: p.write_text('{"architecture": "gated"}')),
    "truncated step cache": (STEPS_REL, _truncate),
    "garbage traces": (SA.TRACES, lambda p: p.write_bytes(b"\xff\xfe\x00garbage")),
    "truncated step record": (SA.sae_file(NAME, SA.STEP_SAE), _truncate),
    "wrong-typed step record": (SA.sae_file(NAME, SA.STEP_SAE), lambda p: p.write_text('{"layer": "one", "site": 3}')),
    "truncated metrics": (SA.sae_file(NAME, SA.METRICS), _truncate),
    "cache of other traces": (SA.sae_file(NAME, SA.HELD_OUT), lambda p: p.write_text('{"held_out": ["a"], "train": ["b"]}')),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_each_corrupt_file_is_one_line_never_a_traceback(case: str, run_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    rel, corrupt = CORRUPTIONS[case]
    run = _fresh(run_dir, tmp_path / "run")
    corrupt(run.file(rel))
    at = render(monkeypatch, run)
    assert not at.exception, f"{case}: {at.exception}"
    msgs = messages(at)
    assert all("\n" not in m and len(m) < 600 and "Traceback" not in m for m in msgs), msgs
    assert any(rel in m or Path(rel).name in m for m in msgs), (case, msgs)


def test_missing_files_are_info_and_the_rest_still_shows(run_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = _fresh(run_dir, tmp_path / "run")
    run.file(STEPS_REL).unlink()
    run.file(SA.TRACES).unlink()
    at = render(monkeypatch, run)
    assert not at.exception and not at.warning, messages(at)
    infos = " ".join(at.info.values)
    assert STEPS_REL in infos and SA.TRACES in infos
    assert len(at.dataframe) == 1 and len(at.get("plotly_chart")) == 2  # label table; position, map
    md = " ".join(str(m.value) for m in at.markdown)
    assert "<mark" in md  # top steps fall back to the context features.json kept


def test_several_saes_offer_a_choice(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    run = _fresh(run_dir, tmp_path / "run")
    shutil.copytree(run.file(SA.sae_dir(NAME)), run.file(SA.sae_dir("second")))
    assert page.sae_names(run) == sorted([NAME, "second"])
    at = render(monkeypatch, run)
    assert not at.exception and not at.warning, messages(at)
    at.selectbox(key="saes_name").set_value("second").run()
    assert not at.exception and not at.warning, messages(at)


def _steering_summary() -> dict:
    cond = lambda m, ci, acc: {"label_steps_per_trace": m, "label_steps_per_trace_ci": ci, "accuracy": acc,  # noqa: E731
                               "accuracy_ci": [acc - 0.1, acc + 0.1], "distinct_2": 0.9, "n_traces": 40}
    eff = lambda r, ci, d: {"label_steps_ratio": r, "label_steps_ratio_ci": ci,  # noqa: E731
                            "accuracy_diff": {"diff": d, "ci95": [d - 0.05, d + 0.05]}}
    return {"feature": 2, "label": "reflection", "layer": 1, "alphas": [-8.0],
            "conditions": {"none": cond(0.5, [0.4, 0.6], 0.3), "feature@-8": cond(0.2, [0.1, 0.3], 0.28),
                           "random@-8": cond(0.48, [0.38, 0.58], 0.31)},
            "effects": {"feature@-8": eff(0.4, [0.25, 0.6], -0.02), "random@-8": eff(0.96, [0.8, 1.1], 0.01)},
            "target": {"condition": "feature@-8", "ratio": 0.4, "accuracy_diff": -0.02, "random_ratio": 0.96,
                       "threshold_ratio": 0.5, "threshold_accuracy": 0.05, "met": True}}


def test_feature_steering_section(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from psylens.apps.views import saes as page

    summary = _steering_summary()
    t = page.steering_table(summary)
    assert t["condition"].tolist() == ["none", "feature@-8", "random@-8"]
    assert t["ratio vs none"].tolist() == ["—", "0.40 [0.25, 0.60]", "0.96 [0.80, 1.10]"]
    assert t["perplexity ratio vs none"].isna().all()  # a summary written before fluency was read
    fig = page.steering_figure(summary)
    assert list(fig.data[0].y) == [0.5, 0.2, 0.48] and list(fig.data[0].error_y.arrayminus) == pytest.approx([0.1, 0.1, 0.1])
    # the page shows the section when the file is there, nothing when it is not, one line when it is corrupt
    run = _fresh(run_dir, tmp_path / "run")
    rel = SA.sae_file(NAME, SA.STEERING_SUMMARY)
    run.file(rel).parent.mkdir(parents=True)
    run.file(rel).write_text(json.dumps(summary))
    at = render(monkeypatch, run)
    assert not at.exception and not at.warning, messages(at)
    assert len(at.get("plotly_chart")) == 4 and len(at.dataframe) == 3
    assert any("**met**" in str(c.value) for c in at.caption)
    # with the directional ablation, its own verdict beside its control
    ablated = {**summary, "target_ablate": {"condition": "feature@ablate", "ratio": 0.0, "accuracy_diff": -0.04,
                                             "random_ratio": 1.0, "threshold_ratio": 0.5, "threshold_accuracy": 0.05,
                                             "perplexity_ratio": 4.2, "max_perplexity_ratio": 1.5, "fluent": False,
                                             "met_ignoring_fluency": True, "met": False}}
    run.file(rel).write_text(json.dumps(ablated))
    at = render(monkeypatch, run)
    assert not at.exception and not at.warning, messages(at)
    caps = [str(c.value) for c in at.caption]
    assert any("feature@ablate" in c and "**not met**" in c and "random direction ablated 1.00" in c
               and "the text does not" in c and "perplexity ratio 4.20" in c for c in caps), caps
    _truncate(run.file(rel))
    at = render(monkeypatch, run)
    assert not at.exception and len(at.get("plotly_chart")) == 3
    assert any(rel in m for m in messages(at)), messages(at)


def test_target_caption_names_both_controls_and_the_verdict():
    from psylens.apps.views.saes import target_caption

    t = {"condition": "feature@-8", "met": False, "ratio": 0.4, "random_ratio": 0.9, "random_feature_ratio": 0.45,
         "accuracy_diff": 0.01, "threshold_ratio": 0.5, "threshold_accuracy": 0.05}
    said = target_caption(t, "random vector", 412)
    assert "**not met**" in said and "random vector 0.90" in said and "random feature (latent 412) 0.45" in said
    # an older summary without the random feature: the caption leaves it out
    old = {k: v for k, v in t.items() if k != "random_feature_ratio"} | {"random_feature_ratio": None}
    assert "random feature" not in target_caption(old, "random vector", None)
    assert "**met**" in target_caption({**t, "met": True}, "random vector", 412)
