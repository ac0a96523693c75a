"""SAE training through SAELens on step vectors: planted features recovered, held-out kept out, the run folder."""

from __future__ import annotations

import json
import math

import pytest
import torch

from psylens.saes.data import StepDataProvider, StepSet, split_by_trace
from psylens.saes.synthetic import recovered
from psylens.saes.train import SAETrainConfig, build_training_sae, evaluate_sae


# -- known answer: planted sparse features ------------------------------------------------------
@pytest.mark.slow
def test_planted_features_are_recovered_and_the_untrained_control_is_not(planted_sae):
    data, train_ids, held_ids, sae, result = planted_sae
    assert type(sae).__name__ == "JumpReLUSAE"  # BatchTopK is saved as JumpReLU; load_from_disk reads it back
    cos = recovered(data.directions, sae.W_dec.detach())
    assert (cos >= 0.9).float().mean() >= 0.8, cos
    held = data.steps.only(held_ids)
    m = evaluate_sae(sae, held)
    assert m["explained_variance"] >= 0.9 and m["l0"] <= 6, m
    lo, hi = m["explained_variance_ci"]
    assert lo <= m["explained_variance"] <= hi
    assert m["n_held_out_traces"] == len(held_ids)

    # control: the same architecture before training recovers (almost) nothing and explains little
    untrained = build_training_sae(SAETrainConfig(arch="batchtopk", d_sae=64, k=3), d_in=64)
    cos0 = recovered(data.directions, untrained.W_dec.detach())
    assert (cos0 >= 0.9).float().mean() < 0.1
    untrained.eval()
    assert evaluate_sae(untrained, held)["explained_variance"] < 0.5
    assert result.n_train_steps == len(data.steps.only(train_ids))


