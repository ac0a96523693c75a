"""Story directions: known answers on planted means, the shuffled-label control, denoising, reading."""

from __future__ import annotations

import pytest
import torch

from psylens.probes import Directions
from psylens.stimuli import Stimulus, Stimuli
from psylens.steering.vector import SteeringVector
from psylens.validation.directions import (
    StoryConfig,
    directions_from_means,
    neutral_components,
    story_directions,
    text_means,
)

CONCEPTS = ["a", "b", "c", "d"]


def _planted(n_per: int = 30, d: int = 16, noise: float = 0.3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(len(CONCEPTS), d, generator=g)
    truth = truth - truth.mean(0, keepdim=True)
    labels = [c for c in CONCEPTS for _ in range(n_per)]
    means = torch.stack([truth[CONCEPTS.index(c)] for c in labels]) + 5.0 + noise * torch.randn(len(labels), d, generator=g)
    return truth, labels, means.unsqueeze(1)  # [n, 1 layer, d]


def test_planted_concepts_are_recovered() -> None:
    truth, labels, means = _planted()
    dirs = directions_from_means(means, labels, [7], concepts=CONCEPTS)
    assert dirs.meta["kind"] == "stories" and dirs.layers == (7,)
    for i, c in enumerate(CONCEPTS):
        cos = float(dirs[c, 7] @ truth[i] / truth[i].norm())
        assert cos > 0.95, (c, cos)


def test_shuffled_labels_control_loses_the_concepts() -> None:
    truth, labels, means = _planted()
    ctrl = directions_from_means(means, labels, [7], concepts=CONCEPTS, shuffle_seed=0)
    assert ctrl.meta["shuffled_labels"] is True
    cos = [abs(float(ctrl[c, 7] @ truth[i] / truth[i].norm())) for i, c in enumerate(CONCEPTS)]
    assert max(cos) < 0.8, cos


def test_denoising_removes_the_neutral_axis() -> None:
    truth, labels, means = _planted(d=16)
    nuisance = torch.zeros(16)
    nuisance[0] = 1.0
    g = torch.Generator().manual_seed(1)
    # the stories' concept means also move along the nuisance axis (length, topic), neutral texts vary most along it
    shift = torch.tensor([3.0, -2.0, 1.0, -2.0])
    means = means + torch.stack([shift[CONCEPTS.index(c)] * nuisance for c in labels]).unsqueeze(1)
    neutral = (10 * torch.randn(50, 1, generator=g) * nuisance + 0.1 * torch.randn(50, 16, generator=g)).unsqueeze(1)
    assert neutral_components(neutral[:, 0], 0.5).shape[0] == 1
    plain = directions_from_means(means, labels, [0], concepts=CONCEPTS)
    clean = directions_from_means(means, labels, [0], concepts=CONCEPTS, neutral=neutral)
    assert clean.meta["neutral_components"] == [1]
    assert max(abs(float(clean[c, 0][0])) for c in CONCEPTS) < 0.05
    assert max(abs(float(plain[c, 0][0])) for c in CONCEPTS) > 0.3  # the control: without denoising it is there


def test_bad_inputs_name_the_fix() -> None:
    _, labels, means = _planted()
    with pytest.raises(ValueError, match="have no stories"):
        directions_from_means(means, labels, [0], concepts=[*CONCEPTS, "zzz"])
    with pytest.raises(ValueError, match="start_offset"):
        StoryConfig(start_offset=-1)


def test_text_means_offset_zero_is_the_harvest_mean(tiny_model) -> None:
    m = tiny_model("llama")
    texts = ["The cat sat on the warm mat today.", "A short one.", "Rain fell all afternoon on the quiet town square."]
    ours = text_means(m, texts, [0, 2], start_offset=0, format="raw")
    ref = m.harvest(texts, sites="resid_post", layers=[0, 2], positions="mean", format="raw", progress=False)["resid_post"]
    torch.testing.assert_close(ours, ref.float(), atol=1e-5, rtol=1e-4)
    skipped = text_means(m, texts, [0, 2], start_offset=3, format="raw")
    assert not torch.allclose(skipped, ours)  # the offset matters
    whole = text_means(m, ["Hi"], [0], start_offset=50, format="raw")  # shorter than the offset: all its tokens
    torch.testing.assert_close(whole, text_means(m, ["Hi"], [0], start_offset=0, format="raw"))


def test_story_directions_steer_through_the_file(tiny_model, tmp_path) -> None:
    m = tiny_model("llama")
    items = []
    for c, word in zip(CONCEPTS, ["storm", "garden", "market", "river"]):
        for k in range(3):
            items.append(Stimulus(text=f"Story {k}: the {word} was there again, day {k}.", label=c, group=f"t{k}",
                                  id=f"{c}{k}", meta={"split": "train" if k < 2 else "test"}))
    stories = Stimuli(items, name="synthetic")
    neutral = ["The table is brown.", "A bus stops at the corner.", "The form has three pages.", "Water boils."]
    dirs = story_directions(m, stories, neutral, concepts=CONCEPTS)
    assert isinstance(dirs, Directions) and dirs.meta["kind"] == "stories"
    assert dirs.emotions == tuple(CONCEPTS) and dirs.layers == tuple(range(m.n_layers))
    assert dirs.meta["n_stories"] == 8  # the train split only
    path = dirs.save(tmp_path / "directions.safetensors")
    sv = SteeringVector.from_directions(str(path), "b", layers=[1])
    torch.testing.assert_close(sv.vectors[0], dirs["b", 1])


def test_sweep_accepts_stories_as_a_source() -> None:
    from psylens.steering.sweep import SweepConfig

    assert SweepConfig(directions="stories").directions == "stories"
    with pytest.raises(ValueError, match="stories"):
        SweepConfig(directions="story")
