"""`sg2ada convert`: NVIDIA pickle -> snapshot directory, and bad input as one `error:` line, exit 2."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from sg2ada.cli.main import main
from sg2ada.legacy.load import load_network
from sg2ada.networks.snapshot import read_snapshot_meta

from legacy_testutil import Network, dump_tf1, tf1_state


def _run(capsys, *argv):
    code = main(["convert", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_error_line(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def test_convert_then_load_gives_identical_outputs(tf1_pkl, tmp_path, capsys):
    dest = tmp_path / "converted"
    code, out, err = _run(capsys, "--source", tf1_pkl, "--dest", dest)
    assert code == 0, err
    assert str(dest) in out and "32x32x3" in out
    meta = read_snapshot_meta(dest)
    assert meta["source"].startswith("nvidia-tf1-pickle:")
    assert meta["converted_from"]["tf1_runtime_kwargs"]["Gs"]["truncation_psi"] == 0.5
    direct = load_network(tf1_pkl, networks=("G_ema", "D"))
    back = load_network(dest, networks=("G_ema", "D"))
    z = np.random.RandomState(5).randn(3, 128).astype(np.float32)
    c = np.zeros([3, 0], np.float32)
    for force_fp32 in (True, False):
        a = direct.G_ema(z, c, noise_mode="const", force_fp32=force_fp32).numpy()
        b = back.G_ema(z, c, noise_mode="const", force_fp32=force_fp32).numpy()
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(direct.D(a, c, force_fp32=force_fp32).numpy(),
                                      back.D(a, c, force_fp32=force_fp32).numpy())

    # An existing destination is never replaced without --force.
    code, _, err = _run(capsys, "--source", tf1_pkl, "--dest", dest)
    _assert_one_error_line(code, err, str(dest), "already exists", "--force")
    assert read_snapshot_meta(dest)["created"] == meta["created"]
    code, _, err = _run(capsys, "--source", tf1_pkl, "--dest", dest, "--force")
    assert code == 0, err
    assert sorted(os.listdir(tmp_path)) == ["converted"]


def _bad_inputs(tmp_path, marker):
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    files = {}
    p = tmp_path / "text.pkl"
    p.write_text("not a pickle at all")
    files["text"] = p
    p = tmp_path / "dict.pkl"
    p.write_bytes(pickle.dumps({"G": 1, "D": 2}))
    files["dict"] = p
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(Evil()))
    files["evil"] = p
    p = tmp_path / "evil_nested.pkl"
    dump_tf1(p, Network(tf1_state("G", "G_main", {}, [("w", Evil())])), Network({}), Network({}))
    files["evil_nested"] = p
    p = tmp_path / "zip.pkl"
    np.savez(p, a=np.zeros(3))
    os.replace(str(p) + ".npz", p)
    files["zip"] = p
    return files


@pytest.mark.parametrize("case, fragment", [
    ("text", "neither a network snapshot directory nor an NVIDIA network pickle"),
    ("dict", "not an NVIDIA TF1 network pickle"),
    ("evil", "refusing to load"),
    ("evil_nested", "refusing to load"),
    ("zip", "zip archive"),
    ("missing", "no such file"),
])
def test_bad_sources(tmp_path, capsys, case, fragment):
    marker = tmp_path / "marker"
    files = _bad_inputs(tmp_path, marker)
    src = files.get(case, tmp_path / "missing.pkl")
    dest = tmp_path / "out"
    code, _, err = _run(capsys, "--source", src, "--dest", dest)
    _assert_one_error_line(code, err, str(src), fragment)
    assert not marker.exists()
    assert not dest.exists()


def test_truncated_tf1_pickle(tf1_pkl, tmp_path, capsys):
    src = tmp_path / "trunc.pkl"
    src.write_bytes(tf1_pkl.read_bytes()[:50_000])
    code, _, err = _run(capsys, "--source", src, "--dest", tmp_path / "out")
    _assert_one_error_line(code, err, str(src), "truncated")


def test_cli_subprocess_refuses_code_without_traceback(tmp_path):
    marker = tmp_path / "marker"
    src = _bad_inputs(tmp_path, marker)["evil"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-m", "sg2ada", "convert", "--source", str(src), "--dest",
                        str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "system" in lines[0], r.stderr
    assert not marker.exists()


def test_unwritable_destination_and_snapshot_source(tmp_path, capsys):
    from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig, MappingConfig
    from sg2ada.networks.snapshot import build_networks, save_snapshot

    g = GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, channel_base=32, channel_max=8,
                        mapping=MappingConfig(num_layers=1))
    d = DiscriminatorConfig(img_resolution=8, channel_base=32, channel_max=8)
    src = save_snapshot(tmp_path / "src", *build_networks(g, d), kimg=3)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = _run(capsys, "--source", src, "--dest", blocker / "snap")
    _assert_one_error_line(code, err, "cannot write the snapshot")
    code, _, err = _run(capsys, "--source", src, "--dest", tmp_path / "copy")
    assert code == 0, err
    assert read_snapshot_meta(tmp_path / "copy")["kimg"] == 3
