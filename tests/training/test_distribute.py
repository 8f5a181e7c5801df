"""Distribution and accumulation invariance of one Trainer iteration: on 2 replicas, on 1 replica in
one pass, and on 1 replica in 2 accumulation rounds, the same global batch gives the same weights,
G_ema, pl_mean and statistics (all four phases run at iteration 0), G's noise inputs and the
augment pipe included. The whole CLI path on every cluster shape is tests/training/test_cluster_shapes.py."""

import numpy as np
import pytest
import tensorflow as tf

from sg2ada.training.distribute import make_strategy
from sg2ada.training.options import resolve_options
from sg2ada.training.trainer import Trainer

BATCH = 8


def _opts(batch_gpu, num_replicas=1, **kw):
    # D's minibatch-stddev groups lie within a device's batch (as NVIDIA's): --mbstd 1 makes D
    # per-sample, so that the per-device batch may differ between the runs compared.
    return resolve_options(resolution=8, img_channels=3, label_dim=0, cfg="tiny", batch=BATCH, batch_gpu=batch_gpu,
                           num_replicas=num_replicas, aug="fixed", p=0.5, mbstd=1, cbase=128, cmax=16, xla=False,
                           seed=3, **kw)


def _reals():
    rng = np.random.RandomState(0)
    return rng.uniform(-1, 1, [BATCH, 8, 8, 3]).astype(np.float32), np.zeros([BATCH, 0], np.float32)


def _plain_iter(batch_gpu):
    img, c = _reals()
    while True:
        for i in range(0, BATCH, batch_gpu):
            yield tf.constant(img[i:i + batch_gpu]), tf.constant(c[i:i + batch_gpu])


def _state(t: Trainer):
    out = {}
    for prefix, net in (("G", t.G), ("D", t.D), ("G_ema", t.G_ema)):
        out.update({f"{prefix}/{n}": v.numpy().copy() for n, v in net.named_variables().items()})
    out["pl_mean"] = t.pl_mean.numpy()
    return out


def _run(opts, strategy, it):
    t = Trainer(opts, strategy)
    before = _state(t)
    stats = {k: float(v) for k, v in t.step(it).items()}
    return t, before, _state(t), stats


def _compare(a, b, lr):
    sa, sb = a[2], b[2]
    for k in sa:
        # Adam's first step is ~lr*sign(g): allow a tiny fraction of lr for summation-order noise.
        np.testing.assert_allclose(sa[k], sb[k], rtol=1e-4, atol=lr * 1e-3, err_msg=k)
    for k, v in a[3].items():
        assert b[3][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


@pytest.mark.slow
def test_two_replicas_equal_one_replica_and_accumulation():
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) < 2:
        pytest.skip("needs 2 logical CPU devices (tests/conftest.py sets them up)")
    one = tf.distribute.MirroredStrategy([cpus[0].name])
    two = tf.distribute.MirroredStrategy([cpus[0].name, cpus[1].name])

    ref = _run(_opts(BATCH), one, _plain_iter(BATCH))  # 1 replica, one pass of 8
    t0 = ref[0]
    assert t0.due_phases(0) == tuple(t0.phases) and len(t0.phases) == 4
    assert set(ref[3]) >= {"Loss/G/loss", "Loss/pl_penalty", "Loss/r1_penalty", "Loss/D/loss"}
    changed = sum(not np.array_equal(ref[1][k], ref[2][k]) for k in ref[1] if k.startswith(("G/", "D/")))
    assert changed > 10

    # 2 replicas x 4 images, one round.
    img, c = _reals()
    ds = tf.data.Dataset.from_tensors((img, c)).repeat()
    t2 = Trainer(_opts(BATCH // 2, num_replicas=2), two)
    assert t2.num_replicas == 2 and t2.num_rounds == 1
    _load_state(t2, ref[1])
    stats = {k: float(v) for k, v in t2.step(iter(two.experimental_distribute_dataset(ds))).items()}
    _compare(ref, (t2, None, _state(t2), stats), t0.opts.glr)

    # 1 replica, 2 accumulation rounds of 4.
    t3 = Trainer(_opts(BATCH // 2), one)
    assert t3.num_rounds == 2
    _load_state(t3, ref[1])
    stats = {k: float(v) for k, v in t3.step(_plain_iter(BATCH // 2)).items()}
    _compare(ref, (t3, None, _state(t3), stats), t0.opts.glr)


def _load_state(t: Trainer, state: dict):
    for prefix, net in (("G", t.G), ("D", t.D), ("G_ema", t.G_ema)):
        for n, v in net.named_variables().items():
            v.assign(state[f"{prefix}/{n}"])


def test_make_strategy_default_is_mirrored_one_replica(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    s = make_strategy("auto")
    assert isinstance(s, tf.distribute.MirroredStrategy) and s.num_replicas_in_sync == 1
