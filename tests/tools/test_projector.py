"""The projector: NVIDIA's schedules, the noise regulariser, recovery of an image the generator made
(perceptual distance far below that of random ws), and `sg2ada project` end to end with the
sg2ada.metrics LPIPS/VGG16 loader on a tiny VGG16 pickle."""

from __future__ import annotations

import importlib.util
import os
import pathlib

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf
from tools_testutil import TinyLPIPS, tiny_generator

from sg2ada.cli.main import main
from sg2ada.errors import UserError
from sg2ada.tools import common, projector
from sg2ada.tools import generate as gen


def test_learning_rate_schedule():
    n = 1000
    lr = [projector.learning_rate(s, n) for s in range(n)]
    assert lr[0] == 0.0  # linear ramp-up from 0 over the first 5%
    assert lr[25] == pytest.approx(0.05)
    assert lr[50] == pytest.approx(0.1) and lr[500] == pytest.approx(0.1) and lr[750] == pytest.approx(0.1)
    # cosine ramp-down over the last 25%: halfway through it, half the rate
    assert lr[875] == pytest.approx(0.05)
    assert lr[999] == pytest.approx(0.1 * (0.5 - 0.5 * np.cos(0.004 * np.pi)))
    assert max(lr) <= 0.1 + 1e-12


def test_w_noise_schedule():
    assert projector.w_noise_scale(0, 100, w_std=2.0) == pytest.approx(0.1)
    assert projector.w_noise_scale(375, 1000, w_std=2.0) == pytest.approx(0.1 * 0.25)
    assert projector.w_noise_scale(750, 1000, w_std=2.0) == 0.0
    assert projector.w_noise_scale(900, 1000, w_std=2.0) == 0.0


def test_noise_regularization():
    rng = np.random.RandomState(0)
    white = [rng.randn(1, 1, 32, 32).astype(np.float32), rng.randn(1, 1, 4, 4).astype(np.float32)]
    smooth = np.ones([1, 1, 32, 32], np.float32)
    r_white = float(projector.noise_regularization(white))
    r_smooth = float(projector.noise_regularization([smooth]))
    # constant maps: autocorrelation 1 at the levels 32, 16, 8, horizontally and vertically
    assert r_smooth == pytest.approx(6.0)
    assert r_white < 0.2  # sample autocorrelations only: tiny next to the 6 of a constant map
    # the 4x4 buffer counts once (no pyramid below 8)
    one = np.ones([1, 1, 4, 4], np.float32)
    assert float(projector.noise_regularization([one])) == pytest.approx(2.0)
    # by hand for one level: mean(n * roll(n, 1, W))^2 + mean(n * roll(n, 1, H))^2
    n = rng.randn(8, 8)
    want = np.mean(n * np.roll(n, 1, 1)) ** 2 + np.mean(n * np.roll(n, 1, 0)) ** 2
    assert float(projector.noise_regularization([n[None, None].astype(np.float32)])) == pytest.approx(want, rel=1e-4)


def test_downsample_to_256():
    x = tf.reshape(tf.range(512 * 512 * 3, dtype=tf.float32), [1, 512, 512, 3])
    y = projector.downsample_to_256(x)
    assert y.shape == (1, 256, 256, 3)
    np.testing.assert_allclose(y[0, 0, 0].numpy(), tf.reduce_mean(x[0, :2, :2], [0, 1]).numpy())
    assert projector.downsample_to_256(x[:, :64, :64]).shape == (1, 64, 64, 3)


def test_load_target_crops_and_resizes(tmp_path):
    img = np.zeros([40, 60, 3], np.uint8)
    img[:, 10:50] = 200  # the centre square is all 200: cropping must remove the black sides
    path = tmp_path / "t.png"
    PIL.Image.fromarray(img).save(path)
    t = projector.load_target(str(path), 16)
    assert t.shape == (16, 16, 3) and t.dtype == np.uint8
    assert t.min() >= 195
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(Exception, match="not a readable image"):
        projector.load_target(str(tmp_path / "x.png"), 16)


