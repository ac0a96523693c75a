"""Issue #10 §3: fluency judged against the model's own text, steering picked by the model's own verdict.

Known answers on tiny random models: distinct-n and zlib ratios of planted texts; a repetitive cell is
excluded under the ``relative`` criterion but allowed under a generous ``absolute`` cap; a planted
direction that writes the unembedding of joy's "… I feel" words is picked at whichever layer it sits,
over a random direction at the other layer; the NRC target is met by planted joyful texts and missed
by plain ones.
"""

from __future__ import annotations

import json
import math
import zlib

import pytest
import torch

from psylens.runs import create_run
from psylens.steering import sweep as sweep_mod
from psylens.steering.judges import EMOTIONS
from psylens.steering.metrics import distinct_n, zlib_ratio
from psylens.steering.sweep import SweepConfig, run_sweep

PROMPTS = [f"Tell me about item number {i}." for i in range(12)]
VARIED = [
    "the morning bus was late so i walked past the bakery and the river",
    "we planted tomatoes near the fence and watered them before lunch",
    "a grey cat slept on the warm steps while the neighbours talked",
    "my brother fixed the old radio with a screwdriver and some tape",
    "the library closes at six on fridays but opens early on monday",
    "rain tapped the window as the kettle started to whistle softly",
    "she counted the coins twice and bought bread milk and apples",
    "the train crossed the bridge slowly above the empty harbour",
]


# -- the metrics ----------------------------------------------------------------------------------
def test_distinct_n_known_values():
    assert distinct_n(["a b a b"]) == pytest.approx(2 / 3)  # bigrams ab, ba, ab
    assert distinct_n(["a b", "a b"]) == pytest.approx(0.5)  # pooled over texts, never across them
    assert distinct_n("One, two. THREE", n=1) == 1.0  # words lower-cased, edge punctuation stripped
    assert distinct_n(["x y z x y z"], n=3) == pytest.approx(3 / 4)
    assert math.isnan(distinct_n([])) and math.isnan(distinct_n(["single"]))
    # control: repeated text scores far below varied text
    assert distinct_n(["joy joy joy joy joy joy"] * 3) < 0.1 < 0.9 < distinct_n(VARIED)
    with pytest.raises(ValueError, match="positive integer"):
        distinct_n(["a b"], n=0)


def test_zlib_ratio_known_values():
    texts = ["hello there", "hello again"]
    raw = "hello there\nhello again".encode()
    assert zlib_ratio(texts) == pytest.approx(len(zlib.compress(raw, 9)) / len(raw))
    assert zlib_ratio("ab" * 200) < 0.1  # repetition compresses
    assert zlib_ratio(VARIED) > 0.5  # varied prose much less
    assert math.isnan(zlib_ratio([])) and math.isnan(zlib_ratio(["", ""]))


def test_config_fields_validate_and_round_trip():
    cfg = SweepConfig(fluency="absolute", pick_by="judge", n_contexts=6, n_reference=2)
    assert SweepConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SweepConfig().fluency == "relative" and SweepConfig().pick_by == "model"
    assert SweepConfig.full().n_contexts is None  # every built-in context in the full sweep
    for kw, msg in [(dict(fluency="loose"), "not one of"), (dict(pick_by="nrc"), "not one of"),
                    (dict(n_contexts=1), "n_contexts"), (dict(n_random=2), "n_random"),
                    (dict(target_over_ceiling=0.0), "target_over_ceiling")]:
        with pytest.raises(ValueError, match=msg):
            SweepConfig(**kw)


# -- relative vs absolute fluency -------------------------------------------------------------------
class MarkerJudge:
    """Calls a text ``emotion`` when it contains ``MARK_<emotion>``."""

    name = "marker"

    def score(self, texts):
        out = torch.zeros(len(texts), len(EMOTIONS))
        for i, t in enumerate(texts):
            for k, e in enumerate(EMOTIONS):
                out[i, k] = float(f"MARK_{e}" in t)
        return out


