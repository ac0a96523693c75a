"""Harvesting: run stimuli through a model and keep only the activations asked for.

Hooks reduce each activation to the requested positions the moment it is produced
(the last text token, the mean over text tokens, or every text token), so memory grows
with stimuli × layers × width — never with a full cache. The forward pass stops as soon
as the deepest requested hook has fired (causal models: nothing later can change it),
and sequences are cut after the text's last token for the same reason.

Positions refer to the *text's own tokens*: inside a chat turn, ``last`` is the last
token of the user's words, not the template's closing tokens.

Large sets stream to safetensors shards in ``out``; a harvest killed part-way resumes
from the shards already written (each shard and the manifest are written atomically).

Backends: ``"hooks"`` (default: :func:`psylens.interventions.tap` on the plain HF model, the
hooks every analysis uses), ``"bridge"`` (transformer-lens ``TransformerBridge`` hook points) and
``"nnsight"`` (the same sites through an nnsight trace; ``remote=True`` sends the trace
to NDIF, see :func:`build_remote_trace`). The three are tested equal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Int
from torch import Tensor

from psylens.activations import MANIFEST, POSITIONS, ROWS, Activations
from psylens.interventions import StopForward, site_module, tap
from psylens.modules import decoder_layers
from psylens.io import ensure_writable_dir, exclusive_lock, file_sha256, read_json, write_json, write_tensors
from psylens.sites import SITES, hook_name, resolve_layers, validate_sites
from psylens.stimuli import Stimuli, from_texts

if TYPE_CHECKING:
    from psylens.models import Model

__all__ = ["harvest", "check_output", "Activations", "encode", "Encoded", "BACKENDS", "build_remote_trace", "LOCK_FILE"]

log = logging.getLogger(__name__)

BACKENDS = ("hooks", "bridge", "nnsight")
LOCK_FILE = ".harvest.lock"  # in the output directory while a harvest writes it (one writer per output)


_SITE_ORDER = ("resid_pre", "head_out", "attn_out", "resid_mid", "mlp_post", "mlp_out", "resid_post")


# --------------------------------------------------------------------------------------------
# tokenization
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Encoded:
    """One stimulus, tokenized: ``ids`` ends at the text's last token; ``text_start`` is
    the index of its first token (tokens ``text_start .. len(ids)-1`` are the text's)."""

    ids: list[int]
    text_start: int

    @property
    def n_text(self) -> int:
        return len(self.ids) - self.text_start


def encode(model: Model, text: str, *, format: str = "auto", system_prompt: str | None = None) -> Encoded:
    """Tokenize ``text`` as the model will see it and locate the text's own tokens."""
    fmt = model.resolve_format(format)
    prompt = model.format_prompt(text, format=fmt, system_prompt=system_prompt)
    tok = model.tokenizer
    if fmt == "chat":
        start_char, text = _locate_in_template(model, prompt, text, system_prompt)
        add_special = False  # the template carries its own special tokens
    else:
        start_char = len(prompt) - len(text)
        add_special = True
    end_char = start_char + len(text)
    if getattr(tok, "is_fast", False):
        enc = tok(prompt, add_special_tokens=add_special, return_offsets_mapping=True)
        inside = [
            i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and e > start_char and s < end_char
        ]
        ids = list(enc["input_ids"])
    else:  # slow tokenizers: count the tokens of the prefixes
        ids = list(tok(prompt, add_special_tokens=add_special)["input_ids"])
        first = len(tok(prompt[:start_char], add_special_tokens=add_special)["input_ids"])
        last = len(tok(prompt[:end_char], add_special_tokens=add_special)["input_ids"]) - 1
        inside = list(range(min(first, last), last + 1))
    if not inside:
        raise ValueError(f"text produced no tokens: {text!r}")
    ids = ids[: inside[-1] + 1]
    limit = _context_length(model)
    if limit is not None and len(ids) > limit:
        raise ValueError(
            f"text of {len(ids)} tokens (with its prompt) is longer than the model's {limit}-token context: "
            f"{text[:60]!r}…; psylens does not truncate silently, so split or shorten it"
        )
    return Encoded(ids=ids, text_start=inside[0])


_SENTINEL = "\u2063PSYLENS\u2063TEXT\u2063"
# the template rendered around the sentinel, per model and system prompt (weak: never keeps a model alive)
_FRAMES: weakref.WeakKeyDictionary[Any, dict[str | None, str]] = weakref.WeakKeyDictionary()


def _locate_in_template(model: Model, prompt: str, text: str, system_prompt: str | None) -> tuple[int, str]:
    """Where the user's ``text`` starts in its chat-formatted ``prompt``, found from the template's structure.

    The template is rendered around a sentinel, which splits it into the part before the user turn's
    content and the part after; searching the prompt for the text instead would land in the template
    when the text also occurs there ("assistant", "start", "is").
    """
    frames = _FRAMES.setdefault(model, {})
    for fresh in (False, True):  # a cached frame first; render again if the template changed since
        if fresh or system_prompt not in frames:
            frames[system_prompt] = model.format_prompt(_SENTINEL, format="chat", system_prompt=system_prompt)
        frame = frames[system_prompt]
        at = frame.find(_SENTINEL)
        if at < 0 or frame.count(_SENTINEL) != 1:
            raise ValueError(
                f"the chat template of {model.spec!r} does not keep the user's text verbatim; use format='raw'"
            )
        before, after = frame[:at], frame[at + len(_SENTINEL):]
        for candidate in (text, text.strip()):  # some templates trim the message
            if prompt == before + candidate + after:
                return len(before), candidate
    raise ValueError(
        f"could not locate the text inside its formatted prompt (the template changes it): {text[:60]!r}; "
        "use format='raw'"
    )


def _context_length(model: Model) -> int | None:
    cfg = getattr(getattr(model, "hf_model", None), "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    limit = getattr(cfg, "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else None


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------
@dataclass
class _Batch:
    index: list[int]  # positions of these stimuli in the chunk being processed
    input_ids: Int[Tensor, "b t"]
    attention_mask: Int[Tensor, "b t"]
    position_ids: Int[Tensor, "b t"]
    text_mask: Tensor  # bool [b, t]: the text's own tokens
    last: Int[Tensor, " b"]  # index of the text's last token per row


def _make_batch(encs: Sequence[Encoded], index: list[int], pad_id: int, side: str) -> _Batch:
    t = max(len(e.ids) for e in encs)
    b = len(encs)
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    mask = torch.zeros((b, t), dtype=torch.long)
    text = torch.zeros((b, t), dtype=torch.bool)
    last = torch.zeros(b, dtype=torch.long)
    for r, e in enumerate(encs):
        n = len(e.ids)
        off = t - n if side == "left" else 0
        ids[r, off : off + n] = torch.tensor(e.ids)
        mask[r, off : off + n] = 1
        text[r, off + e.text_start : off + n] = True
        last[r] = off + n - 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return _Batch(index, ids, mask, pos, text, last)


def _batches(encs: Sequence[Encoded], batch_size: int, pad_id: int, side: str) -> list[_Batch]:
    # Sort by length so a batch holds similar lengths (little padding); order is restored later.
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))
    out = []
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        out.append(_make_batch([encs[i] for i in idx], idx, pad_id, side))
    return out


