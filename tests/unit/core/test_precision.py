"""``psylens.precision``: float64 on the device, float32 on MPS (which has no float64).

Known answers for the helper, then the MPS code path run on the CPU: the helper is patched so the CPU
counts as a device without float64, and the attribution scores, unit baselines (pooled and per scenario),
reference norms and perplexity must equal the float64 path within float32 tolerance. Control: the
on-device reductions are observed to run in float32 under the patch (and in float64 without it), so the
comparisons cannot pass because the patch did nothing.
"""

from __future__ import annotations

import math

import pytest
import torch

from psylens import precision
from psylens.circuits.scores import attribution
from psylens.circuits.signal import contrast_weights, prepare, scenario_baseline, unit_baseline
from psylens.precision import wide, wide_dtype
from psylens.steering.metrics import perplexity, token_nll
from psylens.steering.sweep import residual_norms
from psylens.summary import fisher_ratio

from tests.unit.circuits.circuits_planted import EMOS, READOUT, neutral_texts, planted_model, stimuli

# the einsums of circuits.scores / circuits.signal that reduce activations on the model's device
DEVICE_EINSUMS = {"bt,bthd->hd", "bt,btn->n", "bt,bt...->...", "bt,bt...->b..."}


# --------------------------------------------------------------------------------------------
# known answers
# --------------------------------------------------------------------------------------------
def test_wide_dtype_is_float32_on_mps_and_float64_elsewhere():
    assert wide_dtype(torch.device("mps")) == torch.float32  # constructing the device needs no Apple GPU
    assert wide_dtype("mps:0") == torch.float32
    assert wide_dtype(torch.device("cpu")) == torch.float64
    assert wide_dtype("cuda") == torch.float64
    assert wide_dtype(torch.device("cuda", 1)) == torch.float64


def test_wide_casts_on_the_tensors_own_device():
    x = torch.tensor([1.0, 2.5], dtype=torch.float32)
    y = wide(x)
    assert y.dtype == torch.float64 and y.device == x.device
    assert torch.equal(y, x.double())
    assert wide(torch.tensor([True, False])).dtype == torch.float64


# --------------------------------------------------------------------------------------------
# the MPS path on the CPU
# --------------------------------------------------------------------------------------------
@pytest.fixture
def as_mps(monkeypatch):
    """Make the CPU a device without float64, as MPS is."""
    monkeypatch.setattr(precision, "_NO_FLOAT64", frozenset({"mps", "cpu"}))
    assert wide_dtype("cpu") == torch.float32 and wide(torch.zeros(1)).dtype == torch.float32


class _EinsumDtypes(torch.overrides.TorchFunctionMode):
    """Records the operand dtypes of the library's on-device reduction einsums."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.einsum and args and args[0] in DEVICE_EINSUMS:
            self.seen.update(a.dtype for a in args[1:] if isinstance(a, torch.Tensor))
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def planted(smollm_tokenizer):
    """(model, direction): the circuits tests' tiny Llama with a planted head and neuron."""
    return planted_model(smollm_tokenizer)


def _scores(model, v):
    """Pooled and per-scenario baselines, and the attribution scores over each, with the dtypes the
    device einsums ran in."""
    texts, labels, groups = stimuli()
    data = prepare(model, texts, labels=labels, groups=groups, batch_size=6)
    w = contrast_weights(labels, groups, "joy", EMOS)
    nt = [f"I was in the kitchen on day {g} and then sat down." for g in range(4)]
    neutral = prepare(model, nt, labels=["neutral"] * 4, groups=[f"g{g}" for g in range(4)], batch_size=3)
    with _EinsumDtypes() as spy:
        pooled = unit_baseline(model, prepare(model, neutral_texts()), range(READOUT + 1))
        per_row = scenario_baseline(model, data, neutral, range(READOUT + 1))
        sc_pooled = attribution(model, data, w, v, READOUT, pooled)
        sc_row = attribution(model, data, w, v, READOUT, per_row)
    return (pooled, per_row, sc_pooled, sc_row), spy.seen