class RandomDirections:
    site = "resid_post"
    method = "mean_diff"

    def __init__(self, d: int = 32, layers=(0, 1, 2), planted: dict | None = None, seed: int = 0):
        self.emotions, self.layers = tuple(EMOTIONS), tuple(layers)
        v = torch.randn(len(self.emotions), len(self.layers), d, generator=torch.Generator().manual_seed(seed))
        self.vectors = v / v.norm(dim=-1, keepdim=True)
        for (e, layer), u in (planted or {}).items():
            self.vectors[self.emotions.index(e), self.layers.index(layer)] = u / u.norm()

    def __getitem__(self, key):
        e, layer = key
        return self.vectors[self.emotions.index(e), self.layers.index(layer)].clone()


def _planted_generate(steer_text):
    """A `_generate` stand-in: steer rows get ``steer_text(row)``, every other row varied prose."""

    def fake(model, rows, cfg, seed, progress, desc, *, do_sample=False):
        for r in rows:
            r.text = steer_text(r) if r.condition == "steer" else VARIED[r.prompt_index % len(VARIED)]

    return fake


REF_D2, REF_ZLIB = 0.8, 0.5  # about what varied prose of a few sentences scores


def _planted_reference(model, formatted, prompts, cfg, seed, ppl_greedy, temperature=1.0, *, draws=1):
    """The model's own T=1 text, planted: perplexing (ratio 1e6) but not repetitive."""
    return {"unsteered_sampled": 1e6, "perplexity_ratio": 1e6, "distinct_2": REF_D2, "zlib_ratio": REF_ZLIB,
            "temperature": temperature, "draws": draws, "n": len(formatted)}


@pytest.fixture
def planted(tiny_model, tmp_path, monkeypatch):
    model = tiny_model("llama")
    monkeypatch.setattr(sweep_mod, "_fluency_reference", _planted_reference)

    def go(steer_text, **changes) -> dict:
        monkeypatch.setattr(sweep_mod, "_generate", _planted_generate(steer_text))
        base = dict(emotions=("joy",), layers=(1,), scales=(0.5, 1.0), n_dev=4, n_test=4, max_new_tokens=2,
                    n_contexts=2, pick_by="judge")
        base.update(changes)
        run = create_run(tmp_path / f"run{len(list(tmp_path.iterdir()))}", command="test", model=model.describe())
        n = base["n_dev"] + base["n_test"]
        return run_sweep(model, run, directions=RandomDirections(), prompts=PROMPTS[:n], config=SweepConfig(**base),
                         judge=MarkerJudge(), progress=False)

    return go


def _repetitive_at_scale_one(r):
    # the judge prefers the repetitive cell (every text marked), the varied cell is marked on one prompt only
    if r.scale == 1.0:
        return "MARK_joy " * 8
    return VARIED[(r.prompt_index + 3) % len(VARIED)] + (" MARK_joy" if r.prompt_index % 4 == 0 else "")


def test_a_repetitive_cell_is_excluded_under_relative_but_allowed_under_a_generous_absolute_cap(planted, tmp_path):
    rel = planted(_repetitive_at_scale_one)
    e = rel["emotions"]["joy"]
    assert e["best_scale"] == 0.5 and e["meets_fluency"] is True
    # the grid records each check of each cell
    cells = {c["scale"]: c for c in json.loads((tmp_path / "run0" / "steering" / "grid.json").read_text())["cells"]}
    assert cells[1.0]["fluent"] is False
    assert cells[1.0]["fluency_checks"] == {"perplexity": True, "distinct_2": False, "zlib": False}
    assert cells[0.5]["fluent"] is True and cells[1.0]["distinct_2"] < 0.2 < cells[0.5]["distinct_2"]
    assert rel["fluency"]["criterion"] == "relative"
    ref = rel["fluency"]["reference"]["dev"]
    assert ref["perplexity_ratio"] == 1e6 and ref["distinct_2"] == REF_D2 and ref["zlib_ratio"] == REF_ZLIB
    # control: the old absolute cap, generous, lets the judge-preferred repetitive cell through
    ab = planted(_repetitive_at_scale_one, fluency="absolute", max_perplexity_ratio=1e9)
    assert ab["emotions"]["joy"]["best_scale"] == 1.0 and ab["fluency"]["criterion"] == "absolute"
    assert ab["emotions"]["joy"]["fluency"]["checks"] == {"perplexity": True}


