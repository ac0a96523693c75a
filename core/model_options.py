"""The model-loading options that every psylens command which loads a model shares.

``--device``, ``--dtype`` and ``--device-map`` mean the same everywhere, because every command takes them from
here and hands them to :func:`psylens.load_model` through :func:`model_kwargs`:

- ``--device auto`` picks cuda, then mps, then cpu; ``cpu``, ``cuda``, ``cuda:1`` and ``mps`` are checked.
- ``--dtype``: without it, ``load_model`` picks bfloat16 on CUDA (float16 where bfloat16 is unsupported), float16
  on MPS and float32 on the CPU. ``--dtype float32`` keeps full precision on an accelerator; ``psylens doctor``
  measures how far a device and dtype move psylens' numbers from a float32 CPU reference.
- ``--device-map auto`` spreads a model too large for one GPU over several (accelerate); it replaces ``--device``.

Arguments are checked by :func:`model_kwargs` before a command writes anything.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

__all__ = ["DEVICE_OPTION", "DTYPE_OPTION", "DEVICE_MAP_OPTION", "model_kwargs"]

DEVICE_OPTION: Any = typer.Option(
    "auto", "--device", help="auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps. Ignored with --device-map."
)
DTYPE_OPTION: Any = typer.Option(
    None, "--dtype",
    help="float32 | bfloat16 | float16 (default: bfloat16 on CUDA, float16 on MPS, float32 on the CPU).",
)
DEVICE_MAP_OPTION: Any = typer.Option(
    None, "--device-map", help="e.g. auto: spread the model over the GPUs with accelerate (replaces --device)."
)


def model_kwargs(device: str = "auto", dtype: Optional[str] = None, device_map: Optional[str] = None) -> dict[str, Any]:
    """The keyword arguments of :func:`psylens.load_model` for these options, checked now.

    Raises:
        ValueError: an unknown dtype, an unknown or unavailable device, or an empty ``--device-map``.
    """
    from psylens.models import DTYPES, pick_device  # here: `psylens --help` need not import torch

    if dtype is not None and dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)} (or leave it out for the device's default)")
    if device_map is not None:
        if not device_map.strip():
            raise ValueError("--device-map is empty: give a device map such as 'auto', or leave the option out")
        if device != "auto":
            raise ValueError(f"--device {device!r} and --device-map {device_map!r} both given: --device-map places "
                             "the model itself, so pass only one of them")
        return {"device_map": device_map, "dtype": dtype}
    pick_device(device)  # raises on an unknown or unavailable device
    return {"device": device, "dtype": dtype}