# --------------------------------------------------------------------------------------------
# reduction to positions
# --------------------------------------------------------------------------------------------
def _reduce(x: Tensor, batch: _Batch, positions: str) -> Tensor:
    """``x``: [b, t, *w] → last/mean: [b, *w]; all: [n_text_tokens, *w] (row-major)."""
    x = x.detach()
    if positions == "last":
        return x[torch.arange(x.shape[0], device=x.device), batch.last.to(x.device)].float().cpu()
    m = batch.text_mask.to(x.device)
    if positions == "mean":
        w = m.to(x.dtype).reshape(*m.shape, *([1] * (x.dim() - 2)))
        return ((x * w).sum(1) / w.sum(1)).float().cpu()
    return x[m].float().cpu()


def _inputs(model: Model, batch: _Batch) -> dict[str, Any]:
    dev = model.device
    return {
        "input_ids": batch.input_ids.to(dev),
        "attention_mask": batch.attention_mask.to(dev),
        "position_ids": batch.position_ids.to(dev),
        "use_cache": False,
    }


def _collector(keys: list[tuple[str, int]], batch: _Batch, positions: str) -> tuple[dict[tuple[str, int], Tensor], Callable[..., None]]:
    """A store and a callback that reduces each site tensor once and stops the forward when all are in."""
    got: dict[tuple[str, int], Tensor] = {}
    need = len(keys)

    def keep(site: str, layer: int, x: Tensor) -> None:
        key = (site, layer)
        if key not in got:
            got[key] = _reduce(x, batch, positions)
            if len(got) == need:
                raise StopForward

    return got, keep


