"""Feature steering of new traces: the counts are right on known records, and only the steered conditions change."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from psylens.saes.steer import condition_summary, feature_steering


def test_condition_summary_counts_the_label_per_trace():
    recs = [
        {"prompt": "p", "text": "She feels sad. Let me check that again. Answer: B", "correct": True},
        {"prompt": "p", "text": "He is at home. Let me double-check. Is that right? Answer: A", "correct": False},
        {"prompt": "p", "text": "The ball is in the box. Answer: C", "correct": True},
    ]
    s = condition_summary(recs, "reflection")
    assert s["label_steps_per_trace"] == pytest.approx(1.0)  # 1 + 2 + 0 over three traces
    assert s["n_traces"] == 3 and s["accuracy"] == pytest.approx(2 / 3)
    lo, hi = s["accuracy_ci"]
    assert lo < 2 / 3 < hi
    # control: a label none of these steps has
    assert condition_summary(recs, "backtracking")["label_steps_per_trace"] == 0.0


@pytest.mark.slow
def test_feature_steering_changes_only_the_steered_conditions(tiny_model, tmp_path):
    from psylens.tasks import Task

    m = tiny_model("llama")
    d = tmp_path / "sae"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    w_dec = torch.randn(8, m.d_model, generator=g)
    save_file({"W_dec": w_dec, "W_enc": w_dec.T.contiguous(), "b_enc": torch.zeros(8), "b_dec": torch.zeros(m.d_model)},
              str(d / "sae_weights.safetensors"))
    (d / "step_sae.json").write_text(json.dumps({"model": "tiny-llama", "site": "resid_post", "layer": 1}))
    tasks = [Task(id=f"t{i}", kind="emotion_inference", story="Ann lost her keys.", question="How does Ann feel?",
                  choices=("calm", "upset"), answer="upset", split="test") for i in range(2)]
    rep = feature_steering(m, d, 3, "reflection", alphas=[50.0], tasks=tasks, samples=1, max_new_tokens=6,
                           batch_size=2, progress=False)
    assert set(rep["conditions"]) == {"none", "feature@50", "random@50"} and rep["layer"] == 1
    texts = {}
    for name in rep["conditions"]:
        lines = (d / "steering" / name.replace("@", "_at_") / "traces" / "traces.jsonl").read_text().splitlines()
        texts[name] = [json.loads(x)["text"] for x in lines]
    assert texts["feature@50"] != texts["none"] and texts["random@50"] != texts["none"]
    # the random control has the feature vector's norm
    c = rep["conditions"]
    assert c["random@50"]["vector_norm"] == pytest.approx(c["feature@50"]["vector_norm"], rel=1e-5)
    assert c["feature@50"]["vector_norm"] == pytest.approx(50 * float(w_dec[3].norm()), rel=1e-5)
    # control: the unsteered condition is reproducible (same seeds) — steering is the only difference
    again = feature_steering(m, d, 3, "reflection", alphas=[50.0], tasks=tasks, samples=1, max_new_tokens=6,
                             batch_size=2, out=tmp_path / "again", progress=False)
    plain = [json.loads(x)["text"] for x in (tmp_path / "again" / "none" / "traces" / "traces.jsonl").read_text().splitlines()]
    assert plain == texts["none"] and again["conditions"]["none"]["n_traces"] == 2
    assert json.loads((d / "steering" / "summary.json").read_text())["feature"] == 3
