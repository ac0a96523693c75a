"""The scenario's neutral event as the baseline of ``atp`` and ``patching`` (``CircuitsConfig.baseline="scenario"``):
its tables are each scenario's neutral means, it is used row by row, it agrees with the pooled mean exactly where
the signal is linear (the contrast weights sum to zero within a scenario), and it is refused on another set."""

from __future__ import annotations

import pytest
import torch

from psylens.circuits.scores import attribution, patching
from psylens.circuits.signal import (
    Baseline,
    Edit,
    Units,
    contrast_weights,
    prepare,
    projections,
    scenario_baseline,
    signal,
    unit_baseline,
)
from psylens.interventions import record

from tests.unit.circuits.circuits_planted import EMOS, stimuli

PLACES = ["the kitchen", "the bus", "the office", "the park"]


def _neutral(n_groups: int = 4, extra: bool = True):
    """Each scenario's neutral telling (scenario g0 twice, to check the mean of means)."""
    texts = [f"I was in {PLACES[g]} on day {g} and then sat down." for g in range(n_groups)]
    groups = [f"g{g}" for g in range(n_groups)]
    if extra:
        texts.append("On day 0 I went to the kitchen and stayed there for a long while.")
        groups.append("g0")
    return texts, groups


def _data(model, batch_size=5):
    texts, labels, groups = stimuli()
    nt, ng = _neutral()
    data = prepare(model, texts, labels=labels, groups=groups, batch_size=batch_size)
    neutral = prepare(model, nt, labels=["neutral"] * len(nt), groups=ng, batch_size=2)
    return data, neutral, contrast_weights(labels, groups, "joy", EMOS)


def _token_mean(model, text: str, layer: int):
    """``head_out`` / ``mlp_post`` at ``layer`` averaged over one text's own tokens, read directly."""
    one = prepare(model, [text])
    b = one.batches[0]
    with torch.no_grad(), record(model, ["head_out", "mlp_post"], [layer]) as rec:
        model.hf_model(input_ids=b.input_ids, attention_mask=b.attention_mask)
    m = b.text_mask[0]
    return rec["head_out", layer][0][m].double().mean(0), rec["mlp_post", layer][0][m].double().mean(0)


def test_tables_are_each_scenarios_neutral_means_and_the_pooled_mean_is_unit_baselines(tiny_model):
    model = tiny_model("llama")
    data, neutral, _ = _data(model)
    sb = scenario_baseline(model, data, neutral, [0, 1])
    nt, ng = _neutral()
    for g in ("g0", "g2"):
        texts = [t for t, gg in zip(nt, ng) if gg == g]
        for lay in (0, 1):
            got = [_token_mean(model, t, lay) for t in texts]
            want_h = torch.stack([h for h, _ in got]).mean(0)  # g0: the mean of its two tellings' means
            want_n = torch.stack([n for _, n in got]).mean(0)
            row = data.groups.index(g)
            torch.testing.assert_close(sb.heads_at(lay, [row])[0, 0].double(), want_h, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(sb.neurons_at(lay, [row])[0, 0].double(), want_n, rtol=1e-4, atol=1e-5)
    pooled = unit_baseline(model, neutral, [0, 1])
    torch.testing.assert_close(sb.heads, pooled.heads, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sb.neurons, pooled.neurons, rtol=1e-5, atol=1e-6)
    assert torch.all(sb.table_neurons[:, 2:] == 0)  # zeros outside the layers asked for
    # the scenarios differ (otherwise the option could not matter)
    assert not torch.allclose(sb.table_neurons[0, 0], sb.table_neurons[1, 0])


def test_refused_on_another_set_and_without_a_neutral_event(tiny_model):
    model = tiny_model("llama")
    data, neutral, w = _data(model)
    sb = scenario_baseline(model, data, neutral, [0, 1])
    other = prepare(model, list(data.texts[:3]), labels=list(data.labels[:3]), groups=list(data.groups[:3]))
    with pytest.raises(ValueError, match="per-stimulus baseline was built for"):
        projections(model, other, torch.ones(32), 1, Edit(Units(neurons=((0, 1),)), "mean"), sb)
    nt, ng = _neutral(2, extra=False)
    with pytest.raises(ValueError, match=r"scenarios without one: \['g2', 'g3'\]"):
        scenario_baseline(model, data, prepare(model, nt, groups=ng), [0])
    with pytest.raises(ValueError, match="together"):
        Baseline(heads=sb.heads, neurons=sb.neurons, table_heads=sb.table_heads)


def test_patching_writes_each_stimulus_its_own_scenarios_event(tiny_model):
    """Known answer by another route: rows are separate sequences, so patching to the scenario baseline equals,
    scenario by scenario, patching that scenario's rows to a pooled Baseline holding its own table."""
    model = tiny_model("llama")
    torch.manual_seed(5)
    v = torch.randn(32)
    v = v / v.norm()
    data, neutral, w = _data(model)
    sb = scenario_baseline(model, data, neutral, [0, 1])
    units = Units(heads=((0, 1),), neurons=((0, 3), (1, 5)))
    got = projections(model, data, v, 1, Edit(units, "mean"), sb)
    want = torch.zeros(len(data))
    for g in sorted(set(data.groups)):
        t = sb.row_table[data.groups.index(g)]
        one = Baseline(heads=sb.table_heads[t], neurons=sb.table_neurons[t])
        rows = [i for i, gg in enumerate(data.groups) if gg == g]
        want[rows] = projections(model, data, v, 1, Edit(units, "mean"), one)[rows]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # control: the pooled mean writes something else
    pooled = projections(model, data, v, 1, Edit(units, "mean"), Baseline(heads=sb.heads, neurons=sb.neurons))
    assert (pooled - got).abs().max() > 1e-3 * got.abs().max()  # ~1% here, against the 1e-5 match above


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_where_linear_atp_equals_patching_and_both_equal_the_pooled_scores(tiny_model, arch):
    """Neurons of the read-out layer reach the signal linearly, and the contrast weights sum to zero within each
    scenario: a per-scenario constant cancels, so atp = patching = the pooled baseline's scores there."""
    model = tiny_model(arch)
    torch.manual_seed(3)
    v = torch.randn(32)
    v = v / v.norm()
    data, neutral, w = _data(model)
    sb = scenario_baseline(model, data, neutral, range(3))
    sc = attribution(model, data, w, v, 2, sb)
    sc = patching(model, data, w, v, sc, sb, top_heads=1, top_neurons=30)
    ok = ~torch.isnan(sc.patching_neurons[2])
    assert int(ok.sum()) >= 5
    a, p = sc.atp_neurons[2][ok], sc.patching_neurons[2][ok]
    assert torch.allclose(a, p, rtol=1e-3, atol=1e-6 * float(p.abs().max()))
    pooled = attribution(model, data, w, v, 2, Baseline(heads=sb.heads, neurons=sb.neurons))
    assert torch.allclose(sc.atp_neurons[2], pooled.atp_neurons[2], rtol=1e-3, atol=1e-6 * float(p.abs().max()))
    # control: through the nonlinear layers below, the scenario's event and the pooled mean score differently
    assert (sc.atp_neurons[0] - pooled.atp_neurons[0]).abs().max() > 1e-4 * sc.atp_neurons[0].abs().max()
    assert signal(model, data, w, v, 2) == pytest.approx(sc.signal, rel=1e-5)
