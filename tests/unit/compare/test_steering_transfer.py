from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.unit.compare.compare_planted import tiny_dirs  # noqa: F401  (fixture)
from psylens.compare.pair import ModelPair
from psylens.compare.steering_transfer import SteeringTransferConfig, steering_transfer
from psylens.concepts import feel_words
from psylens.models import load_model
from psylens.probes import Directions
from psylens.stimuli import EMOTIONS
from psylens.validation.gates import word_token_ids

LAYER = 2  # the last layer: the steered vector reaches the unembedding almost unchanged
CFG = SteeringTransferConfig(layer=LAYER, scale=4.0, n_contexts=3, n_random=5)
TARGET = "joy"


@pytest.fixture(scope="module")
def setup(tiny_dirs):
    base = load_model(tiny_dirs["base"], device="cpu")
    twin = load_model(tiny_dirs["base"], device="cpu")
    tuned = load_model(tiny_dirs["base"], device="cpu")
    with torch.no_grad():  # a random init's logits are nearly flat: sharpen the unembedding (all three alike)
        for m in (base, twin, tuned):
            m.hf_model.lm_head.weight.mul_(50.0)
    words = feel_words()
    ids = word_token_ids(base.tokenizer, {e: words[e] for e in EMOTIONS})
    w_u = base.hf_model.lm_head.weight.detach()
    # joy's direction: the mean unembedding of its words (it raises them); the others: random
    g = torch.Generator().manual_seed(2)
    raw = torch.randn(len(EMOTIONS), 3, 32, generator=g)
    raw[EMOTIONS.index(TARGET)] = w_u[ids[TARGET]].mean(0)
    dirs = Directions.from_raw(raw, EMOTIONS, [0, 1, 2], meta={"kind": "test"})
    with torch.no_grad():  # the tuned model can no longer say joy's words
        tuned.hf_model.lm_head.weight[ids[TARGET]] = 0.0
    return base, twin, tuned, dirs


def test_tuned_model_loses_the_planted_emotion(setup):
    base, _, tuned, dirs = setup
    res = steering_transfer(ModelPair(base, tuned), dirs, CFG)
    b, t = res["base"]["own_shift"], res["tuned"]["own_shift"]
    assert b[TARGET] > 1.0                     # the base's joy vector raises joy's words
    assert t[TARGET] < b[TARGET] - 1.0         # the tuned model cannot
    others = [abs(t[e] - b[e]) for e in EMOTIONS if e != TARGET]
    assert max(others) < 0.5 * (b[TARGET] - t[TARGET])
    assert res["alpha"] > 0 and res["layer"] == LAYER


def test_model_against_itself_transfers_exactly(setup):
    base, twin, _, dirs = setup
    res = steering_transfer(ModelPair(base, twin), dirs, CFG)
    b, t = res["base"], res["tuned"]  # the same numbers up to float rounding (alpha is passed on rounded)
    assert b["passed"] == t["passed"] and b["rows_won"] == t["rows_won"]
    assert t["value"] == pytest.approx(b["value"], abs=1e-4)
    assert t["own_shift"] == pytest.approx(b["own_shift"], abs=1e-4)
    assert res["own_shift_difference"] == pytest.approx(0.0, abs=1e-4)
    assert all(abs(v) < 1e-4 for v in res["own_shift_difference_ci95"])


def test_config_is_validated():
    with pytest.raises(ValueError, match="n_random"):
        SteeringTransferConfig(n_random=2)


# -- the read-back gate on both models -------------------------------------------------------------------
RB = replace(CFG, n_prompts=4, max_new_tokens=6, batch_size=32)


@pytest.fixture(scope="module")
def mute(tiny_dirs):
    """A "tuned" model whose unembedding is all zeros: every next-token distribution is uniform, so neither the
    "… I feel" words nor its greedy text can follow any steering."""
    m = load_model(tiny_dirs["base"], device="cpu")
    with torch.no_grad():
        m.hf_model.lm_head.weight.zero_()
    return m


def test_read_back_on_both_models_and_the_difference(setup, mute):
    """Known answer: a model that cannot carry steering into its text wins read-back exactly 0 times (and so does
    its random control), the base wins some: tuned − base is −(base win rate), its interval excludes 0."""
    base, _, _, dirs = setup
    res = steering_transfer(ModelPair(base, mute), dirs, RB)
    rb = res["read_back"]
    assert res["gates"] == ["feels_matrix", "read_back"] and rb["n_prompts"] == 4
    assert rb["base"]["value"] > 0.2
    assert rb["tuned"]["value"] == 0.0 and rb["tuned"]["control"] == 0.0 and rb["tuned"]["passed"] is False
    assert rb["difference"] == pytest.approx(-rb["base"]["value"])
    assert rb["difference_ci95"][1] < 0
    assert len(rb["items"]) == 4 * len(res["emotions"]) and not any(i["tuned_win"] for i in rb["items"])
    assert all(v == 0.0 for v in res["tuned"]["own_shift"].values())  # feels_matrix agrees: no shift at all


def test_read_back_of_a_model_against_itself_is_identical(setup):
    """Control: the same model twice gives the same win rates, control and a difference of exactly 0."""
    base, twin, _, dirs = setup
    res = steering_transfer(ModelPair(base, twin), dirs, RB)
    rb = res["read_back"]
    assert rb["tuned"]["value"] == rb["base"]["value"] and rb["tuned"]["control"] == rb["base"]["control"]
    assert rb["difference"] == 0.0 and rb["difference_ci95"] == [0.0, 0.0]
    assert [i["base_steered_text"] for i in rb["items"]] == [i["tuned_steered_text"] for i in rb["items"]]


