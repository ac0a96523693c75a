"""The GGUF cache keyed by content, `psylens cache list|clean`, and what `psylens` prints to a newcomer."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import psylens.cli as cli
import psylens.models as models
from psylens.models import ModelSource, _gguf_cache_path, cache_entries, clean_cache, gguf_key


def _gguf(path: Path, seed: int = 0, size: int = 3 << 20) -> Path:
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _entry(d: Path, *, sidecar: dict | None = None) -> Path:
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"x" * 1000)
    if sidecar is not None:
        (d / models.CACHE_META).write_text(json.dumps(sidecar))
    return d


@pytest.fixture
def fake_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry with one alias whose GGUF is a random file; the cache in tmp_path/cache."""
    monkeypatch.setenv("PSYLENS_CACHE", str(tmp_path / "cache"))
    g = _gguf(tmp_path / "clone-a" / ".venv" / "Fake.Q4.gguf")
    src = ModelSource("fake", "a fake model", lambda: g, "fake-pkg", "Fake.Q4")
    monkeypatch.setattr(models, "REGISTRY", {"fake": src})
    return g


def test_key_is_content_based(tmp_path: Path) -> None:
    a = _gguf(tmp_path / "a" / "m.gguf")
    b = _gguf(tmp_path / "b" / "m.gguf")  # another clone: same bytes, another path and mtime
    os.utime(b, (1, 1))
    assert gguf_key(a) == gguf_key(b)
    c = tmp_path / "c" / "m.gguf"
    c.parent.mkdir()
    c.write_bytes(a.read_bytes()[:-1] + b"\x00" if a.read_bytes()[-1:] != b"\x00" else a.read_bytes()[:-1] + b"\x01")
    assert gguf_key(c) != gguf_key(a)  # control: changed content, new key
    d = _gguf(tmp_path / "d" / "n.gguf")
    assert gguf_key(d) != gguf_key(a)  # the name is part of the key


def test_stale_entry_is_not_cached(fake_registry: Path, tmp_path: Path) -> None:
    src = models.REGISTRY["fake"]
    root = tmp_path / "cache" / "models"
    # an entry made by an older psylens (path+mtime key, no sidecar) must not count as cached
    _entry(root / "Fake.Q4-0123456789abcdef")
    assert src.is_cached() is False
    [e] = cache_entries()
    assert e.status == "stale" and "older psylens" in e.reason
    # the current entry counts; a second clone with the same GGUF finds the same directory
    cur = _entry(_gguf_cache_path(fake_registry), sidecar={"gguf_name": fake_registry.name, "source": str(fake_registry)})
    clone_b = _gguf(tmp_path / "clone-b" / ".venv" / "Fake.Q4.gguf")
    assert _gguf_cache_path(clone_b) == cur
    assert src.is_cached() is True
    # the package's GGUF changes: the entry goes stale
    _gguf(fake_registry, seed=1)
    assert src.is_cached() is False
    status = {e.path.name: e.status for e in cache_entries()}
    assert status == {"Fake.Q4-0123456789abcdef": "stale", cur.name: "stale"}


