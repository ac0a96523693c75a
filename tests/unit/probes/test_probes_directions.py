"""Known-answer tests for emotion directions: plant a direction per label, recover it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from psylens.activations import Activations
from psylens.probes import Directions, emotion_directions, planted_activations
from psylens.stimuli import EMOTIONS


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


@pytest.fixture(scope="module")
def planted():
    return planted_activations(n_groups=20, n_layers=3, d=64, strength=[0.0, 2.0, 4.0], context_scale=10.0)


@pytest.mark.parametrize("center_by", ["group", None])
def test_mean_diff_recovers_planted_direction(planted, center_by):
    acts, truth = planted
    dirs = emotion_directions(acts, method="mean_diff", center_by=center_by)
    c = cos(dirs.vectors, truth)  # [label, layer]
    assert c[:, 1:].min() >= 0.99, c
    assert c[:, 0].abs().max() < 0.6  # nothing planted at layer 0: no recovery there


def test_pca_recovers_planted_direction(planted):
    acts, truth = planted
    dirs = emotion_directions(acts, method="pca")
    assert cos(dirs.vectors, truth)[:, 1:].min() >= 0.99


def test_probe_direction_points_along_planted():
    # a probe's weights are the discriminative direction (shaped by the noise and the standardisation),
    # close to the planted class direction but not equal to it
    acts, truth = planted_activations(n_groups=30, n_layers=2, d=32, strength=1.0, context_scale=1.0, noise=1.0)
    dirs = emotion_directions(acts, method="probe")
    assert cos(dirs.vectors, truth).min() >= 0.85


def test_group_centering_removes_a_confounding_context():
    # labels a,b,c live in one half of the scenarios, d,e,f in the other; the halves differ by u.
    acts, _ = planted_activations(labels=list("abcdef"), n_groups=20, n_layers=1, d=48, strength=2.0, context_scale=1.0)
    u = torch.randn(48, generator=torch.Generator().manual_seed(1))
    u /= u.norm()
    keep, x = [], acts["resid_post"].clone()
    for i, (lab, grp) in enumerate(zip(acts.labels, acts.groups)):
        first_half = int(grp[1:]) < 10
        if (lab in "abc") == first_half:
            keep.append(i)
            x[i, 0] += (8.0 if first_half else -8.0) * u
    acts = Activations(tensors={"resid_post": x}, layers=acts.layers, labels=acts.labels, groups=acts.groups,
                       ids=acts.ids, texts=acts.texts).select(keep)
    raw = emotion_directions(acts, center_by=None)
    centred = emotion_directions(acts, center_by="group")
    assert abs(float(raw["a", 0] @ u)) > 0.8  # the direction is mostly context
    assert abs(float(centred["a", 0] @ u)) < 0.4  # centring removed it (what is left is chance overlap, ~1/sqrt(d))


def test_indexing_norms_and_copies(planted):
    acts, _ = planted
    dirs = emotion_directions(acts)
    v = dirs["joy", 2]
    assert v.shape == (64,) and abs(float(v.norm()) - 1) < 1e-5
    assert dirs.d_model == 64 and dirs.layers == (0, 1, 2) and dirs.site == "resid_post"
    assert dirs.emotions == ("anger", "disgust", "fear", "joy", "sadness", "surprise")
    assert dirs.norm("joy", 2) > dirs.norm("joy", 1) > dirs.norm("joy", 0)  # raw norms follow the planted strength
    assert torch.allclose(dirs.raw("joy", 2), v * dirs.norm("joy", 2))
    v.zero_()
    assert abs(float(dirs["joy", 2].norm()) - 1) < 1e-5  # indexing returns a copy
    assert dirs["joy"].shape == (3, 64) and dirs.at_layer(1).shape == (6, 64)
    assert dirs.cosine(2).shape == (6, 6)
    assert dirs.model == "synthetic"


def test_unknown_emotion_or_layer_lists_valid_ones(planted):
    dirs = emotion_directions(planted[0])
    with pytest.raises(ValueError, match="unknown emotion 'love'.*anger"):
        dirs["love", 1]
    with pytest.raises(ValueError, match="layer 7 has no direction; valid layers: \\[0, 1, 2\\]"):
        dirs["joy", 7]
    with pytest.raises(ValueError, match="dirs\\[emotion, layer\\]"):
        dirs[1]  # type: ignore[index]


def test_immutable_value(planted):
    dirs = emotion_directions(planted[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        dirs.site = "mlp_out"  # type: ignore[misc]
    with pytest.raises(TypeError):
        dirs + 1  # type: ignore[operator]
    moved = dirs.to(dtype=torch.float64)
    assert moved.vectors.dtype == torch.float64 and dirs.vectors.dtype == torch.float32
    sub = dirs.select(emotions=["joy", "fear"], layers=[2])
    assert sub.emotions == ("joy", "fear") and sub.layers == (2,)
    assert torch.equal(sub["joy", 2], dirs["joy", 2])


def test_save_and_load_round_trip(planted, tmp_path: Path):
    dirs = emotion_directions(planted[0], method="mean_diff")
    path = dirs.save(tmp_path / "dirs.safetensors")
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["emotions"][0] == "anger" and sidecar["method"] == "mean_diff" and sidecar["d_model"] == 64
    back = Directions.load(path)
    assert torch.equal(back.vectors, dirs.vectors) and torch.equal(back.norms, dirs.norms)
    assert (back.emotions, back.layers, back.site, back.center_by, back.model) == (
        dirs.emotions, dirs.layers, dirs.site, dirs.center_by, dirs.model)
    path.with_suffix(".json").unlink()  # the safetensors metadata alone is enough
    assert Directions.load(path).emotions == dirs.emotions
    # a directory holds directions.safetensors
    dirs.save(tmp_path / "run")
    assert Directions.load(tmp_path / "run")["joy", 1].shape == (64,)
    with pytest.raises(ValueError, match="no directions at"):
        Directions.load(tmp_path / "nothing-here")


def test_bad_input_errors(planted):
    acts, _ = planted
    one = acts.where(label="joy")
    with pytest.raises(ValueError, match="at least two labels.*'joy'"):
        emotion_directions(one)
    no_groups = Activations(tensors=acts.tensors, layers=acts.layers, labels=acts.labels,
                            groups=[None] * len(acts), ids=acts.ids, texts=acts.texts)
    with pytest.raises(ValueError, match="needs a group.*center_by=None"):
        emotion_directions(no_groups)
    assert emotion_directions(no_groups, center_by=None).emotions[0] == "anger"
    with pytest.raises(ValueError, match="method 'lda' is not one of"):
        emotion_directions(acts, method="lda")
    with pytest.raises(ValueError, match="labels \\['love'\\] do not occur"):
        emotion_directions(acts, labels=["joy", "love"])
    with pytest.raises(ValueError, match="site 'mlp_out' was not harvested"):
        emotion_directions(acts, site="mlp_out")
    with pytest.raises(ValueError, match="unit-norm"):
        Directions(vectors=torch.ones(1, 1, 4), norms=torch.ones(1, 1), emotions=("joy",), layers=(0,))


def test_directions_survive_a_round_trip_through_bfloat16() -> None:
    """Directions taken to bfloat16 (a GPU user's) and back are unit vectors again, and are accepted both ways."""
    g = torch.Generator().manual_seed(0)
    d = Directions.from_raw(torch.randn(6, 3, 576, generator=g), EMOTIONS, [0, 1, 2])
    half = d.to(dtype=torch.bfloat16)
    assert half.vectors.dtype == torch.bfloat16
    back = half.to(dtype=torch.float32)
    assert (back.vectors.norm(dim=-1) - 1).abs().max() < 1e-5
    assert torch.allclose(back.vectors, d.vectors, atol=1e-2)
    assert torch.equal(back.norms, d.norms)
    # what the re-normalisation repairs: (1, 1, 1)/√3 rounds to 0.578125 a component, a length of 1.0013,
    # more than float32 directions may be off; a plain cast back is refused, the round trip is not
    short = Directions.from_raw(torch.ones(6, 1, 3), EMOTIONS, [0]).to(dtype=torch.bfloat16)
    assert (short.vectors.float().norm(dim=-1) - 1).abs().min() > 1e-3
    with pytest.raises(ValueError, match="unit-norm"):
        Directions(vectors=short.vectors.float(), norms=short.norms, emotions=EMOTIONS, layers=(0,))
    assert (short.to(dtype=torch.float32).vectors.norm(dim=-1) - 1).abs().max() < 1e-6
