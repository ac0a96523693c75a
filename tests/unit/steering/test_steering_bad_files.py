"""Files and values a steering vector cannot be made from: each says what is wrong (issue 15, items 10 and 12)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from psylens.steering.cli import steer_app
from psylens.steering.vector import FORMAT_KEY, SteeringVector


def _good(tmp_path: Path) -> Path:
    return SteeringVector.from_tensor(torch.randn(8), layers=[1, 2], alpha=2.0, label="joy").save(tmp_path / "good.safetensors")


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = _good(tmp_path)
    raw = good.read_bytes()
    files: dict[str, tuple[Path, str]] = {}
    (tmp_path / "truncated.safetensors").write_bytes(raw[: len(raw) - 10])
    files["truncated"] = (tmp_path / "truncated.safetensors", "truncated")
    (tmp_path / "header-cut.safetensors").write_bytes(raw[:20])
    files["header-cut"] = (tmp_path / "header-cut.safetensors", "truncated")
    (tmp_path / "garbage.safetensors").write_bytes(b"hello, this is not a tensor file at all\n" * 3)
    files["garbage"] = (tmp_path / "garbage.safetensors", "not a safetensors file")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    files["empty"] = (tmp_path / "empty.safetensors", "empty")
    (tmp_path / "v.pkl").write_bytes(pickle.dumps({"vectors": [1.0, 2.0]}))
    files["pickle"] = (tmp_path / "v.pkl", "pickle")
    torch.save({"vectors": torch.randn(2, 8)}, tmp_path / "v.pt")
    files["torch.save"] = (tmp_path / "v.pt", "torch.save")
    return files


def _with_meta(tmp_path: Path, name: str, desc: str) -> Path:
    p = tmp_path / f"{name}.safetensors"
    save_file({"vectors": torch.randn(2, 8)}, str(p), metadata={FORMAT_KEY: desc})
    return p


def _bad_meta(tmp_path: Path) -> dict[str, Path]:
    ok = dict(format=1, kind="psylens.steering.SteeringVector", layers=[1, 2], d_model=8, alpha=1.0, mode="add",
              positions="all", site="resid_post", label="joy", meta={})
    return {
        "not json": _with_meta(tmp_path, "notjson", "{layers: [1"),
        "a list": _with_meta(tmp_path, "list", "[1, 2]"),
        "deeply nested": _with_meta(tmp_path, "deep", "[" * 100_000 + "]" * 100_000),
        "missing layers": _with_meta(tmp_path, "nolayers", json.dumps({k: v for k, v in ok.items() if k != "layers"})),
        "layers an int": _with_meta(tmp_path, "intlayers", json.dumps({**ok, "layers": 3})),
        "alpha a string": _with_meta(tmp_path, "stralpha", json.dumps({**ok, "alpha": "big"})),
        "meta a list": _with_meta(tmp_path, "listmeta", json.dumps({**ok, "meta": [1]})),
        "format a string": _with_meta(tmp_path, "strformat", json.dumps({**ok, "format": "1"})),
        "bad mode": _with_meta(tmp_path, "badmode", json.dumps({**ok, "mode": "explode"})),
        "label a number": _with_meta(tmp_path, "numlabel", json.dumps({**ok, "label": 3})),
    }


def test_unreadable_files_say_what_they_are(tmp_path: Path) -> None:
    for name, (path, needle) in _bad_files(tmp_path).items():
        with pytest.raises(ValueError) as e:
            SteeringVector.load(path)
        assert needle in str(e.value) and str(path) in str(e.value), (name, str(e.value))
    assert SteeringVector.load(_good(tmp_path)).label == "joy"  # control


def test_malformed_descriptions_are_value_errors(tmp_path: Path) -> None:
    for name, path in _bad_meta(tmp_path).items():
        with pytest.raises(ValueError) as e:  # never AttributeError / KeyError / TypeError / RecursionError
            SteeringVector.load(path)
        assert str(path) in str(e.value), (name, str(e.value))


def test_steer_cli_explains_the_vectors_file(tmp_path: Path) -> None:
    out = tmp_path / "g.jsonl"
    for name, (path, needle) in _bad_files(tmp_path).items():
        res = CliRunner().invoke(steer_app, ["--vectors", str(path), "--out", str(out), "--prompts", "Hi."])
        msg = str(res.exception)
        assert res.exit_code != 0 and isinstance(res.exception, ValueError), (name, res.output)
        assert needle in msg and "needs --emotion" not in msg, (name, msg)
    other = tmp_path / "other.safetensors"
    save_file({"weights": torch.randn(3)}, str(other))
    res = CliRunner().invoke(steer_app, ["--vectors", str(other), "--out", str(out)])
    assert "neither a saved steering vector nor a directions file" in str(res.exception)
    for name, path in _bad_meta(tmp_path).items():
        res = CliRunner().invoke(steer_app, ["--vectors", str(path), "--out", str(out)])
        assert isinstance(res.exception, ValueError) and "needs --emotion" not in str(res.exception), (name, res.exception)
    assert not out.exists()


def test_directions_load_explains(tmp_path: Path) -> None:
    from psylens.probes.directions import Directions

    for name, (path, needle) in _bad_files(tmp_path).items():
        with pytest.raises(ValueError, match=needle):
            Directions.load(path)
    for desc in ("{", "[" * 100_000 + "]" * 100_000, "[1]", json.dumps({"emotions": "joy", "layers": [0]}),
                 json.dumps({"emotions": ["joy"], "layers": [0], "meta": 3})):
        p = tmp_path / "d.safetensors"
        save_file({"vectors": torch.randn(1, 1, 8), "norms": torch.ones(1, 1)}, str(p),
                  metadata={"psylens_directions": desc})
        with pytest.raises(ValueError):
            Directions.load(p)


# ---------------------------------------------------------------- values (item 12)
def test_overflowing_vector_is_rejected() -> None:
    with pytest.raises(ValueError, match="too large"):
        SteeringVector.from_tensor(torch.full((8,), 1e38), layers=[0])
    with pytest.raises(ValueError, match="too large"):
        SteeringVector.from_tensor(torch.ones(8), layers=[0], alpha=1e30)
    sv = SteeringVector.from_tensor(torch.ones(8), layers=[0], alpha=1e3)  # control: large but finite once squared
    with pytest.raises(ValueError, match="too large"):
        sv * 1e20  # scaling goes through the same check


def test_complex_and_meta_vectors_are_rejected() -> None:
    with pytest.raises(ValueError, match="complex"):
        SteeringVector.from_tensor(torch.randn(8, dtype=torch.complex64), layers=[0])
    with pytest.raises(ValueError, match="meta device"):
        SteeringVector.from_tensor(torch.empty(8, device="meta"), layers=[0])


def test_numpy_scalars_are_accepted() -> None:
    sv = SteeringVector.from_tensor(torch.ones(8), layers=[np.int64(3)], alpha=np.float32(2))
    assert sv.alpha == 2.0 and type(sv.alpha) is float and sv.layers == (3,) and type(sv.layers[0]) is int
    assert (sv * np.float64(2)).alpha == 4.0
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        SteeringVector.from_tensor(torch.ones(8), layers=[0], alpha=np.bool_(True))


@pytest.mark.parametrize("layers", [1.5, "12", [1.5], None, {"a": 1}])
def test_bad_layers_are_value_errors(layers) -> None:
    with pytest.raises(ValueError, match="layer"):
        SteeringVector.from_tensor(torch.ones(8), layers=layers)
