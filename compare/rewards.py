"""Verifiable rewards for the model organism: the right choice, plus a small format bonus.

A completion of a ``psych`` task prompt (:func:`psylens.tasks.choice_prompt` with chain of
thought) earns

- ``1.0`` when :func:`psylens.tasks.parse_letter` reads the correct letter from it (the same
  parser ``psylens.tasks.evaluate`` scores with), else ``0.0``;
- plus ``format_weight`` (default ``0.1``) when it states its answer explicitly as
  ``Answer: X`` (what the chain-of-thought instruction asks for).

:class:`PsychReward` is the callable TRL's ``GRPOTrainer`` takes as a reward function
(``reward(prompts=..., completions=..., answer_index=..., n_choices=..., **kw) -> list[float]``).
With ``shuffle=True`` it is the **control**: it computes the same rewards and then hands them back
permuted across the completions of the batch (seeded), so the reward no longer says anything about
the completion it is paid to, while its distribution (mean, spread) is unchanged.

Every call appends one :class:`RewardRecord` (the *true* reward means, and what was paid) to
``history``: the reward curve, also for the control, whose paid reward is shuffled but whose true
accuracy is what tells whether it learnt anything.

.. warning:: The parser falls back to the last standalone letter, so a completion that merely
   lists letters may be read as an answer; the format bonus only pays for an explicit
   ``Answer: X``. Rewards are per completion, in the order TRL passes them; the shuffle is over
   that whole batch (with one prompt a step, within the prompt's group).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from psylens.tasks import LETTERS, parse_letter

__all__ = ["PsychReward", "RewardRecord", "correct_rewards", "format_rewards", "has_answer_line"]


def has_answer_line(text: str, n_choices: int = 4) -> bool:
    """Whether ``text`` states its answer as ``Answer: X`` (X one of the first ``n_choices`` letters)."""
    cls = f"[{LETTERS[:n_choices]}]"
    return re.search(rf"(?i:answer)\s*(?:(?i:is)\s*)?[:\-=]?\s*\**\s*[\(\[]?{cls}(?![A-Za-z'’])", text) is not None


def _text(completion: Any) -> str:
    """A completion as text: TRL passes strings for text prompts, message lists for conversational ones."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise ValueError(
        f"a completion must be a string or a list of chat messages, got {type(completion).__name__}; "
        "build the dataset's 'prompt' column as text (psylens.compare.organism does)"
    )


def correct_rewards(completions: Sequence[Any], answer_index: Sequence[int], n_choices: Sequence[int]) -> list[float]:
    """1.0 where the parsed letter is the answer, else 0.0 (unparsed counts as wrong)."""
    if not (len(completions) == len(answer_index) == len(n_choices)):
        raise ValueError(
            f"{len(completions)} completions, {len(answer_index)} answers and {len(n_choices)} choice counts: "
            "give one of each per completion"
        )
    return [
        1.0 if parse_letter(_text(c), int(n)) == int(a) else 0.0
        for c, a, n in zip(completions, answer_index, n_choices)
    ]


def format_rewards(completions: Sequence[Any], n_choices: Sequence[int]) -> list[float]:
    """1.0 where the completion has an explicit ``Answer: X``, else 0.0 (unweighted)."""
    return [1.0 if has_answer_line(_text(c), int(n)) else 0.0 for c, n in zip(completions, n_choices)]


@dataclass(frozen=True)
class RewardRecord:
    """One reward call: the training step, how many completions, and batch means.

    ``correct`` and ``format`` are the true fractions; ``reward`` is the true total reward;
    ``paid`` is what the trainer got (equal to ``reward`` unless shuffled; a permutation keeps the
    mean, so the two differ only per completion).
    """

    step: int
    n: int
    correct: float
    format: float
    reward: float
    paid: float
    shuffled: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class PsychReward:
    """The reward function for GRPO on ``psych`` tasks (see the module docstring).

    Args:
        format_weight: bonus for an explicit ``Answer: X`` line (``0`` turns it off).
        shuffle: the control: permute the rewards across the batch's completions.
        seed: seeds the permutation (only used with ``shuffle``).
    """

    def __init__(self, format_weight: float = 0.1, *, shuffle: bool = False, seed: int = 0) -> None:
        if not 0.0 <= format_weight <= 1.0:
            raise ValueError(f"format_weight must be in [0, 1], got {format_weight}; the correct choice is worth 1")
        self.format_weight = float(format_weight)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self._rng = np.random.default_rng(seed)
        self.history: list[RewardRecord] = []
        # TRL names a reward function's logged columns by __name__
        self.__name__ = "psych_shuffled" if shuffle else "psych"

    def scores(
        self, completions: Sequence[Any], answer_index: Sequence[int], n_choices: Sequence[int]
    ) -> list[float]:
        """The true (unshuffled) reward of each completion."""
        corr = correct_rewards(completions, answer_index, n_choices)
        fmt = format_rewards(completions, n_choices)
        return [c + self.format_weight * f for c, f in zip(corr, fmt)]

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] = (),
        answer_index: Sequence[int] = (),
        n_choices: Sequence[int] | None = None,
        trainer_state: Any = None,
        **_: Any,
    ) -> list[float]:
        if not completions:
            raise ValueError("no completions to score")
        if n_choices is None:
            n_choices = [4] * len(completions)
        corr = correct_rewards(completions, answer_index, n_choices)
        fmt = format_rewards(completions, n_choices)
        true = [c + self.format_weight * f for c, f in zip(corr, fmt)]
        paid = list(true)
        if self.shuffle:
            paid = [true[i] for i in self._rng.permutation(len(true))]
        step = int(getattr(trainer_state, "global_step", len(self.history)) or 0)
        n = len(true)
        self.history.append(RewardRecord(
            step=step, n=n, correct=sum(corr) / n, format=sum(fmt) / n, reward=sum(true) / n,
            paid=sum(paid) / n, shuffled=self.shuffle,
        ))
        return paid

    def rng_state(self) -> dict[str, Any]:
        """The permutation RNG's state (JSON-able), saved with checkpoints so a resumed control continues it."""
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state
