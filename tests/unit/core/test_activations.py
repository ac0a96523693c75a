"""``Activations``: selection, label ids, storage round trips and shape checks (synthetic tensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from psylens.activations import Activations

LAYERS = [1, 4, 7]


def make(n: int = 6, positions: str = "last") -> Activations:
    g = torch.Generator().manual_seed(0)
    labels = ["joy", "fear", "joy", None, "fear", "anger"][:n]
    groups = ["a", "a", "b", "b", "c", "c"][:n]
    ids = [f"s{i}" for i in range(n)]
    texts = [f"text {i}" for i in range(n)]
    if positions == "all":
        lengths = [2, 3, 1, 4, 2, 3][:n]
        rows = sum(lengths)
        ts = torch.cat([torch.full((k,), i, dtype=torch.long) for i, k in enumerate(lengths)])
        tp = torch.cat([torch.arange(k) for k in lengths])
        tensors = {"resid_post": torch.randn(rows, 3, 5, generator=g), "head_out": torch.randn(rows, 3, 2, 4, generator=g)}
        return Activations(tensors, LAYERS, labels, groups, ids, texts, positions="all", token_stimulus=ts, token_position=tp)
    tensors = {"resid_post": torch.randn(n, 3, 5, generator=g), "head_out": torch.randn(n, 3, 2, 4, generator=g)}
    return Activations(tensors, LAYERS, labels, groups, ids, texts, positions=positions, meta={"model": "x"})


def test_access() -> None:
    a = make()
    assert len(a) == 6 and a.sites == ["resid_post", "head_out"] and "resid_post" in a and "mlp_out" not in a
    assert torch.equal(a.layer("resid_post", 4), a["resid_post"][:, 1])
    assert a.layer("head_out", 7).shape == (6, 2, 4)
    with pytest.raises(ValueError, match=r"harvested layers: \[1, 4, 7\]"):
        a.layer("resid_post", 2)
    with pytest.raises(KeyError, match="mlp_out"):
        a["mlp_out"]  # noqa: B018
    assert "n=6" in repr(a)


def test_label_ids() -> None:
    a = make().where(group="a")  # joy, fear
    assert a.classes == ["fear", "joy"]
    assert a.label_ids().tolist() == [1, 0]
    assert a.label_ids(["joy", "fear", "anger"]).tolist() == [0, 1]
    with pytest.raises(ValueError, match="not in classes"):
        a.label_ids(["joy"])
    with pytest.raises(ValueError):
        make().label_ids()  # a None label has no class


def test_select_and_where() -> None:
    a = make()
    s = a.select([4, 0])
    assert s.ids == ["s4", "s0"] and s.labels == ["fear", "joy"] and s.texts == ["text 4", "text 0"]
    assert torch.equal(s["resid_post"], a["resid_post"][[4, 0]])
    assert s.meta == a.meta and s.layers == a.layers
    assert a.select(torch.tensor([1])).ids == ["s1"]
    joy = a.where(label="joy")
    assert joy.ids == ["s0", "s2"]
    assert a.where(label="fear", group="c").ids == ["s4"]
    assert len(a.where(label="surprise")) == 0


def test_select_all_positions() -> None:
    a = make(positions="all")
    s = a.select([3, 1])
    assert s.ids == ["s3", "s1"]
    # rows of stimulus 3 (4 tokens) then stimulus 1 (3 tokens), renumbered 0 and 1
    assert s.token_stimulus.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert s.token_position.tolist() == [0, 1, 2, 3, 0, 1, 2]
    rows3 = torch.nonzero(a.token_stimulus == 3).flatten()
    rows1 = torch.nonzero(a.token_stimulus == 1).flatten()
    assert torch.equal(s["resid_post"], a["resid_post"][torch.cat([rows3, rows1])])
    assert a.where(group="b").ids == ["s2", "s3"]


@pytest.mark.parametrize("positions", ["last", "mean", "all"])
def test_save_load_round_trip(tmp_path: Path, positions: str) -> None:
    a = make(positions=positions)
    a.save(tmp_path / "acts")
    b = Activations.load(tmp_path / "acts")
    assert b.sites == a.sites and b.layers == a.layers and b.positions == positions
    assert (b.ids, b.labels, b.groups, b.texts) == (a.ids, a.labels, a.groups, a.texts)
    for site in a.sites:
        assert b[site].dtype == a[site].dtype and torch.equal(b[site], a[site])
    if positions == "all":
        assert torch.equal(b.token_stimulus, a.token_stimulus) and torch.equal(b.token_position, a.token_position)
    else:
        assert b.token_stimulus is None and b.meta == a.meta
    assert not [p for p in (tmp_path / "acts").iterdir() if p.name.startswith(".")]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no activations"):
        Activations.load(tmp_path)
    a = make()
    a.save(tmp_path / "acts")
    from psylens.io import read_json, write_json

    man = read_json(tmp_path / "acts" / "manifest.json")
    man["complete"] = False
    write_json(tmp_path / "acts" / "manifest.json", man)
    with pytest.raises(ValueError, match="incomplete"):
        Activations.load(tmp_path / "acts")


def test_bad_shapes() -> None:
    ok = make()
    kw = dict(layers=LAYERS, labels=ok.labels, groups=ok.groups, ids=ok.ids, texts=ok.texts)
    with pytest.raises(ValueError, match="does not match"):
        Activations({"resid_post": torch.zeros(5, 3, 4)}, **kw)  # 5 rows for 6 ids
    with pytest.raises(ValueError, match="does not match"):
        Activations({"resid_post": torch.zeros(6, 2, 4)}, **kw)  # 2 layers for 3
    with pytest.raises(ValueError, match="labels"):
        Activations({"resid_post": torch.zeros(6, 3, 4)}, **{**kw, "labels": ok.labels[:-1]})
    with pytest.raises(ValueError, match="positions"):
        Activations({"resid_post": torch.zeros(6, 3, 4)}, **kw, positions="first")
    with pytest.raises(ValueError, match="token_stimulus"):
        Activations({"resid_post": torch.zeros(6, 3, 4)}, **kw, positions="all")
    Activations({"resid_post": torch.zeros(6, 3, 4)}, **kw)  # control


def test_to_device() -> None:
    a = make()
    b = a.to("cpu")
    assert b is not a and torch.equal(b["resid_post"], a["resid_post"]) and b.ids == a.ids


def test_reduce_reads_per_token_rows_out_as_mean_and_last() -> None:
    a = make(positions="all")
    mean, last = a.reduce("mean"), a.reduce("last")
    assert mean.positions == "mean" and last.positions == "last" and mean.labels == a.labels
    for i in range(len(a)):
        rows = torch.nonzero(a.token_stimulus == i).flatten()
        for site in a.sites:
            assert torch.allclose(mean[site][i], a[site][rows].mean(0), atol=1e-6)
            assert torch.equal(last[site][i], a[site][rows[-1]])
    # rows out of order: "last" follows token_position, not row order
    perm = torch.randperm(a.n_rows, generator=torch.Generator().manual_seed(1))
    shuffled = Activations({k: v[perm] for k, v in a.tensors.items()}, a.layers, a.labels, a.groups, a.ids, a.texts,
                           positions="all", token_stimulus=a.token_stimulus[perm], token_position=a.token_position[perm])
    assert torch.equal(shuffled.reduce("last")["resid_post"], last["resid_post"])
    assert torch.allclose(shuffled.reduce("mean")["resid_post"], mean["resid_post"], atol=1e-6)
    # control: the two read-outs differ where a text has several tokens
    assert not torch.allclose(mean["resid_post"][1], last["resid_post"][1])
    with pytest.raises(ValueError, match="positions='all'"):
        make().reduce("mean")
    with pytest.raises(ValueError, match="'mean' or 'last'"):
        a.reduce("all")
