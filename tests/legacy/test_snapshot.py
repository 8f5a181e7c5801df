"""Our snapshot format (sg2ada.networks.snapshot): exact round trip, atomic and non-clobbering writes,
no pickle on read, and clear errors for every kind of damaged snapshot."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from sg2ada.errors import UserError
from sg2ada.legacy.load import load_network
from sg2ada.networks import snapshot
from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig, MappingConfig
from sg2ada.networks.snapshot import build_networks, read_snapshot_meta, save_snapshot

G_CFG = GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, channel_base=64, channel_max=16,
                        mapping=MappingConfig(num_layers=1))
D_CFG = DiscriminatorConfig(img_resolution=8, channel_base=64, channel_max=16, mbstd_group_size=2)


@pytest.fixture(scope="module")
def nets():
    G, D, G_ema = build_networks(G_CFG, D_CFG)
    # Make the three distinguishable, so a swapped network would show.
    for i, net in enumerate((G, D, G_ema)):
        for var in net.named_variables().values():
            var.assign(np.asarray(np.random.RandomState(i).randn(*var.shape), np.float32) * 0.5)
    return G, D, G_ema


@pytest.fixture(scope="module")
def snap(nets, tmp_path_factory):
    G, D, G_ema = nets
    path = tmp_path_factory.mktemp("s") / "network-snapshot-000012"
    save_snapshot(path, G, D, G_ema, dataset={"name": "demo", "resolution": 8}, kimg=12.5, source="unit test")
    return path


def _copy(snap, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(snap, dst)
    return dst


def test_layout_and_metadata(nets, snap):
    assert sorted(os.listdir(snap)) == ["snapshot.json", "weights.npz"]
    meta = json.loads((snap / "snapshot.json").read_text())
    assert meta["format"] == "sg2ada-network-snapshot" and meta["version"] == 1
    assert GeneratorConfig.from_dict(meta["G"]) == G_CFG and DiscriminatorConfig.from_dict(meta["D"]) == D_CFG
    assert meta["dataset"] == {"name": "demo", "resolution": 8} and meta["kimg"] == 12.5
    assert meta["source"] == "unit test" and meta["created"] and meta["sg2ada_version"]
    with np.load(snap / "weights.npz", allow_pickle=False) as npz:
        keys = set(npz.files)
    G, D, G_ema = nets
    expected = {f"{k}/{n}" for k, net in (("G", G), ("D", D), ("G_ema", G_ema)) for n in net.named_variables()}
    assert keys == expected
    assert read_snapshot_meta(snap)["kimg"] == 12.5


def test_round_trip_exact(nets, snap):
    back = load_network(snap)
    for net, other in zip(nets, back[:3]):
        assert net.config == other.config
        for name, var in net.named_variables().items():
            np.testing.assert_array_equal(var.numpy(), other.named_variables()[name].numpy())
    z = np.random.RandomState(0).randn(2, 8).astype(np.float32)
    a = nets[2](z, None, noise_mode="const").numpy()
    b = back.G_ema(z, None, noise_mode="const").numpy()
    np.testing.assert_array_equal(a, b)
    img = np.random.RandomState(1).randn(2, 8, 8, 3).astype(np.float32)
    np.testing.assert_array_equal(nets[1](img, None).numpy(), back.D(img, None).numpy())
    assert back.meta["path"] == str(snap)


def test_load_subset_and_file_paths(snap):
    only = load_network(snap, networks=("G_ema",))
    assert only.G is None and only.D is None and only.G_ema is not None
    # Pointing at a file inside the snapshot loads the snapshot.
    assert load_network(snap / "weights.npz", networks=("D",)).D is not None
    assert load_network(snap / "snapshot.json", networks=("D",)).D is not None


def test_never_overwrites_silently(nets, snap, tmp_path):
    with pytest.raises(UserError, match="already exists.*--force"):
        save_snapshot(snap, *nets)
    dst = _copy(snap, tmp_path)
    (dst / "stale-file").write_text("x")
    save_snapshot(dst, *nets, kimg=99, overwrite=True)
    assert sorted(os.listdir(dst)) == ["snapshot.json", "weights.npz"]
    assert read_snapshot_meta(dst)["kimg"] == 99
    assert sorted(os.listdir(tmp_path)) == ["copy"]  # no temporary or old siblings left behind


def test_failed_write_leaves_nothing(nets, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(snapshot.np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_snapshot(tmp_path / "snap", *nets)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("killed", ["after moving the old one aside", "before removing the old one"])
def test_an_overwrite_killed_midway_is_undone(snap, tmp_path, killed):
    """`save_snapshot(overwrite=True)` moves the old snapshot aside, renames the new one in, removes
    the old one; a kill between two steps leaves folders that `clean_interrupted_writes` sorts out."""
    import shutil

    old_meta = (snap / "snapshot.json").read_text()
    path = tmp_path / snap.name
    shutil.copytree(snap, tmp_path / f".{snap.name}.old-123-abcdef01")
    (tmp_path / f".{snap.name}.tmp-123-abcdef02").mkdir()  # the new one, maybe incomplete
    (tmp_path / f".{snap.name}.tmp-123-abcdef02" / "weights.npz").write_bytes(b"PK")
    if killed == "before removing the old one":
        shutil.copytree(snap, path)
        (path / "snapshot.json").write_text(old_meta.replace("unit test", "the new one"))  # it arrived
    (tmp_path / ".notes.tmp-1").write_text("a file, not a snapshot's folder")
    snapshot.clean_interrupted_writes(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".notes.tmp-1", snap.name]
    new_meta = old_meta.replace("unit test", "the new one")
    assert (path / "snapshot.json").read_text() == (old_meta if killed.startswith("after") else new_meta)
    load_network(path)  # complete


def test_missing_and_not_a_snapshot(tmp_path):
    with pytest.raises(UserError, match="nothing-here: no such file"):
        load_network(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: not a network snapshot \\(no snapshot.json\\)"):
        load_network(tmp_path / "empty")


@pytest.mark.parametrize("text, match", [
    ("{not json", "unreadable snapshot metadata"),
    ('{"format": "something-else", "version": 1}', "not an sg2ada network snapshot"),
    ('{"format": "sg2ada-network-snapshot", "version": 7}', "version 7 was written by a newer sg2ada"),
    ('{"format": "sg2ada-network-snapshot", "version": 1, "G": {"z_dim": 8}}', "invalid network configuration"),
])
def test_damaged_metadata(snap, tmp_path, text, match):
    dst = _copy(snap, tmp_path)
    (dst / "snapshot.json").write_text(text)
    with pytest.raises(UserError, match=match) as e:
        load_network(dst)
    assert "\n" not in str(e.value) and "snapshot.json" in str(e.value)


def test_config_that_does_not_match_the_weights(snap, tmp_path):
    dst = _copy(snap, tmp_path)
    meta = json.loads((dst / "snapshot.json").read_text())
    meta["G"]["channel_max"] = 8
    (dst / "snapshot.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"\(G weights\): variable .* has shape .* does not match this network"):
        load_network(dst)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "pickled", "missing-entry", "strings"])
def test_damaged_weights(snap, tmp_path, damage):
    dst = _copy(snap, tmp_path)
    w = dst / "weights.npz"
    if damage == "garbage":
        w.write_bytes(b"\x00" * 100)
    elif damage == "truncated":
        w.write_bytes(w.read_bytes()[:2000])
    elif damage == "missing":
        w.unlink()
    elif damage == "pickled":
        # An object array would need pickle to load: refused by allow_pickle=False.
        np.savez(w, **{"G/x": np.array([{"a": 1}], dtype=object)})
    elif damage == "missing-entry":
        with np.load(snap / "weights.npz") as npz:
            arrays = {k: npz[k] for k in npz.files if k != "G_ema/dlatent_avg"}
        np.savez(w, **arrays)
    elif damage == "strings":  # the right names and shapes, but text where numbers belong
        with np.load(snap / "weights.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        arrays["G_ema/dlatent_avg"] = np.full(arrays["G_ema/dlatent_avg"].shape, "nan?")
        np.savez(w, **arrays)
    with pytest.raises(UserError) as e:
        load_network(dst)
    msg = str(e.value)
    assert "\n" not in msg and str(dst) in msg
    if damage == "missing-entry":
        assert "(G_ema weights): missing variable 'dlatent_avg'" in msg
    elif damage == "strings":
        assert "(G_ema weights): variable 'dlatent_avg' holds text, not numbers" in msg
    elif damage == "missing":
        assert "no weights.npz" in msg
    else:
        assert "damaged" in msg


def test_generator_only_snapshot(nets, tmp_path):
    G, D, G_ema = nets
    path = save_snapshot(tmp_path / "gonly", None, None, G_ema)
    meta = read_snapshot_meta(path)
    assert meta["networks"] == ["G_ema"] and meta["D"] is None
    with np.load(tmp_path / "gonly" / "weights.npz") as npz:
        assert all(k.startswith("G_ema/") for k in npz.files)
    back = load_network(path)
    assert back.G is None and back.D is None
    for name, var in G_ema.named_variables().items():
        np.testing.assert_array_equal(var.numpy(), back.G_ema.named_variables()[name].numpy())
    meta["networks"] = ["G_ema", "D"]  # claims a D it has no config for
    (tmp_path / "gonly" / "snapshot.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match='invalid "networks" list'):
        load_network(path)
