"""The run store: a run is a directory with ``run.json`` and its artefacts.

Layout (file names in ``psylens.artifacts``; later analyses add their own sub-directories)::

    RUN/
      run.json                 what ran: command, models, config, seed, versions, git commit, times
      steps/<name>.json        one record per step: config, outputs, timings, schema version
      activations/             the activation set "default" (see ``psylens.harvest``)
      activations/<name>/      other named activation sets
      summary/layers.json      first per-layer summary (the demo)
      probes/ steering/ ...    one directory per analysis

What a run guarantees:

* every file is written atomically (``psylens.io``); nothing is pickled;
* each step is recorded in its own file, and only after the outputs it declared exist
  (``with run.step(name, config) as step:``), so a crash never records a step whose files are missing,
  and two processes recording steps into one run lose nothing;
* ``run.json`` is only rewritten under an exclusive lock (``.run.lock``, see ``psylens.io.exclusive_lock``);
* ``create_run`` never overwrites the record of another command: adding an analysis to an existing run
  goes through :func:`open_or_create_run`, which validates before writing anything.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as _md
from pathlib import Path
from typing import Any

import torch

from psylens import artifacts as _art
from psylens.io import (
    dumps_json,
    ensure_writable_dir,
    exclusive_lock,
    read_json,
    read_table,
    read_tensors,
    write_json,
    write_table,
    write_tensors,
)

__all__ = [
    "Run",
    "Step",
    "open_run",
    "create_run",
    "open_or_create_run",
    "model_record",
    "model_fingerprint",
    "fingerprint_matches",
    "FINGERPRINT_VERSION",
    "package_versions",
    "git_commit",
    "now",
    "RUN_FILE",
]

RUN_FILE = _art.RUN_FILE
LOCK_FILE = ".run.lock"
PRIMARY_MODEL = "model"
LOCK_TIMEOUT = 30.0  # seconds to wait for another process's short run.json update
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_RESERVED = ("name", "schema_version", "config", "outputs", "started", "finished", "seconds")
_TRACKED = (
    "psylens", "torch", "transformers", "transformer-lens", "nnsight", "sae-lens",
    "safetensors", "scikit-learn", "numpy", "accelerate", "peft",
)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def now() -> str:
    """The current UTC time as run files record it (ISO 8601, seconds). Take it when a command starts
    and pass it to :func:`create_run` as ``started`` when the run is created after validation."""
    return _now()


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _TRACKED:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the psylens source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        r = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"{what} name {name!r} is not usable as a file name; use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit (e.g. 'probes', 'base-model')"
        )
    return name


def _command_name(command: str) -> str:
    """``"psylens harvest --out R"`` → ``"psylens harvest"``: the words before the first option."""
    words = []
    for w in str(command).split():
        if w.startswith("-"):
            break
        words.append(w)
    return " ".join(words) or str(command)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
FINGERPRINT_VERSION = "v2"
_CHUNK = 1 << 22  # entries per checksum chunk
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_WEIGHTS: dict[str, torch.Tensor] = {}  # device → [_CHUNK] int64 weights, made once


def _chunk_weights(n: int, device: torch.device) -> torch.Tensor:
    """[n] int64 hash weights in [1, 2**28]: a changed entry changes the weighted sum unless others cancel it."""
    key = str(device)
    w = _WEIGHTS.get(key)
    if w is None:
        i = torch.arange(_CHUNK, dtype=torch.int64, device=device)
        w = _WEIGHTS[key] = ((i * 0x9E3779B1) % (1 << 32) >> 4) + 1
    return w[:n]


def _tensor_checksum(p: torch.Tensor, h: Any) -> None:
    """Feed an exact checksum of every entry of ``p`` (its bits, viewed as integers) into the hash ``h``.

    Computed on the tensor's own device chunk by chunk (integer sums are exact and order-free, so CPU and
    GPU agree), and only two integers a chunk cross to the host. Tensors on the meta device (offloaded by
    ``device_map``) contribute their shape only.
    """
    if p.device.type == "meta":
        h.update(b"meta")
        return
    flat = p.detach().contiguous().reshape(-1)
    size = flat.element_size()
    itype = _INT_VIEW.get(size, torch.int64 if size % 8 == 0 else None)  # complex128: two int64 an entry
    if itype is None:
        raise ValueError(f"cannot fingerprint a parameter of dtype {p.dtype} ({size} bytes an entry); "
                         "give a model whose parameters are 1, 2, 4 or a multiple of 8 bytes an entry")
    ints = flat.view(itype)
    for start in range(0, ints.numel(), _CHUNK):
        c = ints[start:start + _CHUNK]
        if c.device.type == "mps":  # MPS has no int64 reductions everywhere: these few MB go to the host
            c = c.cpu()
        c = c.to(torch.int64)
        h.update(f"{int(c.sum())},{int((c * _chunk_weights(c.numel(), c.device)).sum())};".encode())


def model_fingerprint(model: Any) -> str:
    """A short hash of a loaded model's architecture, parameter names, shapes, dtypes and every weight.

    Every entry counts: each parameter's bits are summed twice as integers on its own device (plain and
    position-weighted, chunk by chunk), so a change to a single weight — a fine-tuned row, a merged
    adapter — changes the fingerprint, while only a few integers per tensor leave the device. On SmolLM2-135M
    it takes 0.22 s on an idle 2-core CPU, 0.12× one forward pass of a 16 × 64-token batch (v1: 4 ms;
    ``python -m benchmarks.fingerprint``); on a GPU it is a few kernels a tensor. Not a cryptographic identity of the weights. The value starts with
    :data:`FINGERPRINT_VERSION`; records from older versions are compared with :func:`fingerprint_matches`.
    """
    hf = _fingerprint_module(model)
    h = hashlib.sha256(type(hf).__name__.encode())
    with torch.no_grad():
        for name, p in hf.named_parameters():
            h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
            _tensor_checksum(p, h)
    return f"{FINGERPRINT_VERSION}-{h.hexdigest()[:16]}"


def _fingerprint_module(model: Any) -> Any:
    hf = getattr(model, "hf_model", model)
    if getattr(hf, "named_parameters", None) is None:
        raise ValueError(f"cannot fingerprint a {type(model).__name__}; give a psylens Model or a torch module")
    return hf


def _sampled_fingerprint(model: Any) -> str:
    """The version-1 fingerprint (16 sampled values per tensor), kept to compare records written before v2."""
    hf = _fingerprint_module(model)
    h = hashlib.sha256(type(hf).__name__.encode())
    with torch.no_grad():
        for name, p in hf.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 16)
            sample = flat[::step][:16].cpu().to(torch.float64)  # to the CPU first: MPS has no float64
            h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def _fingerprint_version(fp: str) -> str:
    return fp.split("-", 1)[0] if "-" in fp else "v1"


def fingerprint_matches(fp: str, model: Any) -> bool:
    """Whether the recorded fingerprint ``fp`` is ``model``'s, computed the way ``fp`` was (v1 or v2)."""
    version = _fingerprint_version(fp)
    if version == "v1":
        return fp == _sampled_fingerprint(model)
    if version == FINGERPRINT_VERSION:
        return fp == model_fingerprint(model)
    raise ValueError(f"unknown fingerprint version {version!r} in {fp!r}; this psylens knows v1 and "
                     f"{FINGERPRINT_VERSION} — upgrade psylens to read this run")


