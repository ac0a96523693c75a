"""Two models of one family in one run: the base model and its tuned variant.

>>> pair = load_pair("smollm2-135m-instruct", tuned_adapter="adapters/psy-grpo")     # doctest: +SKIP
>>> run = pair_run("runs/cmp", pair)                                                  # doctest: +SKIP
>>> run.models                                       # {"base": {...}, "tuned": {..., "adapter": ...}}

The tuned model is either another checkpoint (``tuned="DIR"``) or the base with a PEFT adapter merged
in (``tuned_adapter="DIR"``). With an adapter on the base, :mod:`psylens.compare.weights` reads the
adapter's own tensors for an exact ΔW = B·A·scale instead of subtracting merged weights.

.. warning:: Two models in memory cost twice the memory of one (SmolLM2-135M: ~1.1 GB in fp32). Both are
   loaded on the same device; everything that compares them assumes the same tokenizer, which
   :func:`check_compatible` verifies (a different vocabulary makes every per-token comparison meaningless).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from psylens.compare import artifacts as art

__all__ = ["ModelPair", "load_pair", "check_compatible", "pair_run"]


@dataclass(frozen=True)
class ModelPair:
    """A base and a tuned psylens ``Model`` with the same architecture and tokenizer.

    ``adapter``: the PEFT adapter directory merged into ``tuned`` (``None`` for a plain checkpoint);
    ``adapter_on_base``: whether ``tuned`` is exactly ``base`` + that adapter (then ΔW is read from it).
    """

    base: Any
    tuned: Any
    adapter: str | None = None
    adapter_on_base: bool = False

    def __post_init__(self) -> None:
        for name in art.MODEL_NAMES:
            m = getattr(self, name)
            if not hasattr(m, "hf_model") or not hasattr(m, "tokenizer"):
                raise ValueError(f"ModelPair.{name} must be a psylens Model (psylens.load_model), got {type(m).__name__}")
        if self.adapter is not None and not (Path(self.adapter) / "adapter_config.json").is_file():
            raise ValueError(f"adapter {self.adapter!r} is not a PEFT adapter directory (no adapter_config.json)")
        if self.adapter_on_base and self.adapter is None:
            raise ValueError("adapter_on_base=True needs the adapter directory (adapter=...)")
        check_compatible(self.base, self.tuned)

    @property
    def n_layers(self) -> int:
        return int(self.base.n_layers)

    def describe(self) -> dict[str, Any]:
        return {"base": self.base.describe(), "tuned": self.tuned.describe(), "adapter": self.adapter,
                "adapter_on_base": self.adapter_on_base}


def check_compatible(base: Any, tuned: Any) -> None:
    """``ValueError`` unless both models share architecture, shapes and tokenizer vocabulary."""
    checks = {
        "architecture": (type(base.hf_model).__name__, type(tuned.hf_model).__name__),
        "n_layers": (base.n_layers, tuned.n_layers),
        "d_model": (base.d_model, tuned.d_model),
        "d_mlp": (base.d_mlp, tuned.d_mlp),
        "vocabulary size": (base.hf_model.get_output_embeddings().weight.shape[0],
                            tuned.hf_model.get_output_embeddings().weight.shape[0]),
    }
    for what, (a, b) in checks.items():
        if a != b:
            raise ValueError(
                f"base and tuned models differ in {what} ({a} vs {b}): a comparison needs the same model family "
                "and shapes. Pass the checkpoint the tuned model was trained from as --base"
            )
    if base.tokenizer is not tuned.tokenizer and base.tokenizer.get_vocab() != tuned.tokenizer.get_vocab():
        raise ValueError(
            "base and tuned tokenizers have different vocabularies: per-token comparisons (KL, the difference "
            "lens) would compare different tokens. Use the tuned model's own base checkpoint as --base"
        )


def load_pair(
    base: str,
    tuned: str | None = None,
    *,
    tuned_adapter: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    device_map: str | dict[str, Any] | None = None,
) -> ModelPair:
    """Load ``base`` and the tuned model: ``tuned`` (any spec ``load_model`` takes), or ``base`` + ``tuned_adapter``.

    With both ``tuned`` and ``tuned_adapter`` the adapter is merged into ``tuned``. An organism alias
    (``smollm2-135m-psy-grpo``) over ``base`` counts as ``base`` + its shipped adapter. Giving neither is an
    error (a model compared with itself is the control; ask for it explicitly with ``tuned=base``).
    """
    from psylens.models import load_model

    if tuned is None and tuned_adapter is None:
        raise ValueError("give the tuned model (--tuned SPEC) or an adapter to apply on the base (--tuned-adapter DIR)")
    b = load_model(base, device=device, dtype=dtype, device_map=device_map)
    t = load_model(tuned or base, adapter=tuned_adapter, device=device, dtype=dtype, device_map=device_map)
    if tuned_adapter is None and tuned is not None and getattr(t, "adapter", None):
        # an organism alias (base + shipped adapter) over this very base: ΔW is read from its adapter
        from psylens import models as _models

        org = getattr(_models, "ORGANISMS", {}).get(tuned)
        if org is not None and org.base == base:
            return ModelPair(b, t, adapter=str(t.adapter), adapter_on_base=True)
    return ModelPair(
        b, t,
        adapter=None if tuned_adapter is None else str(Path(tuned_adapter).expanduser()),
        adapter_on_base=tuned_adapter is not None and (tuned is None or tuned == base),
    )


def pair_run(
    out: str | os.PathLike[str],
    pair: ModelPair,
    *,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    started: str | None = None,
) -> Any:
    """Create (or reuse) the run at ``out`` with ``run.json`` ``"models": {"base": ..., "tuned": ...}``.

    A run of another command, or whose ``base``/``tuned`` are other models, raises ``ValueError``
    before anything is written (``Run.add_model`` compares fingerprints).
    """
    from psylens.runs import RUN_FILE, create_run, open_run

    p = Path(out)
    if (p / RUN_FILE).is_file():
        run = open_run(p)
        old = run.models
        for name in art.MODEL_NAMES:  # validate both before writing anything
            if name in old:
                from psylens.runs import _same_model, model_record

                why = _same_model(old[name], model_record(getattr(pair, name)))
                if why is not None:
                    raise ValueError(
                        f"{str(p)!r} already compares another {name} model ({old[name].get('spec')!r}: {why}); "
                        "choose another --out"
                    )
        run = create_run(p, command="psylens compare", config=config, seed=seed, started=started)
    else:
        run = create_run(p, command="psylens compare", config=config, seed=seed, started=started)
    run.add_model("base", pair.base)
    run.add_model("tuned", pair.tuned, adapter=pair.adapter)
    return run
