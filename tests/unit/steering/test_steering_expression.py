"""Expression directions (psylens.steering.expression) and the sweep options that use them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from psylens import stimuli
from psylens.runs import create_run
from psylens.steering import SteeringVector
from psylens.steering.expression import (
    EXTRACTION_PROMPTS,
    SYSTEM_TEMPLATE,
    expression_activations,
    expression_directions,
)
from psylens.steering.judges import EMOTIONS
from psylens.steering.sweep import SweepConfig, band_layers, run_sweep

PROMPTS = ["Describe your morning.", "Tell me about the weather.", "Write about the ocean.", "Plan a grocery list."]


class _Scale(torch.nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return (x * self.factor,)


class _BagNet(torch.nn.Module):
    """Decoder "layers" that turn the running sum ``c`` into ``(l + 1) · c`` at layer ``l``."""

    def __init__(self, embed: torch.Tensor, n_layers: int) -> None:
        super().__init__()
        self.embed = embed
        self.config = SimpleNamespace(hidden_size=embed.shape[1], num_attention_heads=1, intermediate_size=1)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([_Scale(1.0 if v == 0 else (v + 1) / v) for v in range(n_layers)])
        self.model.forward = self._body  # the layers' owner is called with the inputs, as in transformers

    def _body(self, input_ids, attention_mask):
        h = (self.embed[input_ids] * attention_mask.unsqueeze(-1)).cumsum(dim=1)
        states = [h]
        for layer in self.model.layers:
            h = layer(h)[0]
            states.append(h)
        return states

    def forward(self, input_ids, attention_mask, output_hidden_states=False):
        return SimpleNamespace(hidden_states=tuple(self.model(input_ids=input_ids, attention_mask=attention_mask)))


class BagOfTokens:
    """A stand-in model with a known answer: ``resid_post`` of layer ``l`` at token ``t`` is
    ``(l + 1) ×`` the sum of a fixed embedding over the real tokens ``0..t`` (padding ignored)."""

    def __init__(self, tokenizer, n_layers: int = 3, d_model: int = 8) -> None:
        self.tokenizer, self.n_layers, self.d_model = tokenizer, n_layers, d_model
        self.device, self.spec = torch.device("cpu"), "bag-of-tokens"
        self.embed = torch.randn(len(tokenizer), d_model, generator=torch.Generator().manual_seed(0))
        self.hf_model = _BagNet(self.embed, n_layers)

    def format_prompt(self, text: str, *, system_prompt: str | None = None) -> str:
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def bag(self, text: str) -> torch.Tensor:
        return self.embed[self.tokenizer(text, add_special_tokens=False)["input_ids"]].sum(dim=0)


def test_known_answer_on_a_bag_of_tokens_model(smollm_tokenizer):
    model = BagOfTokens(smollm_tokenizer)
    emotions = ("joy", "sadness", "fear")
    dirs = expression_directions(model, PROMPTS, emotions=emotions, batch_size=5)  # batches mix prompt lengths
    # by hand: per prompt, the final-token state of each emotion's chat prompt, centred over emotions
    x = torch.stack([
        torch.stack([model.bag(model.format_prompt(p, system_prompt=SYSTEM_TEMPLATE.format(emotion=e))) for e in emotions])
        for p in PROMPTS
    ]).double()  # [P, E, d]
    raw = (x - x.mean(dim=1, keepdim=True)).mean(dim=0)
    assert dirs.emotions == emotions and dirs.layers == (0, 1, 2) and dirs.site == "resid_post"
    for layer in dirs.layers:
        for k, e in enumerate(emotions):
            want = (layer + 1) * raw[k]
            torch.testing.assert_close(dirs[e, layer].double(), want / want.norm(), rtol=1e-4, atol=1e-5)
            assert dirs.norm(e, layer) == pytest.approx(float(want.norm()), rel=1e-4)
    # the prompt's own tokens cancel: here the answer does not depend on the prompts at all
    other = expression_directions(model, ["Something else entirely, and longer than the others."], emotions=emotions)
    torch.testing.assert_close(other.vectors, dirs.vectors, rtol=1e-4, atol=1e-5)


def test_tiny_model_matches_one_by_one_forward_and_centres(tiny_model):
    model = tiny_model("llama")
    dirs = expression_directions(model, PROMPTS[:3], batch_size=4)
    assert dirs.emotions == EMOTIONS and dirs.layers == (0, 1, 2) and dirs.d_model == 32
    assert dirs.meta["kind"] == "expression" and dirs.meta["n_prompts"] == 3
    # raw directions sum to ~0 over emotions at every layer (centred per prompt)
    raw = dirs.vectors * dirs.norms.unsqueeze(-1)
    assert float(raw.sum(dim=0).abs().max()) < 1e-4 * float(dirs.norms.max())
    # left-padded batches read the same final-token state as single unpadded forwards
    acts = expression_activations(model, PROMPTS[:3], layers=[1], batch_size=4)
    for p_i, p in enumerate(PROMPTS[:3]):
        for e_i, e in enumerate(EMOTIONS):
            text = model.format_prompt(p, system_prompt=SYSTEM_TEMPLATE.format(emotion=e))
            ids = model.tokenizer(text, return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                hs = model.hf_model(**ids, output_hidden_states=True).hidden_states
            torch.testing.assert_close(acts[p_i, e_i, 0], hs[2][0, -1].float(), rtol=1e-4, atol=1e-4)


def test_the_system_prompt_is_what_matters(tiny_model):
    model = tiny_model("llama")
    base = expression_directions(model, PROMPTS[:2], layers=[2])
    # the emotion order does not change any emotion's direction
    rev = expression_directions(model, PROMPTS[:2], emotions=tuple(reversed(EMOTIONS)), layers=[2])
    for e in EMOTIONS:
        torch.testing.assert_close(rev[e, 2], base[e, 2], rtol=1e-4, atol=1e-5)
    # the control: shuffle which system prompt each emotion gets -> the directions follow the prompts
    shuffled = {"joy": "sadness", "sadness": "fear", "fear": "joy"}
    acts = expression_activations(model, PROMPTS[:2], emotions=("joy", "sadness", "fear"), layers=[2])
    swapped = expression_activations(model, PROMPTS[:2], emotions=[shuffled[e] for e in ("joy", "sadness", "fear")], layers=[2])
    torch.testing.assert_close(swapped[:, 0], acts[:, 1])
    assert not torch.allclose(swapped[:, 0], acts[:, 0])
    # a different wording of the system prompt gives a different answer
    other = expression_directions(model, PROMPTS[:2], layers=[2], system_template="Never mention {emotion}.")
    assert float((other.vectors * base.vectors).sum(-1).mean()) < 0.999


def test_bad_inputs_are_clear_errors(tiny_model):
    model = tiny_model("llama")
    for kwargs, msg in [
        (dict(prompts=[]), "one or more non-empty strings"),
        (dict(prompts="Describe your morning."), "not one string"),
        (dict(prompts=["ok", "  "]), "non-empty strings"),
        (dict(emotions=("joy",)), "at least two"),
        (dict(emotions="joy"), "sequence of names"),
        (dict(emotions=("joy", "joy")), "duplicates"),
        (dict(system_template="Always reply happily."), "must contain '{emotion}'"),
        (dict(layers=[3]), r"out of range: the model has 3 layers \(0–2\)"),
        (dict(layers=[]), "layers is empty"),
        (dict(batch_size=0), "batch_size must be at least 1"),
    ]:
        kw = {"prompts": PROMPTS[:2], **kwargs}
        with pytest.raises(ValueError, match=msg):
            expression_directions(model, kw.pop("prompts"), **kw)


def test_extraction_prompts_are_disjoint_from_the_sweep_prompts():
    assert len(EXTRACTION_PROMPTS) >= 20 and len(set(EXTRACTION_PROMPTS)) == len(EXTRACTION_PROMPTS)
    assert not set(EXTRACTION_PROMPTS) & set(stimuli.load("steering_prompts").texts)


def test_band_layers():
    assert band_layers(13, 1, 30) == (13,)
    assert band_layers(13, 5, 30) == (11, 12, 13, 14, 15)
    assert band_layers(0, 3, 30) == (0, 1, 2) and band_layers(29, 4, 30) == (26, 27, 28, 29)
    with pytest.raises(ValueError, match="wider than the model"):
        band_layers(1, 4, 3)
    for kw, msg in [(dict(directions="sae"), "not one of"), (dict(layer_band=0), "layer_band must be a positive")]:
        with pytest.raises(ValueError, match=msg):
            SweepConfig(**kw)


def test_sweep_with_expression_directions_and_a_band(tiny_model, tmp_path):
    model = tiny_model("llama")
    run = create_run(tmp_path / "run", command="test", model=model.describe())
    cfg = SweepConfig(emotions=("joy", "fear"), layers=(1,), scales=(0.5,), n_dev=2, n_test=2, max_new_tokens=4,
                      directions="expression", layer_band=3)
    summary = run_sweep(model, run, prompts=PROMPTS, config=cfg, progress=False)
    assert summary["directions"]["source"] == "expression" and summary["layer_band"] == 3
    dirs_file = run.file(summary["directions"]["file"])
    assert dirs_file.is_file()
    from psylens.probes import Directions

    dirs = Directions.load(dirs_file)
    assert dirs.emotions == EMOTIONS  # all six are contrasted, whichever are swept
    for e in ("joy", "fear"):
        v = summary["emotions"][e]
        assert isinstance(v["best_layer"], int) and isinstance(v["best_alpha"], float)
        assert v["best_layers"] == [0, 1, 2]
        sv = SteeringVector.load(run.file(f"steering/vectors/{e}.safetensors"))
        assert sv.layers == (0, 1, 2) and sv.alpha == v["best_alpha"] and sv.label == e
        assert sv.meta["directions"] == "expression"
        # alpha × vector at each layer = best_scale × that layer's mean residual norm × the unit direction
        for layer in sv.layers:
            want = v["best_scale"] * summary["residual_norms"][str(layer)] * dirs[e, layer]
            torch.testing.assert_close(sv.deltas()[layer], want, rtol=1e-4, atol=1e-4)
    gens = [json.loads(x) for x in run.file("steering/generations.jsonl").read_text().splitlines()]
    assert {g["condition"] for g in gens} == {"steer", "random", "prompting", "none"}


def test_sweep_refuses_extraction_prompts_as_test_prompts(tiny_model, tmp_path):
    model = tiny_model("llama")
    run = create_run(tmp_path / "run", command="test")
    cfg = SweepConfig(emotions=("joy",), layers=(1,), scales=(0.5,), n_dev=1, n_test=2, max_new_tokens=2,
                      directions="expression")
    with pytest.raises(ValueError, match="also extraction prompts"):
        run_sweep(model, run, prompts=list(EXTRACTION_PROMPTS[:3]), config=cfg, progress=False)


def test_last_layer_reads_the_block_output_not_the_final_norm(tiny_model):
    """Steering adds to the block output; HF ``hidden_states[-1]`` is after the final norm."""
    from psylens.interventions import record
    from psylens.steering.sweep import residual_norms

    m = tiny_model("llama")
    last = m.n_layers - 1
    acts = expression_activations(m, PROMPTS[:2], emotions=EMOTIONS[:2], layers=[last])
    prompt = m.format_prompt(PROMPTS[0], system_prompt=SYSTEM_TEMPLATE.format(emotion=EMOTIONS[0]))
    enc = m.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad(), record(m, ["resid_post"], [last]) as rec:
        hs = m.hf_model(**enc, output_hidden_states=True).hidden_states
    block = rec["resid_post", last][0, -1]
    torch.testing.assert_close(acts[0, 0, 0], block, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(acts[0, 0, 0], hs[last + 1][0, -1], atol=1e-3)  # control: the normed value differs
    norms = residual_norms(m, [prompt], [last])
    assert abs(norms[last] - float(rec["resid_post", last][0, 1:].norm(dim=-1).mean())) < 1e-4
