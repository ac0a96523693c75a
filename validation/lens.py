"""The emotion lens: every token's projection on each emotion direction at one layer.

>>> tokens, matrix = token_projections(model, "The dog came home.", dirs, layer=12)   # doctest: +SKIP
>>> matrix.shape                                                                       # doctest: +SKIP
torch.Size([6, 24])        # [token, emotion], emotions in dirs.emotions order

:func:`token_lens` is the full form (a prompt before the text, marked as such; which emotions;
optionally read with a steering vector on); :func:`token_projections` returns just
``(tokens, matrix)``. Activations are read through :func:`psylens.interventions.record` (residual
stream after the layer, ``resid_post``), never through a hook system of its own.

.. warning:: ``steer`` steers the model *while it is read*: a vector added at or before ``layer``
   shifts every position's projection (at ``layer`` itself by ``alpha * cos(v, direction)``
   exactly). To look at what steered *text* means to the plain model, generate with the steering on
   and call this function without ``steer`` (what ``read_back`` does).

.. warning:: The model is run on whatever it is given, with no lock: a model shared between threads
   (the explorer's) must be used under the caller's lock, since steering hooks are global state.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["TokenLens", "mean_residual_norm", "token_lens", "token_projections"]


@dataclass(frozen=True, eq=False)
class TokenLens:
    """Projections of each token's residual (after ``layer``) on unit emotion directions.

    ``matrix[t, e]`` is token ``t``'s projection on ``emotions[e]`` (activation units);
    the first ``n_prompt`` tokens are the prompt's, the rest the text's.
    """

    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    emotions: tuple[str, ...]
    matrix: Float[Tensor, "token emotion"]
    layer: int
    n_prompt: int = 0

    def __post_init__(self) -> None:
        if tuple(self.matrix.shape) != (len(self.tokens), len(self.emotions)):
            raise ValueError(f"matrix has shape {list(self.matrix.shape)}; expected [{len(self.tokens)} tokens, "
                             f"{len(self.emotions)} emotions]")
        if not 0 <= self.n_prompt <= len(self.tokens):
            raise ValueError(f"n_prompt {self.n_prompt} is outside 0..{len(self.tokens)} (the number of tokens)")

    @property
    def is_prompt(self) -> list[bool]:
        """One flag a token: is it part of the prompt?"""
        return [i < self.n_prompt for i in range(len(self.tokens))]

    def without_prompt(self) -> TokenLens:
        """The text's tokens only."""
        n = self.n_prompt
        return TokenLens(self.tokens[n:], self.token_ids[n:], self.emotions, self.matrix[n:], self.layer, 0)


def _ids(tok: Any, text: str, special: bool) -> list[int]:
    return list(tok(text, add_special_tokens=special)["input_ids"]) if text else []


def token_lens(
    model: Any,
    text: str,
    directions: Any,
    layer: int,
    *,
    prompt: str = "",
    steer: Any | None = None,
    emotions: Sequence[str] | None = None,
    add_special_tokens: bool = True,
) -> TokenLens:
    """Run ``prompt + text`` once through ``model`` and project every token's ``resid_post`` at ``layer``
    on the unit direction of each emotion of ``directions`` (a ``psylens.probes.Directions``).

    ``prompt`` and ``text`` are tokenized apart and joined (the boundary is exact; give the prompt as
    the model saw it, e.g. ``model.format_prompt(p)`` for chat models). The tokenizer's special tokens
    (BOS) go before the first segment when ``add_special_tokens``. ``steer``: a ``SteeringVector``
    applied during this forward pass (see the module warning). ``ValueError`` for an empty input, an
    unknown layer or emotion, or directions of another width.
    """
    if not isinstance(text, str) or not isinstance(prompt, str):
        raise ValueError(f"text and prompt must be str, got {type(text).__name__} and {type(prompt).__name__}")
    if not text and not prompt:
        raise ValueError("nothing to read: text and prompt are both empty; give some text")
    n_layers = int(getattr(model, "n_layers", 0) or 0)
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"layer must be an int, got {layer!r}")
    if n_layers and not 0 <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {n_layers} layers (0–{n_layers - 1})")
    dirs = directions.select(list(emotions)) if emotions is not None else directions
    units_ED = dirs.at_layer(layer).float()  # ValueError listing the layers it has
    d_model = int(getattr(model, "d_model", units_ED.shape[-1]))
    if units_ED.shape[-1] != d_model:
        raise ValueError(f"the directions are {units_ED.shape[-1]}-wide but the model's residual is {d_model}-wide; "
                         "use directions fitted on this model")
    site = getattr(dirs, "site", "resid_post")
    if site != "resid_post":
        raise ValueError(f"the lens reads the residual stream (resid_post); these directions are of site {site!r}")
    tok = model.tokenizer
    prompt_ids = _ids(tok, prompt, add_special_tokens)
    text_ids = _ids(tok, text, add_special_tokens and not prompt_ids)
    ids = prompt_ids + text_ids
    if not ids:
        raise ValueError("the text has no tokens; give some text")
    from psylens.interventions import record

    hf = model.hf_model
    input_ids = torch.tensor([ids], device=model.device)
    with torch.no_grad(), ExitStack() as stack:
        if steer is not None:  # steering hooks first, so the recorded residual carries them
            stack.enter_context(steer.apply(model))
        rec = stack.enter_context(record(model, "resid_post", [layer]))
        hf(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    resid_TD = rec["resid_post", layer][0].float().cpu()  # (T, d)
    matrix_TE = resid_TD @ units_ED.cpu().T
    tokens = tuple(tok.decode([i]) for i in ids)
    return TokenLens(tokens, tuple(int(i) for i in ids), tuple(dirs.emotions), matrix_TE, int(layer), len(prompt_ids))


def token_projections(
    model: Any,
    text: str,
    directions: Any,
    layer: int,
    *,
    steer: Any | None = None,
    emotions: Sequence[str] | None = None,
) -> tuple[list[str], Float[Tensor, "token emotion"]]:
    """``(tokens, matrix [token, emotion])`` of ``text`` at ``layer`` — :func:`token_lens` without a prompt.

    Columns follow ``emotions`` (default: ``directions.emotions``).
    """
    lens = token_lens(model, text, directions, layer, steer=steer, emotions=emotions)
    return list(lens.tokens), lens.matrix


def mean_residual_norm(model: Any, text: str, layer: int, *, add_special_tokens: bool = False) -> float:
    """Mean L2 norm of ``text``'s token residuals (``resid_post``) at ``layer`` — the unit of a steering
    ``scale`` (``alpha = scale * norm``). ``ValueError`` for an empty text or a layer out of range."""
    n_layers = int(getattr(model, "n_layers", 0) or 0)
    if isinstance(layer, bool) or not isinstance(layer, int) or (n_layers and not 0 <= layer < n_layers):
        raise ValueError(f"layer {layer!r} out of range: the model has {n_layers} layers (0–{n_layers - 1})")
    ids = _ids(model.tokenizer, text, add_special_tokens) if isinstance(text, str) else []
    if not ids:
        raise ValueError("the text has no tokens; give some text")
    from psylens.interventions import record

    input_ids = torch.tensor([ids], device=model.device)
    with torch.no_grad(), record(model, "resid_post", [layer]) as rec:
        model.hf_model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
    return float(rec["resid_post", layer][0].float().norm(dim=-1).mean())
