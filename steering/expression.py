"""Expression directions: emotion directions read from the model *expressing* an emotion.

The probes' directions (``psylens.probes``) come from the model *reading* emotional scenarios. For
steering, what matters is the state from which the model *writes* emotionally. Following the
"emotion circuits" recipe, :func:`expression_directions`:

1. formats every neutral prompt once per emotion with the system prompt ``system_template``
   (default ``"Always reply in {emotion}."``) through the model's chat template, with the generation
   prompt appended, so the final token is where the reply starts;
2. reads ``resid_post`` at that final token at every requested layer (one forward pass per batch);
3. centres per prompt: subtracts, for each prompt, the mean over the emotions — what the prompt
   itself contributes (its topic, its length) cancels, leaving what the system prompt's emotion adds;
4. averages per emotion and layer over the prompts, removes the mean over emotions (zero after the
   per-prompt centring, kept for clarity) and L2-normalises, keeping the raw norm
   (:meth:`psylens.probes.Directions.from_raw`).

The result is a :class:`psylens.probes.Directions` (``method="mean_diff"``, ``center_by="group"``:
each group is one extraction prompt), so :func:`psylens.steering.sweep.run_sweep` and
:meth:`SteeringVector.from_directions` take it like the probes' directions.

The default prompts, :data:`EXTRACTION_PROMPTS`, are neutral requests written for extraction only;
none of them is in the built-in ``steering_prompts`` the sweep evaluates on (a test checks this).

>>> dirs = expression_directions(model)                  # doctest: +SKIP
>>> SteeringVector.from_directions(dirs, "joy", layers=[12], alpha=8.0)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor

from psylens.interventions import record
from psylens.models import prompt_special_tokens
from psylens.stimuli import EMOTIONS

if TYPE_CHECKING:
    from psylens.models import Model
    from psylens.probes import Directions

__all__ = ["expression_directions", "expression_activations", "EXTRACTION_PROMPTS", "SYSTEM_TEMPLATE"]

log = logging.getLogger(__name__)

SYSTEM_TEMPLATE = "Always reply in {emotion}."

#: Neutral prompts used only to extract expression directions; disjoint from ``steering_prompts``.
EXTRACTION_PROMPTS: tuple[str, ...] = (
    "Explain how a bicycle gear works.",
    "Describe the steps to repot a houseplant.",
    "Tell me how you would sort a pile of laundry.",
    "Write a few lines about a cloudy afternoon.",
    "What happens at a post office on a weekday?",
    "Describe how to boil an egg.",
    "Tell me about the furniture in a waiting room.",
    "Write a short note about a change to the bus timetable.",
    "Explain how to fold a paper airplane.",
    "Describe a supermarket car park.",
    "What do people usually bring to a picnic?",
    "Tell me about a notebook and a pen.",
    "Write a sentence or two about a quiet street.",
    "Explain how a library lends books.",
    "Describe the inside of a lift.",
    "Tell me about the route of a delivery van.",
    "Write a short reply confirming a phone call at three.",
    "What does a typical office printer do all day?",
    "Describe a field next to a road.",
    "Explain how to set an alarm clock.",
    "Tell me about the shelves in a hardware store.",
    "Write a few words about a parked car.",
    "Describe how people queue at a bakery.",
    "What is on a standard calendar page?",
)


def _check_inputs(
    model: Model, prompts: Sequence[str], emotions: Sequence[str], system_template: str, layers: Sequence[int] | None,
    batch_size: int,
) -> tuple[list[str], list[str], list[int]]:
    if isinstance(prompts, str):
        raise ValueError("prompts must be a sequence of prompt strings, not one string; wrap it: [prompt]")
    items = list(prompts)
    if len(items) < 1 or not all(isinstance(p, str) and p.strip() for p in items):
        raise ValueError(
            f"prompts must be one or more non-empty strings, got {len(items)} item(s); "
            "pass neutral requests such as EXTRACTION_PROMPTS"
        )
    if isinstance(emotions, str):
        raise ValueError(f"emotions must be a sequence of names, not the string {emotions!r}; e.g. ('joy', 'sadness')")
    emos = list(emotions)
    if len(emos) < 2:
        raise ValueError(f"expression directions contrast emotions: give at least two, got {emos}")
    if len(set(emos)) != len(emos):
        raise ValueError(f"emotions has duplicates: {emos}; give each emotion once")
    if not all(isinstance(e, str) and e.strip() for e in emos):
        raise ValueError(f"emotions must be non-empty strings, got {emos}")
    if not isinstance(system_template, str) or "{emotion}" not in system_template:
        raise ValueError(
            f"system_template must contain '{{emotion}}' (where the emotion's name goes), got {system_template!r}; "
            f"e.g. {SYSTEM_TEMPLATE!r}"
        )
    n_layers = int(model.n_layers)
    if layers is None:
        ls = list(range(n_layers))
    else:
        ls = list(layers)
        if not ls:
            raise ValueError(f"layers is empty; give decoder-layer indices in 0–{n_layers - 1}, or None for all")
        bad = [v for v in ls if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n_layers]
        if bad:
            raise ValueError(f"layer {bad[0]!r} out of range: the model has {n_layers} layers (0–{n_layers - 1})")
        if len(set(ls)) != len(ls):
            raise ValueError(f"layers has duplicates: {ls}")
        ls = sorted(ls)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return items, emos, ls


@torch.no_grad()
def expression_activations(
    model: Model,
    prompts: Sequence[str] = EXTRACTION_PROMPTS,
    *,
    emotions: Sequence[str] = EMOTIONS,
    system_template: str = SYSTEM_TEMPLATE,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
) -> Float[Tensor, "prompt emotion layer d_model"]:
    """``resid_post`` at the final token of each (prompt, emotion) chat prompt: ``[P, E, L, d_model]`` (float32).

    The final token is the last token of ``model.format_prompt(prompt, system_prompt=...)`` (with
    the generation prompt), i.e. the position from which the reply is generated.
    """
    items, emos, ls = _check_inputs(model, prompts, emotions, system_template, layers, batch_size)
    formatted = [model.format_prompt(p, system_prompt=system_template.format(emotion=e)) for p in items for e in emos]
    tok = model.tokenizer
    old = tok.padding_side
    tok.padding_side = "left"  # the final real token sits at index -1 in every row
    out = torch.zeros(len(formatted), len(ls), int(model.d_model))
    try:
        for start in range(0, len(formatted), batch_size):
            chunk = formatted[start : start + batch_size]
            enc = tok(chunk, return_tensors="pt", padding=True,
                      add_special_tokens=prompt_special_tokens(model)).to(model.device)
            # the block outputs (where steering adds), not HF hidden_states: at the last layer those
            # come after the final norm
            with torch.no_grad(), record(model.hf_model, ["resid_post"], ls) as rec:
                model.hf_model(**enc)
            out[start : start + len(chunk)] = torch.stack([rec["resid_post", v][:, -1].float().cpu() for v in ls], dim=1)
    finally:
        tok.padding_side = old
    return out.view(len(items), len(emos), len(ls), -1)


def expression_directions(
    model: Model,
    prompts: Sequence[str] = EXTRACTION_PROMPTS,
    *,
    emotions: Sequence[str] = EMOTIONS,
    system_template: str = SYSTEM_TEMPLATE,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
) -> Directions:
    """Unit emotion directions from the model prompted to express each emotion (see the module doc).

    Args:
        model: a psylens ``Model`` with a chat template.
        prompts: neutral prompts (default :data:`EXTRACTION_PROMPTS`); keep them disjoint from the prompts
            you evaluate steering on.
        emotions: the emotions to contrast (at least two); their names fill ``system_template``.
        system_template: the system prompt, with ``{emotion}``.
        layers: decoder layers (``None``: all).
        batch_size: prompts per forward pass.

    Returns:
        ``psylens.probes.Directions`` over ``emotions`` × ``layers`` at ``resid_post``; its ``norms`` are
        the raw norms (activation units) of the centred means. Its directions sum to ~0 over emotions
        (before normalisation, exactly).

    Raises:
        ValueError: empty or non-string prompts, fewer than two emotions, a template without
            ``{emotion}``, layers out of range.
    """
    from psylens.probes import Directions

    items, emos, ls = _check_inputs(model, prompts, emotions, system_template, layers, batch_size)
    x = expression_activations(
        model, items, emotions=emos, system_template=system_template, layers=ls, batch_size=batch_size
    ).double()  # [P, E, L, d]
    x = x - x.mean(dim=1, keepdim=True)  # per prompt, over emotions: context-agnostic
    raw = x.mean(dim=0)  # [E, L, d]
    raw = raw - raw.mean(dim=0, keepdim=True)  # global mean over emotions (≈0 already)
    log.info("expression directions: %d prompts × %d emotions, %d layers", len(items), len(emos), len(ls))
    return Directions.from_raw(
        raw.float(),
        emos,
        ls,
        site="resid_post",
        method="mean_diff",
        center_by="group",
        model=getattr(model, "spec", None),
        meta={
            "kind": "expression",
            "system_template": system_template,
            "position": "final prompt token (generation start)",
            "groups": "one per extraction prompt (centred over emotions)",
            "n_prompts": len(items),
            "n": len(items) * len(emos),
        },
    )
