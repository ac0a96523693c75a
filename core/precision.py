"""The float width of reductions done on the model's device.

Sums and means that must not lose precision (projections, attribution scores, unit baselines) are
computed in float64. Apple's MPS backend has no float64: casting an MPS tensor to it, creating one on
it or moving a float64 tensor there raises. :func:`wide_dtype` therefore gives float64 on the CPU,
CUDA and every other device, and float32 on MPS (the reduction then accumulates in float32 there);
:func:`wide` casts a tensor to the wide dtype of its own device. Results moved to the CPU and added
into float64 accumulators stay float64 on every device.

>>> import torch
>>> wide_dtype("cpu"), wide_dtype(torch.device("mps"))
(torch.float64, torch.float32)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["wide_dtype", "wide"]

_NO_FLOAT64 = frozenset({"mps"})  # device types without float64


def wide_dtype(device: torch.device | str) -> torch.dtype:
    """float64, or float32 on a device without float64 (Apple MPS)."""
    return torch.float32 if torch.device(device).type in _NO_FLOAT64 else torch.float64


def wide(x: Tensor) -> Tensor:
    """``x`` cast, on its own device, to :func:`wide_dtype` of that device (float64 except on MPS)."""
    return x.to(wide_dtype(x.device))