def model_record(model: Any, *, adapter: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``{"spec", "adapter", "fingerprint", ...}`` for a psylens ``Model``, a ``describe()`` dict or a spec string.

    A loaded model's record also names its ``architecture``, ``n_layers``, ``d_model``, ``dtype`` and ``device``
    (where it was loaded: ``--dtype`` and ``--device`` of the command that made the run).

    Only a loaded model gets a fingerprint; a spec string or dict records ``"fingerprint": None``
    (filled in later by :meth:`Run.add_model` with the loaded model).
    """
    if hasattr(model, "describe") and hasattr(model, "hf_model"):
        d = dict(model.describe())
        return {"spec": d.get("spec"), "adapter": d.get("adapter"), "fingerprint": model_fingerprint(model),
                **{k: d[k] for k in ("architecture", "n_layers", "d_model", "dtype", "device") if k in d}}
    if isinstance(model, dict):
        if "spec" not in model:
            raise ValueError(f"a model record needs a 'spec' (the model's name or path); got keys {sorted(model)}")
        return {"spec": model["spec"], "adapter": model.get("adapter", None if adapter is None else str(adapter)),
                "fingerprint": model.get("fingerprint"),
                **{k: model[k] for k in ("architecture", "n_layers", "d_model", "dtype", "device") if k in model}}
    if isinstance(model, (str, os.PathLike)):
        return {"spec": str(model), "adapter": None if adapter is None else str(adapter), "fingerprint": None}
    raise ValueError(
        f"cannot record a model given as {type(model).__name__}; give a psylens Model, its describe() dict or a spec string"
    )


def _same_model(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """Why two model records differ (``None`` when they may be the same model).

    With both fingerprints known they decide (the same weights under another name are the same model);
    otherwise spec and adapter must match."""
    fa, fb = old.get("fingerprint"), new.get("fingerprint")
    if fa is not None and fb is not None and _fingerprint_version(fa) != _fingerprint_version(fb):
        fa = fb = None  # written by different psylens versions: not comparable, spec and adapter decide
        old, new = {**old, "fingerprint": None}, {**new, "fingerprint": None}
    if fa is not None and fb is not None:
        if fa == fb:
            return None
        da, db = old.get("dtype"), new.get("dtype")
        if da and db and da != db and old.get("spec") == new.get("spec") and old.get("adapter") == new.get("adapter"):
            return f"the same weights in dtype {db!r}, the run's are {da!r}"
        return f"fingerprint {fa!r} vs {fb!r}"
    for key in ("spec", "adapter", "fingerprint"):
        a, b = old.get(key), new.get(key)
        if key == "fingerprint" and (a is None or b is None):
            continue
        if a != b:
            return f"{key} {a!r} vs {b!r}"
    return None


# --------------------------------------------------------------------------------------------
# steps
# --------------------------------------------------------------------------------------------
@dataclass
class Step:
    """An analysis step being run: register its outputs; it is recorded when the block ends cleanly.

    Made by :meth:`Run.step`; not created directly.
    """

    run: Run
    name: str
    config: dict[str, Any]
    started: str
    outputs: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter, repr=False)

    def output(self, rel: str | os.PathLike[str]) -> Path:
        """Declare ``rel`` (relative to the run) an output of this step; returns its absolute path.

        The step is recorded only if every declared output exists when the block ends.
        """
        p = Path(rel)
        if p.is_absolute():
            try:
                p = p.resolve().relative_to(self.run.path.resolve())
            except ValueError:
                raise ValueError(
                    f"step {self.name!r}: output {str(rel)!r} is outside the run {str(self.run.path)!r}; "
                    "give a path relative to the run"
                ) from None
        if ".." in p.parts:
            raise ValueError(f"step {self.name!r}: output {str(rel)!r} leaves the run; give a path inside it")
        key = p.as_posix()
        if key not in self.outputs:
            self.outputs.append(key)
        return self.run.path / p

    def note(self, **info: Any) -> None:
        """Add fields to the step's record (headline numbers, counts); JSON values only."""
        clash = [k for k in info if k in _RESERVED]
        if clash:
            raise ValueError(f"step {self.name!r}: {clash} are reserved fields of a step record; use other names")
        dumps_json(info)  # fails now, not at the end of a long step
        self.info.update(info)

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "schema_version": _art.SCHEMA_VERSION,
            "config": self.config,
            "outputs": list(self.outputs),
            "started": self.started,
            "finished": _now(),
            "seconds": round(time.perf_counter() - self._t0, 2),
            **self.info,
        }


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _not_a_run(p: Path) -> ValueError:
    man = p / _art.ACTIVATIONS / _art.MANIFEST
    if man.is_file():
        try:
            m = read_json(man)
            done = sum(int(s["stop"]) - int(s["start"]) for s in m.get("shards", []))
            state = f"{done} of {m.get('n')} stimuli" if not m.get("complete") else "complete"
        except (OSError, ValueError, KeyError, TypeError):
            state = "unreadable manifest"
        return ValueError(
            f"{str(p)!r} holds a harvest ({state}) but no {RUN_FILE}: it is incomplete — run the same command "
            "again to resume"
        )
    return ValueError(
        f"{str(p)!r} is not a psylens run (no {RUN_FILE} there). "
        "Runs are written by `psylens demo`, `psylens harvest --out DIR` or `psylens.create_run`."
    )


