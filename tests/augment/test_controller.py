"""Tests of the ADA controller (paper Sec. 3): p update arithmetic against hand-computed sequences,
floor at 0, p_max, resume rate, fixed/noaug modes, checkpointing, and r_t reduction across two
MirroredStrategy replicas."""

from __future__ import annotations

import pytest
import tensorflow as tf

from sg2ada.augment import ADA_KIMG_DEFAULT, ADA_KIMG_RESUME, AdaController
from sg2ada.errors import UserError


def _logits(pos, neg):
    return tf.constant([1.0] * pos + [-1.0] * neg)


def test_defaults():
    c = AdaController()
    assert c.mode == "ada" and c.target == 0.6 and c.interval == 4 and c.kimg == ADA_KIMG_DEFAULT == 500
    assert AdaController(resuming=True).kimg == ADA_KIMG_RESUME == 100
    assert AdaController(resuming=True, kimg=250).kimg == 250
    assert float(c.p) == 0.0 and c.p_max is None and c.enabled


def test_hand_computed_sequence():
    # batch 64, interval 4, kimg 500: one adjustment moves p by 64 * 4 / 500000 = 0.000512.
    step = 64 * 4 / 500_000
    c = AdaController("ada", batch_size=64)
    # Signs of the reals in each 4-iteration interval, r_t, and p (in steps) after the interval:
    #   r_t = 0.8 > 0.6 up; 0.8 up; -0.6 down; 0.8 up; 0.6 = target stays; 0.2 down; -1 down;
    #   -1 down but floored at 0.
    intervals = [(9, 1), (9, 1), (2, 8), (9, 1), (8, 2), (6, 4), (0, 10), (0, 10)]
    expected_steps = [1, 2, 1, 2, 2, 1, 0, 0]
    history = []
    for (pos, neg), steps in zip(intervals, expected_steps):
        for _ in range(4):
            c.accumulate(_logits(pos, neg))
            history.append(float(c.update()))
        assert float(c.p) == pytest.approx(steps * step, abs=1e-9)
        assert float(c.last_rt) == pytest.approx((pos - neg) / (pos + neg))
        assert float(c.signs_count) == 0 and float(c.signs_sum) == 0
    # p only moves on every 4th iteration.
    assert history[:4] == [0.0, 0.0, 0.0, pytest.approx(step)]


def test_floor_at_zero_and_accumulates_across_calls():
    c = AdaController(batch_size=1000, kimg=1, p=0.0)  # step = 1000*4/1000 = 4 (huge, to hit the floor)
    for _ in range(4):
        c.accumulate(_logits(0, 5))
        c.update()
    assert float(c.p) == 0.0
    # Signs of several D passes in one interval are pooled: 3 passes with r = 1, 1 with r = -1.
    c = AdaController(batch_size=8, kimg=1)  # step 0.032
    for i in range(4):
        c.accumulate(_logits(4, 0) if i < 3 else _logits(0, 4))
        c.update()
    assert float(c.last_rt) == pytest.approx(0.5) and float(c.p) == 0.0  # 0.5 < 0.6: down, floored
    c2 = AdaController(batch_size=8, kimg=1, p=0.5)
    for i in range(4):
        c2.accumulate(_logits(4, 0))
        c2.accumulate(_logits(3, 1))
        c2.update()
    assert float(c2.last_rt) == pytest.approx(0.75) and float(c2.p) == pytest.approx(0.532)


def test_no_data_no_change_and_p_max():
    c = AdaController(batch_size=100, kimg=1, p=0.5)
    for _ in range(8):
        c.update()
    assert float(c.p) == 0.5
    c = AdaController(batch_size=100, kimg=1, p=0.5, p_max=0.7)  # step 0.4
    for _ in range(4):
        c.accumulate(_logits(10, 0))
        c.update()
    assert float(c.p) == pytest.approx(0.7)


def test_resume_rate():
    c = AdaController(batch_size=32, resuming=True)
    for _ in range(4):
        c.accumulate(_logits(5, 0))
        c.update()
    assert float(c.p) == pytest.approx(32 * 4 / 100_000)


def test_fixed_and_noaug_modes():
    c = AdaController("fixed", p=0.3, batch_size=64)
    for _ in range(8):
        c.accumulate(_logits(10, 0))
        c.update()
    assert float(c.p) == pytest.approx(0.3) and float(c.signs_count) == 0 and c.enabled
    assert not AdaController("fixed", p=0.0).enabled
    n = AdaController("noaug")
    assert float(n.p) == 0.0 and not n.enabled
    with pytest.raises(UserError, match="--p"):
        AdaController("fixed")
    with pytest.raises(UserError, match="noaug"):
        AdaController("noaug", p=0.2)
    with pytest.raises(UserError, match="--aug"):
        AdaController("adaptive")
    with pytest.raises(UserError, match="--p"):
        AdaController("fixed", p=1.5)


def test_update_inside_tf_function():
    c = AdaController(batch_size=64)

    @tf.function
    def it(logits):
        c.accumulate(logits)
        return c.update()

    for _ in range(4):
        p = it(_logits(10, 0))
    assert float(p) == pytest.approx(64 * 4 / 500_000)


def test_checkpoint_roundtrip(tmp_path):
    c = AdaController(batch_size=64, p=0.25)
    c.accumulate(_logits(3, 1))
    c.update()
    path = tf.train.Checkpoint(ada=c).save(str(tmp_path / "ckpt"))
    d = AdaController("fixed", p=0.9, batch_size=64)
    tf.train.Checkpoint(ada=d).restore(path).assert_existing_objects_matched()
    assert float(d.p) == 0.25 and float(d.signs_sum) == 2 and float(d.signs_count) == 4
    assert int(d.num_iter) == 1 and d.state_mode() == "ada"


def test_mirrored_strategy_reduces_signs_across_replicas():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (tests/conftest.py)")
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    with strategy.scope():
        c = AdaController(batch_size=8, kimg=1)  # step 0.032
    per_replica = strategy.experimental_distribute_values_from_function(
        lambda ctx: _logits(4, 0) if ctx.replica_id_in_sync_group == 0 else _logits(1, 3)
    )

    @tf.function
    def step(logits):
        strategy.run(c.accumulate, args=(logits,))

    @tf.function
    def step_partial(logits):
        parts = strategy.run(c.signs_partial, args=(logits,))
        c.add_signs(strategy.reduce(tf.distribute.ReduceOp.SUM, parts, axis=None))

    def local(v):
        return [float(x) for x in strategy.experimental_local_results(v.value)]

    step(per_replica)
    # Replica 0: +4 of 4, replica 1: -2 of 4 -> sum 2, count 8 on every replica's copy.
    assert local(c.signs_sum) == [2.0, 2.0] and local(c.signs_count) == [8.0, 8.0]
    step_partial(per_replica)
    assert local(c.signs_sum) == [4.0, 4.0] and local(c.signs_count) == [16.0, 16.0]
    for _ in range(4):
        c.update()
    assert local(c.last_rt) == [0.25, 0.25]  # (4 - 2) * 2 / 16 over both replicas and both passes
    assert local(c.p) == [0.0, 0.0] and local(c.signs_count) == [0.0, 0.0]
