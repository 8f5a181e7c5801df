"""Stats aggregation, image grids, and what lands in stats.jsonl and the TensorBoard event files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sg2ada.training import monitor as mon


def read_events(logdir):
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.TENSORS: 0, ea.IMAGES: 0, ea.SCALARS: 0})
    acc.Reload()
    return acc


def test_collector_matches_numpy():
    c = mon.StatsCollector()
    vals = [1.0, 2.0, np.array([3.0, 4.0]), 10.0]
    for v in vals:
        c.report("Loss/G/loss", v)
    c.report("Loss/D/loss", float("nan"))
    flat = np.array([1, 2, 3, 4, 10], np.float64)
    d = c.as_dict()
    assert d["Loss/G/loss"]["num"] == 5
    assert d["Loss/G/loss"]["mean"] == pytest.approx(flat.mean())
    assert d["Loss/G/loss"]["std"] == pytest.approx(flat.std())
    assert math.isnan(d["Loss/D/loss"]["mean"])  # a NaN must show, not vanish
    c.reset()
    assert c.as_dict() == {}


def test_grid_shape_is_nvidias_canvas():
    assert mon.grid_shape(256) == (30, 16)
    assert mon.grid_shape(1024) == (7, 4)
    assert mon.grid_shape(32) == (32, 32)
    gw, gh = mon.grid_shape(32, max_images=64)
    assert gw * gh <= 64 and gw >= gh


def test_image_grid_places_images_row_major():
    imgs = np.zeros([6, 2, 3, 1], np.uint8)
    for i in range(6):
        imgs[i] = i * 10
    g = mon.image_grid(imgs, (3, 2))
    assert g.shape == (4, 9, 1)
    assert g[0, 0, 0] == 0 and g[0, 3, 0] == 10 and g[0, 6, 0] == 20 and g[2, 0, 0] == 30 and g[3, 8, 0] == 50
    f = mon.image_grid(np.full([2, 2, 2, 3], -1.0), (2, 2))  # float [-1,1] -> uint8, short -> padded
    assert f.dtype == np.uint8 and f.shape == (4, 4, 3) and f.max() == 0


def test_monitor_writes_jsonl_and_tensorboard(tmp_path):
    m = mon.Monitor(str(tmp_path))
    c = mon.StatsCollector()
    c.update({"Loss/G/loss": 1.5, "Progress/kimg": 0.004})
    m.write_hparams({"cfg": "tiny", "gamma": 0.1, "nested": {"x": [1, 2]}, "none": None})
    m.write_tick(c.as_dict(), cur_nimg=4, timestamp=123.0)
    c.reset()
    c.update({"Loss/G/loss": 0.5})
    m.write_tick(c.as_dict(), cur_nimg=4004, metrics={"fid50k_full": 12.5})
    m.write_image("Images/fakes", np.zeros([8, 16, 3], np.uint8), cur_nimg=4004)
    m.close()

    lines = (tmp_path / mon.STATS_FILE).read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["timestamp"] == 123.0
    assert first["Loss/G/loss"] == {"num": 1, "mean": 1.5, "std": 0.0}

    acc = read_events(tmp_path)
    tags = acc.Tags()
    assert {"Loss/G/loss", "Progress/kimg", "Metrics/fid50k_full", "Images/fakes"} <= set(tags["tensors"])
    steps = [e.step for e in acc.Tensors("Loss/G/loss")]
    assert steps == [4, 4004]  # step axis = cur_nimg
    vals = [float(np.asarray(__import__("tensorflow").make_ndarray(e.tensor_proto))) for e in acc.Tensors("Loss/G/loss")]
    assert vals == pytest.approx([1.5, 0.5])
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["cfg"].string_value == "tiny" and hparams["gamma"].number_value == pytest.approx(0.1)
    assert hparams["nested.x"].string_value == "[1, 2]" and hparams["none"].string_value == "none"


def test_non_chief_writes_nothing(tmp_path):
    m = mon.Monitor(str(tmp_path), chief=False)
    m.write_tick({"a": {"num": 1, "mean": 1.0, "std": 0.0}}, 1)
    m.write_image("x", np.zeros([2, 2, 3], np.uint8), 1)
    m.write_hparams({"a": 1})
    m.close()
    assert list(tmp_path.iterdir()) == []


def test_cpu_mem_is_plausible():
    assert 0.01 < mon.cpu_mem_gb() < 64
    assert mon.peak_gpu_mem_gb() is None  # CPU-only test machines


def test_generate_and_strip_from_a_fake_generator():
    from test_loop_fakes import FakeTrainer

    t = FakeTrainer()
    z = np.random.RandomState(0).standard_normal([5, 4]).astype(np.float32)
    imgs = mon.generate_images(t.G_ema, z, np.zeros([5, 0], np.float32), batch_size=2)
    assert imgs.shape == (5, 8, 8, 3)
    strip = mon.interpolation_strip(t.G_ema, z[0], z[1], np.zeros([0], np.float32), steps=4)
    assert strip.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(strip[0], imgs[0], atol=1e-5)
    np.testing.assert_allclose(strip[-1], imgs[1], atol=1e-5)
