"""Rewards of the model organism: known answers score as they must; the shuffled control permutes."""

from __future__ import annotations

import numpy as np
import pytest

from psylens.compare.rewards import PsychReward, correct_rewards, format_rewards, has_answer_line


def test_correct_incorrect_and_format_known_answers() -> None:
    comps = [
        "She thinks the ball is in the basket.\nAnswer: B",  # correct, explicit
        "Because she left before it moved, B",  # correct by the fallback parser, no explicit line
        "Answer: C",  # wrong, explicit
        "I am not sure what she feels.",  # unparsed: wrong, no format
    ]
    answers = [1, 1, 1, 1]
    n = [4] * 4
    assert correct_rewards(comps, answers, n) == [1.0, 1.0, 0.0, 0.0]
    assert format_rewards(comps, n) == [1.0, 0.0, 1.0, 0.0]
    r = PsychReward(format_weight=0.1)
    got = r(prompts=["p"] * 4, completions=comps, answer_index=answers, n_choices=n)
    assert got == pytest.approx([1.1, 1.0, 0.1, 0.0])
    rec = r.history[-1]
    assert (rec.correct, rec.format, rec.n, rec.shuffled) == (0.5, 0.5, 4, False)
    assert rec.reward == pytest.approx(0.55) and rec.paid == pytest.approx(0.55)


def test_letters_beyond_the_choices_and_chat_messages() -> None:
    assert not has_answer_line("Answer: E", 4)
    assert has_answer_line("answer is (d)".upper(), 4)
    # conversational completions (lists of messages) are read from their last message
    msgs = [[{"role": "assistant", "content": "Answer: A"}]]
    assert correct_rewards(msgs, [0], [4]) == [1.0]
    with pytest.raises(ValueError, match="one of each per completion"):
        correct_rewards(["Answer: A"], [0, 1], [4])
    with pytest.raises(ValueError, match="format_weight"):
        PsychReward(format_weight=2.0)


def test_shuffled_control_permutes_and_breaks_the_link() -> None:
    rng = np.random.default_rng(0)
    true_r = PsychReward(0.1)
    ctrl = PsychReward(0.1, shuffle=True, seed=3)
    assert ctrl.__name__ == "psych_shuffled"
    agree_true, agree_ctrl, moved = [], [], 0
    for _ in range(200):
        ans = rng.integers(0, 4, size=8).tolist()
        picks = rng.integers(0, 4, size=8).tolist()
        comps = [f"Answer: {'ABCD'[p]}" for p in picks]
        t = true_r(completions=comps, answer_index=ans, n_choices=[4] * 8)
        c = ctrl(completions=comps, answer_index=ans, n_choices=[4] * 8)
        assert sorted(c) == sorted(t)  # a permutation: same rewards, other completions
        moved += c != t
        hit = [float(p == a) for p, a in zip(picks, ans)]
        agree_true.append(np.corrcoef(hit, t)[0, 1] if np.std(t) > 0 else np.nan)
        agree_ctrl.append(np.corrcoef(hit, c)[0, 1] if np.std(c) > 0 else np.nan)
    assert moved > 150
    assert np.nanmean(agree_true) == pytest.approx(1.0)  # the true reward pays the correct completions
    assert abs(np.nanmean(agree_ctrl)) < 0.1  # the control's pay says nothing about correctness
    # the control's history keeps the true accuracy (what tells whether it learnt anything)
    assert [h.correct for h in ctrl.history] == [h.correct for h in true_r.history]


def test_shuffle_is_seeded_and_resumable() -> None:
    comps = [f"Answer: {'ABCD'[i % 4]}" for i in range(8)]
    kw = dict(completions=comps, answer_index=[0] * 8, n_choices=[4] * 8)
    a, b = PsychReward(shuffle=True, seed=1), PsychReward(shuffle=True, seed=1)
    assert a(**kw) == b(**kw)
    state = a.rng_state()
    nxt = a(**kw)
    c = PsychReward(shuffle=True, seed=99)
    c.set_rng_state(state)
    assert c(**kw) == nxt
    assert PsychReward(shuffle=True, seed=2)(**kw) != PsychReward(shuffle=True, seed=1)(**kw)
