"""SteeringVector as a value: construction, validation, arithmetic, storage, export."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from psylens.steering import SteeringVector
from psylens.steering.vector import is_steering_vector_file, read_description

D = 16


class StandInDirections:
    """The interface of psylens.probes.Directions that steering relies on."""

    def __init__(self, emotions=("joy", "sadness"), layers=(2, 5), d=D, site="resid_post"):
        self.emotions = tuple(emotions)
        self.layers = tuple(layers)
        self.site = site
        self.method = "mean_diff"
        g = torch.Generator().manual_seed(0)
        v = torch.randn(len(emotions), len(layers), d, generator=g)
        self.vectors = v / v.norm(dim=-1, keepdim=True)

    def __getitem__(self, key):
        e, layer = key
        return self.vectors[self.emotions.index(e), self.layers.index(layer)].clone()


def make(**kw):
    g = torch.Generator().manual_seed(1)
    base = dict(layers=(3, 1), vectors=torch.randn(2, D, generator=g), alpha=2.0)
    base.update(kw)
    return SteeringVector(**base)


def test_frozen_sorted_and_copied():
    vec = torch.randn(2, D)
    sv = SteeringVector(layers=(3, 1), vectors=vec, alpha=2)
    assert sv.layers == (1, 3)
    assert torch.equal(sv.vectors[0], vec[1])
    vec.zero_()
    assert sv.vectors.abs().sum() > 0  # the caller's tensor is not aliased
    with pytest.raises(dataclasses.FrozenInstanceError):
        sv.alpha = 3.0  # type: ignore[misc]
    assert isinstance(sv.alpha, float)
    assert "layers=[1, 3]" in repr(sv)


def test_from_tensor_broadcasts_one_vector():
    v = torch.randn(D)
    sv = SteeringVector.from_tensor(v, layers=[4, 7], alpha=4.0)
    assert sv.layers == (4, 7) and sv.vectors.shape == (2, D)
    assert torch.equal(sv.vector(7), v)
    assert torch.equal(sv.deltas()[4], 4.0 * v)


def test_from_directions_standin():
    dirs = StandInDirections()
    sv = SteeringVector.from_directions(dirs, "joy", layers=[5], alpha=4.0)
    assert sv.label == "joy" and sv.site == "resid_post" and sv.layers == (5,)
    assert torch.equal(sv.vector(5), dirs["joy", 5])
    assert sv.meta["method"] == "mean_diff"
    all_layers = SteeringVector.from_directions(dirs, "sadness")
    assert all_layers.layers == (2, 5)


def test_from_directions_errors_name_valid_choices():
    dirs = StandInDirections()
    with pytest.raises(ValueError, match=r"unknown emotion 'awe'.*\['joy', 'sadness'\]"):
        SteeringVector.from_directions(dirs, "awe", layers=[2])
    with pytest.raises(ValueError, match=r"layers \[9\] have no 'joy' direction.*\[2, 5\]"):
        SteeringVector.from_directions(dirs, "joy", layers=[9])
    with pytest.raises(ValueError, match="site 'mlp_post' cannot be steered"):
        SteeringVector.from_directions(StandInDirections(site="mlp_post"), "joy", layers=[2])


def test_from_directions_with_the_real_directions_class(tmp_path):
    from psylens.probes.directions import Directions

    raw = torch.randn(2, 2, D)
    dirs = Directions.from_raw(raw, ["joy", "fear"], [0, 3])
    sv = SteeringVector.from_directions(dirs, "fear", layers=[3], alpha=1.5)
    torch.testing.assert_close(sv.vector(3), raw[1, 1] / raw[1, 1].norm())
    with pytest.raises(ValueError, match="unknown emotion"):
        SteeringVector.from_directions(dirs, "anger", layers=[3])
    path = dirs.save(tmp_path / "directions.safetensors")
    from_file = SteeringVector.from_directions(path, "joy", layers=[0], alpha=2.0)
    torch.testing.assert_close(from_file.vector(0), raw[0, 0] / raw[0, 0].norm())


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(mode="nudge"), "mode 'nudge' is not one of"),
        (dict(positions="last"), "positions 'last' is not one of"),
        (dict(layers=(1, 1)), "duplicates"),
        (dict(layers=(1,)), r"vectors has shape \[2, 16\] but there are 1 layers"),
        (dict(alpha=float("nan")), "alpha must be a finite number"),
        (dict(vectors=torch.full((2, D), float("inf"))), "NaN or inf"),
        (dict(layers=(-1, 2)), "not a non-negative integer"),
        (dict(mode="ablate", vectors=torch.zeros(2, D)), "needs a non-zero direction"),
    ],
)
def test_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        make(**kw)


def test_arithmetic():
    a = make()
    b = make(layers=(1, 8), vectors=torch.ones(2, D), alpha=0.5, label="b")
    assert (2.5 * a).alpha == 5.0 and (a * 2.5).alpha == 5.0 and (a / 4).alpha == 0.5
    assert (-a).alpha == -2.0
    s = a + b
    assert s.layers == (1, 3, 8) and s.alpha == 1.0
    torch.testing.assert_close(s.vector(1), 2.0 * a.vector(1) + 0.5 * torch.ones(D))
    torch.testing.assert_close(s.vector(8), 0.5 * torch.ones(D))
    d = a - a
    assert d.vectors.abs().max() == 0
    for bad in (lambda: a + 1, lambda: a * a, lambda: a * "2", lambda: a + torch.ones(D), lambda: True * a):
        with pytest.raises(TypeError):
            bad()
    with pytest.raises(ValueError, match="only add-mode"):
        a + make(mode="ablate")
    with pytest.raises(ValueError, match="different positions"):
        a + make(positions="generated")


def test_to_and_replace_return_new_values():
    a = make()
    b = a.to(dtype=torch.float64)
    assert a.vectors.dtype == torch.float32 and b.vectors.dtype == torch.float64
    c = a.replace(alpha=9.0, positions="generated")
    assert a.alpha == 2.0 and c.alpha == 9.0 and c.positions == "generated"
    r = a.random_like(seed=3)
    torch.testing.assert_close(r.norms(), a.norms())
    assert not torch.allclose(r.vectors, a.vectors)
    assert torch.equal(r.vectors, a.random_like(seed=3).vectors)


def test_save_load_roundtrip_exact(tmp_path):
    sv = make(mode="clamp", positions="prompt", label="joy", meta={"success": 0.75, "note": "x"}, alpha=0.1 + 0.2)
    p = sv.save(tmp_path / "joy.safetensors")
    back = SteeringVector.load(p)
    assert back.equal(sv)
    assert back.alpha == sv.alpha  # 0.30000000000000004 survives JSON
    assert read_description(p)["label"] == "joy"
    assert is_steering_vector_file(p)
    bf = make().to(dtype=torch.bfloat16)
    assert SteeringVector.load(bf.save(tmp_path / "bf.safetensors")).equal(bf)


def test_save_load_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors file"):
        make().save(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="JSON-serialisable"):
        make(meta={"t": object()}).save(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        SteeringVector.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"vectors": torch.ones(1, 2, 3), "norms": torch.ones(1, 2)}, str(tmp_path / "dirs.safetensors"))
    with pytest.raises(ValueError, match="looks like a directions file"):
        SteeringVector.load(tmp_path / "dirs.safetensors")
    assert not is_steering_vector_file(tmp_path / "dirs.safetensors")


def test_export_gguf_reads_back(tmp_path):
    gguf = pytest.importorskip("gguf")
    from psylens.steering.export import export_gguf, read_gguf

    sv = make(alpha=3.0)
    path = export_gguf(sv, tmp_path / "joy.gguf")
    back = read_gguf(path)
    assert back["model_hint"] == "llama" and back["layer_count"] == 2
    assert sorted(back["directions"]) == [1, 3]
    for layer in (1, 3):
        assert torch.equal(back["directions"][layer], 3.0 * sv.vector(layer))
    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert {t.name for t in reader.tensors} == {"direction.1", "direction.3"}
    again = SteeringVector.from_tensor(torch.stack([back["directions"][1], back["directions"][3]]), layers=[1, 3])
    torch.testing.assert_close(again.deltas()[3], sv.deltas()[3])


def test_export_refuses_what_llama_cpp_cannot_do(tmp_path):
    from psylens.steering.export import export_gguf

    with pytest.raises(ValueError, match="only add"):
        export_gguf(make(mode="ablate"), tmp_path / "a.gguf")
    with pytest.raises(ValueError, match="every position"):
        export_gguf(make(positions="generated"), tmp_path / "g.gguf")
    with pytest.raises(ValueError, match="layer 0"):
        export_gguf(make(layers=(0, 2)), tmp_path / "z.gguf")