@pytest.fixture(scope="module")
def float64_scores(planted):
    return _scores(*planted)


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert float(want.abs().max()) > 0  # not trivially zero
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_circuit_scores_and_baselines_on_the_mps_path_equal_float64(planted, float64_scores, as_mps):
    (ref_pooled, ref_row, ref_sc, ref_sc_row), ref_dtypes = float64_scores
    (pooled, per_row, sc, sc_row), dtypes = _scores(*planted)
    assert ref_dtypes == {torch.float64}  # the control: float64 on the CPU as before ...
    assert dtypes == {torch.float32}  # ... and float32 under the patch, as on MPS
    for got, want in ((pooled, ref_pooled), (per_row, ref_row)):
        _close(got.heads, want.heads)
        _close(got.neurons, want.neurons)
    _close(per_row.table_heads, ref_row.table_heads)
    _close(per_row.table_neurons, ref_row.table_neurons)
    for got, want in ((sc, ref_sc), (sc_row, ref_sc_row)):
        for score in ("direct", "atp"):
            for kind in ("heads", "neurons"):
                _close(got.get(score, kind), want.get(score, kind))
        assert got.signal == pytest.approx(want.signal, rel=1e-5) and want.signal != 0


def test_reference_norms_on_the_mps_path_equal_float64(tiny_model, monkeypatch):
    model = tiny_model("llama")
    prompts = [model.format_prompt(p) for p in ("Describe your morning.", "Tell me about the weather.")]
    want = {r: residual_norms(model, prompts, [0, 2], reference=r) for r in ("centred", "median")}
    monkeypatch.setattr(precision, "_NO_FLOAT64", frozenset({"mps", "cpu"}))
    seen: list[torch.dtype] = []
    real_wide = precision.wide

    def spy(x: torch.Tensor) -> torch.Tensor:
        out = real_wide(x)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr("psylens.steering.sweep.wide", spy)
    for r, w in want.items():
        got = residual_norms(model, prompts, [0, 2], reference=r)
        for layer in (0, 2):
            assert w[layer] > 0 and got[layer] == pytest.approx(w[layer], rel=1e-5)
    assert seen and set(seen) == {torch.float32}  # the control: the device tensors were reduced in float32


def test_fisher_ratio_on_the_mps_path_equals_float64(monkeypatch):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(20)
    x = torch.randn(60, 8, generator=g) + 2.0 * torch.nn.functional.one_hot(y, 8).float()
    want = fisher_ratio(x, y)
    monkeypatch.setattr(precision, "_NO_FLOAT64", frozenset({"mps", "cpu"}))
    assert wide(x).dtype == torch.float32
    got = fisher_ratio(x, y)
    assert want > 0.2 and got == pytest.approx(want, rel=1e-5)  # chance level here: (3 - 1) / (60 - 3)


def test_perplexity_needs_no_device_float64(tiny_model, monkeypatch):
    """token_nll moves the log-probabilities to the CPU before it sums them in float64, so the MPS path is
    the CPU path: the same numbers exactly (the helper is not used there)."""
    model = tiny_model("llama")
    prompts = ["Tell me about the weather.", "Tell me about the weather.", "Describe your morning."]
    texts = ["It is sunny and warm.", "Rain.", "I woke up early and made tea."]
    want_nll, want_n = token_nll(model, prompts, texts)
    want_ppl = perplexity(model, prompts, texts)
    monkeypatch.setattr(precision, "_NO_FLOAT64", frozenset({"mps", "cpu"}))
    assert wide_dtype("cpu") == torch.float32
    got_nll, got_n = token_nll(model, prompts, texts)
    assert torch.equal(got_n, want_n) and torch.equal(got_nll, want_nll) and bool((want_nll > 0).all())
    assert math.isfinite(want_ppl) and perplexity(model, prompts, texts) == want_ppl