@dataclass(frozen=True)
class Run:
    """A handle on a run directory. Cheap to create; reads lazily.

    Paths given to the ``read_*``/``write_*`` methods are relative to the run.
    """

    path: Path

    # -- metadata ---------------------------------------------------------------------------
    def _raw(self) -> dict[str, Any]:
        f = self.path / RUN_FILE
        if not f.exists():
            raise _not_a_run(self.path)
        meta = read_json(f)
        if not isinstance(meta, dict):
            raise ValueError(f"{str(f)!r} holds a {type(meta).__name__}, not a JSON object; it is not a psylens run record")
        return meta

    @property
    def meta(self) -> dict[str, Any]:
        """``run.json`` with the merged view: ``steps`` (legacy entries plus ``steps/*.json``),
        ``models`` (one ``"model"`` for runs written before models were named) and ``finished``
        (the latest step's end)."""
        meta = self._raw()
        steps = self._merged_steps(meta)
        meta["steps"] = steps
        meta["models"] = self._models(meta)
        ends = [str(s["finished"]) for s in steps.values() if isinstance(s, dict) and s.get("finished")]
        if ends:
            meta["finished"] = max([*ends, *([str(meta["finished"])] if meta.get("finished") else [])])
        return meta

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        """Set top-level fields of ``run.json`` (under the run's lock: concurrent updates are kept)."""
        if "steps" in fields:
            raise ValueError("steps are recorded with run.step(...) or run.record_step(...), not update_meta")
        dumps_json(fields)
        with self._lock():
            raw = self._raw()
            raw.update(fields)
            write_json(self.path / RUN_FILE, raw)
        return self.meta

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with exclusive_lock(self.path / LOCK_FILE, timeout=LOCK_TIMEOUT, what=f"run {str(self.path)}"):
            yield

    # -- models -----------------------------------------------------------------------------
    @staticmethod
    def _models(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
        models = meta.get("models")
        if isinstance(models, dict) and models:
            return {str(k): dict(v) for k, v in models.items() if isinstance(v, dict)}
        legacy = meta.get("model")
        if isinstance(legacy, dict) and legacy.get("spec") is not None:
            return {PRIMARY_MODEL: model_record(legacy)}
        if isinstance(legacy, str):
            return {PRIMARY_MODEL: model_record(legacy)}
        return {}

    @property
    def models(self) -> dict[str, dict[str, Any]]:
        """``{name: {"spec", "adapter", "fingerprint", ...}}``; ``"model"`` is the run's main model."""
        return self._models(self._raw())

    def add_model(
        self, name: str, model: Any, *, adapter: str | os.PathLike[str] | None = None
    ) -> dict[str, Any]:
        """Record ``model`` (a psylens ``Model``, its ``describe()`` dict or a spec) as ``models[name]``.

        Re-adding the same model (same spec and adapter; same fingerprint when both are known) fills
        in what was missing; a different model under a taken name raises ``ValueError`` — a run's
        results belong to the models they were computed on.
        """
        _check_name(name, "model")
        rec = model_record(model, adapter=adapter)
        with self._lock():
            raw = self._raw()
            models = self._models(raw)
            old = models.get(name)
            if old is not None:
                why = _same_model(old, rec)
                if why is not None:
                    raise ValueError(
                        f"run {str(self.path)!r} already has a model {name!r} ({old.get('spec')!r}) that differs from "
                        f"the one given ({why}); use another run directory or another model name"
                    )
                rec = {**old, **{k: v for k, v in rec.items() if v is not None}}
            models[name] = rec
            raw["models"] = models
            if name == PRIMARY_MODEL and hasattr(model, "describe"):
                raw["model"] = model.describe()
            elif name == PRIMARY_MODEL and not isinstance(raw.get("model"), dict):
                raw["model"] = {k: rec[k] for k in ("spec", "adapter")}
            write_json(self.path / RUN_FILE, raw)
        return rec

    # -- steps ------------------------------------------------------------------------------
    def _step_files(self) -> dict[str, dict[str, Any]]:
        d = self.path / _art.STEPS
        out: dict[str, dict[str, Any]] = {}
        if not d.is_dir():
            return out
        for f in sorted(d.glob("*.json")):
            if f.name.startswith("."):
                continue
            rec = read_json(f)
            if isinstance(rec, dict):
                out[f.stem] = rec
        return out

    def _merged_steps(self, meta: dict[str, Any]) -> dict[str, Any]:
        legacy = meta.get("steps")
        steps = dict(legacy) if isinstance(legacy, dict) else {}
        steps.update(self._step_files())
        return steps

    @property
    def steps(self) -> dict[str, Any]:
        """Every recorded step by name: ``steps/<name>.json`` records, plus steps that older runs kept in ``run.json``."""
        return self._merged_steps(self._raw())

    def _write_step(self, name: str, record: dict[str, Any]) -> Path:
        f = write_json(self.path / _art.step_file(name), record)
        # a mirror in run.json for readers of the raw file (under the lock: nothing is lost)
        with self._lock():
            raw = self._raw()
            steps = raw.get("steps") if isinstance(raw.get("steps"), dict) else {}
            steps[name] = record
            raw["steps"] = steps
            raw["finished"] = record.get("finished")
            write_json(self.path / RUN_FILE, raw)
        return f

    @contextmanager
    def step(self, name: str, config: dict[str, Any] | None = None) -> Iterator[Step]:
        """Run a step and record it in ``steps/<name>.json`` when the block ends cleanly.

        >>> with run.step("probes", {"sites": ["resid_post"]}) as step:     # doctest: +SKIP
        ...     run.write_json(step_rel := "probes/summary.json", summary)
        ...     step.output(step_rel)
        ...     step.note(best_layer=12)

        Footguns: on an exception nothing is recorded (an earlier record of the same step stays);
        on a clean exit every path given to ``step.output`` must exist, else ``ValueError`` and nothing
        is recorded. Re-running a step replaces its record.
        """
        s = self.begin_step(name, config)
        yield s
        self.finish_step(s)

    def begin_step(self, name: str, config: dict[str, Any] | None = None) -> Step:
        """Start step ``name`` without recording anything; :meth:`finish_step` records it.

        For code whose step spans a long function (``run.step`` is the same as a block). A step
        that is never finished (an exception in between) is never recorded.
        """
        _check_name(name, "step")
        cfg = dict(config or {})
        dumps_json(cfg)  # a config that cannot be recorded fails before the work
        return Step(run=self, name=name, config=cfg, started=_now())

    def finish_step(self, step: Step) -> Path:
        """Record ``step`` in ``steps/<name>.json`` after checking that every declared output exists."""
        missing = [o for o in step.outputs if not (self.path / o).exists()]
        if missing:
            raise ValueError(
                f"step {step.name!r} declared outputs that were not written: {missing}; the step is not recorded. "
                "Write them before the block ends (or do not declare them)"
            )
        return self._write_step(step.name, step.record())

    def record_step(self, name: str, **info: Any) -> None:
        """Record that step ``name`` ran (its own ``steps/<name>.json``; ``info`` fields kept at the top level).

        Prefer ``with run.step(name, config) as step:``, which checks the outputs exist first.
        """
        _check_name(name, "step")
        clash = [k for k in info if k in ("name", "schema_version")]
        if clash:
            raise ValueError(f"step {name!r}: {clash} are reserved fields of a step record; use other names")
        record = {"name": name, "schema_version": _art.SCHEMA_VERSION, "finished": _now(), **info}
        dumps_json(record)
        self._write_step(name, record)

    # -- artefacts --------------------------------------------------------------------------
    def file(self, rel: str | os.PathLike[str]) -> Path:
        return self.path / rel

    def has(self, rel: str | os.PathLike[str]) -> bool:
        return (self.path / rel).exists()

    def write_json(self, rel: str, obj: Any, *, nan: str = "error") -> Path:
        return write_json(self.path / rel, obj, nan=nan)

    def read_json(self, rel: str) -> Any:
        return read_json(self.path / rel)

    def write_tensors(self, rel: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
        return write_tensors(self.path / rel, tensors, metadata)

    def read_tensors(self, rel: str) -> dict[str, torch.Tensor]:
        return read_tensors(self.path / rel)

    def write_table(self, rel: str, table: Any) -> Path:
        return write_table(self.path / rel, table)

    def read_table(self, rel: str) -> Any:
        return read_table(self.path / rel)

    # -- activation sets --------------------------------------------------------------------
    def activations_path(self, name: str = _art.DEFAULT_ACTIVATIONS) -> Path:
        """Where the activation set ``name`` lives: ``RUN/activations`` for ``"default"`` (the layout every
        run has used), ``RUN/activations/<name>`` for the others. Harvest into it with ``out=``."""
        if name == _art.DEFAULT_ACTIVATIONS:
            nested = self.path / _art.ACTIVATIONS / _art.DEFAULT_ACTIVATIONS
            if (nested / _art.MANIFEST).is_file() and not (self.path / _art.ACTIVATIONS / _art.MANIFEST).is_file():
                return nested
            return self.path / _art.ACTIVATIONS
        _check_name(name, "activation set")
        return self.path / _art.ACTIVATIONS / name

    def activation_sets(self) -> list[str]:
        """Names of the activation sets in this run (``"default"`` first when present), complete or not."""
        root = self.path / _art.ACTIVATIONS
        names: list[str] = []
        if (root / _art.MANIFEST).is_file():
            names.append(_art.DEFAULT_ACTIVATIONS)
        if root.is_dir():
            for d in sorted(root.iterdir()):
                if d.is_dir() and (d / _art.MANIFEST).is_file() and d.name not in names:
                    names.append(d.name)
        return names

    def activations(self, name: str = _art.DEFAULT_ACTIVATIONS) -> Any:
        """The ``Activations`` of set ``name`` (``"default"``: ``RUN/activations``).

        A path relative to the run (``"activations"``, ``"activations/probes"``) also works, as before.
        """
        from psylens.harvest import Activations

        if name == _art.ACTIVATIONS or "/" in name or os.sep in name:
            return Activations.load(self.path / name)
        path = self.activations_path(name)
        if name != _art.DEFAULT_ACTIVATIONS and not (path / _art.MANIFEST).is_file():
            raise ValueError(
                f"run {str(self.path)!r} has no activation set {name!r}; it has {self.activation_sets() or 'none'}"
            )
        return Activations.load(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"


# --------------------------------------------------------------------------------------------
# creating and opening
# --------------------------------------------------------------------------------------------
def create_run(
    path: str | os.PathLike[str],
    *,
    command: str,
    model: Any = None,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    exist_ok: bool = True,
    started: str | None = None,
) -> Run:
    """Create a run directory and write its ``run.json`` (call it when the command starts).

    ``model``: a psylens ``Model``, its ``describe()`` dict or a spec string; recorded as ``models["model"]``.

    On an existing run: with the same command (``"psylens harvest"``, whatever its options) and model it
    is reused — ``created`` and the recorded steps stay, ``started``, the command line, config and seed are
    updated (a resumed harvest). A run of another command, or of another model, raises ``ValueError``
    before anything is written: add to a run with :func:`open_or_create_run` instead.

    ``started`` (from :func:`now`, taken when the command started) lets a command validate its
    arguments — load the model, check the output — before creating the run, and still record when it
    began; a new run's ``created`` is the same time.
    """
    if not isinstance(command, str) or not command.strip():
        raise ValueError(f"command must be a non-empty string naming what created the run, got {command!r}")
    cfg = dict(config or {})
    dumps_json(cfg)
    rec = model_record(model) if model is not None else None
    p = ensure_writable_dir(path)
    f = p / RUN_FILE
    run = Run(p)
    with run._lock():
        if f.exists():
            if not exist_ok:
                raise ValueError(f"run {str(p)!r} exists already; pass another --out or remove it")
            meta = run._raw()
            old_cmd = str(meta.get("command_name") or _command_name(str(meta.get("command", ""))))
            if old_cmd != _command_name(command):
                raise ValueError(
                    f"{str(p)!r} holds a run made by `{old_cmd}`; `{_command_name(command)}` would overwrite its "
                    "record. Add to it with psylens.runs.open_or_create_run (as `psylens probe --out` does), or "
                    "choose another directory"
                )
            old_model = Run._models(meta).get(PRIMARY_MODEL)
            if rec is not None and old_model is not None:
                why = _same_model(old_model, rec)
                if why is not None:
                    raise ValueError(
                        f"{str(p)!r} holds a run of model {old_model.get('spec')!r}; this one is of another model "
                        f"({why}). Choose another directory"
                    )
                rec = {**old_model, **{k: v for k, v in rec.items() if v is not None}}
            elif rec is None:
                rec = old_model
        else:
            meta = {"created": started or _now(), "steps": {}}
        meta.update(
            {
                "psylens_run": 1,
                "schema_version": _art.SCHEMA_VERSION,
                "command": command,
                "command_name": _command_name(command),
                "config": cfg or meta.get("config", {}),
                "seed": seed,
                "versions": package_versions(),
                "git_commit": git_commit(),
                "started": started or _now(),
                "host": {"platform": platform.platform(), "cuda": torch.cuda.is_available()},
            }
        )
        if rec is not None:
            meta["models"] = {**Run._models(meta), PRIMARY_MODEL: rec}
            if hasattr(model, "describe"):
                meta["model"] = model.describe()
            elif isinstance(model, dict):
                meta["model"] = model
            elif not isinstance(meta.get("model"), dict):
                meta["model"] = {"spec": rec["spec"], "adapter": rec.get("adapter")}
        else:
            meta.setdefault("model", None)
        write_json(f, meta)
    return run


def open_run(path: str | os.PathLike[str]) -> Run:
    """Open an existing run for reading (notebooks, the explorer).

    >>> run = open_run("runs/demo")            # doctest: +SKIP
    >>> acts = run.activations()               # doctest: +SKIP
    """
    p = Path(path)
    if not (p / RUN_FILE).exists():
        raise _not_a_run(p)
    return Run(p)


def open_or_create_run(
    path: str | os.PathLike[str],
    *,
    command: str,
    model: Any = None,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    started: str | None = None,
) -> Run:
    """The run at ``path`` for a command that adds to it (``psylens probe --out R``), created if absent.

    An existing run keeps its record (command, config, times); ``model`` must be the run's model
    (``ValueError`` otherwise, before anything is written) and fills in its fingerprint. The
    command's own settings belong in its step record (``run.step(name, config)``).
    """
    p = Path(path)
    if not (p / RUN_FILE).exists():
        return create_run(p, command=command, model=model, config=config, seed=seed, started=started)
    run = open_run(p)
    if model is not None:
        old = run.models.get(PRIMARY_MODEL)
        if old is not None:
            why = _same_model(old, model_record(model))
            if why is not None:
                fix = (f"--dtype {old['dtype']}" if "the same weights in dtype" in why
                       else f"the run's model (--model {old.get('spec')})")
                raise ValueError(
                    f"{str(p)!r} is a run of model {old.get('spec')!r}; `{_command_name(command)}` was given another "
                    f"model ({why}). Use {fix} or another directory"
                )
        run.add_model(PRIMARY_MODEL, model)
    return run
