"""The package imports as one tree (`psylens` + its subpackages) and its public names resolve."""

from __future__ import annotations

import importlib
import types

import pytest

SUBPACKAGES = ["psylens", "psylens.probes", "psylens.steering", "psylens.circuits", "psylens.saes", "psylens.apps"]


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackage_imports(name: str) -> None:
    mod = importlib.import_module(name)
    assert mod.__name__ == name


def test_all_names_resolve() -> None:
    import psylens

    assert psylens.__all__, "psylens.__all__ is empty"
    for name in psylens.__all__:
        assert getattr(psylens, name) is not None, name


def test_public_names_keep_their_type() -> None:
    # Names must not change what they are once a submodule gets imported (a lazy function
    # named like a submodule turns into the module on second access).
    import psylens

    first = {name: getattr(psylens, name) for name in psylens.__all__}
    importlib.import_module("psylens.harvest")
    importlib.import_module("psylens.stimuli")
    for name in psylens.__all__:
        assert getattr(psylens, name) is first[name], name
    assert isinstance(psylens.harvest, types.ModuleType)
    assert callable(psylens.harvest.harvest)
    assert callable(psylens.load_model) and callable(psylens.open_run) and callable(psylens.create_run)
    assert isinstance(psylens.SITES, dict) and "resid_post" in psylens.SITES


def test_unknown_attribute_is_attribute_error() -> None:
    import psylens

    with pytest.raises(AttributeError, match="no_such_name"):
        psylens.no_such_name  # noqa: B018


def test_every_data_file_is_package_data() -> None:
    # a plain `pip install .` ships only files matching [tool.setuptools.package-data]
    import fnmatch
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["psylens"]
    data = sorted(p.relative_to(root / "core").as_posix() for p in (root / "core" / "data").iterdir() if p.is_file())
    assert data
    missing = [f for f in data if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"not installed by `pip install .`: {missing}; package-data patterns: {patterns}"