def test_projection_recovers_generated_image():
    # Noise strengths of the order of trained networks': with large random ones the optimised noise
    # buffers carry much of the image, and the w alone (rendered with the network's own noise, as
    # proj.png is) explains less of it.
    G = tiny_generator(1, noise_strength=0.03)
    fnet = TinyLPIPS(0)
    w_true = gen.map_seeds(G, [7])
    target = projector.synth_uint8(G, w_true)[0]
    noise_before = {k: v.numpy().copy() for k, v in projector.noise_buffers(G).items()}

    res = projector.project(G, target, feature_net=fnet, num_steps=150, w_avg_samples=1000)

    assert res.w.shape == (1, G.num_ws, G.w_dim) and res.w_steps.shape == (150, G.w_dim)
    assert np.all(np.isfinite(res.w))
    # the network's own noise buffers are back as they were; the optimised ones are returned
    for k, v in projector.noise_buffers(G).items():
        np.testing.assert_array_equal(v.numpy(), noise_before[k])
        assert res.noise[k].shape == v.shape and not np.array_equal(res.noise[k], noise_before[k])
    d_proj = projector.perceptual_distance(G, res.w, target, fnet)
    d_rand = [projector.perceptual_distance(G, gen.map_seeds(G, [s]), target, fnet) for s in range(100, 110)]
    print(f"projection distance {d_proj:.4f}; random ws: mean {np.mean(d_rand):.4f}, min {min(d_rand):.4f}; "
          f"first step {res.dists[0]:.4f}, last {res.dists[-1]:.4f}")
    assert d_proj < 0.5 * min(d_rand)
    assert d_proj < 0.25 * np.mean(d_rand)
    assert res.dists[-1] < 0.5 * res.dists[0]
    # and in pixels too (w itself is not identifiable in a random tiny network: many ws give
    # near-identical images, so the distance to w_true is no measure)
    def rmse(ws):
        return float(np.sqrt(np.mean((projector.synth_uint8(G, ws)[0].astype(float) - target) ** 2)))

    px, px_rand = rmse(res.w), [rmse(gen.map_seeds(G, [s])) for s in range(100, 110)]
    print(f"pixel RMSE {px:.2f}; random ws: mean {np.mean(px_rand):.2f}, min {min(px_rand):.2f}")
    assert px < 0.75 * np.mean(px_rand)  # the tiny LPIPS ignores colour shifts, hence the slack