def _check_fired(keys: list[tuple[str, int]], got: dict[tuple[str, int], Tensor]) -> dict[tuple[str, int], Tensor]:
    missing = [k for k in keys if k not in got]
    if missing:
        raise RuntimeError(f"hooks for {missing} never fired; this architecture may not expose those sites")
    return got


def _run_hooks(model: Model, batch: _Batch, keys: list[tuple[str, int]], positions: str) -> dict[tuple[str, int], Tensor]:
    """Default backend: :func:`psylens.interventions.tap` on the plain HF model (no bridge needed)."""
    got, keep = _collector(keys, batch, positions)
    try:
        with torch.no_grad(), tap(model.hf_model, keys, keep):
            model.hf_model(**_inputs(model, batch))
    except StopForward:
        pass
    return _check_fired(keys, got)


def _run_bridge(model: Model, batch: _Batch, keys: list[tuple[str, int]], positions: str) -> dict[tuple[str, int], Tensor]:
    """The transformer-lens hook points of ``model.bridge`` (``blocks.{l}.hook_resid_post``, ...): a
    second, independent reading of the same sites, kept for parity checks."""
    got, keep = _collector(keys, batch, positions)

    def make(site: str, layer: int) -> Callable[..., Tensor]:
        def fn(x: Tensor, hook: Any) -> Tensor:
            keep(site, layer, x)
            return x

        return fn

    bridge = model.bridge
    fwd = [(hook_name(site, layer), make(site, layer)) for site, layer in keys]
    with torch.no_grad(), bridge.hooks(fwd_hooks=fwd):
        try:
            bridge.original_model(**_inputs(model, batch))
        except StopForward:
            pass
    return _check_fired(keys, got)


def _run_nnsight(model: Model, batch: _Batch, keys: list[tuple[str, int]], positions: str) -> dict[tuple[str, int], Tensor]:
    """The same sites read through an nnsight trace; module paths from :func:`psylens.interventions.site_module`."""
    from psylens._nnsight import trace_sites

    hf = model.hf_model
    paths = {id(m): name for name, m in hf.named_modules()}
    layers = decoder_layers(hf)
    where = []
    for site, layer in keys:
        module, io = site_module(layers[layer], site)
        where.append((paths[id(module)], io))
    inputs = _inputs(model, batch)
    inputs.pop("use_cache")
    outs = trace_sites(hf, where, **inputs)
    result = {}
    for (site, layer), out in zip(keys, outs):
        if site == "head_out" and out.dim() == 3:  # the o_proj input holds z flattened over heads
            out = out.reshape(*out.shape[:2], model.n_heads, model.d_head)
        result[(site, layer)] = _reduce(out, batch, positions)
    return result


