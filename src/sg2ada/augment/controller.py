"""ADA controller: tunes the augmentation probability p from the overfitting heuristic (ADA paper, Sec. 3).

r_t = E[sign(D(aug(x_real)))] measures how confidently D separates the training reals from fakes
(0 = no overfitting, 1 = complete overfitting). The controller accumulates the sum of signs and their
count over every D evaluation on reals, on every replica, since the last adjustment; every
`interval` iterations it moves p by sign(r_t - target) * batch * interval / (kimg * 1000), so p can
rise from 0 to 1 in `kimg` thousand images, and clamps p at 0 (and at `p_max` when given). Defaults:
target 0.6, interval 4, kimg 500 (100 when resuming from a transfer-learning source, Sec. 4).

Modes: `ada` (adaptive), `fixed` (constant p; accumulate/update are no-ops), `noaug` (p = 0 and the
pipe is not run at all: `enabled` is False).

Distribution (tf.distribute), two ways, pick one:
1. In replica context (inside `strategy.run`), call `accumulate(real_logits)`: the accumulators are
   SUM-aggregated variables, so each replica's contribution is all-reduced into the shared total.
2. Or compute `signs_partial(real_logits)` ([sum, count]) inside `strategy.run`, reduce it with
   `strategy.reduce(SUM, ...)` yourself, and call `add_signs(total)` in cross-replica context.
Then call `update(batch_size)` once per training iteration in cross-replica context (outside
`strategy.run`, or eagerly); `batch_size` is the global batch of the iteration.

All state (p, sign sum, sign count, iteration counter, last r_t, mode) is held in Keras variables
created with `add_weight`, so `tf.train.Checkpoint(ada=controller)` saves and restores it.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from sg2ada.errors import UserError

MODES = ("ada", "fixed", "noaug")
ADA_KIMG_DEFAULT = 500
ADA_KIMG_RESUME = 100  # faster adaptation when starting from a transfer-learning source network
ADA_TARGET_DEFAULT = 0.6
ADA_INTERVAL_DEFAULT = 4


class AdaController(keras.layers.Layer):
    """Adaptive augmentation strength. See the module docstring for the distribution protocol."""

    def __init__(
        self,
        mode: str = "ada",
        *,
        p: float | None = None,
        target: float = ADA_TARGET_DEFAULT,
        interval: int = ADA_INTERVAL_DEFAULT,
        kimg: float | None = None,
        resuming: bool = False,
        p_max: float | None = None,
        batch_size: int | None = None,
        name: str = "ada",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if mode not in MODES:
            raise UserError(f"unknown augmentation mode --aug={mode}: choose one of {', '.join(MODES)}")
        if mode == "fixed" and p is None:
            raise UserError("--aug=fixed needs the augmentation probability: give --p (0..1)")
        if mode == "noaug":
            if p not in (None, 0, 0.0):
                raise UserError(f"--p={p} cannot be used with --aug=noaug: drop --p or use --aug=fixed")
            p = 0.0
        p = 0.0 if p is None else float(p)
        if not (0.0 <= p <= 1.0):
            raise UserError(f"--p={p} is out of range: the augmentation probability must be in [0, 1]")
        if not (-1.0 <= float(target) <= 1.0):
            raise UserError(f"--target={target} is out of range: r_t lies in [-1, 1] (default 0.6)")
        if int(interval) < 1 or int(interval) != interval:
            raise UserError(f"ADA interval {interval} must be a positive integer (default 4)")
        if kimg is None:
            kimg = ADA_KIMG_RESUME if resuming else ADA_KIMG_DEFAULT
        if not (float(kimg) > 0 and math.isfinite(float(kimg))):
            raise UserError(f"ADA kimg {kimg} must be a positive number (default 500, 100 when resuming)")
        if p_max is not None and not (0.0 < float(p_max) <= 1.0):
            raise UserError(f"--p-max={p_max} is out of range: give a value in (0, 1] or leave it unset")
        if p_max is not None and p > p_max:
            raise UserError(f"--p={p} exceeds --p-max={p_max}: lower --p or raise --p-max")

        self.mode = mode
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self.p_max = None if p_max is None else float(p_max)
        self.batch_size = batch_size
        self.initial_p = p

        def var(vname, value, dtype="float32", aggregation="only_first_replica"):
            return self.add_weight(
                shape=(),
                initializer=keras.initializers.Constant(value),
                dtype=dtype,
                trainable=False,
                aggregation=aggregation,
                name=vname,
            )

        self.p = var("p", p)
        # SUM aggregation: an assign_add in replica context adds the total over all replicas.
        self.signs_sum = var("signs_sum", 0.0, aggregation="sum")
        self.signs_count = var("signs_count", 0.0, aggregation="sum")
        self.num_iter = var("num_iter", 0, dtype="int64")
        self.last_rt = var("last_rt", 0.0)
        self.mode_code = var("mode", MODES.index(mode), dtype="int32")
        self.built = True

    # -------------------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the trainer should run the augmentation pipe at all (the reference builds no pipe
        for noaug, nor for a fixed p of 0)."""
        return self.mode == "ada" or (self.mode == "fixed" and self.initial_p > 0)

    def state_mode(self) -> str:
        """The mode stored in the (possibly restored) state; read eagerly, e.g. after a restore."""
        return MODES[int(keras.ops.convert_to_numpy(self.mode_code.value))]

    @staticmethod
    def signs_partial(real_logits) -> tf.Tensor:
        """[sum of sign(logits), number of logits] for one D pass on reals, as float32."""
        x = tf.cast(tf.reshape(real_logits, [-1]), tf.float32)
        return tf.stack([tf.reduce_sum(tf.sign(x)), tf.cast(tf.size(x), tf.float32)])

    def accumulate(self, real_logits):
        """Add the signs of a D pass on reals (safe in replica context: summed over replicas)."""
        if self.mode != "ada":
            return tf.no_op()
        part = self.signs_partial(real_logits)
        return tf.group(self.signs_sum.assign_add(part[0]), self.signs_count.assign_add(part[1]))

    def add_signs(self, partial):
        """Add an already reduced [sum, count] pair (cross-replica context)."""
        if self.mode != "ada":
            return tf.no_op()
        partial = tf.cast(partial, tf.float32)
        return tf.group(self.signs_sum.assign_add(partial[0]), self.signs_count.assign_add(partial[1]))

    def update(self, batch_size: int | None = None) -> tf.Tensor:
        """End of a training iteration (cross-replica context). Every `interval` iterations in ada
        mode: p += sign(r_t - target) * batch * interval / (kimg * 1000), clamped to [0, p_max], and
        the accumulators are reset. Returns the new p. Works eagerly and inside tf.function."""
        it = self.num_iter.assign_add(1)
        if self.mode != "ada":
            return tf.identity(self.p.value)
        batch = batch_size if batch_size is not None else self.batch_size
        if batch is None:
            raise ValueError("AdaController.update needs the global batch size (argument or constructor)")
        rate = float(batch) * self.interval / (self.kimg * 1000.0)
        due = tf.equal(it % self.interval, 0)
        count = self.signs_count.value
        has_data = count > 0
        rt = self.signs_sum.value / tf.maximum(count, 1.0)
        new_p = tf.maximum(self.p.value + tf.sign(rt - self.target) * rate, 0.0)
        if self.p_max is not None:
            new_p = tf.minimum(new_p, self.p_max)
        adjust = due & has_data
        p = tf.where(adjust, new_p, self.p.value)
        ops = [
            self.p.assign(p),
            self.last_rt.assign(tf.where(adjust, rt, self.last_rt.value)),
            self.signs_sum.assign(tf.where(due, 0.0, self.signs_sum.value)),
            self.signs_count.assign(tf.where(due, 0.0, self.signs_count.value)),
        ]
        with tf.control_dependencies(ops):
            return tf.identity(p)

    def stats(self) -> dict:
        """Scalars for logging, with the reference's names."""
        return {"Progress/augment": tf.identity(self.p.value)}

    def get_config(self):
        return {
            "mode": self.mode,
            "p": self.initial_p,
            "target": self.target,
            "interval": self.interval,
            "kimg": self.kimg,
            "p_max": self.p_max,
            "batch_size": self.batch_size,
            "name": self.name,
        }

    def call(self, *args, **kwargs):  # a state holder, not a layer one calls
        raise NotImplementedError("AdaController is not callable; use accumulate() and update()")
