"""psylens: mechanistic interpretability of emotion and psychological reasoning in language models.

>>> import psylens
>>> model = psylens.load_model("smollm2-135m-instruct")          # doctest: +SKIP
>>> acts = model.harvest(psylens.stimuli.load("emotions"))       # doctest: +SKIP
>>> acts["resid_post"].shape                                     # doctest: +SKIP
torch.Size([1120, 30, 576])
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load_model",
    "Model",
    "Activations",
    "harvest",
    "open_run",
    "create_run",
    "Run",
    "stimuli",
    "SITES",
]

if TYPE_CHECKING:
    from psylens import harvest, stimuli
    from psylens.activations import Activations
    from psylens.models import Model, load_model
    from psylens.runs import Run, create_run, open_run
    from psylens.sites import SITES

_LAZY = {
    "load_model": ("psylens.models", "load_model"),
    "Model": ("psylens.models", "Model"),
    "Activations": ("psylens.activations", "Activations"),
    "open_run": ("psylens.runs", "open_run"),
    "create_run": ("psylens.runs", "create_run"),
    "Run": ("psylens.runs", "Run"),
    "SITES": ("psylens.sites", "SITES"),
}


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import psylens` (and the CLI's --help) fast and side-effect free.
    import importlib

    # Submodules, not functions: once imported, Python binds psylens.<name> to the module,
    # so a lazy function of the same name would turn into the module on second access.
    if name in ("stimuli", "harvest"):
        return importlib.import_module(f"psylens.{name}")
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'psylens' has no attribute {name!r}")
