"""Loading models (aliases, HF ids offline, local directories, adapters), devices, dtypes,
prompt formatting and generation — on tiny random-weight models."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from psylens.models import DEFAULT_MODEL, REGISTRY, Model, cache_dir, load_model, pick_device
from psylens.modules import decoder_layers


@pytest.fixture(scope="module")
def tiny_dir(tiny_llama_dir: Path) -> Path:
    return tiny_llama_dir  # tests/conftest.py: read-only, shared by the session


def logits(model: Model, text: str = "The cat sat on the mat") -> torch.Tensor:
    ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.hf_model(input_ids=ids).logits


# ---------------------------------------------------------------- specs
def test_registry() -> None:
    assert DEFAULT_MODEL == "smollm2-135m-instruct"
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= set(REGISTRY)


@pytest.mark.parametrize("spec", ["nope", "not a model", "a/b/c"])
def test_unknown_spec_lists_aliases(spec: str) -> None:
    with pytest.raises(ValueError) as e:
        load_model(spec)
    msg = str(e.value)
    assert spec in msg
    for alias in REGISTRY:
        assert alias in msg


@pytest.mark.parametrize("spec", ["", None])
def test_empty_spec(spec) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        load_model(spec)  # type: ignore[arg-type]


def test_hf_id_missing_offline() -> None:
    spec = "psylens-no-such-org/no-such-model-7"
    with pytest.raises(ValueError) as e:
        load_model(spec)
    msg = str(e.value)
    assert spec in msg and "not in the local Hugging Face cache" in msg
    assert f"huggingface-cli download {spec}" in msg  # says how to get it


def test_missing_gguf(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_model(str(tmp_path / "model.gguf"))


def test_local_directory(tiny_dir: Path, tiny_model) -> None:
    m = load_model(str(tiny_dir), device="cpu")
    assert m.spec == str(tiny_dir) and m.location == str(tiny_dir) and m.adapter is None
    assert (m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp) == (3, 32, 4, 8, 64)
    assert m.bridge is not None and "blocks.2.hook_resid_post" in m.bridge.hook_dict
    assert m.device == torch.device("cpu") and m.dtype == torch.float32
    assert len(m.layers()) == 3 and m.layers() is decoder_layers(m.hf_model)
    # the same weights as the in-process model it was saved from
    torch.testing.assert_close(logits(m), logits(tiny_model("llama")), rtol=0, atol=1e-5)
    d = m.describe()
    assert d["architecture"] == "LlamaForCausalLM" and d["n_layers"] == 3 and d["dtype"] == "float32"
    assert "LlamaForCausalLM" in repr(m)
    m2 = load_model(str(tiny_dir), device="cpu", boot_bridge=False)
    assert m2._bridge is None


def test_directory_without_config(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="no config.json"):
        load_model(str(tmp_path))


def test_broken_directory(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=str(tmp_path)):
        load_model(str(tmp_path))


# ---------------------------------------------------------------- adapters
@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    d = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(d)
    return d


def test_adapter_changes_outputs(tiny_dir: Path, adapter_dir: Path) -> None:
    base = load_model(str(tiny_dir), device="cpu")
    tuned = load_model(str(tiny_dir), adapter=adapter_dir, device="cpu")
    assert tuned.adapter == str(adapter_dir)
    assert not torch.allclose(logits(base), logits(tuned), atol=1e-4)
    # merged into plain weights: no PEFT wrapper left, and the bridge sees the tuned weights
    assert "Peft" not in type(tuned.hf_model).__name__
    a = base.harvest(["The cat sat"], layers=[0], progress=False)["resid_post"]
    b = tuned.harvest(["The cat sat"], layers=[0], progress=False)["resid_post"]
    assert not torch.allclose(a, b, atol=1e-4)


def test_adapter_with_zero_update_is_identity(tiny_dir: Path, tmp_path: Path) -> None:
    # control for the test above: a fresh LoRA (lora_B = 0) must not change anything
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_dir), LoraConfig(r=4, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "zero")
    base = load_model(str(tiny_dir), device="cpu", boot_bridge=False)
    same = load_model(str(tiny_dir), adapter=tmp_path / "zero", device="cpu", boot_bridge=False)
    torch.testing.assert_close(logits(base), logits(same), rtol=0, atol=1e-6)


def test_bad_adapter(tiny_dir: Path, tmp_path: Path) -> None:
    for bad in (tmp_path, tmp_path / "missing"):
        with pytest.raises(ValueError, match="adapter_config.json"):
            load_model(str(tiny_dir), adapter=bad, device="cpu")


# ---------------------------------------------------------------- devices and dtypes
def test_pick_device() -> None:
    auto = pick_device("auto")
    if not torch.cuda.is_available():
        assert auto.type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu-ish")


@pytest.mark.parametrize("dtype, want", [(None, torch.float32), ("bf16", torch.bfloat16), (torch.float16, torch.float16)])
def test_dtype(tiny_dir: Path, dtype, want: torch.dtype) -> None:
    m = load_model(str(tiny_dir), device="cpu", dtype=dtype, boot_bridge=False)
    assert m.dtype == want
    assert all(p.dtype == want for p in m.hf_model.parameters())


def test_bad_dtype(tiny_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        load_model(str(tiny_dir), device="cpu", dtype="float8")


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PSYLENS_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert REGISTRY["gemma-3-270m"].is_cached() is False  # an empty cache; checking never builds anything
    assert not (tmp_path / "c").exists()
    monkeypatch.delenv("PSYLENS_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "psylens"


# ---------------------------------------------------------------- prompts and generation
def test_format_prompt(tiny_model) -> None:
    m = tiny_model("llama")
    text = "I found a letter."
    chat = m.format_prompt(text)
    assert m.has_chat_template and m.resolve_format("auto") == "chat"
    assert chat.count(text) == 1 and chat.index("<|im_start|>user") < chat.index(text)
    assert chat.rstrip().endswith("<|im_start|>assistant")
    assert m.format_prompt(text, format="raw") == text
    assert m.format_prompt(text, format="raw", system_prompt="Be brief.") == "Be brief.\n" + text
    with_sys = m.format_prompt(text, system_prompt="Be brief.")
    assert "Be brief." in with_sys and with_sys != chat
    no_gen = m.format_prompt(text, add_generation_prompt=False)
    assert not no_gen.rstrip().endswith("assistant")
    with pytest.raises(ValueError, match="format"):
        m.format_prompt(text, format="html")


def test_no_chat_template(tiny_model) -> None:
    base = tiny_model("llama")
    tok = copy.deepcopy(base.tokenizer)
    tok.chat_template = None
    m = Model(base.hf_model, tok, spec="no-template", boot_bridge=False)
    assert not m.has_chat_template and m.resolve_format("auto") == "raw"
    assert m.format_prompt("hi") == "hi"
    with pytest.raises(ValueError, match="no chat template"):
        m.format_prompt("hi", format="chat")


def test_generate(tiny_model) -> None:
    m = tiny_model("llama")
    side = m.tokenizer.padding_side
    prompts = ["Tell me a story", "Hi"]
    a = m.generate(prompts, max_new_tokens=5)
    b = m.generate(prompts, max_new_tokens=5)
    assert isinstance(a, list) and len(a) == 2 and all(isinstance(x, str) for x in a)
    assert a == b  # greedy is deterministic
    assert any(x for x in a)
    one = m.generate("Hi", max_new_tokens=5)
    assert isinstance(one, list) and len(one) == 1 and isinstance(one[0], str)
    raw = m.generate(["Tell me a story"], max_new_tokens=5, format="raw", batch_size=1)
    assert len(raw) == 1
    s1 = m.generate(prompts, max_new_tokens=5, do_sample=True, seed=3)
    s2 = m.generate(prompts, max_new_tokens=5, do_sample=True, seed=3)
    assert s1 == s2  # a seed fixes sampling
    assert m.tokenizer.padding_side == side  # restored
    with pytest.raises(ValueError, match="max_new_tokens"):
        m.generate("Hi", max_new_tokens=0)


def test_generate_leaves_the_global_rng_alone(tiny_model):
    m = tiny_model("llama")
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    a = m.generate("Hello there", max_new_tokens=3, do_sample=True, seed=5)
    got = torch.rand(3)
    assert torch.equal(got, want)  # generate did not reseed the caller's RNG
    assert m.generate("Hello there", max_new_tokens=3, do_sample=True, seed=5) == a  # but its seed still fixes it


def test_folded_system_prompt_is_logged_and_recorded(tiny_model, caplog):
    import logging

    m = tiny_model("llama")
    real = m.tokenizer.apply_chat_template

    def no_system(messages, **kw):
        if any(msg["role"] == "system" for msg in messages):
            raise ValueError("System role not supported")
        return real(messages, **kw)

    m.tokenizer.apply_chat_template = no_system
    try:
        with caplog.at_level(logging.WARNING, logger="psylens.models"):
            acts = m.harvest(["A calm day."], system_prompt="Be brief.", progress=False)
        assert "folded into the user turn" in caplog.text
        assert acts.meta["system_prompt_folded"] is True
    finally:
        m.tokenizer.apply_chat_template = real
        m.folds_system_prompt = False
    plain = m.harvest(["A calm day."], system_prompt="Be brief.", progress=False)  # control: a template with a system turn
    assert "system_prompt_folded" not in plain.meta


def test_bridge_booted_later_does_not_copy_hooks(tiny_dir):
    """Issue 15: booting the bridge after a steering block must not carry hooks into the twin."""
    from psylens.steering import SteeringVector

    m = load_model(str(tiny_dir), device="cpu")
    assert not m.bridge_booted  # lazy by default: load_model does not import transformer-lens
    sv = SteeringVector.from_tensor(torch.ones(m.d_model) * 5, layers=[0], alpha=1.0)
    fresh = m.harvest(["A calm day."], sites=["mlp_out"], progress=False, backend="bridge")["mlp_out"]
    m2 = load_model(str(tiny_dir), device="cpu")
    with sv.apply(m2):  # hooks on the plain model while the bridge is not booted ...
        steered = m2.harvest(["A calm day."], sites=["mlp_out"], progress=False)["mlp_out"]
        m2.bridge  # ... and the bridge booted inside the block: a deep copy of hooked modules
    assert not torch.allclose(steered, fresh)  # control: steering was on inside the block
    after = m2.harvest(["A calm day."], sites=["mlp_out"], progress=False, backend="bridge")["mlp_out"]
    torch.testing.assert_close(after, fresh, atol=0, rtol=0)
    counts = sum(len(getattr(mod, d)) for mod in m2.bridge.original_model.modules()
                 for d in ("_forward_hooks", "_forward_pre_hooks"))
    assert counts == sum(len(getattr(mod, d)) for mod in m.bridge.original_model.modules()
                         for d in ("_forward_hooks", "_forward_pre_hooks"))
