"""`sg2ada generate`, `style-mix` and `interpolate`: NVIDIA's seed rule and images on NVIDIA's
reference pickle, the files the commands write, and one-line errors for bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import PIL.Image
import pytest

from sg2ada.cli.main import main
from sg2ada.errors import UserError
from sg2ada.images import to_uint8
from sg2ada.tools import common
from sg2ada.tools import generate as gen

# ---------------------------------------------------------------------------------------------------
# Helpers


def run_ok(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def run_error(argv, capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def png(path) -> np.ndarray:
    with PIL.Image.open(path) as im:
        return np.array(im)


# ---------------------------------------------------------------------------------------------------
# Seed lists


def test_parse_num_range():
    assert common.parse_num_range("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    assert common.parse_num_range("5") == [5]
    assert common.parse_num_range(" 2 - 4 , 9 ") == [2, 3, 4, 9]
    for bad in ("", "a", "1-", "3-1", "1,,2", "-5", "1.5", "0-99999999"):
        with pytest.raises(UserError):
            common.parse_num_range(bad)


def test_seed_to_z_is_nvidias_rule():
    z = common.seed_to_z(42, 7)
    assert z.shape == (1, 7) and z.dtype == np.float32
    np.testing.assert_array_equal(z, np.random.RandomState(42).randn(1, 7).astype(np.float32))


# ---------------------------------------------------------------------------------------------------
# NVIDIA's reference network


@pytest.fixture(scope="module")
def reference(reference_dir):
    ref = np.load(reference_dir / "tf1_small_expected.npz")
    meta = json.loads(str(ref["meta_json"]))
    # The README: z = RandomState(seed + 1).randn(N, z_dim); row 0 is therefore seed + 1's latent.
    seed = int(meta.get("seed", 0)) + 1
    return ref, seed, str(reference_dir / "tf1_small.pkl")


@pytest.fixture(scope="module")
def reference_G(reference):
    return common.load_generator(reference[2])


def test_reference_seed_gives_nvidias_latent_and_images(reference, reference_G):
    ref, seed, _ = reference
    G = reference_G
    z = common.seed_to_z(seed, G.z_dim)
    np.testing.assert_array_equal(z, ref["z"][:1])
    for psi, ws_key, img_key in ((1.0, "ws", "img"), (0.5, "ws_psi", "img_psi")):
        ws = gen.map_seeds(G, [seed], psi)
        assert np.abs(ws - ref[ws_key][:1]).max() < 1e-4, psi
        img = gen.synthesize(G, ws, "const")
        want = np.transpose(ref[img_key][:1], (0, 2, 3, 1))
        err = np.abs(img - want).max()
        assert err < 1e-4, f"psi {psi}: max abs error {err:.3g}"


def test_generate_cli_on_reference_pickle(reference, tmp_path, capsys):
    ref, seed, pkl = reference
    out = tmp_path / "out"
    run_ok(["generate", "--network", pkl, "--seeds", f"{seed}", "--trunc", "0.5", "--outdir", str(out)], capsys)
    got = png(out / f"seed{seed:04d}.png").astype(int)
    want = np.asarray(to_uint8(np.transpose(ref["img_psi"][:1], (0, 2, 3, 1))))[0].astype(int)
    # float errors of ~1e-5 can move a value across a quantisation boundary, never by more than 1
    assert np.abs(got - want).max() <= 1
    assert np.mean(got != want) < 0.01


def _legacy_test_module():
    """tests/legacy/test_pytorch_pickle.py, for its NVIDIA-shaped PyTorch pickle writer (imported, not copied)."""
    import importlib
    import pathlib
    import sys

    d = str(pathlib.Path(__file__).resolve().parents[1] / "legacy")
    added = d not in sys.path
    if added:
        sys.path.insert(0, d)
    try:
        return importlib.import_module("test_pytorch_pickle")
    finally:
        if added:
            sys.path.remove(d)


def test_generate_cli_on_nvidia_pytorch_pickle(reference_dir, tmp_path, capsys):
    # Written without torch (the pickle layout is torch's own; see tests/legacy): reading needs no torch either.
    legacy = _legacy_test_module()
    with np.load(reference_dir / "pytorch_small_reference.npz") as f:
        ref = {k: f[k] for k in f.files}
    # its z are RandomState(0).randn(4, z_dim): row 0 is seed 0's latent under NVIDIA's rule
    np.testing.assert_array_equal(common.seed_to_z(0, 128), ref["z"][:1])
    pkl = legacy.write_nvidia_pytorch_pickle(None, ref, tmp_path / "network-snapshot-000100.pkl",
                                             tmp_path / "marker")
    out = tmp_path / "out"
    run_ok(["generate", "--network", str(pkl), "--seeds", "0", "--trunc", "0.5", "--outdir", str(out)], capsys)
    got = png(out / "seed0000.png").astype(int)
    want = np.asarray(to_uint8(np.transpose(ref["img_psi"][:1], (0, 2, 3, 1))))[0].astype(int)
    assert np.abs(got - want).max() <= 1 and np.mean(got != want) < 0.01
    assert not (tmp_path / "marker").exists()  # the pickle's embedded source never ran


# ---------------------------------------------------------------------------------------------------
# Tiny networks


def test_generate_cli_writes_seed_images_and_grid(tiny_snapshot, tmp_path, capsys):
    out = tmp_path / "gen"
    run_ok(["generate", "--network", tiny_snapshot, "--seeds", "0-2,5", "--trunc", "0.7", "--grid",
            "--outdir", str(out)], capsys)
    names = sorted(os.listdir(out))
    assert names == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png", "seed0005.png"]
    G = common.load_generator(tiny_snapshot)
    want = np.asarray(to_uint8(gen.synthesize(G, gen.map_seeds(G, [5], 0.7))))[0]
    got = png(out / "seed0005.png")
    assert got.shape == (16, 16, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    grid = png(out / "grid.png")
    assert grid.shape == (32, 32, 3)  # 4 images -> 2x2
    np.testing.assert_array_equal(grid[16:, 16:], got)
    # different seeds, different images
    assert not np.array_equal(png(out / "seed0000.png"), png(out / "seed0001.png"))


def test_noise_modes(tiny_snapshot):
    G = common.load_generator(tiny_snapshot)
    imgs = {m: dict(gen.seed_images(G, [3, 4], noise_mode=m)) for m in ("const", "random", "none")}
    again = dict(gen.seed_images(G, [3, 4], noise_mode="random"))
    np.testing.assert_array_equal(imgs["random"][3], again[3])  # per-seed reproducible
    assert not np.array_equal(imgs["const"][3], imgs["random"][3])
    assert not np.array_equal(imgs["const"][3], imgs["none"][3])


def test_conditional_class(tiny_cond_snapshot, tmp_path, capsys):
    out = tmp_path / "cond"
    run_ok(["generate", "--network", tiny_cond_snapshot, "--seeds", "1", "--class", "3", "--outdir", str(out)],
           capsys)
    G = common.load_generator(tiny_cond_snapshot)
    a = dict(gen.seed_images(G, [1], class_idx=3))[1]
    b = dict(gen.seed_images(G, [1], class_idx=0))[1]
    np.testing.assert_array_equal(png(out / "seed0001.png"), a)
    assert not np.array_equal(a, b)


def test_projected_w_roundtrip(tiny_snapshot, tmp_path, capsys):
    G = common.load_generator(tiny_snapshot)
    ws = gen.map_seeds(G, [11, 12], 0.8)
    np.savez(tmp_path / "projected_w.npz", w=ws)
    out = tmp_path / "proj"
    run_ok(["generate", "--network", tiny_snapshot, "--projected-w", str(tmp_path / "projected_w.npz"),
            "--outdir", str(out)], capsys)
    assert sorted(os.listdir(out)) == ["proj00.png", "proj01.png"]
    want = dict(gen.seed_images(G, [12], truncation_psi=0.8))[12]
    np.testing.assert_array_equal(png(out / "proj01.png"), want)
    # the wrong shape is refused
    np.savez(tmp_path / "bad.npz", w=np.zeros([1, 3, 16], np.float32))
    msg = run_error(["generate", "--network", tiny_snapshot, "--projected-w", str(tmp_path / "bad.npz"),
                     "--outdir", str(out)], capsys)
    assert "[N, 6, 16]" in msg


def test_style_mix_grid(tiny_snapshot, tmp_path, capsys):
    out = tmp_path / "mix"
    run_ok(["style-mix", "--network", tiny_snapshot, "--rows", "1,2", "--cols", "3,4,5", "--styles", "0-2",
            "--save-cells", "--outdir", str(out)], capsys)
    grid = png(out / "grid.png")
    assert grid.shape == (3 * 16, 4 * 16, 3)
    assert not grid[:16, :16].any()  # black corner
    G = common.load_generator(tiny_snapshot)
    src = dict(gen.seed_images(G, [1, 2, 3, 4, 5]))

    def cell(r, c):
        return grid[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16]

    np.testing.assert_array_equal(cell(0, 1), src[3])  # column sources on top
    np.testing.assert_array_equal(cell(0, 3), src[5])
    np.testing.assert_array_equal(cell(2, 0), src[2])  # row sources on the left
    w = gen.map_seeds(G, [2, 4])
    mixed = w[0].copy()
    mixed[:3] = w[1][:3]
    want = np.asarray(to_uint8(gen.synthesize(G, mixed[None])))[0]
    np.testing.assert_array_equal(cell(2, 2), want)
    np.testing.assert_array_equal(png(out / "2-4.png"), want)
    assert not np.array_equal(want, src[2]) and not np.array_equal(want, src[4])


def test_slerp():
    a = np.array([3.0, 0.0], np.float32)
    b = np.array([0.0, 1.0], np.float32)
    np.testing.assert_allclose(gen.slerp(a, b, 0), a, atol=1e-6)
    np.testing.assert_allclose(gen.slerp(a, b, 1), b, atol=1e-6)
    mid = gen.slerp(a, b, 0.5)
    np.testing.assert_allclose(mid / np.linalg.norm(mid), [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    assert np.isclose(np.linalg.norm(mid), 2.0)
    np.testing.assert_allclose(gen.slerp(a, a, 0.3), a, atol=1e-6)


@pytest.mark.parametrize("space", ["z", "w"])
def test_interpolation_loop(tiny_snapshot, space):
    G = common.load_generator(tiny_snapshot)
    ws = gen.interpolation_latents(G, [1, 5, 9], 4, space)
    assert ws.shape == (12, G.num_ws, G.w_dim)
    seeds_w = gen.map_seeds(G, [1, 5, 9])
    for i, k in ((0, 0), (4, 1), (8, 2)):  # every 4th frame is exactly a seed
        np.testing.assert_allclose(ws[i], seeds_w[k], atol=1e-4)
    # a loop: the step from the last frame back to the first is no bigger than the others
    steps = np.linalg.norm(np.diff(np.concatenate([ws, ws[:1]]), axis=0).reshape(12, -1), axis=1)
    assert steps[-1] < 2 * np.median(steps) and steps.min() > 0


def test_interpolate_cli_gif_and_mp4(tiny_snapshot, tmp_path, capsys):
    gif = tmp_path / "loop.gif"
    run_ok(["interpolate", "--network", tiny_snapshot, "--seeds", "1,5,9", "--frames", "3", "--out", str(gif)],
           capsys)
    with PIL.Image.open(gif) as im:
        assert im.n_frames == 9 and im.size == (16, 16)
    pytest.importorskip("imageio_ffmpeg")
    mp4 = tmp_path / "loop.mp4"
    run_ok(["interpolate", "--network", tiny_snapshot, "--seeds", "1,5", "--frames", "3", "--space", "w",
            "--out", str(mp4)], capsys)
    assert mp4.stat().st_size > 0


def test_mp4_without_imageio_is_a_clear_error(tiny_snapshot, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    msg = run_error(["interpolate", "--network", tiny_snapshot, "--seeds", "1,5", "--out", str(tmp_path / "a.mp4")],
                    capsys)
    assert "imageio-ffmpeg" in msg and ".gif" in msg


# ---------------------------------------------------------------------------------------------------
# Bad input: one `error:` line, exit 2


def test_bad_input_errors(tiny_snapshot, tiny_cond_snapshot, tmp_path, capsys):
    out = str(tmp_path / "o")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    cases = [
        (["generate", "--network", str(tmp_path / "missing"), "--seeds", "1", "--outdir", out], "no such file"),
        (["generate", "--network", str(junk), "--seeds", "1", "--outdir", out], "junk.pkl"),
        (["generate", "--network", tiny_snapshot, "--seeds", "1-x", "--outdir", out], "--seeds"),
        (["generate", "--network", tiny_snapshot, "--seeds", "9-3", "--outdir", out], "backwards"),
        (["generate", "--network", tiny_snapshot, "--seeds", "1", "--trunc", "3", "--outdir", out], "--trunc"),
        (["generate", "--network", tiny_snapshot, "--seeds", "1", "--trunc", "nan", "--outdir", out], "--trunc"),
        (["generate", "--network", tiny_snapshot, "--outdir", out], "--seeds or --projected-w"),
        (["generate", "--network", tiny_snapshot, "--seeds", "1", "--class", "2", "--outdir", out], "unconditional"),
        (["generate", "--network", tiny_cond_snapshot, "--seeds", "1", "--class", "4", "--outdir", out],
         "classes 0..3"),
        (["generate", "--network", tiny_cond_snapshot, "--seeds", "1", "--outdir", out], "--class"),
        (["style-mix", "--network", tiny_snapshot, "--rows", "1", "--cols", "2", "--styles", "0-6", "--outdir", out],
         "styles 0..5"),
        (["interpolate", "--network", tiny_snapshot, "--seeds", "1", "--out", str(tmp_path / "a.gif")],
         "at least two"),
        (["interpolate", "--network", tiny_snapshot, "--seeds", "1,2", "--out", str(tmp_path / "a.avi")], ".gif"),
    ]
    for argv, needle in cases:
        msg = run_error(argv, capsys)
        assert needle in msg, (argv, msg)
    assert not os.path.exists(out) or not os.listdir(out)


def test_cli_modules_do_not_import_tensorflow_for_options():
    """`sg2ada <command> --help` must answer without TensorFlow (the CLI module protocol)."""
    import subprocess
    import sys

    code = (
        "import argparse, importlib, sys\n"
        "for m in ('generate', 'style_mix', 'interpolate', 'project', 'export'):\n"
        "    mod = importlib.import_module('sg2ada.cli.' + m)\n"
        "    assert mod.HELP and mod.__doc__\n"
        "    mod.add_arguments(argparse.ArgumentParser())\n"
        "import sg2ada.tools.common, sg2ada.tools.video\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_tf1_noise_mode_draws_noise_after_z(tiny_snapshot):
    G = common.load_generator(tiny_snapshot)
    bufs = gen._noise_buffers(G)
    before = {k: v.numpy().copy() for k, v in bufs.items()}
    const = dict(gen.seed_images(G, [6]))[6]
    got = dict(gen.seed_images(G, [6], noise_mode="tf1"))[6]
    assert not np.array_equal(got, const)
    for k, v in bufs.items():  # the network's own noise is back
        np.testing.assert_array_equal(v.numpy(), before[k])
    # by hand: z, then noise0, noise1, ... from the same RandomState
    rnd = np.random.RandomState(6)
    z = rnd.randn(1, G.z_dim).astype(np.float32)
    for i in range(len(bufs)):
        bufs[f"noise{i}"].assign(rnd.randn(*bufs[f"noise{i}"].shape).astype(np.float32))
    want = np.asarray(to_uint8(G.synthesis(G.mapping(z, None), noise_mode="const", force_fp32=True)))[0]
    np.testing.assert_array_equal(got, want)
