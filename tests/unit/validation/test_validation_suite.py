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
    assert res.exit_code == 0 and "--source" in res.output and "--quick" in res.output