# --------------------------------------------------------------------------------------------
# shards and resume
# --------------------------------------------------------------------------------------------
def _fingerprint(config: dict[str, Any], rows: list[str]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    h.update("\x00".join(rows).encode())
    return h.hexdigest()[:20]


def _write_shard(out: Path, k: int, tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Write shard ``k``; returns its manifest entry's file, size and sha256 (verified on resume)."""
    name = f"shard-{k:05d}.safetensors"
    path = write_tensors(out / name, tensors)
    return {"file": name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _shard_problem(out: Path, shard: dict[str, Any]) -> str | None:
    """Why a listed shard cannot be trusted (``None`` when it is intact)."""
    f = out / str(shard.get("file", ""))
    if not f.is_file():
        return "missing"
    size = f.stat().st_size
    if "bytes" in shard and size != shard["bytes"]:
        return f"{size} bytes, the manifest recorded {shard['bytes']}"
    if "sha256" in shard:
        if file_sha256(f) != shard["sha256"]:
            return "its checksum differs from the manifest's"
        return None
    try:  # shards from before checksums: at least the header must parse
        from safetensors import safe_open

        with safe_open(str(f), framework="pt") as h:
            h.keys()
    except Exception as e:  # noqa: BLE001 - any failure means the shard is unusable
        return f"unreadable ({e})"
    return None


def _harvest_config(
    model: Model, stim: Stimuli, sites: list[str], layers: list[int], positions: str, fmt: str,
    system_prompt: str | None,
) -> dict[str, Any]:
    return {
        "model": model.spec,
        "adapter": None if model.adapter is None else str(model.adapter),
        "sites": sites,
        "layers": layers,
        "positions": positions,
        "format": fmt,
        "system_prompt": system_prompt,
        "stimuli": stim.name,
    }


def check_output(
    model: Model,
    stimuli: Stimuli | Sequence[str] | str,
    out: str | os.PathLike[str],
    *,
    sites: Sequence[str] | str = ("resid_post",),
    layers: int | Sequence[int] | None = None,
    positions: str = "last",
    format: str = "auto",
    system_prompt: str | None = None,
) -> None:
    """Raise ``ValueError`` when ``out`` holds a different harvest than this one would write.

    Writes nothing: commands call it before recording anything, so a refused re-run leaves the
    run that is there untouched. (``harvest`` checks the same again, under the output's lock.)
    """
    f = Path(out) / MANIFEST
    if not f.is_file():
        return
    stim = _as_stimuli(stimuli)
    config = _harvest_config(model, stim, validate_sites(sites), resolve_layers(layers, model.n_layers), positions,
                             model.resolve_format(format), system_prompt)
    man = read_json(f)
    if not isinstance(man, dict) or man.get("fingerprint") != _stim_fingerprint(config, stim):
        raise ValueError(_different_harvest(Path(out)))


def _stim_fingerprint(config: dict[str, Any], stim: Stimuli) -> str:
    # every row counts: the same ids with edited texts (or labels) are a different harvest
    return _fingerprint(config, [json.dumps([s.id, s.text, s.label, s.group]) for s in stim])


def _different_harvest(out: Path) -> str:
    return (
        f"{str(out)!r} already holds a different harvest (model, sites, layers, positions, "
        "format or stimuli differ); choose another output directory or delete it"
    )


def _assemble(
    chunk: list[dict[tuple[str, int], Tensor]],
    keys: list[tuple[str, int]],
    sites: list[str],
    layers: list[int],
    positions: str,
    n_text: list[int],
    offset: int,
) -> dict[str, Tensor]:
    """Per-stimulus results (in chunk order) → {site: [rows, L, *w]} (+ token index tensors)."""
    out: dict[str, Tensor] = {}
    for site in sites:
        per_layer = [torch.cat([r[(site, layer)] for r in chunk]) for layer in layers]
        out[site] = torch.stack(per_layer, dim=1)
    if positions == "all":
        out["token_stimulus"] = torch.cat(
            [torch.full((n,), offset + i, dtype=torch.long) for i, n in enumerate(n_text)]
        )
        out["token_position"] = torch.cat([torch.arange(n, dtype=torch.long) for n in n_text])
    return out


# --------------------------------------------------------------------------------------------
# the harvest
# --------------------------------------------------------------------------------------------
def harvest(
    model: Model,
    stimuli: Stimuli | Sequence[str] | str,
    *,
    sites: Sequence[str] | str = ("resid_post",),
    layers: int | Sequence[int] | None = None,
    positions: str = "last",
    format: str = "auto",
    system_prompt: str | None = None,
    batch_size: int = 16,
    padding_side: str | None = None,
    out: str | os.PathLike[str] | None = None,
    shard_size: int = 256,
    backend: str = "hooks",
    remote: bool = False,
    progress: bool = True,
) -> Activations:
    """Harvest activations of ``stimuli`` at ``sites`` × ``layers``, reduced to ``positions``.

    Args:
        stimuli: a ``Stimuli`` set, a list of texts or one text.
        sites: names from ``psylens.SITES`` (``resid_post`` by default).
        layers: layer indices (negatives count from the end); ``None`` keeps all.
        positions: ``"last"`` text token, ``"mean"`` over text tokens, or ``"all"`` text tokens.
        format: ``"chat"`` wraps each text as a user turn, ``"raw"`` uses it as is,
            ``"auto"`` picks chat where the tokenizer has a template.
        system_prompt: optional system turn (chat) or first line (raw).
        batch_size: stimuli per forward pass (sorted by length to limit padding).
        padding_side: ``"left"``/``"right"``; default the tokenizer's. Results do not depend on it.
        out: directory to stream shards to; re-running with the same ``out`` resumes.
        shard_size: stimuli per shard when streaming (a resumed harvest keeps its first run's shard size).
        backend: ``"hooks"`` (default; :mod:`psylens.interventions` on the HF model), ``"bridge"``
            (transformer-lens hook points) or ``"nnsight"`` (an nnsight trace). All three give equal values.
        remote: with ``backend="nnsight"``, run on NDIF (see :func:`build_remote_trace`).
        progress: show a progress bar.

    Returns:
        ``Activations``; ``acts["resid_post"]`` is ``[n, L, d_model]`` and its layer ``i``
        is the output of decoder block ``i`` (HF ``hidden_states[i+1]`` for every block but
        the last, where HF applies the final norm).
    """
    site_list = validate_sites(sites)
    layer_list = resolve_layers(layers, model.n_layers)
    if positions not in POSITIONS:
        raise ValueError(f"positions {positions!r} is not one of {', '.join(POSITIONS)}")
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if remote:
        if backend != "nnsight":
            raise ValueError("remote=True needs backend='nnsight' (NDIF runs nnsight traces)")
        return _harvest_remote(model, stimuli, site_list, layer_list, positions, format, system_prompt, batch_size)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    side = padding_side or getattr(model.tokenizer, "padding_side", "right") or "right"
    if side not in ("left", "right"):
        raise ValueError(f"padding_side {padding_side!r} is not 'left' or 'right'")
    stim = _as_stimuli(stimuli)
    fmt = model.resolve_format(format)
    config = _harvest_config(model, stim, site_list, layer_list, positions, fmt, system_prompt)
    meta = {**config, "n_layers_model": model.n_layers, "d_model": model.d_model, "backend": backend}

    encs = [encode(model, s.text, format=fmt, system_prompt=system_prompt) for s in stim]
    if system_prompt is not None and getattr(model, "folds_system_prompt", False):
        meta["system_prompt_folded"] = True  # the template has no system turn: it went into the user turn
    # execution order (layer, then position inside the block): nnsight requires it
    keys = sorted(((s, layer) for s in site_list for layer in layer_list), key=lambda k: (k[1], _SITE_ORDER.index(k[0])))
    run_batch = {"hooks": _run_hooks, "bridge": _run_bridge, "nnsight": _run_nnsight}[backend]
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0

    out_dir = ensure_writable_dir(out) if out is not None else None
    # one writer per output: a second harvest into the same directory fails at once, naming the first
    out_lock = (
        exclusive_lock(out_dir / LOCK_FILE, what=f"harvest output {out_dir}")
        if out_dir is not None else contextlib.nullcontext()
    )
    with out_lock:
        manifest = _open_manifest(out_dir, config, stim, meta, shard_size) if out_dir is not None else None
        done = {s["start"] for s in manifest["shards"]} if manifest else set()
        if manifest is not None:  # a resumed harvest keeps the shard boundaries it started with
            shard_size = int(manifest.get("shard_size", shard_size))

        from tqdm.auto import tqdm

        n = len(stim)
        chunk_len = shard_size if out_dir is not None else n
        bar = tqdm(total=n, desc=f"harvest {model.spec}", unit="text", disable=not progress, leave=False)
        collected: list[dict[str, Tensor]] = []
        try:
            for k, start in enumerate(range(0, n, chunk_len)):
                stop = min(start + chunk_len, n)
                if start in done:
                    bar.update(stop - start)
                    continue
                sub = encs[start:stop]
                results: list[dict[tuple[str, int], Tensor] | None] = [None] * len(sub)
                for batch in _batches(sub, batch_size, pad_id, side):
                    got = run_batch(model, batch, keys, positions)
                    if positions == "all":
                        splits = [sub[i].n_text for i in batch.index]
                        parts = {key: torch.split(v, splits) for key, v in got.items()}
                    else:
                        parts = {key: v.unbind(0) for key, v in got.items()}
                    for j, i in enumerate(batch.index):
                        results[i] = {key: (p[j] if positions == "all" else p[j][None]) for key, p in parts.items()}
                    bar.update(len(batch.index))
                tensors = _assemble(
                    [r for r in results if r is not None], keys, site_list, layer_list, positions,
                    [e.n_text for e in sub], start,
                )
                if out_dir is not None and manifest is not None:
                    entry = _write_shard(out_dir, k, tensors)
                    manifest["shards"].append({**entry, "start": start, "stop": stop})
                    manifest["complete"] = sum(s["stop"] - s["start"] for s in manifest["shards"]) == n
                    write_json(out_dir / MANIFEST, manifest)
                else:
                    collected.append(tensors)
        finally:
            bar.close()
        if out_dir is not None:
            return Activations.load(out_dir)
    t = collected[0]
    return Activations(
        tensors={s: t[s] for s in site_list},
        layers=layer_list,
        labels=stim.labels,
        groups=stim.groups,
        ids=stim.ids,
        texts=stim.texts,
        positions=positions,
        token_stimulus=t.get("token_stimulus"),
        token_position=t.get("token_position"),
        meta=meta,
    )


def _as_stimuli(stimuli: Stimuli | Sequence[str] | str) -> Stimuli:
    if isinstance(stimuli, Stimuli):
        return stimuli
    if isinstance(stimuli, str) or (isinstance(stimuli, Sequence) and all(isinstance(s, str) for s in stimuli)):
        return from_texts(stimuli)  # type: ignore[arg-type]
    raise ValueError(
        f"stimuli must be a psylens.stimuli.Stimuli, a list of strings or a string; got {type(stimuli).__name__}"
    )


def _open_manifest(
    out: Path, config: dict[str, Any], stim: Stimuli, meta: dict[str, Any], shard_size: int
) -> dict[str, Any]:
    fp = _stim_fingerprint(config, stim)
    f = out / MANIFEST
    if f.exists():
        man = read_json(f)
        if not isinstance(man, dict) or man.get("fingerprint") != fp:
            raise ValueError(_different_harvest(out))
        # resume: keep only shards that are intact (size + sha256 from the manifest); the others are harvested again
        kept = []
        for shard in man.get("shards", []):
            problem = _shard_problem(out, shard)
            if problem is None:
                kept.append(shard)
            else:
                log.warning("shard %s is bad (%s); harvesting it again", out / str(shard.get("file")), problem)
        man["shards"] = kept
        man["complete"] = sum(s["stop"] - s["start"] for s in kept) == man["n"]
        return man
    write_json(out / ROWS, {"ids": stim.ids, "labels": stim.labels, "groups": stim.groups, "texts": stim.texts})
    man = {
        "sites": config["sites"],
        "layers": config["layers"],
        "positions": config["positions"],
        "n": len(stim),
        "shards": [],
        "shard_size": shard_size,
        "complete": False,
        "fingerprint": fp,
        "meta": meta,
    }
    write_json(f, man)
    return man


# --------------------------------------------------------------------------------------------
# remote (NDIF)
# --------------------------------------------------------------------------------------------
def build_remote_trace(
    model: Model, texts: Sequence[str], sites: list[str], layers: list[int], *, format: str = "auto",
    system_prompt: str | None = None, remote_model: str | None = None,
) -> Any:
    """Run one nnsight trace of ``texts`` with ``remote=True`` against NDIF.

    NDIF hosts plain Hugging Face models, so only the residual sites (decoder-layer
    inputs/outputs) are addressable there. ``remote_model`` is the NDIF model id
    (default: ``model.spec``, which must then be a Hugging Face id). Needs an NDIF API key
    (``nnsight.CONFIG.set_default_api_key(...)``) and network access.
    """
    from psylens._nnsight import remote_resid_trace

    bad = [s for s in sites if s not in ("resid_pre", "resid_post")]
    if bad:
        raise ValueError(f"remote harvests support sites resid_pre and resid_post only, got {bad}")
    layers = resolve_layers(layers, model.n_layers)
    prompts = [model.format_prompt(t, format=format, system_prompt=system_prompt) for t in texts]
    return remote_resid_trace(remote_model or model.spec, model.tokenizer, prompts, sites, layers)


def _harvest_remote(
    model: Model, stimuli: Any, sites: list[str], layers: list[int], positions: str, format: str,
    system_prompt: str | None, batch_size: int,
) -> Activations:
    if positions != "last":
        raise ValueError("remote harvests support positions='last' only")
    stim = _as_stimuli(stimuli)
    fmt = model.resolve_format(format)
    parts: dict[str, list[Tensor]] = {s: [] for s in sites}
    for i in range(0, len(stim), batch_size):
        texts = stim.texts[i : i + batch_size]
        encs = [encode(model, t, format=fmt, system_prompt=system_prompt) for t in texts]
        got = build_remote_trace(model, [model.tokenizer.decode(e.ids) for e in encs], sites, layers, format="raw")
        for s in sites:
            parts[s].append(got[s])
    return Activations(
        tensors={s: torch.cat(v) for s, v in parts.items()}, layers=layers, labels=stim.labels,
        groups=stim.groups, ids=stim.ids, texts=stim.texts, positions="last",
        meta={"model": model.spec, "remote": True, "sites": sites, "layers": layers, "format": fmt},
    )


_ = SITES  # re-exported vocabulary lives in psylens.sites
