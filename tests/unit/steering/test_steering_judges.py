"""Judges and language-cost metrics: known answers on hand-written texts, controls that must fail."""

from __future__ import annotations

import math

import pytest
import torch

from psylens.stimuli import EMOTIONS
from psylens.steering.judges import (
    Judge, LexiconJudge, LLMJudge, dominant, judge_accuracy, make_judge, nrc_lexicon, success_rate,
)
from psylens.steering.metrics import nonword_fraction, perplexity, perplexity_ratio, repetition_rate, token_nll

CLEAR = {
    "joy": "What a wonderful, happy day! I love the sunshine and the laughter.",
    "sadness": "I feel so sad and lonely; I have been crying and grieving all week.",
    "fear": "I was terrified and scared, trembling with fear in the dark.",
    "disgust": "The rotten, filthy, disgusting mess made me nauseous.",
}


def test_nrc_lexicon_is_read_from_the_installed_package():
    lex = nrc_lexicon()
    assert len(lex) > 2000
    assert "joy" in lex["happy"]
    assert all(set(v) <= set(EMOTIONS) for v in lex.values())  # trust/anticipation/positive/negative dropped


def test_lexicon_judge_known_answers():
    judge = LexiconJudge()
    assert isinstance(judge, Judge)
    scores = judge.score(list(CLEAR.values()))
    assert scores.shape == (4, 6)
    torch.testing.assert_close(scores.sum(dim=1), torch.ones(4))
    assert [EMOTIONS[i] for i in dominant(scores).tolist()] == list(CLEAR)
    for emotion, text in CLEAR.items():
        assert success_rate(judge.score([text]), emotion) == 1.0


def test_lexicon_judge_control_neutral_text_has_no_dominant_emotion():
    judge = LexiconJudge()
    s = judge.score(["The meeting is at two in room four.", ""])
    assert torch.equal(s, torch.zeros(2, 6))
    assert dominant(s).tolist() == [-1, -1]


def test_lexicon_judge_normalises_per_word_and_inflections():
    judge = LexiconJudge({"glad": ["joy"], "grim": ["sadness", "fear"]})
    s = judge.intensity(["glad grim x x"])
    torch.testing.assert_close(s[0], torch.tensor([0, 0, 0.125, 0.25, 0.125, 0]))
    assert dominant(judge.score(["gladly", "grims"])).tolist() == [3, -1]  # gladly -> glad; grim ties


def test_success_rate_and_ties():
    s = torch.tensor([[0.5, 0.5, 0, 0, 0, 0], [0, 0, 0, 1.0, 0, 0]])
    assert dominant(s).tolist() == [-1, 3]
    assert success_rate(s, "joy") == 0.5
    with pytest.raises(ValueError, match="unknown emotion 'bliss'"):
        success_rate(s, "bliss")


def test_judge_accuracy_known_answers_and_control():
    lex = {"furious": ["anger"], "vile": ["disgust"], "dread": ["fear"], "elated": ["joy"], "mourning": ["sadness"],
           "astonished": ["surprise"], "grim": ["fear", "sadness"]}
    texts = ["I am furious.", "That is vile.", "I dread it.", "I am elated.", "We are mourning.", "I am astonished.",
             "It was grim.", "Nothing here.", "A plain note."]
    labels = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "sadness", "joy", "neutral"]
    out = judge_accuracy(LexiconJudge(lex), texts, labels)
    # six plain hits; "grim" ties fear/sadness and "Nothing here." has no word: two no-calls; neutral is left out
    assert out["n"] == 8 and out["accuracy"] == pytest.approx(6 / 8) and out["no_call"] == pytest.approx(2 / 8)
    assert out["by_emotion"]["anger"] == 1.0 and out["by_emotion"]["sadness"] == 0.5 and out["by_emotion"]["joy"] == 0.5
    # control: a lexicon with its emotions rotated gets none right
    rotated = {w: [EMOTIONS[(EMOTIONS.index(e[0]) + 1) % 6]] for w, e in lex.items() if len(e) == 1}
    assert judge_accuracy(LexiconJudge(rotated), texts[:6], labels[:6])["accuracy"] == 0.0
    with pytest.raises(ValueError, match="2 texts for 1 labels"):
        judge_accuracy(LexiconJudge(lex), ["a", "b"], ["joy"])
    with pytest.raises(ValueError, match="nothing to validate"):
        judge_accuracy(LexiconJudge(lex), ["a"], ["neutral"])


