"""Known answers for each gate on planted data, and a control that must fail beside each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from psylens.models import Model
from psylens.probes import Directions
from psylens.stimuli import EMOTIONS
from psylens.validation.gates import (
    GateResult,
    auroc,
    dose_response,
    feels_matrix,
    geometry,
    implicit_scenarios,
    logit_lens,
    read_back,
    spearman,
    word_token_ids,
)
from tests.conftest import build_tiny_hf

CANDIDATES = {
    "anger": ["angry", "mad", "furious", "annoyed"],
    "disgust": ["disgusted", "sick", "gross", "nasty", "ill"],
    "fear": ["afraid", "scared", "terrified", "frightened"],
    "joy": ["happy", "glad", "joyful", "cheerful"],
    "sadness": ["sad", "unhappy", "miserable", "gloomy"],
    "surprise": ["surprised", "amazed", "astonished", "shocked"],
}
CONTEXTS = ["I just got back from the store. Right now I feel", "The bus was on time. Sitting here, I feel",
            "I sorted the mail on the table. At the moment I feel", "It is Tuesday afternoon. Honestly, I feel"]


def _single_token_words(tok, n: int) -> dict[str, list[str]]:
    out = {}
    for e, ws in CANDIDATES.items():
        one = [w for w in ws if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
        assert len(one) >= n, (e, one)
        out[e] = one[:n]
    return out


def _planted(smollm_tokenizer, *, n_words: int, tie: bool = False, boost: float = 4.0):
    """A tiny Llama whose unembedding rows of each emotion's words are boosted, and directions that
    write those rows (the sum over the emotion's words), at every layer."""
    hf = build_tiny_hf("llama")
    if tie:
        hf.lm_head.weight = hf.model.embed_tokens.weight
    words = _single_token_words(smollm_tokenizer, n_words)
    ids = word_token_ids(smollm_tokenizer, words)
    w = hf.get_output_embeddings().weight
    with torch.no_grad():
        for e in EMOTIONS:
            w[ids[e]] *= boost
    model = Model(hf, smollm_tokenizer, spec="tiny-planted")
    raw = torch.stack([w[ids[e]].detach().sum(0) for e in EMOTIONS])  # [E, d]
    raw = raw.unsqueeze(1).expand(-1, model.n_layers, -1).clone()
    dirs = Directions.from_raw(raw, EMOTIONS, list(range(model.n_layers)))
    return model, dirs, words


def _deranged(dirs: Directions) -> Directions:
    """The same vectors under the wrong emotions (each emotion gets the next one's direction)."""
    order = list(EMOTIONS[1:]) + [EMOTIONS[0]]
    return Directions(vectors=dirs.select(emotions=order).vectors, norms=dirs.select(emotions=order).norms,
                      emotions=EMOTIONS, layers=dirs.layers)


def _check_gate(g: GateResult) -> None:
    for key in ("value", "threshold", "control", "passed"):
        assert key in g, key
    assert isinstance(g["passed"], bool)
    assert g["value"] is None or isinstance(g["value"], float)


# -- feels_matrix ------------------------------------------------------------------------------
def test_feels_matrix_planted_direction_wins_its_row(smollm_tokenizer) -> None:
    model, dirs, words = _planted(smollm_tokenizer, n_words=1)
    last = model.n_layers - 1
    before = [p.detach().clone() for p in model.hf_model.parameters()]
    g = feels_matrix(model, dirs, last, words=words, contexts=CONTEXTS, alpha=50.0, n_random=5)
    _check_gate(g)
    assert g["rows_won"] == 6 and g["cols_won"] == 6
    assert g["value"] > g["control"] + 1.0  # the planted gap beats what random directions of the same norm give
    assert min(g["own_minus_random"].values()) > 0
    assert set(g.tables) == {"matrix", "random"} and len(g.tables["matrix"]) == 36 and len(g.tables["random"]) == 30
    assert g["gap_ci95"][0] <= g["value"] <= g["gap_ci95"][1]
    # the model is left as it was (hooks only inside the gate)
    assert all(torch.equal(a, b) for a, b in zip(before, model.hf_model.parameters()))
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf_model.modules())


def test_feels_matrix_control_deranged_directions_fail(smollm_tokenizer) -> None:
    model, dirs, words = _planted(smollm_tokenizer, n_words=1)
    g = feels_matrix(model, _deranged(dirs), model.n_layers - 1, words=words, contexts=CONTEXTS, alpha=50.0)
    assert g["rows_won"] == 0 and g["passed"] is False and g["value"] < 0


def test_feels_matrix_needs_five_random_draws(smollm_tokenizer) -> None:
    model, dirs, words = _planted(smollm_tokenizer, n_words=1)
    with pytest.raises(ValueError, match="at least 5"):
        feels_matrix(model, dirs, 0, words=words, contexts=CONTEXTS, n_random=1)


