"""A judge that reads emotion from text with a linear probe on a separate, unsteered model.

The NRC lexicon judge names the emotion of only ~43% of plain statements of it (see
:func:`psylens.steering.judges.judge_accuracy`), so its success rates have a low ceiling. A
:class:`ProbeJudge` instead runs each text through a judge model — any psylens ``Model``, left
unsteered; a different model than the steered one avoids shared blind spots — reads the mean of
``resid_post`` over the text's tokens at one layer, and applies a multinomial probe trained on
labelled texts (the built-in ``emotions`` set, neutral included). It sees only the text, never the
steered model's activations.

A text the probe calls ``neutral`` gets an all-zero row (no emotion expressed), like a text with
no lexicon word under the lexicon judge; blank texts too. Otherwise the row is the probe's
probability over the six emotions, renormalised.

>>> judge = ProbeJudge.fit(load_model("gemma-3-270m"))          # doctest: +SKIP
>>> judge.validation["cv_accuracy"], judge.layer                 # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from psylens.stimuli import EMOTIONS

if TYPE_CHECKING:
    from psylens.models import Model
    from psylens.probes.classifiers import Probe
    from psylens.stimuli import Stimuli

__all__ = ["ProbeJudge"]

log = logging.getLogger(__name__)


class ProbeJudge:
    """Emotion distribution from a probe reading the text through ``model`` (see the module doc).

    Build it with :meth:`fit`; ``validation`` holds the probe's held-out-scenario accuracy.
    """

    name = "probe"

    def __init__(self, model: Model, probe: Probe, layer: int, *, batch_size: int = 16,
                 validation: dict[str, Any] | None = None) -> None:
        missing = [e for e in EMOTIONS if e not in probe.classes]
        if missing:
            raise ValueError(f"the probe lacks emotions {missing}; it knows {list(probe.classes)}. "
                             "Train it on a set labelled with all six emotions")
        if not 0 <= layer < model.n_layers:
            raise ValueError(f"layer {layer} out of range: the judge model has {model.n_layers} layers")
        if probe.d != model.d_model:
            raise ValueError(f"the probe reads width {probe.d} but the judge model has d_model {model.d_model}; "
                             "fit the probe on this model")
        self.model, self.probe, self.layer, self.batch_size = model, probe, int(layer), batch_size
        self.validation = dict(validation or {})
        self._cols = [probe.classes.index(e) for e in EMOTIONS]
        self._neutral = probe.classes.index("neutral") if "neutral" in probe.classes else None

    @classmethod
    def fit(cls, model: Model, stimuli: str | os.PathLike[str] | Stimuli = "emotions", *, layer: int | None = None,
            seed: int = 0, batch_size: int = 16, progress: bool = False) -> ProbeJudge:
        """Train the probe on ``stimuli`` (labelled; groups for held-out-scenario CV) read through ``model``.

        ``layer=None`` picks the layer with the best held-out-scenario accuracy over all labels.
        """
        from psylens.probes import fit_probes
        from psylens.stimuli import Stimuli, load

        stim = stimuli if isinstance(stimuli, Stimuli) else load(stimuli)
        layers = None if layer is None else [int(layer)]
        acts = model.harvest(stim, sites=["resid_post"], layers=layers, positions="mean", batch_size=batch_size,
                             progress=progress)
        res = fit_probes(acts, seed=seed, controls=("shuffled",))
        best = res.best_layer if layer is None else int(layer)
        i = res.layer_index(best)
        validation = {
            "stimuli": stim.name, "layer": best, "cv_accuracy": float(res.accuracy[i]),
            "shuffled_accuracy": float(res.shuffled_accuracy[i]) if res.shuffled_accuracy is not None else None,
            "chance": res.chance, "classes": list(res.classes), "n": len(acts),
        }
        log.info("probe judge on %s: layer %d, held-out-scenario accuracy %.3f", model.spec, best, validation["cv_accuracy"])
        return cls(model, res.probes[i], best, batch_size=batch_size, validation=validation)

    def score(self, texts: Sequence[str]) -> Float[Tensor, "n 6"]:
        """One distribution over ``EMOTIONS`` per text; zeros when the probe reads it as neutral (or it is blank)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = torch.zeros(len(texts), len(EMOTIONS))
        keep = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
        if not keep:
            return out
        acts = self.model.harvest([texts[i].strip() for i in keep], sites=["resid_post"], layers=[self.layer],
                                  positions="mean", batch_size=self.batch_size, progress=False)
        with torch.no_grad():
            p = torch.softmax(self.probe.logits(acts["resid_post"][:, 0]), dim=-1)
        six = p[:, self._cols]
        six = six / six.sum(dim=1, keepdim=True).clamp_min(1e-12)
        if self._neutral is not None:
            six[p.argmax(dim=1) == self._neutral] = 0.0
        out[torch.tensor(keep)] = six.float()
        return out
