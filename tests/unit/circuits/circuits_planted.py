"""Helpers of the circuits tests: a tiny Llama with one head and one neuron planted to write a known
direction when "joy" is read, and stimuli for it (imported by name: a conftest cannot be imported twice)."""

from __future__ import annotations

import torch

from psylens.models import Model

EMOS = ("joy", "anger", "fear")
PLANT_LAYER = 0  # the neuron's layer
HEAD_LAYER = 1  # the head's layer (= the read-out layer: nothing nonlinear sits between it and the read-out)
PLANT_HEAD = 2
PLANT_NEURON = 7
READOUT = 1


def stimuli(n_groups: int = 4) -> tuple[list[str], list[str], list[str]]:
    places = ["the kitchen", "the bus", "the office", "the park", "the shop", "the beach", "the station", "the library"]
    texts, labels, groups = [], [], []
    for g in range(n_groups):
        for e in EMOS:
            texts.append(f"I was in {places[g % len(places)]} on day {g} and suddenly felt {e}.")
            labels.append(e)
            groups.append(f"g{g}")
    return texts, labels, groups


def neutral_texts() -> list[str]:
    return ["I was in the kitchen on day one and then sat down.", "The bus left the station at noon."]


def plant(model, tokenizer, direction: torch.Tensor) -> None:
    """Neuron PLANT_NEURON of layer 0 fires on the " joy" token and writes ``direction``; head PLANT_HEAD of
    layer 1 reads ``direction`` (the neuron's write) into its value and writes ``direction`` again."""
    hf = model
    tok_id = tokenizer(" joy", add_special_tokens=False)["input_ids"][0]
    layer = hf.model.layers[PLANT_LAYER]
    d = hf.config.hidden_size
    with torch.no_grad():
        # token embeddings large against the planted writes, so the MLP still sees each position's token
        hf.model.embed_tokens.weight.mul_(30.0)
        e = hf.model.embed_tokens.weight[tok_id].clone()
        u = e / e.norm()
        mlp = layer.mlp
        mlp.gate_proj.weight[PLANT_NEURON] = 2.0 * u
        mlp.up_proj.weight[PLANT_NEURON] = 2.0 * u
        mlp.down_proj.weight[:, PLANT_NEURON] = 0.5 * direction
        attn = hf.model.layers[HEAD_LAYER].self_attn
        dh = hf.config.head_dim if getattr(hf.config, "head_dim", None) else d // hf.config.num_attention_heads
        kv = PLANT_HEAD // (hf.config.num_attention_heads // hf.config.num_key_value_heads)
        # the value of the planted head's kv group reads the direction into its first coordinate
        attn.v_proj.weight[kv * dh] = 1.0 * direction
        attn.o_proj.weight[:, PLANT_HEAD * dh : (PLANT_HEAD + 1) * dh] = 0.0
        attn.o_proj.weight[:, PLANT_HEAD * dh] = 20.0 * direction


def tiny_llama():
    """A tiny Llama like tests/conftest.py's ``build_tiny_hf("llama")`` but with one key/value head per head
    (no head shares the planted head's value projection)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    return AutoModelForCausalLM.from_config(cfg).eval()




def planted_model(tokenizer) -> tuple[Model, torch.Tensor]:
    """(model, direction): a fresh tiny Llama with the planted head and neuron writing a seeded unit direction."""
    torch.manual_seed(1)
    v = torch.randn(32)
    v = v / v.norm()
    hf = tiny_llama()
    plant(hf, tokenizer, v)
    return Model(hf, tokenizer, spec="tiny-planted"), v