def test_read_back_can_be_left_out(setup):
    base, twin, _, dirs = setup
    res = steering_transfer(ModelPair(base, twin), dirs, replace(CFG, read_back=False))
    assert res["read_back"] is None and res["gates"] == ["feels_matrix"]


# -- the base's picked steering vectors (psylens steer sweep) --------------------------------------------
def _sweep_run(path, model, dirs, alpha):
    """A run of ``model`` holding sweep vectors: every emotion's story direction at LAYER with ``alpha``."""
    from psylens.runs import create_run
    from psylens.steering import SteeringVector
    from psylens.steering.artifacts import vector_file

    run = create_run(path, command="psylens steer sweep")
    run.add_model("model", model)
    for e in EMOTIONS:
        sv = SteeringVector.from_directions(dirs, e, [LAYER], alpha=alpha,
                                            meta={"model": model.spec, "layer": LAYER, "scale": 1.0})
        run.file(vector_file(e)).parent.mkdir(parents=True, exist_ok=True)
        sv.save(run.file(vector_file(e)))
    return run


def test_sweep_vectors_are_used_when_present(setup, tmp_path):
    """Known answer: the base run's vectors are the directions with the alpha *negated*: joy's own shift flips sign
    (rises under the directions, the control; falls under the vectors), the same vectors steer the tuned model, the
    run keeps copies and the steered side-by-side text uses them."""
    from psylens.compare import artifacts as art
    from psylens.compare.generations import GenerationsConfig, run_generations
    from psylens.compare.pair import pair_run
    from psylens.compare.steering_transfer import run_steering_transfer

    base, twin, _, dirs = setup
    pair = ModelPair(base, twin)
    layer_mode = steering_transfer(pair, dirs, replace(CFG, read_back=False))
    a = layer_mode["alpha"]
    assert layer_mode["steering"]["from"] == "directions" and layer_mode["base"]["own_shift"][TARGET] > 1.0
    _sweep_run(tmp_path / "base_run", base, dirs, -a)
    run = pair_run(tmp_path / "run", pair)
    cfg = replace(RB, base_run=str(tmp_path / "base_run"))
    h = run_steering_transfer(run, pair, cfg, directions=dirs)
    res = run.read_json(art.STEERING)
    assert res["steering"]["from"] == "sweep" == h["steered_with"] and res["alpha"] is None
    assert res["steering"]["source_run"] == str(tmp_path / "base_run")
    assert res["steering"]["vectors"][TARGET]["alpha"] == pytest.approx(-a) and res["steering"]["vectors"][TARGET]["layer"] == LAYER
    assert res["base"]["own_shift"][TARGET] < -1.0  # the negated vector pushes joy's words down
    assert res["tuned"]["own_shift"][TARGET] == pytest.approx(res["base"]["own_shift"][TARGET], abs=1e-4)
    assert h["read_back_difference"] == 0.0 and "read_back_base" in h
    for e in EMOTIONS:
        assert run.has(art.steering_vector_file(e))
    run_generations(run, pair, GenerationsConfig(n_prompts=1, max_new_tokens=3))
    steered = run.read_json(art.GENERATIONS)["steered"]
    assert steered["vector"] == art.steering_vector_file("joy") and steered["alpha"] == pytest.approx(-a)
    assert steered["layer"] == LAYER
    # control: steer_with="layer" ignores the vectors
    ignored = steering_transfer(pair, dirs, replace(cfg, steer_with="layer", read_back=False))
    assert ignored["steering"]["from"] == "directions" and ignored["base"]["own_shift"][TARGET] > 1.0


def test_vectors_of_another_model_are_not_used(setup, mute, tmp_path):
    """A base run whose model is the tuned one (other weights, the same name): "auto" falls back to the directions
    and says why; "sweep" refuses."""
    from psylens.compare.pair import pair_run
    from psylens.compare.steering_transfer import base_vectors

    base, _, _, dirs = setup
    tuned = mute
    _sweep_run(tmp_path / "other", tuned, dirs, 1.0)
    pair = ModelPair(base, tuned)
    run = pair_run(tmp_path / "run", pair)
    vectors, rec = base_vectors(run, pair, list(EMOTIONS), replace(CFG, base_run=str(tmp_path / "other")))
    assert vectors is None and rec["from"] == "directions" and "fingerprint" in rec["note"]
    with pytest.raises(ValueError, match="steer_with='sweep' needs"):
        base_vectors(run, pair, list(EMOTIONS), replace(CFG, base_run=str(tmp_path / "other"), steer_with="sweep"))
    vectors, rec = base_vectors(run, pair, list(EMOTIONS), CFG)  # the comparison run itself has none
    assert vectors is None and "no steering sweep vectors" in rec["note"]
    with pytest.raises(ValueError, match="not a run directory"):
        base_vectors(run, pair, list(EMOTIONS), replace(CFG, base_run=str(tmp_path / "nowhere")))


def test_new_settings_are_validated():
    for bad, match in ((dict(steer_with="vectors"), "steer_with"), (dict(n_prompts=0), "n_prompts"),
                       (dict(max_new_tokens=True), "max_new_tokens"), (dict(base_run=""), "base_run"),
                       (dict(read_back="yes"), "read_back")):
        with pytest.raises(ValueError, match=match):
            SteeringTransferConfig(**bad)
