"""psylens._nnsight keeps no model alive: a traced module is freed once nothing else holds it."""

from __future__ import annotations

import gc
import weakref

import torch
from torch import nn

from psylens._nnsight import trace_outputs, wrap


def _tiny() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def test_traced_module_is_garbage_collected() -> None:
    m = _tiny()
    wrap(m)
    (out,) = trace_outputs(m, ["0"], input=torch.randn(3, 4))
    assert out.shape == (3, 8)
    ref = weakref.ref(m)
    del m, out
    gc.collect()
    assert ref() is None, "psylens._nnsight still holds the traced module"


def test_repeated_traces_match_a_plain_forward() -> None:
    m = _tiny()
    x = torch.randn(3, 4)
    with torch.no_grad():
        want = m[0](x)
    for _ in range(3):  # re-wrapping on every call must not stack nnsight's patches
        first, last = trace_outputs(m, ["0", "2"], input=x)
        torch.testing.assert_close(first, want)
        torch.testing.assert_close(last, m(x).detach())