def _metrics_helpers():
    """The tiny VGG16 pickle writers of the metric tests (imported, not copied): from
    tests/metrics/metrics_helpers.py when they live there, else from that directory's conftest."""
    import sys

    d = str(pathlib.Path(__file__).resolve().parents[1] / "metrics")
    added = d not in sys.path
    if added:
        sys.path.insert(0, d)
    try:
        try:
            import metrics_helpers

            if hasattr(metrics_helpers, "make_vgg_variables") and hasattr(metrics_helpers, "write_dnnlib_pickle"):
                return metrics_helpers
        except ImportError:
            pass
        spec = importlib.util.spec_from_file_location("sg2ada_tests_metrics_conftest", os.path.join(d, "conftest.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        if added:
            sys.path.remove(d)


@pytest.fixture(scope="module")
def tiny_lpips_pickle(tmp_path_factory):
    helpers = _metrics_helpers()
    path = tmp_path_factory.mktemp("vgg") / "vgg16_zhang_perceptual.pkl"
    helpers.write_dnnlib_pickle(path, "vgg16_perceptual_distance", helpers.make_vgg_variables(seed=2, fc=False))
    return str(path)


def test_project_cli(tiny_snapshot, tiny_lpips_pickle, tmp_path, capsys):
    G = common.load_generator(tiny_snapshot)
    target = projector.synth_uint8(G, gen.map_seeds(G, [3]))[0]
    # a non-square photo larger than G: centre crop + resize must give back the image
    photo = np.zeros([48, 64, 3], np.uint8)
    photo[:, 8:56] = np.array(PIL.Image.fromarray(target).resize((48, 48), PIL.Image.NEAREST))
    PIL.Image.fromarray(photo).save(tmp_path / "photo.png")
    out = tmp_path / "proj"
    argv = ["project", "--network", tiny_snapshot, "--target", str(tmp_path / "photo.png"), "--num-steps", "20",
            "--w-avg-samples", "500", "--feature-net", tiny_lpips_pickle, "--out", str(out)]
    try:
        import imageio_ffmpeg  # noqa: F401

        argv.append("--save-video")
        video = True
    except ImportError:
        video = False
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "step    20/20" in captured.out
    files = set(os.listdir(out))
    assert {"projected_w.npz", "proj.png", "target.png"} <= files
    assert ("proj.mp4" in files) == video
    with np.load(out / "projected_w.npz") as f:
        assert list(f.files) == ["w"]
        w = f["w"]
    assert w.shape == (1, G.num_ws, G.w_dim) and w.dtype == np.float32
    assert np.allclose(w, w[:, :1])  # one w broadcast to all ws
    with PIL.Image.open(out / "proj.png") as im:
        assert im.size == (16, 16)
    # proj.png is what generate --projected-w renders (the network's own const noise)
    run = main(["generate", "--network", tiny_snapshot, "--projected-w", str(out / "projected_w.npz"),
                "--outdir", str(tmp_path / "again")])
    assert run == 0
    a = np.array(PIL.Image.open(out / "proj.png")).astype(int)
    b = np.array(PIL.Image.open(tmp_path / "again" / "proj00.png")).astype(int)
    assert np.abs(a - b).max() <= 1  # NVIDIA's projector and generate quantise differently (by <= 1)


def test_project_cli_errors(tiny_snapshot, tiny_lpips_pickle, tmp_path, capsys):
    (tmp_path / "notimage.png").write_text("hello")
    base = ["project", "--network", tiny_snapshot, "--feature-net", tiny_lpips_pickle, "--out", str(tmp_path / "o")]
    for extra, needle in (
        (["--target", str(tmp_path / "notimage.png")], "not a readable image"),
        (["--target", str(tmp_path / "missing.png")], "no such file"),
        (["--target", str(tmp_path / "notimage.png"), "--num-steps", "0"], "--num-steps"),
    ):
        assert main(base + extra) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    PIL.Image.fromarray(np.zeros([8, 8, 3], np.uint8)).save(tmp_path / "ok.png")
    assert main(["project", "--network", tiny_snapshot, "--target", str(tmp_path / "ok.png"), "--feature-net",
                 str(tmp_path / "nope.pkl"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--feature-net" in err[0]


def test_load_target_above_pils_bomb_limit(tmp_path, monkeypatch):
    # PIL's limit and the decoder's shrunk together, so a 256x256 target stands for a 20000x20000 one.
    from sg2ada.data import images

    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 64 * 64)
    monkeypatch.setattr(images, "LARGE_IMAGE_PIXELS", 32 * 32)
    img = np.zeros([256, 256, 3], np.uint8)
    img[:, 128:] = 200
    PIL.Image.fromarray(img).save(tmp_path / "big.jpg", quality=95)
    t = projector.load_target(str(tmp_path / "big.jpg"), 8)  # decoded downscaled, not refused
    assert t.shape == (8, 8, 3) and t[:, :3].max() < 10 and t[:, 5:].min() > 190

    monkeypatch.setattr(images, "MAX_DECODE_PIXELS", 16 * 16)
    PIL.Image.fromarray(img).save(tmp_path / "big.png")
    with pytest.raises(UserError, match=r"big.png: not a readable image: declares 256x256 pixels, more than") as e:
        projector.load_target(str(tmp_path / "big.png"), 8)
    assert "\n" not in str(e.value)