def test_nrc_judge_ceiling_on_the_explicit_statements():
    # measured: the default judge names the emotion of plain first-person statements 43% of the time
    from psylens.stimuli import load

    explicit = load("explicit")
    out = judge_accuracy(make_judge("nrc"), explicit.texts, [s.label for s in explicit])
    assert out["n"] == 90 and 0.3 < out["accuracy"] < 0.6 and out["no_call"] > 0.3


def test_make_judge():
    assert make_judge("nrc").name == "nrc"
    with pytest.raises(ValueError, match="needs a model"):
        make_judge("llm")
    with pytest.raises(ValueError, match="unknown judge 'gpt'; valid judges: nrc, llm"):
        make_judge("gpt")


def test_llm_judge_returns_distributions(tiny_model):
    judge = LLMJudge(tiny_model("llama"), batch_size=5)
    s = judge.score(["I am happy.", "So sad."])
    assert s.shape == (2, 6)
    torch.testing.assert_close(s.sum(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="must contain"):
        LLMJudge(tiny_model("llama"), template="no slot")


def test_repetition_rate():
    assert repetition_rate(["a b c d e f"]) == 0.0
    assert repetition_rate("the cat the cat the cat the cat") == pytest.approx(1 - 2 / 6)
    assert repetition_rate(["short"]) == 0.0


def test_nonword_fraction():
    assert nonword_fraction("The cat sat on the mat, didn't it?") == 0.0
    assert nonword_fraction("blorfqz xqzzt the") == pytest.approx(2 / 3)
    assert nonword_fraction("$$%% @@ 42 fine") == pytest.approx(2 / 3)  # digits skipped, symbol soup counted
    assert math.isnan(nonword_fraction(""))  # no words at all


def test_perplexity_ratio_known_answers(tiny_model):
    model = tiny_model("llama")
    prompts = ["Hello", "Hi there"]
    texts = ["the weather is fine", "tomorrow we meet"]
    nll, n = token_nll(model, prompts, texts + [""][:0])
    assert n.tolist() == [len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert perplexity_ratio(model, prompts, texts, texts) == pytest.approx(1.0)
    # batching does not change the answer
    one = token_nll(model, prompts[:1], texts[:1])[0]
    torch.testing.assert_close(one[0], nll[0], atol=1e-4, rtol=1e-5)
    # known answer: the shared-prefix computation equals one plain forward over prompt + text
    ids_p = model.tokenizer(model.format_prompt(prompts[1]), add_special_tokens=False)["input_ids"]
    ids_t = model.tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model.hf_model(torch.tensor([ids_p + ids_t])).logits[0].float(), dim=-1)
    direct = -sum(float(logp[len(ids_p) + j - 1, tok_id]) for j, tok_id in enumerate(ids_t))
    assert float(nll[1]) == pytest.approx(direct, rel=1e-4)
    same_prompt = token_nll(model, ["Hello"] * 3, ["a b", "the weather is fine today", ""])
    assert int(same_prompt[1][2]) == 0 and float(same_prompt[0][2]) == 0.0  # empty text
    torch.testing.assert_close(same_prompt[0][0], token_nll(model, ["Hello"], ["a b"])[0][0], atol=1e-4, rtol=1e-5)
    ppl = perplexity(model, prompts, texts)
    assert ppl > 1.0
    with pytest.raises(ValueError, match="one prompt per text"):
        token_nll(model, prompts, texts[:1])