# -- logit_lens --------------------------------------------------------------------------------
def test_logit_lens_planted_words_top_the_lens_random_does_not(smollm_tokenizer) -> None:
    model, dirs, words = _planted(smollm_tokenizer, n_words=3)
    g = logit_lens(model, dirs, 1, words=words)
    _check_gate(g)
    assert g["value"] == 6 and g["passed"] is True
    assert g["control"] == 0  # the random directions' top tokens are not emotion words
    assert all(h >= 3 for h in g["hits"].values())
    bad = logit_lens(model, _deranged(dirs), 1, words=words)  # the control that must fail
    assert bad["value"] == 0 and bad["passed"] is False


# -- read_back ---------------------------------------------------------------------------------
def test_read_back_planted_generations_read_back_higher(smollm_tokenizer) -> None:
    # no boost here: boosted tied embeddings would bias the unsteered text towards the planted words
    model, dirs, words = _planted(smollm_tokenizer, n_words=1, tie=True, boost=1.0)
    prompts = ["Describe your morning.", "Tell me about a chair.", "What is a calendar?", "Explain a kettle.", "Name a street."]
    last = model.n_layers - 1
    g = read_back(model, dirs, last, prompts, alpha=50.0, max_new_tokens=6, fluency=None)
    _check_gate(g)
    assert g["value"] >= 0.9 and g["win_rate_vs_random"] >= 0.9 and g["passed"] is True
    assert g["control"] < 0.8 and g["fluency"] == "not judged here"
    assert len(g.tables["items"]) == 6 * len(prompts)
    # the control that must fail: steering too weak to change the text reads back no higher (ties are losses)
    bad = read_back(model, dirs, last, prompts, alpha=1e-6, max_new_tokens=6, fluency=None)
    assert bad["passed"] is False and bad["value"] < 0.2


def test_read_back_passes_only_at_the_fluency_criterion(smollm_tokenizer) -> None:
    """Known answers for the fluency half: the planted steering that reads back writes its planted word over and
    over (disfluent under the issue's relative criterion: the gate fails though every text reads back), and
    steering too weak to change the text is fluent under the absolute criterion (the greedy text itself:
    perplexity ratio 1) while its read-back fails — the two halves are judged separately and both are needed."""
    model, dirs, words = _planted(smollm_tokenizer, n_words=1, tie=True, boost=1.0)
    prompts = ["Describe your morning.", "Tell me about a chair.", "What is a calendar?", "Explain a kettle.", "Name a street."]
    last = model.n_layers - 1
    g = read_back(model, dirs, last, prompts, alpha=50.0, max_new_tokens=6)  # fluency="relative", the default
    flu = g["fluency"]
    assert g["value"] >= 0.9 and g["passed_ignoring_fluency"] is True and g["passed"] is False
    assert flu["criterion"] == "relative" and flu["n_fluent"] < 6 and set(flu["per_emotion"]) == set(EMOTIONS)
    assert {"perplexity_ratio", "distinct_2", "zlib_ratio"} <= set(flu["reference"])
    assert any(not all(v["checks"].values()) for v in flu["per_emotion"].values())
    weak = read_back(model, dirs, last, prompts, alpha=1e-6, max_new_tokens=6, fluency="absolute")
    wf = weak["fluency"]
    assert wf["n_fluent"] == 6 and all(v["perplexity_ratio"] == pytest.approx(1.0) for v in wf["per_emotion"].values())
    assert weak["passed"] is False and weak["passed_ignoring_fluency"] is False
    with pytest.raises(ValueError, match="fluency 'fluent' is not one of"):
        read_back(model, dirs, last, prompts, alpha=1.0, fluency="fluent")


