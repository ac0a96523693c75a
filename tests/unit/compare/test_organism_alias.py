"""The organism alias: load_model(alias) = base + the shipped adapter, merged (ΔW = B·A·scale exactly)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psylens import models as M


@pytest.fixture()
def planted(tmp_path: Path, smollm_tokenizer, monkeypatch):
    """A tiny base directory, a LoRA adapter on it with known A and B, and an alias that points at both."""
    from conftest import build_tiny_hf
    from peft import LoraConfig, get_peft_model

    base = tmp_path / "base"
    build_tiny_hf("llama").save_pretrained(base)
    smollm_tokenizer.save_pretrained(base)
    peft_model = get_peft_model(build_tiny_hf("llama"), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    q = peft_model.base_model.model.model.layers[1].self_attn.q_proj
    delta = (q.lora_B["default"].weight @ q.lora_A["default"].weight) * q.scaling["default"]
    src = M.OrganismSource("tiny-org", "test", str(base), "tiny-org")
    monkeypatch.setitem(M.ORGANISMS, "tiny-org", src)
    monkeypatch.setattr(M.OrganismSource, "adapter_dir", lambda self: adapter)
    return base, adapter, delta.detach()


def test_alias_is_base_plus_adapter(planted) -> None:
    base_dir, adapter, delta = planted
    tuned = M.load_model("tiny-org", device="cpu")
    base = M.load_model(str(base_dir), device="cpu")
    assert tuned.spec == "tiny-org" and tuned.adapter == str(adapter)
    wt = tuned.hf_model.model.layers[1].self_attn.q_proj.weight
    wb = base.hf_model.model.layers[1].self_attn.q_proj.weight
    assert torch.allclose(wt - wb, delta, atol=1e-6) and float(delta.abs().max()) > 0
    # control: modules the adapter does not touch are identical
    assert torch.equal(tuned.hf_model.model.layers[1].self_attn.v_proj.weight,
                       base.hf_model.model.layers[1].self_attn.v_proj.weight)
    with pytest.raises(ValueError, match="already carries its own adapter"):
        M.load_model("tiny-org", adapter=str(adapter))


def test_missing_shipped_adapter_says_how_to_train(tmp_path: Path, monkeypatch) -> None:
    from importlib import resources

    src = M.ORGANISMS["smollm2-135m-psy-grpo"]
    assert src.base in M.REGISTRY
    root = Path(str(resources.files("psylens") / "data" / "organisms" / src.folder))
    if (root / "adapter_config.json").is_file():
        assert src.adapter_dir() == root
    else:
        with pytest.raises(ValueError, match="psylens organism train"):
            src.adapter_dir()