def test_clean_removes_stale_only_and_all_removes_everything(fake_registry: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache" / "models"
    legacy = _entry(root / "Fake.Q4-0123456789abcdef")
    leftover = _entry(root / ".Fake.Q4-aaaa.tmp123")
    cur = _entry(_gguf_cache_path(fake_registry), sidecar={"gguf_name": fake_registry.name, "source": str(fake_registry)})
    other_gguf = _gguf(tmp_path / "mine" / "own.gguf", seed=5)
    own = _entry(_gguf_cache_path(other_gguf), sidecar={"gguf_name": "own.gguf", "source": str(other_gguf)})
    gone = _entry(root / "gone-0000000000000000", sidecar={"gguf_name": "gone.gguf", "source": str(tmp_path / "nope.gguf")})
    removed = {e.path for e in clean_cache()}
    assert removed == {legacy, leftover, gone}
    assert cur.is_dir() and own.is_dir()
    assert {e.path for e in clean_cache(everything=True)} == {cur, own}
    assert cache_entries() == []


def test_cache_commands(fake_registry: Path, tmp_path: Path) -> None:
    root = tmp_path / "cache" / "models"
    legacy = _entry(root / "Fake.Q4-0123456789abcdef")
    cur = _entry(_gguf_cache_path(fake_registry), sidecar={"gguf_name": fake_registry.name, "source": str(fake_registry)})
    r = CliRunner().invoke(cli.app, ["cache", "list"])
    assert r.exit_code == 0, r.output
    assert "stale" in r.output and "current" in r.output and legacy.name in r.output and cur.name in r.output
    r = CliRunner().invoke(cli.app, ["models"])
    assert r.exit_code == 0 and "cached: yes" in r.output and "1 stale" in r.output
    r = CliRunner().invoke(cli.app, ["cache", "clean"])
    assert r.exit_code == 0 and f"removed {legacy}" in r.output.replace("\n", "")
    assert not legacy.exists() and cur.exists()
    r = CliRunner().invoke(cli.app, ["cache", "clean", "--all"])
    assert r.exit_code == 0 and not cur.exists() and "removed 1 entries" in r.output
    r = CliRunner().invoke(cli.app, ["models"])
    assert "cached: no" in r.output


def test_models_fits_80_columns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rich.console import Console

    monkeypatch.setenv("PSYLENS_CACHE", str(tmp_path))
    monkeypatch.setattr(cli, "out_console", Console(width=80, no_color=True, force_terminal=False))
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines and max(len(ln) for ln in lines) <= 80
    assert "…" not in out  # nothing cut
    flat = " ".join(out.split())
    for alias, src in models.REGISTRY.items():
        assert alias in flat and " ".join(src.description.split()) in flat and src.package in flat


def test_command_hint_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    venv = tmp_path / "proj" / ".venv"
    (venv / "bin").mkdir(parents=True)
    exe = venv / "bin" / "psylens"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setattr(sys, "prefix", str(venv))
    monkeypatch.chdir(tmp_path / "proj")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # venv not active
    assert cli.psylens_command() == ".venv/bin/psylens"
    monkeypatch.chdir(tmp_path)
    assert cli.psylens_command() == "proj/.venv/bin/psylens"
    monkeypatch.chdir("/")
    assert cli.psylens_command() == str(exe)
    monkeypatch.setenv("PATH", f"{venv / 'bin'}:/usr/bin")  # venv active: the plain command works
    assert cli.psylens_command() == "psylens"


def test_import_errors_of_psylens_surface() -> None:
    import typer

    def broken(name: str):
        raise ModuleNotFoundError(f"No module named {name!r}", name="psylens.probes.pipeline")

    with pytest.raises(ModuleNotFoundError):
        cli._register_optional(typer.Typer(), import_module=broken)

    def bad_name(name: str):
        raise ImportError("cannot import name 'run_probes' from 'psylens.probes.pipeline'")

    with pytest.raises(ImportError):
        cli._register_optional(typer.Typer(), import_module=bad_name)


def test_missing_third_party_extra_is_named() -> None:
    import typer

    def no_sklearn(name: str):
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    t = typer.Typer()
    t.callback()(lambda: None)
    cli._register_optional(t, import_module=no_sklearn)
    r = CliRunner().invoke(t, ["probe"])
    assert r.exit_code != 0 and "needs the package 'sklearn'" in str(r.exception)


def test_harvest_hint_uses_the_command_that_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, smollm_tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    from rich.console import Console

    from conftest import build_tiny_hf

    model_dir = tmp_path / "tiny"
    build_tiny_hf("llama").save_pretrained(model_dir)
    smollm_tokenizer.save_pretrained(model_dir)
    stim = tmp_path / "s.jsonl"
    stim.write_text('{"text": "A calm day.", "label": "neutral"}\n{"text": "A sad day.", "label": "sadness"}\n')
    monkeypatch.setattr(cli, "psylens_command", lambda: ".venv/bin/psylens")
    monkeypatch.setattr(cli, "out_console", Console(width=200, no_color=True))
    out = tmp_path / "run"
    code = cli.main(["harvest", "--model", str(model_dir), "--stimuli", str(stim), "--out", str(out), "--device", "cpu"])
    assert code == 0
    assert f"explore: .venv/bin/psylens explore {out}" in capsys.readouterr().out


def test_probe_help_shows_the_valence_default(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    assert cli.main(["probe", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "[default: joy>surprise>neutral>fear=sadness=disgust=anger]" in out
