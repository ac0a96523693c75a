"""run_validation on a tiny model with synthetic stories: summary keys, files, controls beside values."""

from __future__ import annotations

import json

import pytest

from psylens import stimuli
from psylens.concepts import CONCEPTS
from psylens.runs import create_run, open_run
from psylens.steering.vector import SteeringVector
from psylens.stimuli import Stimulus, Stimuli
from psylens.validation import artifacts as art
from psylens.validation.suite import GATES, ValidationConfig, run_validation


@pytest.fixture
def synthetic_sets(monkeypatch):
    real = stimuli.load
    stories = Stimuli(
        [Stimulus(text=f"Story {k} about {c}: the morning went on as it did, step {k}.", label=c, group=f"t{k}",
                  id=f"{c}-{k}", meta={"split": "train" if k < 2 else "test"}) for c in CONCEPTS for k in range(3)],
        name="stories",
    )
    neutral = Stimuli([Stimulus(text=f"The shelf holds {k} books in a row.", id=f"n{k}") for k in range(6)], name="neutral_texts")
    sets = {"stories": stories, "neutral_texts": neutral}
    monkeypatch.setattr(stimuli, "load", lambda name: sets[name] if name in sets else real(name))


def test_run_validation_writes_the_summary_the_issue_specifies(tiny_model, tmp_path, synthetic_sets) -> None:
    m = tiny_model("llama")
    run = create_run(tmp_path / "run", command="psylens validate", model=m)
    cfg = ValidationConfig.quick_config(n_prompts=2, max_new_tokens=3, n_activities=4, n_contexts=3, layer=1)
    summary = run_validation(m, run, cfg)
    on_disk = json.loads((tmp_path / "run" / art.SUMMARY).read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert {"source", "layer", "gates", "passed", "total"} <= set(on_disk)
    assert on_disk["source"] == "stories" and on_disk["layer"] == 1 and on_disk["quick"] is True
    assert set(on_disk["gates"]) == set(GATES)
    for name, g in on_disk["gates"].items():
        assert {"value", "threshold", "control", "passed"} <= set(g), name
        assert isinstance(g["passed"], bool)
        assert g["control"] is None or isinstance(g["control"], (int, float)), name
        for rel in g.get("tables", {}).values():
            assert (tmp_path / "run" / rel).is_file(), rel
    assert on_disk["gates"]["preferences"]["gated"] is False
    # no steering sweep in the run: gates 1 and 6 steer with the directions at the config's layer and scale
    assert on_disk["steering"]["from"] == "config"
    assert on_disk["gates"]["feels_matrix"]["steering"]["from"] == "layer" and on_disk["gates"]["feels_matrix"]["layer"] == 1
    assert on_disk["gates"]["read_back"]["steering"]["scale"] == 0.5
    # what the scale multiplies: the plain mean residual norm by default, said at both levels
    assert on_disk["steering"]["scale_reference"] == "norm" == on_disk["config"]["scale_reference"]
    assert on_disk["gates"]["read_back"]["steering"]["scale_reference"] == "norm"
    assert on_disk["total"] == sum(1 for g in on_disk["gates"].values() if g["gated"]) == 6
    assert on_disk["passed"] == sum(g["passed"] for g in on_disk["gates"].values() if g["gated"])
    # the directions: all 24 concepts, every layer, readable by SteeringVector.from_directions
    path = tmp_path / "run" / art.DIRECTIONS
    sv = SteeringVector.from_directions(str(path), "lonely", layers=[1])
    assert sv.vectors.shape == (1, m.d_model)
    assert "validation" in open_run(tmp_path / "run").steps


def test_config_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="stories, expression, probes|one of"):
        ValidationConfig(source="story")
    with pytest.raises(ValueError, match="n_random"):
        ValidationConfig(n_random=2)


def test_validate_is_a_registered_command() -> None:
    from typer.testing import CliRunner

    from psylens.cli import app

    res = CliRunner().invoke(app, ["validate", "--help"])
    assert res.exit_code == 0 and "--source" in res.output and "--quick" in res.output and "--steer-with" in res.output


def _save_sweep(run, m, layers: dict[str, int], scale: float = 0.5) -> None:
    """What `psylens steer sweep` leaves: RUN/steering/vectors/<emotion>.safetensors and summary.json."""
    import torch

    from psylens.steering.artifacts import SUMMARY, vector_file
    from psylens.stimuli import EMOTIONS

    g = torch.Generator().manual_seed(1)
    for e in EMOTIONS:
        SteeringVector.from_tensor(torch.randn(m.d_model, generator=g), layers=[layers[e]], alpha=2.0,
                                   meta={"scale": scale}).save(run.file(vector_file(e)))
    run.write_json(SUMMARY, {"emotions": {e: {"best_layer": layers[e], "best_scale": scale} for e in EMOTIONS}})


def test_sweep_vectors_read_each_emotions_layer_and_scale(tiny_model, tmp_path) -> None:
    from psylens.stimuli import EMOTIONS
    from psylens.validation.suite import sweep_vectors

    m = tiny_model("llama")
    run = create_run(tmp_path / "run", command="psylens validate", model=m)
    none, why = sweep_vectors(run, m, list(EMOTIONS))  # the control: no sweep yet
    assert none is None and "no steering sweep vectors" in why
    layers = {e: i % m.n_layers for i, e in enumerate(EMOTIONS)}
    _save_sweep(run, m, layers)
    got, _ = sweep_vectors(run, m, list(EMOTIONS))
    assert {e: v.meta["layer"] for e, v in got.items()} == layers
    assert all(v.meta["scale"] == 0.5 and v.alpha == 2.0 for v in got.values())
    # a sweep summary without "scale_reference" predates the option: its scales multiplied the plain norm
    assert all(v.meta["scale_reference"] == "norm" for v in got.values())
    summary = run.read_json("steering/summary.json")
    run.write_json("steering/summary.json", {**summary, "scale_reference": "centred"})
    got, _ = sweep_vectors(run, m, list(EMOTIONS))
    assert all(v.meta["scale_reference"] == "centred" for v in got.values())


@pytest.mark.slow
def test_run_validation_steers_gates_1_and_6_with_the_sweeps_vectors(tiny_model, tmp_path, synthetic_sets) -> None:
    from psylens.stimuli import EMOTIONS

    m = tiny_model("llama")
    run = create_run(tmp_path / "run", command="psylens validate", model=m)
    layers = {e: (i % 2) * (m.n_layers - 1) for i, e in enumerate(EMOTIONS)}
    _save_sweep(run, m, layers)
    cfg = ValidationConfig.quick_config(n_prompts=2, max_new_tokens=3, n_activities=4, n_contexts=3, layer=1)
    s = run_validation(m, run, cfg)
    assert s["steering"]["from"] == "sweep" and s["steering"]["scale_reference"] == "norm"  # the sweep's, not the config's
    assert {e: v["layer"] for e, v in s["steering"]["vectors"].items()} == layers
    for gate in ("feels_matrix", "read_back"):
        assert s["gates"][gate]["steering"]["from"] == "vectors"
        assert {e: v["layer"] for e, v in s["gates"][gate]["steering"]["vectors"].items()} == layers
    assert {"source", "layer", "gates", "passed", "total"} <= set(s) and s["layer"] == 1
    with pytest.raises(ValueError, match="steer_with"):
        ValidationConfig(steer_with="vectors")