# -- picking by the model's own verdict ---------------------------------------------------------------
def _planted_model(tokenizer, seed: int = 0):
    """A tiny llama whose direction ``v`` writes the unembedding (and embedding) of joy's feel words."""
    from conftest import build_tiny_hf

    from psylens.concepts import feel_words
    from psylens.models import Model
    from psylens.validation.gates import word_token_ids

    hf = build_tiny_hf("llama")
    v = torch.randn(32, generator=torch.Generator().manual_seed(seed + 7))
    v = v / v.norm()
    ids = word_token_ids(tokenizer, feel_words())["joy"]
    with torch.no_grad():
        hf.lm_head.weight[ids] = 2.0 * v
        hf.get_input_embeddings().weight[ids] = 2.0 * v
    return Model(hf, tokenizer, spec="tiny-planted"), v


@pytest.mark.slow
def test_a_planted_direction_is_picked_at_whichever_layer_it_sits(smollm_tokenizer, tmp_path):
    model, v = _planted_model(smollm_tokenizer)
    picked = {}
    for planted_layer, other in ((1, 2), (2, 1)):
        r = torch.randn(32, generator=torch.Generator().manual_seed(planted_layer))
        r = r - (r @ v) * v  # a random direction orthogonal to the plant
        dirs = RandomDirections(layers=(1, 2), planted={("joy", planted_layer): v, ("joy", other): r})
        cfg = SweepConfig(emotions=("joy",), layers=(1, 2), scales=(4.0, 8.0), n_dev=2, n_test=2, max_new_tokens=3,
                          n_contexts=4, fluency="absolute", max_perplexity_ratio=1e9)
        run = create_run(tmp_path / f"p{planted_layer}", command="test", model=model.describe())
        s = run_sweep(model, run, directions=dirs, prompts=PROMPTS[:4], config=cfg, progress=False)
        joy = s["emotions"]["joy"]
        picked[planted_layer] = joy["best_layer"]
        cells = json.loads(run.file("steering/grid.json").read_text())["cells"]
        rows = {c["layer"]: c["feels_row"] for c in cells if c["scale"] == 8.0}
        assert rows[planted_layer] > rows[other] + 5.0  # the planted row rises by nats more than the random one
        assert joy["feels_row"]["dev"]["row_won"] is True and joy["feels_row"]["test"]["value"] > 1.0
        assert joy["read_back"]["test"]["win_rate"] >= 0.5 and s["picking"]["by"] == "model"
    # known answer: the pick follows the plant; a picker blind to it picks the same layer both times
    assert picked == {1: 1, 2: 2}


# -- the summary: corroborating judges, the NRC target ---------------------------------------------------
JOY_WORDS = ["happy", "joyful", "glad", "delight", "fun", "bliss", "love", "sunshine", "hug"]


def test_summary_keys_and_the_nrc_target(planted):
    def joyful(r):  # varied prose, each prompt with its own three joy words of the NRC lexicon
        i = r.prompt_index
        return f"{VARIED[i % len(VARIED)]} {' '.join(JOY_WORDS[(i + k) % len(JOY_WORDS)] for k in (0, 3, 6))}"

    s = planted(joyful, n_test=6)
    # existing keys kept
    assert {"emotions", "mean_success", "meets_target", "targets", "judge_validation", "fluency_reference"} <= set(s)
    assert {"target", "target_met", "judges", "fluency", "picking"} <= set(s)
    assert s["targets"]["success_over_ceiling"] == 0.6 and s["targets"]["margin_over_baselines"] == 0.1
    nrc = s["judges"]["nrc"]
    assert s["judges"]["marker"]["ceiling"] is not None and 0 < nrc["ceiling"] < 1
    m = nrc["mean"]
    assert m["success"] == 1.0 and m["baselines"]["random"] == 0.0 and m["beats_random"] is True
    assert m["success_over_ceiling"] == pytest.approx(1.0 / nrc["ceiling"], abs=1e-3)
    assert set(m["baselines_over_ceiling"]) == {"prompting", "random", "none"}
    je = nrc["emotions"]["joy"]
    assert {"success", "success_over_ceiling", "ci95", "baselines", "vs", "beats_random", "beats_prompting"} <= set(je)
    assert s["target_met"] is True and s["target"]["judge"] == "nrc"
    e = s["emotions"]["joy"]
    assert {"fluency", "distinct_2", "zlib_ratio", "feels_row", "read_back", "picked_by"} <= set(e)
    assert s["fluency"]["reference"]["test"]["n"] == 6

    # control: plain steered text misses the target (NRC success 0, nothing above the baselines)
    plain = planted(lambda r: VARIED[(r.prompt_index + 1) % len(VARIED)], n_test=6)
    assert plain["judges"]["nrc"]["mean"]["success"] == 0.0 and plain["target_met"] is False


