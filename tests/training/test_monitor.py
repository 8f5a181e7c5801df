"""Stats aggregation, the snapshot grid shape, the interpolation strip, and what lands in stats.jsonl
(kept or dropped on resume) and the TensorBoard event files."""

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


def test_monitor_drops_stats_lines_past_the_resumed_checkpoint(tmp_path):
    """A run killed after its last checkpoint left stats lines of ticks it will train again (and maybe a
    half-written line): reopening at the checkpoint's cur_nimg drops them and keeps the rest as they were."""
    def line(kimg, loss):
        return json.dumps({"Loss/G/loss": {"num": 4, "mean": loss, "std": 0.1},
                           "Progress/kimg": {"num": 1, "mean": kimg, "std": 0.0}, "timestamp": 1.5}) + "\n"

    kept = line(0.004, 0.7) + line(0.012, 0.65) + line(0.024, 1 / 3)
    path = tmp_path / mon.STATS_FILE
    path.write_text(kept + line(0.028, 0.6) + line(0.04, 0.5) + '{"Loss/G/loss": {"num": 4, "me')
    m = mon.Monitor(str(tmp_path), cur_nimg=24)
    assert path.read_text() == kept
    assert [r["Loss/G/loss"]["mean"] for r in m.history] == [0.7, 0.65, 1 / 3]  # what a resumed run builds on
    m.write_tick({"Progress/kimg": {"num": 1, "mean": 0.028, "std": 0.0}}, cur_nimg=28, timestamp=2.0)
    m.close()
    lines = path.read_text().splitlines(keepends=True)
    assert "".join(lines[:3]) == kept and json.loads(lines[3])["timestamp"] == 2.0

    mon.Monitor(str(tmp_path), cur_nimg=1000).close()  # nothing past the checkpoint: nothing changes
    assert path.read_text().splitlines(keepends=True) == lines


def test_interpolation_strip_runs_from_one_latent_to_the_other():
    from sg2ada.networks import Generator, GeneratorConfig, MappingConfig
    from sg2ada.networks.generator import generate_images

    G = Generator(GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, channel_base=64, channel_max=16,
                                  mapping=MappingConfig(num_layers=1)), name="G_ema")
    z = np.random.RandomState(0).standard_normal([2, 8]).astype(np.float32)
    ends = generate_images(G, z, np.zeros([2, 0], np.float32))
    assert not np.allclose(ends[0], ends[1], atol=1e-3)  # the latents matter, so the ends below mean something
    strip = mon.interpolation_strip(G, z[0], z[1], np.zeros([0], np.float32), steps=4)
    assert strip.shape == (4, 8, 8, 3)
    np.testing.assert_allclose(strip[0], ends[0], atol=1e-5)
    np.testing.assert_allclose(strip[-1], ends[1], atol=1e-5)
    assert not np.allclose(strip[1], strip[0], atol=1e-4) and not np.allclose(strip[1], strip[-1], atol=1e-4)
    through_z = mon.interpolation_strip(G, z[0], z[1], np.zeros([0], np.float32), steps=4, space="z")
    np.testing.assert_allclose(through_z[[0, -1]], strip[[0, -1]], atol=1e-5)  # the same ends...
    assert not np.allclose(through_z[1], strip[1], atol=1e-4)  # ...by another path