# -- implicit_scenarios ------------------------------------------------------------------------
def _planted_acts(dirs: Directions, layer: int, n_per: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = [e for e in EMOTIONS for _ in range(n_per)]
    x = torch.stack([3 * dirs[e, layer] for e in labels]) + 0.3 * torch.randn(len(labels), dirs.d_model, generator=g) + 7
    return x, labels


def _random_dirs(d: int = 24, seed: int = 0) -> Directions:
    g = torch.Generator().manual_seed(seed)
    return Directions.from_raw(torch.randn(6, 1, d, generator=g), EMOTIONS, [0])


def test_implicit_scenarios_planted_projections_are_read() -> None:
    dirs = _random_dirs()
    x, labels = _planted_acts(dirs, 0)
    sets = ["stories" if i % 2 else "emotions" for i in range(len(labels))]
    control = _random_dirs(seed=5)  # directions that know nothing of the labels
    g = implicit_scenarios(dirs, 0, x, labels + [], sets=sets, control=control)
    _check_gate(g)
    assert g["value"] == 1.0 and g["passed"] is True
    assert g["control"] < 0.5
    assert set(g["sets"]) == {"stories", "emotions"} and g["sets"]["stories"]["ci95"][1] == 1.0
    shuffled = list(np.random.default_rng(0).permutation(labels))
    bad = implicit_scenarios(dirs, 0, x, shuffled, sets=sets, control=control)  # labels shuffled: must fail
    assert bad["passed"] is False and bad["value"] < 0.5


def test_implicit_scenarios_drops_labels_outside_the_emotions() -> None:
    dirs = _random_dirs()
    x, labels = _planted_acts(dirs, 0, n_per=4)
    x = torch.cat([x, torch.zeros(3, dirs.d_model)])
    g = implicit_scenarios(dirs, 0, x, labels + ["neutral"] * 3)
    assert g["sets"]["all"]["n"] == len(labels)


# -- dose_response -----------------------------------------------------------------------------
TEMPLATES = [{"id": f"t{k}", "levels": [1, 2, 4, 8, 16, 32, 64, 128], "emotion": EMOTIONS[k], "sign": 1 if k % 2 else -1}
             for k in range(6)]


def test_dose_response_planted_monotone_projections_pass() -> None:
    rng = np.random.default_rng(0)
    proj = {t["id"]: (t["sign"] * np.log(t["levels"]) + 0.05 * rng.standard_normal(8)).tolist() for t in TEMPLATES}
    g = dose_response(TEMPLATES, proj)
    _check_gate(g)
    assert g["value"] == 6 and g["threshold"] == 5 and g["passed"] is True
    assert g["control"] < 1  # the same numbers with the levels shuffled
    assert all(abs(v["rho"]) > 0.95 for v in g["templates"].values())
    flipped = {k: [-v for v in vs] for k, vs in proj.items()}  # the wrong sign: must fail
    assert dose_response(TEMPLATES, flipped)["passed"] is False
    noise = {t["id"]: rng.standard_normal(8).tolist() for t in TEMPLATES}
    assert dose_response(TEMPLATES, noise)["passed"] is False


def test_dose_response_needs_five_sixths_of_the_templates() -> None:
    """The issue's "≥ 5 of 6" as a share: 10 of 12 templates pass, 9 of 12 do not."""
    tps = [{**t, "id": f"{t['id']}-{r}"} for r in range(2) for t in TEMPLATES]
    good = {t["id"]: (t["sign"] * np.log(t["levels"])).tolist() for t in tps}
    for n_bad, passed in ((2, True), (3, False)):
        proj = dict(good)
        for t in tps[:n_bad]:
            proj[t["id"]] = [-v for v in good[t["id"]]]  # the wrong sign
        g = dose_response(tps, proj)
        assert (g["value"], g["threshold"], g["passed"]) == (12 - n_bad, 10, passed)
    assert dose_response(tps, good, min_passing=12)["passed"] is True
    assert dose_response(tps[:1], {tps[0]["id"]: good[tps[0]["id"]]})["threshold"] == 1


def test_spearman_and_auroc_known_values() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([1, 1], [True, False]) == 0.5


# -- geometry ----------------------------------------------------------------------------------
def _circumplex(seed: int = 0):
    from psylens.concepts import CONCEPTS, concept_info

    info = concept_info()
    g = torch.Generator().manual_seed(seed)
    d = 32
    val_axis, aro_axis = torch.zeros(d), torch.zeros(d)
    val_axis[0], aro_axis[1] = 1.0, 1.0
    raw = []
    for c in CONCEPTS:
        v = 3.0 if info[c]["valence"] == "positive" else -3.0
        a = 1.5 if info[c]["arousal"] == "high" else -1.5
        raw.append(v * val_axis + a * aro_axis + 0.5 * torch.randn(d, generator=g))
    return Directions.from_raw(torch.stack(raw).unsqueeze(1), CONCEPTS, [4]), info


def test_geometry_planted_circumplex_puts_valence_on_pc1() -> None:
    dirs, info = _circumplex()
    g = geometry(dirs, 4, info)
    _check_gate(g)
    assert g["valence_auroc"] >= 0.95 and g["arousal_auroc"] >= 0.9 and g["arousal_pc"] == 2
    assert g["basic_mean_cosine"] < 0.5 and g["passed"] is True
    assert g["control"] < 0.9  # labels permuted: PC1 no longer separates valence
    assert len(g.tables["pca"]) == 24


def test_geometry_control_shuffled_directions_fail() -> None:
    dirs, info = _circumplex()
    rng = np.random.default_rng(3)
    order = [dirs.emotions[i] for i in rng.permutation(len(dirs.emotions))]
    shuffled = Directions(vectors=dirs.select(emotions=order).vectors, norms=dirs.select(emotions=order).norms,
                          emotions=dirs.emotions, layers=dirs.layers)
    g = geometry(shuffled, 4, info, control=dirs)
    assert g["passed"] is False and g["value"] < 0.9 and g["control"] >= 0.95


# -- feels_matrix / read_back with the steering sweep's picked vectors (issue 10, gates 1 and 6) ----
def _vectors(dirs: Directions, layers: dict[str, int], alpha: float, emotions=EMOTIONS):
    from psylens.steering.vector import SteeringVector

    return {e: SteeringVector.from_directions(dirs, src, layers=[layers[e]], alpha=alpha, meta={"layer": layers[e]})
            for e, src in zip(EMOTIONS, emotions)}


@pytest.mark.slow
def test_feels_matrix_steers_with_each_emotions_picked_vector(smollm_tokenizer) -> None:
    model, dirs, words = _planted(smollm_tokenizer, n_words=1)
    # each emotion at its own layer: the picked vectors, not `layer`, decide where the rows steer
    layers = {e: i % model.n_layers for i, e in enumerate(EMOTIONS)}
    g = feels_matrix(model, dirs, 0, words=words, contexts=CONTEXTS, n_random=5, vectors=_vectors(dirs, layers, 50.0))
    _check_gate(g)
    assert g["rows_won"] == 6 and g["cols_won"] == 6 and g["value"] > g["control"] + 1.0
    assert g["steering"]["from"] == "vectors"
    assert {e: v["layer"] for e, v in g["steering"]["vectors"].items()} == layers
    assert all(v["alpha"] == 50.0 for v in g["steering"]["vectors"].values())
    # draws per vector, at each vector's own settings
    assert len(g.tables["random"]) == 5 * 6 * 6 and "vector" in g.tables["random"].columns
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.hf_model.modules())


