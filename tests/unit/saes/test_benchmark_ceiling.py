"""`python -m benchmarks.saes ceiling` on the planted step run of the explorer's tests: a dense probe reads the
planted behaviours (AUROC near 1), its shuffled-label control does not, and the PCA baseline is a valid EV."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path


def _planted_writer():
    path = Path(__file__).parents[1] / "apps" / "test_saes_page.py"
    spec = importlib.util.spec_from_file_location("_saes_page_planted", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ceiling_reads_planted_labels_and_the_control_does_not(tmp_path):
    from benchmarks import saes as bench
    from psylens.runs import create_run

    page = _planted_writer()
    run = create_run(tmp_path / "run", command="psylens sae train", model={"spec": "tiny-llama"})
    page.write_sae_outputs(run, n_traces=60)
    # noisier, wider step vectors than the page's (its 4 tight clusters let a shuffled-label probe score 0 or 1)
    import torch

    from psylens.saes import artifacts as SA
    from psylens.saes.data import StepSet

    cache = run.file(SA.steps_file("resid_post", 1, "delimiter-sentence"))
    steps, meta = StepSet.load(cache)
    g = torch.Generator().manual_seed(1)
    acts = torch.cat([steps.acts, torch.zeros(len(steps), 56)], dim=1) + 0.7 * torch.randn(len(steps), 64, generator=g)
    StepSet(acts, steps.trace_ids, steps.steps).save(cache, meta=meta)
    out = tmp_path / "ceiling.json"
    bench.main(["ceiling", "--run", str(run.path), "--name", page.NAME, "--json", str(out)])
    (row,) = json.loads(out.read_text())
    labels = row["labels"]
    assert {"reflection", "emotion_attribution", "conclusion"} <= set(labels)
    for lab in ("reflection", "emotion_attribution", "conclusion"):
        assert labels[lab]["probe_auroc"] > 0.9, (lab, labels[lab])
        assert abs(labels[lab]["control_auroc"] - 0.5) < 0.15, (lab, labels[lab])  # the control must fail
        assert labels[lab]["sae_feature_auroc"] is not None
    ev = row["pca_explained_variance"]
    assert 0.0 < ev["16"] <= ev["32"] <= 1.0  # more components explain more
