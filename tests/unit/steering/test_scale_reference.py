"""``scale_reference``: the plain mean residual norm and the centred one (massive activations removed).

Known answer: a constant offset of norm 1000 planted in ``resid_post`` (what Gemma-3's massive dimensions
are, roughly) raises the plain norm by ~1000 and leaves the centred norm where it was. Controls: without
an offset the centred norm is below the plain one; on identical tokens it is 0.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from psylens.interventions import Intervention, intervene
from psylens.runs import create_run
from psylens.steering import SteeringVector
from psylens.steering.cli import steer_app
from psylens.steering.sweep import (
    SCALE_REFERENCES,
    SweepConfig,
    check_scale_reference,
    reference_norm,
    residual_norms,
    run_sweep,
    scale_reference_advice,
)

from tests.unit.steering.test_steering_sweep import StandInDirections

PROMPTS = ["Describe your morning.", "Tell me about the weather.", "Write about the ocean.", "Plan a grocery list."]
OFFSET = 1000.0


def _offset(d_model: int) -> torch.Tensor:
    v = torch.zeros(d_model)
    v[0] = OFFSET  # 1000 × e_0: one massive, constant dimension
    return v


def test_the_valid_names_and_the_error_says_how_to_fix():
    assert SCALE_REFERENCES == ("norm", "centred", "median")
    for ok in SCALE_REFERENCES:
        assert check_scale_reference(ok) == ok
    for bad in ("centered", "Norm", "", None, 1):
        with pytest.raises(ValueError) as err:
            check_scale_reference(bad, "scale_reference")
        msg = str(err.value)
        assert repr(bad) in msg and "'norm'" in msg and "'centred'" in msg and "'median'" in msg
        assert "--scale-reference" in msg


def test_reference_norm_known_values():
    x = torch.tensor([[3.0, 4.0], [3.0, 4.0], [3.0, 4.0]])
    assert reference_norm(x, "norm") == pytest.approx(5.0)
    assert reference_norm(x, "centred") == pytest.approx(0.0, abs=1e-12)  # identical rows: nothing left
    y = torch.tensor([[1.0, 0.0], [-1.0, 0.0]]) + torch.tensor([100.0, 0.0])  # ±e_0 around a big offset
    assert reference_norm(y, "norm") == pytest.approx(100.0)
    assert reference_norm(y, "centred") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not one of"):
        reference_norm(x, "mean")


def test_median_reference_ignores_a_few_massive_dimensions_known_values():
    """``median`` = √d × the median column RMS: one column of RMS 1000 among columns of RMS 1 leaves it at √d,
    varying from row to row or not; on isotropic activations it is about the plain norm (the control)."""
    g = torch.Generator().manual_seed(0)
    signs = torch.where(torch.rand(64, 9, generator=g) < 0.5, -1.0, 1.0)  # every column RMS exactly 1
    assert reference_norm(signs, "median") == pytest.approx(3.0)
    massive = signs.clone()
    massive[:, 0] = 1000.0 * torch.linspace(0.5, 1.5, 64)  # one massive, non-constant dimension
    assert reference_norm(massive, "median") == pytest.approx(3.0)
    assert reference_norm(massive, "norm") > 300 and reference_norm(massive, "centred") > 100  # the others see it
    iso = torch.randn(4000, 64, generator=g)
    assert reference_norm(iso, "median") == pytest.approx(reference_norm(iso, "norm"), rel=0.05)
    assert reference_norm(torch.zeros(0, 4), "median") != reference_norm(torch.zeros(0, 4), "median")  # nan


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_a_planted_constant_offset_moves_the_norm_not_the_centred_norm(tiny_model, arch):
    m = tiny_model(arch)
    layer = 1
    fmt = [m.format_prompt(p) for p in PROMPTS]
    plain = residual_norms(m, fmt, [layer])[layer]
    centred = residual_norms(m, fmt, [layer], reference="centred")[layer]
    median = residual_norms(m, fmt, [layer], reference="median")[layer]
    with intervene(m, [Intervention("resid_post", layer, "add", value=_offset(m.d_model))]):
        plain_hooked = residual_norms(m, fmt, [layer], reference="norm")[layer]
        centred_hooked = residual_norms(m, fmt, [layer], reference="centred")[layer]
        median_hooked = residual_norms(m, fmt, [layer], reference="median")[layer]
    # the plain norm becomes the offset's: |mean ||x + c|| - ||c||| ≤ mean ||x|| (triangle inequality)
    assert abs(plain_hooked - OFFSET) <= plain + 1e-3
    assert plain_hooked - plain == pytest.approx(OFFSET, rel=1e-2)
    # the centred norm does not see a constant offset at all
    assert abs(centred_hooked - centred) <= 1e-3 * centred
    # one massive dimension moves the median dimension by at most one order statistic of 32
    assert abs(median_hooked - median) <= 0.2 * median and median_hooked < plain_hooked / 100
    # the hook is gone and "norm" is the function's old number (the default)
    assert residual_norms(m, fmt, [layer])[layer] == plain


def test_control_no_offset_centred_is_below_norm_and_zero_on_identical_tokens(tiny_model):
    m = tiny_model("llama")
    layers = list(range(m.n_layers))
    fmt = [m.format_prompt(p) for p in PROMPTS]
    plain = residual_norms(m, fmt, layers)
    centred = residual_norms(m, fmt, layers, reference="centred")
    # a mean of norms is not bound to shrink on centring (the RMS is), but on real text it does
    assert all(0 < centred[v] <= plain[v] for v in layers)
    # a batch of one repeated two-token prompt: the only token counted (the first is left out) is the same
    # vector in every row, so nothing is left once the mean token is subtracted
    text = "hello world"
    assert len(m.tokenizer(text, add_special_tokens=False)["input_ids"]) == 2
    same = residual_norms(m, [text] * 4, layers, reference="centred")
    same_plain = residual_norms(m, [text] * 4, layers)
    assert all(same[v] <= 1e-5 * same_plain[v] for v in layers)


def test_advice_flags_outlying_tokens_and_massive_dimensions_known_values():
    """Known answers: 20% of tokens at 20× the rest (Qwen2.5's pattern) are flagged for 'norm' and 'centred';
    one massive dimension in every token (Gemma-3's) for 'norm' only. Controls: isotropic tokens are not
    flagged, and 'median' never is."""
    g = torch.Generator().manual_seed(0)
    iso = torch.randn(500, 64, generator=g)
    assert all(scale_reference_advice(iso, r) is None for r in ("norm", "centred", "median"))
    tokens = iso.clone()
    tokens[::5] *= 20.0  # every fifth token: 20× the norm
    msg = scale_reference_advice(tokens, "norm")
    assert msg is not None and "median token" in msg and "20% of the tokens" in msg and "--scale-reference median" in msg
    assert scale_reference_advice(tokens, "centred") is not None
    assert scale_reference_advice(tokens, "median") is None
    dims = iso.clone()
    dims[:, 0] += 100.0  # one massive dimension, the same in every token: token norms stay alike
    msg = scale_reference_advice(dims, "norm")
    assert msg is not None and "massive dimensions" in msg
    assert scale_reference_advice(dims, "centred") is None  # centring removes a shared offset
    assert scale_reference_advice(torch.zeros(0, 8), "norm") is None
    with pytest.raises(ValueError, match="not one of"):
        scale_reference_advice(iso, "centered")


def test_residual_norms_warns_on_planted_outlying_tokens(tiny_model, caplog):
    """A hook that multiplies every third position's residual by 50 at one layer: residual_norms warns for
    that layer and not for a layer before it (the control), and the warning names the fix."""
    import logging

    m = tiny_model("llama")
    layer = 1
    fmt = [m.format_prompt(p) for p in PROMPTS]
    caplog.set_level(logging.WARNING, logger="psylens.steering.sweep")
    residual_norms(m, fmt, [0, layer])
    assert not [r for r in caplog.records if "steering scale" in r.getMessage()]

    def every_third(x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        y[:, ::3] *= 50.0
        return y

    with intervene(m, [Intervention("resid_post", layer, "replace", value=every_third)]):
        residual_norms(m, fmt, [0, layer])
    warned = [r.getMessage() for r in caplog.records if "steering scale" in r.getMessage()]
    assert len(warned) == 1 and f"layer {layer}:" in warned[0] and "--scale-reference median" in warned[0]


def test_residual_norms_rejects_a_bad_reference(tiny_model):
    m = tiny_model("llama")
    with pytest.raises(ValueError, match="'centered' is not one of"):
        residual_norms(m, [m.format_prompt(PROMPTS[0])], [0], reference="centered")


def test_sweep_config_round_trip_and_validation():
    assert SweepConfig().scale_reference == "norm"
    cfg = SweepConfig.quick(scale_reference="centred")
    assert SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.to_dict()["scale_reference"] == "centred"
    # a config saved before the field existed reads as the old behaviour
    old = {k: v for k, v in SweepConfig.full().to_dict().items() if k != "scale_reference"}
    assert SweepConfig.from_dict(old).scale_reference == "norm"
    with pytest.raises(ValueError, match="scale_reference 'centered' is not one of"):
        SweepConfig(scale_reference="centered")


def test_sweep_scales_by_the_centred_norm_and_says_so(tiny_model, tmp_path):
    m = tiny_model("llama")
    run = create_run(tmp_path / "run", command="test", model=m.describe())
    cfg = SweepConfig(emotions=("joy", "fear"), layers=(1,), scales=(0.5,), n_dev=2, n_test=2, max_new_tokens=3,
                      scale_reference="centred")
    summary = run_sweep(m, run, directions=StandInDirections(emotions=("joy", "fear")), prompts=PROMPTS, config=cfg, progress=False)
    assert summary["scale_reference"] == "centred" and summary["config"]["scale_reference"] == "centred"
    gens = [json.loads(x) for x in run.file("steering/generations.jsonl").read_text().splitlines()]
    dev = list(dict.fromkeys(g["prompt"] for g in gens if g["split"] == "dev"))
    fmt = [m.format_prompt(p) for p in dev]
    want = residual_norms(m, fmt, [1], reference="centred")[1]
    assert summary["residual_norms"]["1"] == pytest.approx(want, rel=1e-5)
    assert want < residual_norms(m, fmt, [1])[1]  # control: not the plain norm
    for e in ("joy", "fear"):
        v = summary["emotions"][e]
        assert v["best_alpha"] == pytest.approx(0.5 * want, rel=1e-5)
        sv = SteeringVector.load(run.file(f"steering/vectors/{e}.safetensors"))
        assert sv.meta["scale_reference"] == "centred"


def test_cli_rejects_a_bad_reference_before_loading_a_model(tmp_path, monkeypatch):
    import psylens.models

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(psylens.models, "load_model", no_load)
    out = tmp_path / "new-run"
    res = CliRunner().invoke(steer_app, ["sweep", "--run", str(out), "--scale-reference", "centered"])
    assert res.exit_code != 0 and isinstance(res.exception, ValueError), res.output
    assert "'centered' is not one of" in str(res.exception) and "centred" in str(res.exception)
    assert not out.exists()
    # the flag is there and documented
    helped = CliRunner().invoke(steer_app, ["sweep", "--help"])
    assert helped.exit_code == 0 and "--scale-reference" in helped.output
