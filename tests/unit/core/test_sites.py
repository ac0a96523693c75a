"""Named sites map onto bridge hooks; bad sites and layers are clear ValueErrors."""

from __future__ import annotations

import re

import pytest

from psylens.sites import SITES, hook_name, resolve_layers, validate_sites


@pytest.mark.parametrize("site", list(SITES))
def test_every_site_is_a_bridge_hook(tiny_model, site: str) -> None:
    model = tiny_model("llama")
    hooks = model.bridge.hook_dict
    for layer in range(model.n_layers):
        name = hook_name(site, layer)
        assert name in hooks, f"{site} layer {layer}: {name} is not a bridge hook"
        assert name.startswith(f"blocks.{layer}.")


def test_site_vocabulary() -> None:
    assert set(SITES) == {"resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out", "mlp_post"}


def test_unknown_site_lists_valid_names() -> None:
    with pytest.raises(ValueError) as e:
        validate_sites(["resid_post", "resid_psot"])
    msg = str(e.value)
    assert "resid_psot" in msg
    for s in SITES:
        assert s in msg
    with pytest.raises(ValueError, match="valid sites"):
        hook_name("nope", 0)


def test_validate_sites_forms() -> None:
    assert validate_sites("resid_post, mlp_out resid_post") == ["resid_post", "mlp_out"]
    assert validate_sites(["head_out"]) == ["head_out"]
    with pytest.raises(ValueError, match="no sites"):
        validate_sites([])


def test_layers_default_and_negative() -> None:
    assert resolve_layers(None, 4) == [0, 1, 2, 3]
    assert resolve_layers(-1, 4) == [3]
    assert resolve_layers([-1, 0, -4], 4) == [0, 3]
    assert resolve_layers([2, 2, -2], 4) == [2]  # de-duplicated (-2 is 2)
    assert resolve_layers([3, 1], 4) == [1, 3]  # sorted


@pytest.mark.parametrize("bad", [4, 40, -5])
def test_layer_out_of_range_names_the_range(bad: int) -> None:
    with pytest.raises(ValueError) as e:
        resolve_layers([0, bad], 4)
    msg = str(e.value)
    assert str(bad) in msg
    assert re.search(r"0\s*[–-]\s*3", msg), msg
    assert "4 layers" in msg


@pytest.mark.parametrize("bad", ["3", 1.0, True, None])
def test_layer_not_an_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="integer"):
        resolve_layers([bad], 4)  # type: ignore[list-item]


def test_empty_layer_list() -> None:
    with pytest.raises(ValueError, match="empty"):
        resolve_layers([], 4)


@pytest.mark.parametrize("bad", [1.5, [1.5], "3", object()])
def test_resolve_layers_non_integers_explain(bad) -> None:
    with pytest.raises(ValueError, match="layer"):
        resolve_layers(bad, 30)


def test_resolve_layers_accepts_numpy_and_ranges() -> None:
    import numpy as np
    import torch

    assert resolve_layers(np.int64(3), 30) == [3]
    assert resolve_layers([np.int32(1), torch.tensor(2)], 30) == [1, 2]
    assert resolve_layers(range(28, 31 - 1), 30) == [28, 29]
