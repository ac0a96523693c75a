"""A folder named ``psylens`` in the working directory (a clone) must not replace the installed package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_a_clone_named_psylens_in_cwd_does_not_shadow_the_install(tmp_path: Path) -> None:
    clone = tmp_path / "psylens"  # what `git clone .../psylens` leaves: no psylens/__init__.py, no psylens/data
    (clone / "core" / "data").mkdir(parents=True)
    (clone / "README.md").write_text("a clone\n")
    r = _run("import psylens, psylens.stimuli as s; print(len(s.load('emotions'))); "
             "print(psylens.__file__); print(callable(psylens.load_model))", tmp_path)
    assert r.returncode == 0, r.stderr
    n, file, ok = r.stdout.split()
    assert n == "1120" and Path(file).parent != clone and ok == "True"


def test_a_namespace_psylens_is_reported_and_builtin_data_still_found(tmp_path: Path) -> None:
    # whatever the install mode, if `psylens` does end up a namespace package, say so and keep data reachable
    code = (
        "import sys, types, warnings; ns = types.ModuleType('psylens'); ns.__path__ = [%r]; sys.modules['psylens'] = ns\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always'); import psylens.stimuli as s\n"
        "print(len(s.load('emotions'))); print(any('not from the installed package' in str(x.message) for x in w))"
    ) % str(tmp_path / "psylens")
    r = _run(code, tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1120", "True"]