def test_feels_matrix_picked_vectors_controls_fail(smollm_tokenizer) -> None:
    model, dirs, words = _planted(smollm_tokenizer, n_words=1)
    last = {e: model.n_layers - 1 for e in EMOTIONS}
    # the vectors under the wrong emotions lose every row; vectors too weak to move anything fail
    wrong = _vectors(dirs, last, 50.0, emotions=list(EMOTIONS[1:]) + [EMOTIONS[0]])
    bad = feels_matrix(model, dirs, 0, words=words, contexts=CONTEXTS, vectors=wrong)
    assert bad["rows_won"] == 0 and bad["passed"] is False and bad["value"] < 0
    weak = feels_matrix(model, dirs, 0, words=words, contexts=CONTEXTS, vectors=_vectors(dirs, last, 1e-6))
    assert weak["passed"] is False and abs(weak["value"]) < 0.01
    with pytest.raises(ValueError, match="vectors has no"):
        feels_matrix(model, dirs, 0, words=words, contexts=CONTEXTS, vectors={"joy": wrong["joy"]})


@pytest.mark.slow
def test_read_back_steers_and_rereads_at_each_picked_layer(smollm_tokenizer) -> None:
    model, dirs, words = _planted(smollm_tokenizer, n_words=1, tie=True, boost=1.0)
    prompts = ["Describe your morning.", "Tell me about a chair.", "What is a calendar?", "Explain a kettle.", "Name a street."]
    layers = {e: (model.n_layers - 1) - (i % 2) for i, e in enumerate(EMOTIONS)}
    g = read_back(model, dirs, 0, prompts, max_new_tokens=6, vectors=_vectors(dirs, layers, 50.0), fluency=None)
    _check_gate(g)
    assert g["value"] >= 0.9 and g["win_rate_vs_random"] >= 0.9 and g["passed"] is True
    assert g["control"] < 0.8
    assert g["steering"]["from"] == "vectors"
    assert g["steering"]["projected_on"] == {e: f"directions at layer {v}" for e, v in layers.items()}
    # the control that must fail: the picked vectors too weak to change the text
    bad = read_back(model, dirs, 0, prompts, max_new_tokens=6, vectors=_vectors(dirs, layers, 1e-6), fluency=None)
    assert bad["passed"] is False and bad["value"] < 0.2


def test_last_logits_are_the_full_forwards_last_position(tiny_model) -> None:
    from psylens.validation.gates import last_logits

    for arch in ("llama", "gemma3"):
        m = tiny_model(arch)
        enc = {"input_ids": torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]]),
               "attention_mask": torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])}
        with torch.no_grad():
            full = m.hf_model(**enc).logits[:, -1]
            assert torch.allclose(last_logits(m.hf_model, **enc), full, atol=1e-5)

    class NoKeep(torch.nn.Module):  # a forward without logits_to_keep still works
        def forward(self, input_ids):
            return type("O", (), {"logits": input_ids.float().unsqueeze(-1).repeat(1, 1, 3)})()

    assert last_logits(NoKeep(), input_ids=torch.tensor([[1, 2]])).tolist() == [[2.0, 2.0, 2.0]]
