"""Export to llama.cpp's control-vector GGUF (the format repeng writes), so the same vector runs there.

The file has architecture ``controlvector``, keys ``controlvector.model_hint`` (e.g. ``llama``) and
``controlvector.layer_count``, and one float32 tensor ``direction.{l}`` per layer: what llama.cpp adds
to the output of (0-based) decoder layer ``l`` — psylens' ``resid_post`` at layer ``l``. The scale is
baked in (``alpha * v``); llama.cpp scales it again by ``--control-vector-scaled FILE S``.

    llama-cli -m model.gguf --control-vector joy.gguf -p "..."

Only ``add`` vectors on every position can be exported: llama.cpp adds at every position and has no
ablation or clamping. llama.cpp never steers the output of layer 0 (it rejects ``direction.0``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from psylens.io import atomic_write_bytes
from psylens.steering.vector import SteeringVector

__all__ = ["export_gguf", "read_gguf", "ARCH"]

ARCH = "controlvector"


def _llama_cpp_layers(sv: SteeringVector) -> dict[int, Tensor]:
    if sv.mode != "add":
        raise ValueError(
            f"llama.cpp control vectors only add; this vector's mode is {sv.mode!r}. Export an add-mode vector"
        )
    if sv.positions != "all":
        raise ValueError(
            f"llama.cpp steers every position; this vector steers {sv.positions!r} positions. "
            "Export sv.replace(positions='all') if that is what you want"
        )
    out: dict[int, Tensor] = {}
    for layer, delta in sv.deltas().items():
        target = layer if sv.site == "resid_post" else layer - 1  # resid_pre of l = resid_post of l-1
        if target < 1:
            raise ValueError(
                f"llama.cpp cannot steer {'the input of layer 1 or earlier' if sv.site == 'resid_pre' else 'layer 0'} "
                f"(no direction.0 in its control vectors); steer layer {layer + 1 if target < 1 else layer} or later"
            )
        out[target] = delta.detach().float().cpu()
    return out


def export_gguf(sv: SteeringVector, path: str | os.PathLike[str], *, model_hint: str = "llama") -> Path:
    """Write ``sv`` as a llama.cpp control-vector GGUF at ``path`` (atomically); returns the path.

    ``model_hint``: the llama.cpp architecture name of the model (``llama`` for Llama and SmolLM2,
    ``qwen2``, ``gemma3``, ...); llama.cpp only reads it as a hint.
    """
    import gguf

    p = Path(path)
    if p.suffix != ".gguf":
        raise ValueError(f"export to a .gguf file, got {str(path)!r}")
    layers = _llama_cpp_layers(sv)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.partial")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    try:
        writer.add_string(f"{ARCH}.model_hint", model_hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(layers))
        for layer, vec in sorted(layers.items()):
            writer.add_tensor(f"direction.{layer}", vec.numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    try:
        atomic_write_bytes(p, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)
    return p


def read_gguf(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a control-vector GGUF: ``{"model_hint": str, "layer_count": int, "directions": {layer: Tensor}}``.

    ``SteeringVector.from_tensor`` turns the directions back into a vector (``alpha=1``; the scale is baked in).
    """
    import gguf

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no GGUF file at {str(path)!r}")
    reader = gguf.GGUFReader(str(p))
    arch_field = reader.get_field("general.architecture")
    arch = arch_field.contents() if arch_field is not None else None
    if arch != ARCH:
        raise ValueError(f"{str(path)!r} is not a control-vector GGUF (architecture {arch!r}, expected {ARCH!r})")
    hint = reader.get_field(f"{ARCH}.model_hint")
    count = reader.get_field(f"{ARCH}.layer_count")
    directions: dict[int, Tensor] = {}
    for t in reader.tensors:
        if not t.name.startswith("direction."):
            continue
        directions[int(t.name.split(".", 1)[1])] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    return {
        "model_hint": hint.contents() if hint is not None else None,
        "layer_count": int(count.contents()) if count is not None else len(directions),
        "directions": dict(sorted(directions.items())),
    }
