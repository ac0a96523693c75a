"""run_circuits on a tiny model: the run layout, the summary's exact keys and types, the CLI's checks."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from psylens.circuits import artifacts as art
from psylens.circuits.pipeline import CircuitsConfig, default_readout_layer, run_circuits, split_scenarios
from psylens.probes import Directions
from psylens.runs import create_run

EMOTION_KEYS = {"n_heads": int, "n_neurons": int, "atp_vs_patching_spearman": float, "faithfulness": float,
                "completeness": float}


def _eval_file(tmp_path):
    rows = [{"text": f"On day {g} at the market I felt {e} about the news.", "label": e, "group": f"m{g}"}
            for g in range(2) for e in ("joy", "anger", "fear")]
    p = tmp_path / "eval.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


@pytest.fixture(scope="module")
def result(tiny_model, tmp_path_factory):
    model = tiny_model("llama")
    tmp = tmp_path_factory.mktemp("circ")
    run = create_run(tmp / "run", command="test", model=model)
    emos = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
    g = torch.Generator().manual_seed(0)
    Directions.from_raw(torch.randn(6, 3, 32, generator=g), emos, [0, 1, 2], model=model.spec).save(
        run.file("probes/directions.safetensors"))
    run.write_json("probes/summary.json", {"best_layer": 1})
    cfg = CircuitsConfig(emotions=("joy", "anger"), eval_file=str(_eval_file(tmp)), n_discovery=2, n_heldout=2,
                         patch_heads=3, patch_neurons=3, curve_points=2, alphas=(1.0,), n_sublayer_stimuli=2,
                         n_top_neurons=2, n_top_stimuli=2, batch_size=12)
    summary = run_circuits(model, run, cfg)
    return model, run, summary


@pytest.mark.slow
def test_summary_has_the_issue_keys_and_types(result):
    _, run, summary = result
    on_disk = run.read_json(art.SUMMARY)
    assert on_disk["schema_version"] == art.SCHEMA_VERSION
    assert isinstance(on_disk["cost_ratio"], float) and on_disk["cost_ratio"] > 0
    assert set(on_disk["emotions"]) == {"joy", "anger"}
    for e, s in on_disk["emotions"].items():
        for k, typ in EMOTION_KEYS.items():
            assert isinstance(s[k], typ), (e, k, s[k])
        for k in ("drop", "random_drop", "random_drop_std"):
            assert isinstance(s["ablation"][k], float)
        for k in ("gain", "random_gain"):
            assert isinstance(s["enhancement"][k], float)
        for k in ("drop", "random_drop"):
            assert isinstance(s["eval"][k], float)
    assert on_disk["readout_layer"] == 1 and on_disk["readout_layer_from"] == "probes best_layer"
    assert on_disk["source"] == "probes"
    assert (on_disk["readout"], on_disk["readout_from"], on_disk["baseline"]) == ("mean", "default", "neutral")
    assert not run.file(art.PARTIAL).exists()
    assert "circuits" in run.steps


@pytest.mark.slow
def test_circuit_files_scores_and_tables(result):
    model, run, _ = result
    c = run.read_json(art.circuit_file("joy"))
    assert c["emotion"] == "joy" and c["source"] == "probes" and c["readout_layer"] == 1
    assert all(len(u) == 2 and u[0] <= 1 for u in c["heads"] + c["neurons"])
    scores = run.read_tensors(art.SCORES)
    for s in art.SCORE_NAMES:
        assert scores[art.score_key("joy", s, "heads")].shape == (3, 4)
        assert scores[art.score_key("anger", s, "neurons")].shape == (3, 64)
    patched = scores[art.score_key("joy", "patching", "heads")]
    assert int((~torch.isnan(patched)).sum()) == 3  # only the top units are patched
    assert scores[art.influence_key("joy", "mlp")].shape == (3,)
    for rel, cols in ((art.ABLATION, art.ABLATION_COLUMNS), (art.ENHANCEMENT, art.ENHANCEMENT_COLUMNS),
                      (art.SUBLAYERS, art.SUBLAYER_COLUMNS), (art.TOP_NEURONS, art.TOP_NEURON_COLUMNS)):
        df = run.read_table(rel)
        assert list(df.columns[: len(cols)]) == list(cols), rel
        assert len(df)
    abl = run.read_table(art.ABLATION)
    assert set(abl.split) == {"heldout", "eval"} and (abl[abl.kind == "random"].groupby(["emotion", "split", "n_units"]).size() >= 5).all()


@pytest.mark.slow
def test_directions_file_steers(result):
    from psylens.steering.vector import SteeringVector

    _, run, _ = result
    sv = SteeringVector.from_directions(run.file(art.DIRECTIONS), "joy", layers=[1])
    used = Directions.load(run.file(art.DIRECTIONS))
    probes = Directions.load(run.file("probes/directions.safetensors"))
    # the file holds the read-out layer's probe directions, and the vector is joy's (not another emotion's)
    assert list(used.layers) == [1] and set(used.emotions) == set(probes.emotions)
    torch.testing.assert_close(sv.vectors[0].float(), used["joy", 1].float())
    torch.testing.assert_close(used["joy", 1], probes["joy", 1])
    assert not torch.allclose(sv.vectors[0].float(), used["anger", 1].float())


def test_config_and_splits_are_checked(tmp_path):
    with pytest.raises(ValueError, match="emotions"):
        CircuitsConfig(emotions=("bliss",))
    with pytest.raises(ValueError, match="source"):
        CircuitsConfig(source="sae")
    with pytest.raises(ValueError, match="at least 5"):
        CircuitsConfig(n_random=3)
    d, h = split_scenarios([f"s{i}" for i in range(10)], 4, 3, seed=0)
    assert len(d) == 4 and len(h) == 3 and not set(d) & set(h)
    assert CircuitsConfig.from_dict(CircuitsConfig().to_dict()) == CircuitsConfig()
    assert default_readout_layer(None, 30)[0] == 13


def test_cli_rejects_a_bad_emotion_before_loading_a_model(tmp_path):
    from typer.testing import CliRunner

    from psylens.circuits.cli import circuits_app

    res = CliRunner().invoke(circuits_app, ["--run", str(tmp_path / "r"), "--emotions", "bliss"])
    assert res.exit_code != 0 and "bliss" in str(res.exception)
    for flags, said in ((["--selection", "best"], "selection mode"), (["--selection", "drop", "--drop", "1.5"], "drop"),
                        (["--selection", "drop", "--confidence", "95"], "confidence"),
                        (["--scale-reference", "mean"], "modulation_scale_reference"),
                        (["--modulation-op", "boost"], "modulation_op"),
                        (["--modulation-factors", "1,x"], "comma-separated numbers"),
                        (["--modulation-factors", "1,inf"], "modulation_factors"),
                        (["--modulation-steer-scales", "0.1,x"], "comma-separated numbers"),
                        (["--modulation-steer-scales", ""], "modulation_steer_scales"),
                        (["--baseline", "zero"], "baseline 'zero' is not one of"),
                        (["--readout", "first"], "readout 'first' is not one of"),
                        (["--modulation-judges", "nrc"], "modulation_judges ['nrc'] must be distinct names")):
        res = CliRunner().invoke(circuits_app, ["--run", str(tmp_path / "r"), *flags])
        assert res.exit_code != 0 and said in str(res.exception), (flags, res.exception)
    assert not (tmp_path / "r").exists()  # refused before a run or a model


@pytest.mark.slow
def test_drop_selection_cuts_on_discovery_and_records_the_search(tiny_model, tmp_path):
    """``--selection drop``: the circuit is the threshold candidates' shortest prefix whose ablation removes the
    share on the discovery scenarios; the summary and the circuit file say so. The signal is linear in the
    direction, so of a direction and its negation exactly one has a positive discovery signal: that one is
    cut, the other is left whole with the reason recorded."""
    from psylens.circuits.circuit import Selection

    model = tiny_model("llama")
    emos = ("anger", "disgust", "fear", "joy", "sadness", "surprise")
    raw = torch.randn(6, 3, 32, generator=torch.Generator().manual_seed(0))
    cfg = CircuitsConfig(emotions=("joy",), eval_file=str(_eval_file(tmp_path)), n_discovery=2, n_heldout=2,
                         patch_heads=2, patch_neurons=2, curve_points=2, alphas=(), n_top_neurons=1, n_top_stimuli=1,
                         batch_size=12, measure_cost=False, selection=Selection(mode="drop", drop=0.3))
    recs = []
    for sign in (1.0, -1.0):
        run = create_run(tmp_path / f"run{sign:+.0f}", command="test", model=model)
        Directions.from_raw(sign * raw, emos, [0, 1, 2], model=model.spec).save(run.file("probes/directions.safetensors"))
        run.write_json("probes/summary.json", {"best_layer": 1})
        s = run_circuits(model, run, cfg)["emotions"]["joy"]
        rec = s["selection"]
        assert rec["mode"] == "drop" and s["n_heads"] + s["n_neurons"] == rec.get("n", rec["n_candidates"])
        c = run.read_json(art.circuit_file("joy"))
        assert c["selection"]["mode"] == "drop" and len(c["heads"]) + len(c["neurons"]) == s["n_heads"] + s["n_neurons"]
        recs.append(rec)
    cut = [r for r in recs if "target" in r]
    assert len(cut) == 1 and sum("not positive" in r.get("reason", "") for r in recs) == 1
    rec = cut[0]
    assert rec["target"] == 0.3 and rec["n_candidates"] >= rec["n"] >= 1
    assert rec["confidence"] is None
    if rec["reached"]:
        tried = dict(rec["evaluated"])
        assert tried[rec["n"]] >= 0.3 and (rec["n"] == 1 or tried[rec["n"] - 1] < 0.3)
    # with confidence the pipeline cuts on the interval's lower end instead (never fewer units)
    sign = 1.0 if "target" in recs[0] else -1.0
    run = create_run(tmp_path / "run_conf", command="test", model=model)
    Directions.from_raw(sign * raw, emos, [0, 1, 2], model=model.spec).save(run.file("probes/directions.safetensors"))
    run.write_json("probes/summary.json", {"best_layer": 1})
    conf = replace(cfg, selection=Selection(mode="drop", drop=0.3, confidence=0.9))
    rc = run_circuits(model, run, conf)["emotions"]["joy"]["selection"]
    assert rc["confidence"] == 0.9 and rc["n"] >= rec["n"] and rc["evaluated_lower"]
    if rc["reached"]:
        assert dict(rc["evaluated_lower"])[rc["n"]] >= 0.3


@pytest.mark.slow
def test_scenario_baseline_changes_atp_not_direct(result, tmp_path):
    """``baseline="scenario"``: the same run's ``direct`` scores (no baseline in them) are identical, ``atp``
    (a − baseline) is not, and the summary says which baseline scored the units."""
    model, base_run, base = result
    run = create_run(tmp_path / "run", command="test", model=model)
    for rel in ("probes/directions.safetensors", "probes/summary.json"):
        run.file(rel).parent.mkdir(parents=True, exist_ok=True)
        run.file(rel).write_bytes(base_run.file(rel).read_bytes())
    cfg = CircuitsConfig.from_dict({**base["config"], "baseline": "scenario", "emotions": ["joy"], "measure_cost": False})
    s = run_circuits(model, run, cfg)
    assert s["baseline"] == "scenario" and base["baseline"] == "neutral"
    a, b = run.read_tensors(art.SCORES), base_run.read_tensors(art.SCORES)
    for kind in ("heads", "neurons"):
        torch.testing.assert_close(a[art.score_key("joy", "direct", kind)], b[art.score_key("joy", "direct", kind)])
    d = (a[art.score_key("joy", "atp", "neurons")] - b[art.score_key("joy", "atp", "neurons")]).abs().max()
    assert d > 1e-4 * b[art.score_key("joy", "atp", "neurons")].abs().max()


def test_the_readout_follows_the_probes_positions(tmp_path):
    from psylens.circuits.pipeline import default_readout

    run = create_run(tmp_path / "run", command="test")
    assert default_readout(run, "probes") == ("mean", "default")  # no probes summary
    run.write_json("probes/summary.json", {"best_layer": 1, "positions": "last"})
    assert default_readout(run, "probes") == ("last", "probes positions")
    assert default_readout(run, "expression") == ("mean", "default")  # not the probes' directions
    run.write_json("probes/summary.json", {"positions": "middle"})
    assert default_readout(run, "probes") == ("mean", "default")
    assert CircuitsConfig(readout="last").readout == "last"
    with pytest.raises(ValueError, match="readout 'first'"):
        CircuitsConfig(readout="first")