# -- the data provider and the split --------------------------------------------------------------
def test_split_by_trace_is_disjoint_stable_and_keeps_held_out_out():
    ids = [f"t{i}" for i in range(50)]
    train, held = split_by_trace(ids, held_out=0.2, seed=1)
    assert set(train).isdisjoint(held) and set(train) | set(held) == set(ids) and 4 <= len(held) <= 16
    train2, held2 = split_by_trace(ids + [f"new{i}" for i in range(200)], held_out=0.2, seed=1)
    assert set(held) <= set(held2) and set(train) <= set(train2)  # appending traces moves no old trace
    assert 0.12 <= len(held2) / 250 <= 0.28
    assert split_by_trace(ids, held_out=0.2, seed=2)[1] != held  # the seed matters
    steps = StepSet(torch.randn(100, 4), tuple(f"t{i // 2}" for i in range(100)), tuple(i % 2 for i in range(100)))
    with pytest.raises(ValueError, match="held-out traces"):
        StepDataProvider(steps, 8, exclude_traces=held)
    p = StepDataProvider(steps.only(train), 6, exclude_traces=held, seed=0)
    n = len(p)
    total = math.lcm(n, 6) * 2  # whole batches that are also whole epochs; partial batches carry over
    seen = torch.cat([next(p) for _ in range(total // 6)])
    assert seen.shape == (total, 4)
    # every row is seen equally often: total / n times
    rows = {tuple(r.tolist()) for r in steps.only(train).acts}
    counts = {}
    for r in seen:
        counts[tuple(r.tolist())] = counts.get(tuple(r.tolist()), 0) + 1
    assert set(counts) == rows and set(counts.values()) == {total // n}
    with pytest.raises(ValueError, match="batch_size"):
        StepDataProvider(torch.randn(4, 2), 8)


def test_config_validates_and_round_trips():
    cfg = SAETrainConfig(arch="topk", d_sae=128, k=8, lr_end=1e-4)
    assert SAETrainConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    with pytest.raises(ValueError, match="arch 'relu' is not one of"):
        SAETrainConfig(arch="relu")
    with pytest.raises(ValueError, match="k=64 is larger than d_sae=32"):
        SAETrainConfig(d_sae=32, k=64)
    with pytest.raises(ValueError, match="unknown SAE training settings"):
        SAETrainConfig.from_json({"arch": "topk", "l1": 3})
    from psylens.saes.train import trainer_config

    tc = trainer_config(SAETrainConfig(lr=2e-3), n_train=1000)
    assert tc.lr_end == 2e-3 and tc.total_training_samples % tc.train_batch_size_samples == 0


# -- the run folder (tiny model, hand-written traces) ---------------------------------------------
_PROMPTS = ["Maya's friend forgot her birthday. How does Maya feel? (A) happy (B) hurt", "Tom lost the match. What does he feel? (A) proud (B) sad"]
_TEXTS = [
    "Maya expected her friend to remember. She probably feels hurt and disappointed. Wait, let me reconsider the options. "
    "From her perspective, being forgotten feels like rejection. So the answer is hurt. Answer: B",
    "Tom trained for weeks. Losing would make him feel sad. Let me check again. He might also feel frustrated. "
    "Therefore he feels sad. Answer: B",
]


def _tiny_run(tmp_path, n: int = 12):
    from psylens.runs import create_run

    run = create_run(tmp_path / "run", command="psylens traces", model="tiny-llama")
    (run.path / "traces").mkdir()
    with open(run.path / "traces" / "traces.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"tr{i}", "task_id": f"task{i % 2}", "kind": "emotion", "prompt": _PROMPTS[i % 2],
                                "text": _TEXTS[i % 2], "answer": 1, "correct": True, "seed": i}) + "\n")
    return run


@pytest.mark.slow
def test_train_step_sae_writes_a_folder_saelens_opens(tiny_model, tmp_path):
    from sae_lens import SAE

    from psylens.saes.pipeline import train_step_sae

    m = tiny_model("llama")
    run = _tiny_run(tmp_path)
    folder = train_step_sae(run.path, layer=1, arch="topk", d_sae=16, k=2, name="tiny", model=m,
                            held_out=0.25, train_overrides={"epochs": 2, "batch_size": 8}, progress=False)
    assert folder == run.path / "saes" / "tiny"
    sae = SAE.load_from_disk(str(folder))
    assert sae.cfg.d_in == m.d_model and sae.cfg.d_sae == 16
    info = json.loads((folder / "step_sae.json").read_text())
    for key, want in {"model": "tiny-llama", "site": "resid_post", "layer": 1, "pooling": "delimiter",
                      "segmentation": "sentence", "arch": "topk", "dtype": "float32"}.items():
        assert info[key] == want
    held = json.loads((folder / "held_out.json").read_text())
    assert set(held["held_out"]).isdisjoint(held["train"]) and 1 <= len(held["held_out"]) <= 11
    assert info["n_train_steps"] > 0 and info["n_held_out_steps"] > 0
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in ("explained_variance", "l0", "dead_fraction", "mse"):
        assert isinstance(metrics[key], float)
    assert metrics["l0"] <= 2.0 + 1e-6  # topk, k=2
    # two epochs of a dozen steps: a handful of optimizer steps, said beside the metrics
    assert any("optimizer steps" in w for w in metrics["warnings"]), metrics.get("warnings")
    feats = json.loads((folder / "features.json").read_text())
    assert set(feats["labels"]) == {"emotion_attribution", "perspective_taking", "reflection", "backtracking",
                                    "conclusion", "restatement"}
    assert feats["labels"]["emotion_attribution"]["n_positive"] > 0  # "feels hurt", "feel sad" in held-out steps
    assert len(feats["features"]) == 16 and "logit_lens" in feats["features"][0]
    assert any(f["top_steps"] and f["top_steps"][0]["text"] for f in feats["features"])
    assert json.loads((run.path / "steps" / "sae-tiny.json").read_text())["outputs"]
    cache = list((run.path / "saes" / "steps").glob("*.safetensors"))
    assert len(cache) == 1  # step activations are cached for the next SAE of this layer

    # the same name again: refused before anything trains, saying what is there and how to replace it
    with pytest.raises(ValueError, match=r"already holds an SAE \(layer 1, resid_post, delimiter pooling, topk 16"):
        train_step_sae(run.path, layer=2, arch="topk", d_sae=8, k=2, name="tiny", model=m, progress=False)
    assert SAE.load_from_disk(str(folder)).cfg.d_sae == 16
    stale = folder / "steering" / "summary.json"
    stale.parent.mkdir()
    stale.write_text("{}")
    again = train_step_sae(run.path, layer=1, arch="topk", d_sae=8, k=2, name="tiny", model=m, held_out=0.25,
                           train_overrides={"epochs": 1, "batch_size": 8}, features=False, overwrite=True, progress=False)
    assert again == folder and SAE.load_from_disk(str(folder)).cfg.d_sae == 8
    assert not stale.exists() and not (folder / "features.json").exists()  # nothing of the old SAE is left


def test_ce_loss_recovered_known_answers(tiny_model):
    """A perfect reconstruction recovers 1; one that outputs zeros recovers 0 (the splice is a replace intervention)."""
    from psylens.saes.tokens import ce_loss_recovered, token_activations

    m = tiny_model("llama")
    traces = [{"prompt": p, "text": t} for p, t in zip(_PROMPTS, _TEXTS)]

    class Identity(torch.nn.Module):
        def __init__(self, d: int, keep: float) -> None:
            super().__init__()
            self.W_dec = torch.nn.Parameter(torch.eye(d))
            self.keep = keep

        def encode(self, x):
            return x

        def decode(self, z):
            return self.keep * z

    perfect = ce_loss_recovered(m, Identity(m.d_model, 1.0), traces, layer=1, progress=False)
    assert perfect["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["ce_sae"] == pytest.approx(perfect["ce_clean"], abs=1e-5)
    zeros = ce_loss_recovered(m, Identity(m.d_model, 0.0), traces, layer=1, progress=False)
    assert zeros["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-5) and zeros["ce_zero"] != zeros["ce_clean"]
    tok = token_activations(m, traces, layer=1, progress=False)
    assert tok.d == m.d_model and len(tok.unique_traces()) == 2 and len(tok) > 20


@pytest.mark.slow
def test_cli_sae_train_on_a_saved_tiny_model(tmp_path, tiny_model, smollm_tokenizer):
    from typer.testing import CliRunner

    from psylens.saes.cli import sae_app

    model_dir = tmp_path / "tiny-llama"
    tiny_model("llama").hf_model.save_pretrained(model_dir)
    smollm_tokenizer.save_pretrained(model_dir)
    run = _tiny_run(tmp_path)
    bad = CliRunner().invoke(sae_app, ["train", "--run", str(run.path), "--layer", "1", "--arch", "relu"])
    assert bad.exit_code != 0 and "arch 'relu' is not one of" in str(bad.exception)
    res = CliRunner().invoke(sae_app, ["train", "--run", str(run.path), "--layer", "1", "--arch", "standard",
                                       "--d-sae", "8", "--model", str(model_dir), "--epochs", "1",
                                       "--batch-size", "8", "--name", "cli", "--no-features", "--no-progress"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "explained variance" in res.output
    folder = run.path / "saes" / "cli"
    assert json.loads((folder / "step_sae.json").read_text())["arch"] == "standard"
    assert not (folder / "features.json").exists()
    # --matryoshka-widths reaches the trained SAE: the ladder is in step_sae.json and in SAELens' own cfg.json
    res = CliRunner().invoke(sae_app, ["train", "--run", str(run.path), "--layer", "1", "--arch", "matryoshka",
                                       "--d-sae", "8", "--k", "2", "--matryoshka-widths", "4,8", "--model", str(model_dir),
                                       "--epochs", "1", "--batch-size", "8", "--name", "mat", "--no-features", "--no-progress"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    folder = run.path / "saes" / "mat"
    info = json.loads((folder / "step_sae.json").read_text())
    assert info["arch"] == "matryoshka" and info["train"]["matryoshka_widths"] == [4, 8]
    details = json.loads((folder / "cfg.json").read_text())["metadata"]["training_architecture_details"]
    assert details["matryoshka_widths"] == [4, 8]


def test_training_warnings_name_an_sae_that_did_not_train() -> None:
    from psylens.saes.train import training_warnings

    good = {"explained_variance": 0.85, "l0": 28.7}
    assert training_warnings(good, n_batches=1050, arch="batchtopk", k=24) == []  # session 9's layer-12 SAE
    # what `--epochs 5` on 144 traces gave (the held-out numbers of that run)
    bad = training_warnings({"explained_variance": -2.01, "l0": 81.7}, n_batches=14, arch="batchtopk", k=8)
    assert len(bad) == 3 and "only 14 optimizer steps" in bad[0] and "-2.01 < 0" in bad[1] and "81.7" in bad[2]
    assert all("--epochs" in w for w in bad)
    # L0 only binds the k architectures
    assert training_warnings({"explained_variance": 0.8, "l0": 81.7}, n_batches=500, arch="jumprelu", k=8) == []
