"""The emotion lens on a tiny model: planted directions are read at the right token; controls are not."""

from __future__ import annotations

import pytest
import torch

from psylens.probes import Directions
from psylens.steering.vector import SteeringVector
from psylens.validation.lens import TokenLens, token_lens, token_projections

TEXT = "The dog came home after three days and everyone ran to the door."
LAYER = 1


def _hidden(model, ids: list[int], layer: int) -> torch.Tensor:
    with torch.no_grad():
        out = model.hf_model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0].float()  # resid_post of `layer`


def _dirs(rows: torch.Tensor, names: list[str], layers: list[int]) -> Directions:
    raw = rows.float().unsqueeze(1).expand(-1, len(layers), -1).contiguous()
    return Directions.from_raw(raw, names, layers)


def test_matrix_is_each_tokens_residual_on_each_unit_direction(tiny_model) -> None:
    m = tiny_model("llama")
    g = torch.Generator().manual_seed(0)
    dirs = _dirs(torch.randn(3, m.d_model, generator=g), ["a", "b", "c"], [0, 1, 2])
    tokens, matrix = token_projections(m, TEXT, dirs, LAYER)
    ids = list(m.tokenizer(TEXT)["input_ids"])
    assert tokens == [m.tokenizer.decode([i]) for i in ids]
    assert matrix.shape == (len(ids), 3)
    expected = _hidden(m, ids, LAYER) @ dirs.at_layer(LAYER).float().T
    torch.testing.assert_close(matrix, expected, rtol=1e-4, atol=1e-4)
    # another layer reads another residual
    _, other = token_projections(m, TEXT, dirs, 2)
    assert not torch.allclose(other, matrix)


def test_planted_direction_lights_up_its_own_token_and_a_random_one_does_not(tiny_model) -> None:
    m = tiny_model("llama")
    ids = list(m.tokenizer(TEXT)["input_ids"])
    resid = _hidden(m, ids, LAYER)  # (T, d)
    T = resid.shape[0]
    # one planted "emotion" per token: the direction equal to that token's residual
    dirs = _dirs(resid, [f"t{k}" for k in range(T)], [LAYER])
    _, matrix = token_projections(m, TEXT, dirs, LAYER)
    hits = sum(int(matrix[:, k].argmax()) == k for k in range(T))
    assert hits >= T - 1, f"planted directions peak at their own token for only {hits}/{T} tokens"
    # control: random directions peak at one token each, so they match the position index by chance only
    g = torch.Generator().manual_seed(1)
    rand = _dirs(torch.randn(T, m.d_model, generator=g), [f"r{k}" for k in range(T)], [LAYER])
    _, rmatrix = token_projections(m, TEXT, rand, LAYER)
    rhits = sum(int(rmatrix[:, k].argmax()) == k for k in range(T))
    assert rhits <= T // 3, f"random directions 'found' {rhits}/{T} tokens: the known-answer test cannot fail"


def test_prompt_tokens_are_marked_and_the_boundary_is_exact(tiny_model) -> None:
    m = tiny_model("llama")
    dirs = _dirs(torch.randn(2, m.d_model, generator=torch.Generator().manual_seed(2)), ["x", "y"], [LAYER])
    prompt, text = "Tell me about your day.", " It rained and I stayed in."
    lens = token_lens(m, text, dirs, LAYER, prompt=prompt)
    p_ids = list(m.tokenizer(prompt)["input_ids"])
    t_ids = list(m.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert lens.token_ids == tuple(p_ids + t_ids)
    assert lens.n_prompt == len(p_ids) and lens.is_prompt == [True] * len(p_ids) + [False] * len(t_ids)
    only = lens.without_prompt()
    assert only.token_ids == tuple(t_ids) and only.n_prompt == 0
    torch.testing.assert_close(only.matrix, lens.matrix[len(p_ids):])
    # the text's tokens see the prompt (causal): they differ from reading the text alone
    alone = token_lens(m, text, dirs, LAYER, add_special_tokens=False)
    assert alone.token_ids == tuple(t_ids)
    assert not torch.allclose(alone.matrix, only.matrix)


def test_steering_at_the_read_layer_shifts_its_direction_by_alpha(tiny_model) -> None:
    m = tiny_model("llama")
    g = torch.Generator().manual_seed(3)
    dirs = _dirs(torch.randn(2, m.d_model, generator=g), ["joy", "fear"], [LAYER])
    plain = token_lens(m, TEXT, dirs, LAYER)
    sv = SteeringVector.from_directions(dirs, "joy", layers=[LAYER], alpha=3.0)
    steered = token_lens(m, TEXT, dirs, LAYER, steer=sv)
    shift = steered.matrix - plain.matrix  # (T, 2)
    torch.testing.assert_close(shift[:, 0], torch.full_like(shift[:, 0], 3.0), rtol=1e-3, atol=1e-3)
    cos = float(dirs["joy", LAYER] @ dirs["fear", LAYER])
    torch.testing.assert_close(shift[:, 1], torch.full_like(shift[:, 1], 3.0 * cos), rtol=1e-3, atol=1e-3)
    # the model is restored afterwards
    torch.testing.assert_close(token_lens(m, TEXT, dirs, LAYER).matrix, plain.matrix)


def test_emotions_pick_and_order_the_columns(tiny_model) -> None:
    m = tiny_model("llama")
    dirs = _dirs(torch.randn(3, m.d_model, generator=torch.Generator().manual_seed(4)), ["a", "b", "c"], [LAYER])
    full = token_lens(m, TEXT, dirs, LAYER)
    sub = token_lens(m, TEXT, dirs, LAYER, emotions=["c", "a"])
    assert sub.emotions == ("c", "a")
    torch.testing.assert_close(sub.matrix, full.matrix[:, [2, 0]])


def test_errors_say_what_was_given_and_what_is_valid(tiny_model) -> None:
    m = tiny_model("llama")
    dirs = _dirs(torch.randn(2, m.d_model), ["a", "b"], [LAYER])
    with pytest.raises(ValueError, match="out of range"):
        token_lens(m, TEXT, dirs, 99)
    with pytest.raises(ValueError, match="valid layers"):
        token_lens(m, TEXT, dirs, 0)
    with pytest.raises(ValueError, match="empty"):
        token_lens(m, "", dirs, LAYER)
    with pytest.raises(ValueError, match="unknown emotion"):
        token_lens(m, TEXT, dirs, LAYER, emotions=["zzz"])
    wide = _dirs(torch.randn(2, m.d_model + 4), ["a", "b"], [LAYER])
    with pytest.raises(ValueError, match="wide"):
        token_lens(m, TEXT, wide, LAYER)
    with pytest.raises(ValueError, match="tokens"):
        TokenLens(("a",), (1,), ("x", "y"), torch.zeros(2, 2), LAYER)


def test_mean_residual_norm_is_the_mean_token_norm(tiny_model) -> None:
    from psylens.validation.lens import mean_residual_norm

    m = tiny_model("llama")
    ids = list(m.tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    expected = float(_hidden(m, ids, LAYER).norm(dim=-1).mean())
    assert mean_residual_norm(m, TEXT, LAYER) == pytest.approx(expected, rel=1e-4)
    assert mean_residual_norm(m, TEXT, 2) != pytest.approx(expected, rel=1e-3)
    with pytest.raises(ValueError, match="out of range"):
        mean_residual_norm(m, TEXT, 7)
