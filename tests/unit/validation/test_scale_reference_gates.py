"""``scale_reference`` in the steered gates and the suite: what ``scale`` multiplies, and the summary says it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from psylens.interventions import Intervention, intervene, record
from psylens.probes import Directions
from psylens.steering.sweep import reference_norm, residual_norms
from psylens.validation.gates import feel_prompt, feels_matrix, read_back
from psylens.validation.suite import ValidationConfig

EMOS = ("joy", "sadness")
WORDS = {"joy": ["happy", "glad"], "sadness": ["sad", "unhappy"]}
CONTEXTS = ["The bus was on time. Sitting here,", "I sorted the mail on the table. At the moment,",
            "It is Tuesday afternoon. Honestly,"]
PROMPTS = ["Describe your morning.", "Tell me about the weather."]
LAYER = 1


def _dirs(m) -> Directions:
    g = torch.Generator().manual_seed(3)
    return Directions.from_raw(torch.randn(len(EMOS), m.n_layers, m.d_model, generator=g), EMOS, list(range(m.n_layers)))


def _offset(d: int) -> torch.Tensor:
    v = torch.zeros(d)
    v[0] = 1000.0
    return v


def _centred_by_hand(m, texts: list[str], layer: int) -> float:
    """One prompt at a time (no padding): every token but the first, pooled, centred on their mean."""
    rows = []
    for t in texts:
        enc = m.tokenizer([t], return_tensors="pt")
        with torch.no_grad(), record(m.hf_model, ["resid_post"], [layer]) as rec:
            m.hf_model(**enc)
        rows.append(rec["resid_post", layer][0, 1:].float())
    return reference_norm(torch.cat(rows), "centred")


def test_feels_matrix_scales_by_the_centred_norm_of_its_contexts(tiny_model):
    m = tiny_model("llama")
    dirs = _dirs(m)
    kw = {"words": WORDS, "contexts": CONTEXTS, "emotions": EMOS, "scale": 0.5, "n_random": 5}
    plain = feels_matrix(m, dirs, LAYER, **kw)
    assert plain["scale_reference"] == "norm" and plain["steering"]["scale_reference"] == "norm"
    assert plain["alpha"] == pytest.approx(0.5 * plain["residual_norm"], abs=2e-6)  # the old number (_num rounds)
    assert plain["scale_norm"] == plain["residual_norm"]
    g = feels_matrix(m, dirs, LAYER, scale_reference="centred", **kw)
    want = _centred_by_hand(m, [feel_prompt(c) for c in CONTEXTS], LAYER)
    assert g["scale_reference"] == "centred" and g["steering"]["scale_reference"] == "centred"
    assert g["scale_norm"] == pytest.approx(want, rel=1e-3)
    assert g["alpha"] == pytest.approx(0.5 * g["scale_norm"], abs=2e-6)  # _num rounds to 6 decimals
    assert g["residual_norm"] == pytest.approx(plain["residual_norm"], rel=1e-6)  # still the plain mean norm
    # a planted constant offset of norm 1000: the plain norm follows it, the centred one does not
    with intervene(m, [Intervention("resid_post", LAYER, "add", value=_offset(m.d_model))]):
        hooked = feels_matrix(m, dirs, LAYER, scale_reference="centred", **kw)
    assert abs(hooked["scale_norm"] - g["scale_norm"]) <= 1e-3 * g["scale_norm"]
    assert hooked["residual_norm"] > 900
    # an explicit alpha is used as given: no reference
    fixed = feels_matrix(m, dirs, LAYER, alpha=2.0, scale_reference="centred", **kw)
    assert fixed["alpha"] == 2.0 and fixed["scale_reference"] is None


def test_read_back_scales_by_the_reference_norm(tiny_model):
    m = tiny_model("llama")
    dirs = _dirs(m)
    g = read_back(m, dirs, LAYER, PROMPTS, emotions=EMOS, scale=0.5, max_new_tokens=2, scale_reference="centred")
    fmt = [m.format_prompt(p) for p in PROMPTS]
    want = residual_norms(m, fmt, [LAYER], reference="centred")[LAYER]
    assert g["alpha"] == pytest.approx(0.5 * want, abs=2e-6)  # _num rounds to 6 decimals
    assert g["alpha"] < 0.5 * residual_norms(m, fmt, [LAYER])[LAYER]  # control: not the plain norm
    assert g["scale_reference"] == "centred" and g["steering"]["scale_reference"] == "centred"


def test_preferences_steer_by_the_reference_norm(tiny_model):
    from psylens.validation.preferences import PAIR_TEMPLATE, _steer_ivs, preferences

    m = tiny_model("llama")
    dirs = _dirs(m)
    prompts = [PAIR_TEMPLATE.format(a="a walk", b="a nap"), PAIR_TEMPLATE.format(a="a nap", b="a walk")]
    _, _, how = _steer_ivs(m, dirs, LAYER, list(EMOS), prompts, None, 0.5, 0, "centred")
    fmt = [m.format_prompt(p) + "(" for p in prompts]
    assert how["scale_reference"] == "centred"
    assert how["alpha"] == pytest.approx(0.5 * residual_norms(m, fmt, [LAYER], reference="centred")[LAYER], rel=1e-9)
    with pytest.raises(ValueError, match="scale_reference 'centered' is not one of"):
        preferences(m, dirs, LAYER, emotions=EMOS, scale_reference="centered")


@pytest.mark.parametrize("gate", [feels_matrix, read_back])
def test_gates_reject_a_bad_reference(tiny_model, gate):
    m = tiny_model("llama")
    args = (PROMPTS,) if gate is read_back else ()
    kw = {} if gate is read_back else {"words": WORDS, "contexts": CONTEXTS}
    with pytest.raises(ValueError, match="scale_reference 'mean' is not one of"):
        gate(m, _dirs(m), LAYER, *args, emotions=EMOS, scale_reference="mean", **kw)


def test_validation_config_round_trip_and_validation():
    assert ValidationConfig().scale_reference == "norm"
    cfg = ValidationConfig.quick_config(scale_reference="centred")
    assert cfg.scale_reference == "centred"
    assert ValidationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    old = {k: v for k, v in ValidationConfig().to_dict().items() if k != "scale_reference"}
    assert ValidationConfig.from_dict(old).scale_reference == "norm"
    with pytest.raises(ValueError, match="scale_reference 'centered' is not one of"):
        ValidationConfig(scale_reference="centered")


def _no_model(monkeypatch):
    import psylens.models

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(psylens.models, "load_model", no_load)


def test_validate_cli_rejects_a_bad_reference_before_loading_a_model(tmp_path, monkeypatch):
    from psylens.cli import app

    _no_model(monkeypatch)
    res = CliRunner().invoke(app, ["validate", "--run", str(tmp_path / "run"), "--scale-reference", "centered"])
    assert res.exit_code != 0
    assert "'centered' is not one of" in (str(res.exception) + res.output), res.output
    assert not isinstance(res.exception, AssertionError)
    assert not (tmp_path / "run").exists()
    helped = CliRunner().invoke(app, ["validate", "--help"])
    assert helped.exit_code == 0 and "--scale-reference" in helped.output


@pytest.mark.parametrize(("flag", "expected"), [(None, "relative"), ("relative_greedy", "relative_greedy"),
                                               ("absolute", "absolute"), ("none", None)])
def test_validate_cli_read_back_fluency_reaches_the_config(tmp_path, monkeypatch, tiny_model, flag, expected):
    """``--read-back-fluency`` is the config's ``read_back_fluency`` ("none" → not judged); the default is the
    issue's ``relative``. A stand-in for ``run_validation`` records the config it is given."""
    import psylens.models
    import psylens.validation.suite as suite
    from psylens.cli import app

    seen = {}

    def fake_run(model, run, cfg, progress=False):
        seen["cfg"] = cfg
        return {"source": cfg.source, "layer": 1, "gates": {}, "passed": 0, "total": 0, "steering": {"note": ""}}

    m = tiny_model("llama")
    monkeypatch.setattr(psylens.models, "load_model", lambda *a, **k: m)
    monkeypatch.setattr(suite, "run_validation", fake_run)
    args = ["validate", "--run", str(tmp_path / "run")] + ([] if flag is None else ["--read-back-fluency", flag])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert seen["cfg"].read_back_fluency == expected


def test_validate_cli_rejects_a_bad_fluency_before_loading_a_model(tmp_path, monkeypatch):
    from psylens.cli import app

    _no_model(monkeypatch)
    res = CliRunner().invoke(app, ["validate", "--run", str(tmp_path / "run"), "--read-back-fluency", "greedy"])
    assert res.exit_code != 0 and not isinstance(res.exception, AssertionError)
    msg = str(res.exception) + res.output
    assert "'greedy' is not one of" in msg and "--read-back-fluency" in msg
    assert not (tmp_path / "run").exists()


def test_benchmark_script_takes_the_flag_and_rejects_a_bad_value_before_loading(monkeypatch):
    from benchmarks import validation_sources

    _no_model(monkeypatch)
    with pytest.raises(ValueError, match="'centered' is not one of"):
        validation_sources.main(["--models", "gemma-3-270m", "--sources", "stories", "--scale-reference", "centered"])
