"""``psylens.devicecheck`` and ``psylens doctor`` on a tiny random Llama saved to a directory (no GPU needed).

Known answers: a float32 CPU target is bit-identical to the reference (every difference exactly 0); a
bfloat16 CPU target is a real precision change (every difference > 0, within the bf16 bars, the fingerprint
skipped). Controls that must fail: a target copy with one layer's weights perturbed, an intervention op
that misbehaves on the target only, and a check whose code raises (recorded, never propagated).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from psylens import cli
from psylens import devicecheck as dc
from psylens.interventions import Intervention
from psylens.models import Model

NAMES = ["logits", "record", "interventions", "steering", "attribution", "fingerprint"]


@pytest.fixture(scope="module")
def tiny_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir  # tests/conftest.py: read-only, shared by the session


def _spy_loads(monkeypatch: pytest.MonkeyPatch, on_target: Any = None) -> list[Model]:
    """Record the models check_device loads (reference first, then target); ``on_target(model)`` edits the target."""
    loaded: list[Model] = []
    real = dc.load_model

    def load(*args: Any, **kwargs: Any) -> Model:
        m = real(*args, **kwargs)
        loaded.append(m)
        if len(loaded) == 2 and on_target is not None:
            on_target(m)
        return m

    monkeypatch.setattr(dc, "load_model", load)
    return loaded


def test_cpu_float32_target_is_identical(tiny_dir: Path) -> None:
    report = dc.check_device(str(tiny_dir), device="cpu")
    assert [c.name for c in report.checks] == NAMES
    assert report.passed and report.failed == [] and not any(c.skipped for c in report.checks)
    assert (report.device, report.dtype, report.reference_device, report.reference_dtype) == ("cpu", "float32", "cpu", "float32")
    assert any("compares psylens with itself" in n for n in report.notes)  # said, so nobody mistakes it for a device test
    r = {c.name: c for c in report.checks}
    assert r["logits"].value == 0.0 and r["logits"].metrics["max_abs_logprob_vocab"] == 0.0
    assert r["logits"].metrics["top1_agreement"] == 1.0
    assert r["record"].value == 0.0 and set(r["record"].metrics["relative_error"]) == {"layer_0", "layer_1", "layer_2"}
    assert r["interventions"].value == 0.0
    edits = r["interventions"].metrics["relative_error"]
    assert {"add", "scale", "clamp", "project_out", "add_resid_mid", "zero_heads", "mean_heads", "zero_neurons",
            "mean_neurons", "patch"} == set(edits)
    assert all(v > 0 for v in r["interventions"].metrics["effect"].values())  # every edit really changed something
    assert r["steering"].value == 1.0 and r["steering"].metrics["shift_relative_error"] == 0.0
    assert r["steering"].metrics["first_divergence"] == [None, None]
    assert r["attribution"].value == 1.0 and max(r["attribution"].metrics["max_relative_error"].values()) == 0.0
    assert r["fingerprint"].passed and r["fingerprint"].metrics["reference"] == r["fingerprint"].metrics["target"]
    d = report.to_dict()
    json.dumps(d, allow_nan=False)  # JSON-safe
    assert d["passed"] is True and [c["status"] for c in d["checks"]] == ["pass"] * 6


def test_cpu_bfloat16_target_differs_within_the_bf16_bars(tiny_dir: Path) -> None:
    report = dc.check_device(str(tiny_dir), device="cpu", dtype="bfloat16")
    assert report.dtype == "bfloat16" and report.passed, [(c.name, c.detail) for c in report.checks]
    assert not any("compares psylens with itself" in n for n in report.notes)  # control: another dtype is a real test
    r = {c.name: c for c in report.checks}
    tol = dc.TOLERANCES["bfloat16"]
    assert r["logits"].tolerance == tol.logprob and r["record"].tolerance == tol.activation
    # the comparison really ran: every difference is above zero (and below its bar)
    assert 0 < r["logits"].value <= tol.logprob
    assert 0 < r["record"].value <= tol.activation
    assert 0 < r["interventions"].value <= tol.activation
    assert 0 < r["steering"].metrics["shift_relative_error"] <= tol.shift
    assert 0 < max(r["attribution"].metrics["max_relative_error"].values()) <= tol.attribution
    assert r["attribution"].value < 1.0
    fp = r["fingerprint"]
    assert fp.skipped and fp.status == "skip" and "bfloat16" in fp.detail and "float32" in fp.detail
    assert report.to_dict()["checks"][-1]["passed"] is None


def test_a_perturbed_layer_on_the_target_fails_the_checks_that_see_it(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def perturb(m: Model) -> None:  # the planted "device bug": layer 1's MLP output weights 1% off
        w = m.layers()[1].mlp.down_proj.weight
        with torch.no_grad():
            w.add_(0.01 * w.abs().mean() * torch.randn(w.shape, generator=torch.Generator().manual_seed(5)))

    _spy_loads(monkeypatch, perturb)
    report = dc.check_device(str(tiny_dir), device="cpu")
    assert not report.passed
    assert {"record", "interventions", "attribution", "fingerprint"} <= set(report.failed), report.failed
    # the random model's log-probs are nearly flat (all ≈ -log(vocab)): they move, if less than the float32 bar
    assert report["logits"].value > 0
    rec = report["record"].metrics["relative_error"]
    assert rec["layer_0"] == 0.0 and rec["layer_1"] > dc.TOLERANCES["float32"].activation  # the layer is named
    assert "≠ reference" in report["fingerprint"].detail


def test_an_op_that_misbehaves_on_the_target_is_named(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = _spy_loads(monkeypatch)
    real = dc.intervene

    def intervene(model: Any, ivs: list[Intervention]) -> Any:  # 'scale' is off by 1% on the target only
        if len(loaded) == 2 and model is loaded[1]:
            ivs = [iv.replace(value=iv.value * 1.01) if iv.op == "scale" else iv for iv in ivs]
        return real(model, ivs)

    monkeypatch.setattr(dc, "intervene", intervene)
    report = dc.check_device(str(tiny_dir), device="cpu")
    assert report.failed == ["interventions"]
    c = report["interventions"]
    assert "over the bar: scale" in c.detail
    assert c.metrics["relative_error"]["scale"] > c.tolerance
    assert all(v == 0.0 for k, v in c.metrics["relative_error"].items() if k != "scale")


def test_unavailable_devices_and_bad_dtypes_are_refused_before_loading(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load(*a: Any, **k: Any) -> None:
        raise AssertionError("nothing may be loaded for a bad argument")

    monkeypatch.setattr(dc, "load_model", no_load)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dc, "available_devices", lambda: ["cpu"])
    for device in ("cuda", "cuda:1", "mps", "tpu", "not a device"):
        with pytest.raises(ValueError) as e:
            dc.check_device(str(tiny_dir), device=device)
        msg = str(e.value)
        assert repr(device) in msg and "available devices here: cpu" in msg and "--device" in msg, msg
    with pytest.raises(ValueError, match="unknown dtype 'float8'.*float32, float16 or bfloat16"):
        dc.check_device(str(tiny_dir), device="cpu", dtype="float8")
    with pytest.raises(ValueError, match="not both"):
        dc.check_device(str(tiny_dir), device="cpu", device_map="auto")


def test_doctor_cli_refuses_an_unavailable_device(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = cli.main(["doctor", "--model", str(tiny_dir), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: device 'cuda' is not available" in " ".join(err.split()) and "available devices here: cpu" in err


def test_doctor_cli_writes_the_json_report(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "doctor.json"
    r = CliRunner().invoke(cli.app, ["doctor", "--model", str(tiny_dir), "--device", "cpu", "--json", str(out),
                                     "--no-progress"])
    assert r.exit_code == 0, r.output
    for name in NAMES:
        assert name in r.output
    assert "PASS" in r.output and "FAIL" not in r.output
    d = json.loads(out.read_text())
    assert d["passed"] is True and d["device"] == "cpu" and d["dtype"] == "float32"
    assert [c["name"] for c in d["checks"]] == NAMES and all(c["status"] == "pass" for c in d["checks"])
    assert d["checks"][0]["value"] == 0.0


def test_a_check_that_raises_is_a_failed_check_and_the_cli_exits_1(tiny_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import psylens.circuits.scores as scores

    def unsupported(*a: Any, **k: Any) -> None:
        raise NotImplementedError("The operator 'aten::_fake_op' is not currently implemented for the MPS device")

    monkeypatch.setattr(scores, "attribution", unsupported)
    out = tmp_path / "doctor.json"
    r = CliRunner().invoke(cli.app, ["doctor", "--model", str(tiny_dir), "--device", "cpu", "--json", str(out),
                                     "--no-progress"])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)  # recorded, not propagated
    assert "failed: attribution" in r.output
    d = json.loads(out.read_text())
    assert d["passed"] is False and d["failed"] == ["attribution"]
    att = next(c for c in d["checks"] if c["name"] == "attribution")
    assert att["status"] == "fail" and att["value"] is None
    assert att["detail"].startswith("raised NotImplementedError: The operator 'aten::_fake_op'")
    assert all(c["status"] == "pass" for c in d["checks"] if c["name"] != "attribution")  # the others still ran


def test_tolerances_cover_every_dtype_and_loosen_with_precision() -> None:
    t32, t16, tbf = (dc.TOLERANCES[k] for k in ("float32", "float16", "bfloat16"))
    for name in ("logprob", "activation", "shift", "attribution"):
        assert getattr(t32, name) < getattr(t16, name) <= getattr(tbf, name), name
    for name in ("top1", "tokens", "spearman"):
        assert getattr(t32, name) > getattr(t16, name) >= getattr(tbf, name), name
    assert t32.tokens == 1.0 and t32.top1 == 1.0  # exact tokens on equal dtype
    assert all(math.isfinite(v) for t in dc.TOLERANCES.values() for v in vars(t).values())


def test_the_documented_tolerance_table_is_the_one_used() -> None:
    import re

    number = r"[0-9][0-9.e-]*"
    table = re.findall(rf"^(\w+)((?:\s+{number}){{7}})\s*$", dc.__doc__ or "", flags=re.M)
    rows = {name: [float(x) for x in values.split()] for name, values in table}
    assert set(rows) == set(dc.TOLERANCES)
    for dtype, t in dc.TOLERANCES.items():
        assert rows[dtype] == [t.logprob, t.top1, t.activation, t.tokens, t.shift, t.spearman, t.attribution], dtype
