"""Trainer: a short real run (real networks, real AugmentPipe, ADA), the lazy schedule as it
actually runs, G_ema/w_avg/ADA bookkeeping, checkpoint round trip, Freeze-D, and the scaling of the
path-length term (gain 4 x pl_weight 2 over the PL batch: not silently halved)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from sg2ada.training.distribute import base_seed
from sg2ada.training.options import resolve_options
from sg2ada.training.trainer import Trainer, ema_beta, nan_to_num


def _reals(res, n, seed=0):
    rng = np.random.RandomState(seed)
    img = rng.uniform(-1, 1, [n, res, res, 3]).astype(np.float32)
    while True:
        yield tf.constant(img), tf.zeros([n, 0])


def _one_replica():
    return tf.distribute.MirroredStrategy([tf.config.list_logical_devices("CPU")[0].name])


def _named(net):
    return {n: v.numpy().copy() for n, v in net.named_variables().items()}


def test_nan_to_num_like_nvidia():
    g = tf.constant([np.nan, np.inf, -np.inf, 3e6, -2.0])
    np.testing.assert_array_equal(nan_to_num(g).numpy(), [0, 1e5, -1e5, 3e6, -2.0])


@pytest.mark.slow
def test_tiny_16px_20_iterations_with_ada():
    opts = resolve_options(resolution=16, img_channels=3, label_dim=0, cfg="tiny", batch=4, batch_gpu=4,
                           target=0.0, ada_kimg=0.01, seed=1)  # a fast, low-target ADA so p moves
    t = Trainer(opts, _one_replica())
    assert t.augment_pipe is not None and t.num_rounds == 1
    t.build()
    ckpt = tf.train.Checkpoint(**t.checkpoint_items())
    g0, d0 = _named(t.G), _named(t.D)
    it = _reals(16, 4)
    ran = []
    p_values = []
    for i in range(20):
        if i == 5:
            g_prev, e_prev = _named(t.G), _named(t.G_ema)
        stats = {k: float(v) for k, v in t.step(it).items()}
        assert all(np.isfinite(v) for v in stats.values()), stats
        ran.append(("Loss/pl_penalty" in stats, "Loss/r1_penalty" in stats))
        p_values.append(stats["Progress/augment"])
        if i == 0:  # ramp-up: beta = 0 at cur_nimg 0, so G_ema is a copy of G
            for n, v in t.G.named_variables().items():
                np.testing.assert_array_equal(v.numpy(), t.G_ema.named_variables()[n].numpy(), err_msg=n)
        if i == 5:
            beta = ema_beta(4, 20, opts.ema_kimg, opts.ema_rampup)
            assert 0 < beta < 1
            g_new, e_new = _named(t.G), _named(t.G_ema)
            for n in g_new:
                if t.G.named_variables()[n].trainable:
                    np.testing.assert_allclose(e_new[n], g_new[n] + (e_prev[n] - g_new[n]) * beta, rtol=1e-5,
                                               atol=1e-7, err_msg=n)
                else:  # buffers (w_avg, noise constants) are copied
                    np.testing.assert_array_equal(e_new[n], g_new[n], err_msg=n)
            assert not np.array_equal(g_new["dlatent_avg"], g_prev["dlatent_avg"])  # w_avg tracked
    # Greg every 4 iterations, Dreg every 16, both at 0.
    assert [i for i, (pl, _) in enumerate(ran) if pl] == [0, 4, 8, 12, 16]
    assert [i for i, (_, r1) in enumerate(ran) if r1] == [0, 16]
    assert int(t.cur_nimg.numpy()) == 80 and int(t.batch_idx.numpy()) == 20
    assert float(t.pl_mean.numpy()) > 0
    # ADA: p changes only every 4 iterations, by 4*4/10 = 1.6 per update (clamped at 0).
    assert max(p_values) > 0
    assert all(p_values[i] == p_values[i - 1] for i in range(1, 20) if (i + 1) % 4), p_values
    g1, d1 = _named(t.G), _named(t.D)
    assert sum(not np.array_equal(g0[n], g1[n]) for n in g0 if t.G.named_variables()[n].trainable) > 10
    assert sum(not np.array_equal(d0[n], d1[n]) for n in d0) > 10

    # Checkpoint round trip: restore, redo one iteration, same result.
    path = ckpt.write("/tmp/sg2ada_trainer_test/ckpt")  # noqa: S108 - test scratch
    before = (_named(t.G), float(t.augment_p.numpy()), int(t.cur_nimg.numpy()))
    t.step(it)
    after = _named(t.G)
    ckpt.read(path).assert_consumed()
    assert int(t.cur_nimg.numpy()) == before[2] and float(t.augment_p.numpy()) == before[1]
    for n, v in before[0].items():
        np.testing.assert_array_equal(t.G.named_variables()[n].numpy(), v)
    t.step(it)
    for n, v in after.items():
        np.testing.assert_allclose(t.G.named_variables()[n].numpy(), v, rtol=1e-6, atol=1e-7, err_msg=n)


def _small_opts(**kw):
    o = resolve_options(resolution=8, img_channels=3, label_dim=0, cfg="tiny", batch=4, batch_gpu=4, aug="noaug",
                        cbase=128, cmax=16, xla=False, **kw)
    return o.replace(G=dataclasses.replace(o.G, use_noise=False))


@pytest.mark.slow
def test_freezed_d_layers_stay_bit_identical():
    t = Trainer(_small_opts(freezed=2), _one_replica())
    assert [n.rsplit("/", 1)[0] for n in t.frozen_D_names] == ["8x8/Conv0"] * 2 + ["8x8/FromRGB"] * 2
    d0 = _named(t.D)
    it = _reals(8, 4)
    for _ in range(2):
        t.step(it)
    d1 = _named(t.D)
    for n in d0:
        if n.startswith(("8x8/FromRGB/", "8x8/Conv0/")):
            np.testing.assert_array_equal(d0[n], d1[n], err_msg=n)
        else:
            assert not np.array_equal(d0[n], d1[n]), n


def test_non_finite_networks_names_each_network_with_a_nan_or_inf_weight():
    t = Trainer(_small_opts(), _one_replica())
    assert t.non_finite_networks() == []
    d_weight = next(v for n, v in t.D.named_variables().items() if n.endswith("/weight"))
    d_weight.assign(tf.fill(d_weight.shape, float("nan")))
    assert t.non_finite_networks() == ["D"]
    g_weight = next(v for n, v in t.G_ema.named_variables().items() if n.endswith("/weight"))
    g_weight.assign(tf.fill(g_weight.shape, float("inf")))
    assert t.non_finite_networks() == ["D", "G_ema"]


def test_path_length_term_scaling():
    """The Greg gradient is that of gain * mean over the PL batch of pl_weight * (len - pl_mean)^2."""
    opts = _small_opts()
    t = Trainer(opts, _one_replica())
    greg = [p for p in t.phases if p.name == "Greg"][0]
    assert greg.interval == 4 and opts.pl_weight == 2 and t.pl_count == 2
    seed = base_seed(0, 0)
    real = tf.zeros([4, 8, 8, 3])
    c = tf.zeros([4, 0])
    sample_idx = tf.range(4)
    pl_idx = tf.range(2)
    pl_mean = tf.constant(0.5)
    def body():
        grads, stats, extras = t._grad_fn(greg, True)(real, c, seed, sample_idx, pl_idx, pl_mean)
        loss = t._loss()
        z, cc, mix_z, cutoff, noise_seed, _ = t._draws(greg, seed, pl_idx, pl=True)
        noise = t._pl_noise(greg, seed, pl_idx)
        with tf.GradientTape() as tape:
            lengths, _ = loss.G_pl_lengths(z, cc, mix_z, cutoff, noise_seed, noise)
            mu = 0.5 + (tf.reduce_mean(tf.stop_gradient(lengths)) - 0.5) * 0.01
            expected_loss = 4 * tf.reduce_mean(2 * tf.square(lengths - mu))
        expected = tape.gradient(expected_loss, t.G_vars)
        expected = [tf.zeros_like(v) if e is None else e for e, v in zip(expected, t.G_vars)]
        return grads, stats, extras, expected, lengths, mu

    grads, stats, extras, expected, lengths, mu = t.strategy.run(body)
    assert float(extras["pl_mean"]) == pytest.approx(float(mu))
    np.testing.assert_allclose(stats["Loss/pl_penalty"][0].numpy() / 2, np.mean(np.square(lengths - mu)), rtol=1e-5)
    checked = 0
    for g, e, v in zip(grads, expected, t.G_vars):
        # float32 roundoff relative to each tensor's own scale (the two sides sum in different orders)
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-4, atol=1e-5 * float(np.abs(e.numpy()).max()), err_msg=v.path)
        checked += int(np.any(e.numpy()))
    assert checked > 5


def test_fake_labels_come_from_the_dataset_labels():
    o = resolve_options(resolution=8, img_channels=3, label_dim=3, cond=True, cfg="tiny", batch=64, batch_gpu=64,
                        aug="noaug", cbase=128, cmax=16, xla=False)  # 64 samples: enough to see the proportions
    assert o.c_dim == 3 and o.G.c_dim == 3 and o.D.c_dim == 3
    pool = np.eye(3, dtype=np.float32)[[0, 2, 2, 2]]  # class 1 never occurs
    t = Trainer(o, _one_replica(), labels=pool)
    ph = t.phases[0]
    seed = base_seed(0, 0)

    def draw(idx):
        return t._draws(ph, seed, idx)[1]

    c = t.strategy.run(draw, args=(tf.range(64),)).numpy()
    assert c.shape == (64, 3) and set(map(tuple, c.tolist())) == {(1, 0, 0), (0, 0, 1)}
    assert 0.5 < c[:, 2].mean() < 0.95  # drawn in proportion to the dataset's labels
    # Per-sample: the label of global sample i does not depend on the batch it is drawn in.
    np.testing.assert_array_equal(t.strategy.run(draw, args=(tf.range(4, 8),)).numpy(), c[4:8])