# -- the CLI flags ------------------------------------------------------------------------------------
def test_steer_sweep_flags_reach_the_config(tiny_model, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import psylens.models
    from psylens.steering.cli import steer_app

    seen = {}

    def fake_sweep(model, run, **kw):
        seen.update(kw)
        return {"emotions": {}, "mean_success": 0.0, "target": {"success_over_ceiling": 0.5, "min_success_over_ceiling": 0.6,
                "over_prompting": 0.2, "over_random": 0.3, "margin": 0.1, "fluency": "absolute", "all_fluent": True,
                "met": False}}

    monkeypatch.setattr(sweep_mod, "run_sweep", fake_sweep)
    monkeypatch.setattr(psylens.models, "load_model", lambda spec, **load: tiny_model("llama"))
    args = ["sweep", "--run", str(tmp_path / "r"), "--fluency", "absolute", "--max-perplexity-ratio", "3", "--pick-by", "judge"]
    res = CliRunner().invoke(steer_app, args)
    assert res.exit_code == 0, res.output
    cfg = seen["config"]
    assert (cfg.fluency, cfg.max_perplexity_ratio, cfg.pick_by) == ("absolute", 3.0, "judge")
    assert "NRC success ÷ ceiling 0.50" in res.output and "target not met" in res.output
    # the default is the relative criterion; a bad value is refused before any model loads
    res = CliRunner().invoke(steer_app, ["sweep", "--run", str(tmp_path / "r2")])
    assert res.exit_code == 0 and seen["config"].fluency == "relative" and seen["config"].pick_by == "model"
    res = CliRunner().invoke(steer_app, ["sweep", "--run", str(tmp_path / "r3"), "--fluency", "loose"])
    assert res.exit_code != 0 and "not one of" in str(res.exception)


def test_fluency_checks_relative_greedy_holds_diversity_to_greedy_text() -> None:
    ref = {"perplexity_ratio": 3.0, "distinct_2": 0.98, "zlib_ratio": 0.61,
           "unsteered_greedy": {"distinct_2": 0.89, "zlib_ratio": 0.54}}
    # a greedy steered cell as diverse as the model's own greedy text, far less perplexing than T=1 samples
    cell = {"perplexity_ratio": 1.2, "distinct_2": 0.90, "zlib_ratio": 0.55}
    rel = sweep_mod._fluency_checks(cell, ref, SweepConfig(fluency="relative"))
    assert rel == {"perplexity": True, "distinct_2": False, "zlib": False}
    greedy = sweep_mod._fluency_checks(cell, ref, SweepConfig(fluency="relative_greedy"))
    assert greedy == {"perplexity": True, "distinct_2": True, "zlib": True}
    # the control: a cell more repetitive than greedy text, or more perplexing than T=1 samples, still fails
    worse = sweep_mod._fluency_checks({**cell, "distinct_2": 0.80}, ref, SweepConfig(fluency="relative_greedy"))
    assert worse["distinct_2"] is False
    assert sweep_mod._fluency_checks({**cell, "perplexity_ratio": 3.5}, ref, SweepConfig(fluency="relative_greedy"))["perplexity"] is False
    # no greedy reference recorded: the diversity checks fail rather than pass by default
    assert sweep_mod._fluency_checks(cell, {k: v for k, v in ref.items() if k != "unsteered_greedy"},
                                     SweepConfig(fluency="relative_greedy"))["distinct_2"] is False
    with pytest.raises(ValueError, match="relative_greedy"):
        SweepConfig(fluency="greedy")
