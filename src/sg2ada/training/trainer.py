"""One StyleGAN2-ADA training iteration under tf.distribute: the phases Gmain, Greg, Dmain, Dreg
with lazy regularisation, gradient accumulation, Adam, G_ema, w_avg and pl_mean tracking and the
ADA heuristic.

Follows stylegan2-ada-pytorch `training/training_loop.py` (phase set-up with `mb_ratio`, the
accumulation rounds, nan_to_num before `opt.step()`, the G_ema half-life with ramp-up, the ADA
update every `ada_interval` iterations) and `training/loss.py` (see `sg2ada.training.loss`), with
the StyleGAN2 paper's lazy regularisation (Sec. 3.1, Appendix B) and the ADA paper's heuristic
(Sec. 3, Appendix C).

Design (see docs/design.md, training section):
- Per replica, each (phase, round) runs one compiled function (XLA when `opts.xla`) holding the
  forward pass and every tape, R1's and path length's inner tapes included. It returns gradients of
  per-sample losses summed and divided by the GLOBAL sample count, so the Keras optimizer's
  all-reduce SUM yields the global-batch mean gradient whatever the replica/round split.
- Optimizer steps, pl_mean/w_avg updates, G_ema and statistics run outside XLA.
- Every random draw is stateless, from (seed, iteration, phase, purpose, global sample index) for
  per-sample draws and (..., round, replica) for per-batch ones, so runs are reproducible and a
  sample's latent does not depend on which replica or round processes it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
import keras

from sg2ada.augment import AdaController, AugmentPipe
from sg2ada.data import LabelSampler
from sg2ada.errors import UserError
from sg2ada.networks import Discriminator, Generator
from sg2ada.ops.random import SampleSeed, per_sample_normal, stateless_uniform
from sg2ada.training import distribute as dist
from sg2ada.training.loss import StyleGAN2Loss, pl_noise_scale
from sg2ada.training.options import TrainingOptions, frozen_d_layers


class Phase(NamedTuple):
    name: str  # Gmain | Greg | Gboth | Dmain | Dreg | Dboth
    net: str  # 'G' | 'D'
    interval: int
    index: int  # position in NVIDIA's phase list: part of the seed derivation


def make_phases(G_reg_interval, D_reg_interval) -> list[Phase]:
    """NVIDIA's phase list: `<net>both` without lazy regularisation, else `<net>main` + `<net>reg`."""
    phases = []
    for net, interval in (("G", G_reg_interval), ("D", D_reg_interval)):
        if interval is None:
            phases.append(Phase(net + "both", net, 1, len(phases)))
        else:
            phases.append(Phase(net + "main", net, 1, len(phases)))
            phases.append(Phase(net + "reg", net, int(interval), len(phases)))
    return phases


def lazy_adam_params(lr, betas, reg_interval):
    """Lazy regularisation correction (StyleGAN2 Appendix B): with a reg phase every k iterations
    the optimizer sees k+1 steps per k iterations, so lr *= k/(k+1) and betas **= k/(k+1)."""
    if reg_interval is None:
        return lr, tuple(betas)
    mb_ratio = reg_interval / (reg_interval + 1)
    return lr * mb_ratio, tuple(b ** mb_ratio for b in betas)


def ema_beta(batch_size, cur_nimg, ema_kimg, ema_rampup):
    """G_ema decay per iteration: half-life ema_kimg, ramped up as cur_nimg * ema_rampup."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def nan_to_num(g):
    """NVIDIA: nan -> 0, +-inf -> +-1e5 before each optimizer step.

    Comparisons rather than tf.math.is_nan/is_inf: grappler moves those dtype-changing ops ahead of
    a gradient's last Reshape/Transpose, and oneDNN logs an error for the resulting bool Transpose."""
    g = tf.where(tf.not_equal(g, g), tf.zeros_like(g), g)  # NaN is the one value unequal to itself
    return tf.where(tf.equal(tf.abs(g), float("inf")), tf.sign(g) * 1e5, g)


def default_xla() -> bool:
    """XLA only where it was measured faster: on GPUs. On CPU, bench/bench_training.py found XLA
    no faster for these graphs (see the training section of docs/design.md)."""
    return bool(tf.config.list_logical_devices("GPU"))


def _graph_fn(fn, jit_compile: bool = False):
    """The step's compiled functions, without AutoGraph: their branches are on Python values, and
    converting the augment pipe's code was a third of a small run's start-up, for the same graph."""
    return tf.function(fn, jit_compile=jit_compile, autograph=False)


class Trainer:
    """Owns G, D, G_ema, both optimizers, the augment state, pl_mean, cur_nimg, batch_idx and the
    seed; `step()` runs one training iteration. Construct inside nothing: the strategy scope is
    entered here. Networks passed in must have been created under `strategy.scope()`."""

    def __init__(self, opts: TrainingOptions, strategy: tf.distribute.Strategy, G=None, D=None,
                 G_ema=None, augment_pipe=None, labels=None):
        self.opts = opts
        self.strategy = strategy
        self.num_replicas = int(self.strategy.num_replicas_in_sync)
        self.batch_gpu = opts.batch_per_device(self.num_replicas)  # this cluster's share per device
        self.num_rounds = opts.num_rounds(self.num_replicas)
        self.xla = default_xla() if opts.xla is None else bool(opts.xla)
        self.phases = make_phases(opts.G_reg_interval, opts.D_reg_interval)
        self.pl_count = max(self.batch_gpu // opts.pl_batch_shrink, 1)

        with self.strategy.scope():
            self.G = G if G is not None else Generator(opts.G, name="G")
            self.D = D if D is not None else Discriminator(opts.D, name="D")
            if G_ema is None:
                G_ema = Generator(self.G.config, name="G_ema")
                _copy_vars(self.G, G_ema)
            self.G_ema = G_ema
            glr, gbetas = lazy_adam_params(opts.glr, opts.betas, opts.G_reg_interval)
            dlr, dbetas = lazy_adam_params(opts.dlr, opts.betas, opts.D_reg_interval)
            self.G_opt = keras.optimizers.Adam(learning_rate=glr, beta_1=gbetas[0], beta_2=gbetas[1],
                                               epsilon=opts.eps, name="G_opt")
            self.D_opt = keras.optimizers.Adam(learning_rate=dlr, beta_1=dbetas[0], beta_2=dbetas[1],
                                               epsilon=opts.eps, name="D_opt")
            ns = dict(trainable=False)
            self.cur_nimg = keras.Variable(0, dtype="int64", name="cur_nimg", **ns)
            self.batch_idx = keras.Variable(0, dtype="int64", name="batch_idx", **ns)
            self.pl_mean = keras.Variable(0.0, dtype="float32", name="pl_mean", **ns)
            self.rng_seed = keras.Variable(int(opts.seed), dtype="int64", name="rng_seed", **ns)
            # p, the sign accumulators and the update counter (ADA paper Sec. 3).
            self.ada = AdaController(mode=opts.aug, p=opts.augment_p if opts.aug == "fixed" else None,
                                     target=opts.ada_target if opts.ada_target is not None else 0.6,
                                     interval=opts.ada_interval, kimg=opts.ada_kimg, batch_size=opts.batch_size,
                                     p_max=opts.ada_p_max)
            if opts.aug == "ada" and opts.augment_p:
                self.ada.p.assign(float(opts.augment_p))  # --p with --resume=latest: starting value
        self.augment_p = self.ada.p

        if augment_pipe is None and opts.augment_enabled:
            augment_pipe = AugmentPipe(preset=opts.augpipe)
        self.augment_pipe = augment_pipe if opts.augment_enabled else None

        # Freeze-D: frozen layers are simply not given to the optimizer, so they stay bit-identical.
        frozen = tuple(n + "/" for n in frozen_d_layers(self.D.config, opts.freezed))
        d_named = self.D.named_variables()
        frozen_ids = {id(v) for n, v in d_named.items() if n.startswith(frozen)}
        self.frozen_D_names = sorted(n for n in d_named if n.startswith(frozen))
        self.G_vars = list(self.G.trainable_variables)
        self.D_vars = [v for v in self.D.trainable_variables if id(v) not in frozen_ids]
        g_named = self.G.named_variables()
        e_named = self.G_ema.named_variables()
        self._ema_pairs = [(e_named[n], v, bool(v.trainable)) for n, v in g_named.items()]
        self._w_avg = g_named.get("dlatent_avg")
        self._w_avg_beta = getattr(getattr(self.G.config, "mapping", None), "w_avg_beta", 0.995)

        self._built = False
        self._phase_fns = {}
        self._finish_fn = None
        self._finite_fn = None
        self._grad_fns = {}
        self._pl_fns = {}
        self._labels = None
        if labels is not None:
            self.set_labels(labels)

    # ------------------------------------------------------------------ public API
    def build(self):
        """Create the optimizer slots (before restoring a checkpoint) and nothing else."""
        if not self._built:
            with self.strategy.scope():
                self.G_opt.build(self.G_vars)
                self.D_opt.build(self.D_vars)
            self._built = True
        return self

    def checkpoint_items(self) -> dict:
        """Everything a checkpoint must hold to resume bit-for-bit (pass to tf.train.Checkpoint)."""
        self.build()
        # The networks by their variable names: tf.train.Checkpoint does not see layers that Keras 3 keeps in lists.
        nets = {k: tf.train.Checkpoint(**getattr(self, k).named_variables()) for k in ("G", "D", "G_ema")}
        return dict(nets, G_opt=self.G_opt, D_opt=self.D_opt, ada=self.ada,
                    pl_mean=self.pl_mean, cur_nimg=self.cur_nimg, batch_idx=self.batch_idx, rng_seed=self.rng_seed)

    def non_finite_networks(self) -> list[str]:
        """The networks (of G, D, G_ema) holding a NaN or infinite weight: an update can overflow
        the weights one iteration before any loss shows it."""
        names = ("G", "D", "G_ema")
        if self._finite_fn is None:
            # tf.as_dtype: Keras 3 variables give their dtype as a string
            nets = [[v for v in getattr(self, k).named_variables().values() if tf.as_dtype(v.dtype).is_floating]
                    for k in names]
            self._finite_fn = tf.function(lambda: [tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in vs])
                                                   for vs in nets])
        return [k for k, ok in zip(names, self._finite_fn()) if not bool(ok)]

    def set_labels(self, labels):
        """Where fake labels come from (NVIDIA: the label of a random training image): a
        `sg2ada.data.LabelSampler`, or an array of the dataset's labels [count, c_dim]."""
        if not self.opts.c_dim:
            labels = None
        elif not isinstance(labels, LabelSampler):
            rows = np.asarray(labels, np.float32).reshape([-1, self.opts.c_dim])
            if len(rows) == 0:
                raise UserError("the dataset has no labels to draw conditioning labels from")
            labels = LabelSampler.of_rows(rows)
        self._labels = labels
        self._phase_fns.clear()
        self._grad_fns.clear()
        self._pl_fns.clear()

    def due_phases(self, batch_idx: int) -> tuple[Phase, ...]:
        """Phases run at iteration `batch_idx`, in NVIDIA's order; empty phases are skipped."""
        out = []
        for ph in self.phases:
            if batch_idx % ph.interval:
                continue
            if ph.name == "Greg" and self.opts.pl_weight == 0:
                continue
            if ph.name == "Dreg" and self.opts.r1_gamma == 0:
                continue
            out.append(ph)
        return tuple(out)

    def step(self, data_iter) -> dict:
        """One training iteration; `data_iter` yields (images, labels) of batch_gpu per replica
        (a distributed iterator, or a plain one with a single replica). Returns scalar tensors."""
        self.build()
        if self.opts.c_dim and self._labels is None:
            raise UserError("a conditional run needs the dataset labels: call trainer.set_labels(labels)")
        batch_idx = int(self.batch_idx.numpy())
        cur_nimg = int(self.cur_nimg.numpy())
        phases = self.due_phases(batch_idx)
        rounds = tuple(next(data_iter) for _ in range(self.num_rounds))
        beta = ema_beta(self.opts.batch_size, cur_nimg, self.opts.ema_kimg, self.opts.ema_rampup)
        sums = {}
        w_sum = None
        with self.strategy.scope():
            seed = self._seed_fn()
            for ph in phases:
                fn = self._phase_fns.get(ph)
                if fn is None:
                    fn = self._phase_fns[ph] = _graph_fn(self._make_phase(ph))
                st, extras = fn(rounds, seed)
                for k, v in st.items():
                    sums[k] = sums[k] + v if k in sums else v
                if "w_sum" in extras:
                    w_sum = extras["w_sum"]
            if self._finish_fn is None:
                self._finish_fn = _graph_fn(self._finish)
            self._finish_fn(tf.constant(beta, tf.float32), w_sum if w_sum is not None else tf.zeros([0]),
                            sums.get("Loss/signs/real", tf.zeros([2])))
        stats = {k: v[0] / tf.maximum(v[1], 1.0) for k, v in sums.items()}
        stats["Progress/augment"] = tf.identity(self.augment_p.value)
        return stats

    # ------------------------------------------------------------------ internals
    def _draws(self, phase: Phase, seed, idx, pl=False):
        """Latents, mixing latents and cutoff, labels, and the noise and augmentation seeds of the
        samples at global positions `idx` of this phase's batch (or of its path-length samples,
        `pl=True`). Each sample's numbers are its rows of one draw for the whole batch, so they do
        not depend on the replica, worker or accumulation round that processes it."""
        o = self.opts
        sp = dist.derive(seed, phase.index)
        total = self.pl_count * self.num_rounds * self.num_replicas if pl else o.batch_size
        if pl:
            sp = dist.derive(sp, dist.PURPOSE_PL_NOISE)
        z = per_sample_normal(dist.derive(sp, dist.PURPOSE_Z), idx, total, [o.G.z_dim])
        mix_z = cutoff = None
        if o.style_mixing_prob > 0:
            mix_z = per_sample_normal(dist.derive(sp, dist.PURPOSE_MIX_Z), idx, total, [o.G.z_dim])
            # One cutoff per phase and iteration, shared by all rounds and replicas (NVIDIA: one per batch).
            num_ws = self.G.config.num_ws
            u = stateless_uniform([2], dist.derive(sp, dist.PURPOSE_MIX_CUTOFF))
            cut = 1 + tf.cast(tf.floor(u[1] * (num_ws - 1)), tf.int32)
            cutoff = tf.where(u[0] < o.style_mixing_prob, cut, num_ws)
        if o.c_dim:
            c = self._labels.per_sample(dist.derive(sp, dist.PURPOSE_GEN_C), idx, total)
        else:
            c = tf.zeros([idx.shape[0], 0], tf.float32)
        count = tf.constant(total, tf.int32)  # a tensor: Keras takes no mixed structures as call arguments
        noise_seed = SampleSeed(dist.derive(sp, dist.PURPOSE_SYNTH_NOISE), idx, count)
        aug_seed = SampleSeed(dist.derive(sp, dist.PURPOSE_AUGMENT), idx, count)
        return z, c, mix_z, cutoff, noise_seed, aug_seed

    def _loss(self):
        pipe = self.augment_pipe
        p = self.augment_p

        def augment(img, seed: SampleSeed):
            return pipe(img, tf.convert_to_tensor(p), seed.seed, sample_index=seed.index, num_samples=seed.count)
        o = self.opts
        return StyleGAN2Loss(self.G, self.D, augment if pipe is not None else None, r1_gamma=o.r1_gamma,
                             style_mixing_prob=o.style_mixing_prob, pl_weight=o.pl_weight)

    def _img_shape(self, n):
        c = self.G.config
        return [n, c.img_resolution, c.img_resolution, c.img_channels]

    def _pl_noise(self, phase, seed, pl_idx):
        shape = self._img_shape(pl_idx.shape[0])
        sp = dist.derive(seed, phase.index, dist.PURPOSE_PL_NOISE, 100)  # 100: not a PURPOSE_*
        total = self.pl_count * self.num_rounds * self.num_replicas
        return per_sample_normal(sp, pl_idx, total, shape[1:]) * pl_noise_scale(shape)

    def _pl_lengths_fn(self, phase):
        """Stage 1 of path-length regularisation with several replicas: the lengths alone, so that
        pl_mean can be all-reduced before the penalty (stage 2) is differentiated."""
        key = phase
        if key in self._pl_fns:
            return self._pl_fns[key]
        loss = self._loss()

        def fn(seed, pl_idx):
            z, c, mix_z, cutoff, noise_seed, _ = self._draws(phase, seed, pl_idx, pl=True)
            pl_noise = self._pl_noise(phase, seed, pl_idx)
            lengths, _ = loss.G_pl_lengths(z, c, mix_z, cutoff, noise_seed, pl_noise)
            return tf.reduce_sum(lengths)

        self._pl_fns[key] = _graph_fn(fn, jit_compile=self.xla)
        return self._pl_fns[key]

    def _grad_fn(self, phase: Phase, pl_update_inside: bool):
        """Per-replica compiled loss-and-gradient function of one (phase, round)."""
        key = (phase, pl_update_inside)
        if key in self._grad_fns:
            return self._grad_fns[key]
        o = self.opts
        loss = self._loss()
        do_main = phase.name.endswith(("main", "both"))
        do_reg = phase.name.endswith(("reg", "both"))
        do_pl = phase.net == "G" and do_reg and o.pl_weight != 0
        do_r1 = phase.net == "D" and do_reg and o.r1_gamma != 0
        gain = float(phase.interval)
        main_count = float(o.batch_size)
        pl_total = float(self.pl_count * self.num_rounds * self.num_replicas)
        variables = self.G_vars if phase.net == "G" else self.D_vars

        def fn(real_img, real_c, seed, sample_idx, pl_idx, pl_mean):
            stats = {}
            extras = {}
            if not o.c_dim:  # an unconditional run ignores whatever labels the dataset has
                real_c = tf.zeros([tf.shape(real_img)[0], 0], tf.float32)

            def add(name, values):
                values = tf.cast(values, tf.float32)
                stats[name] = (tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32))

            z, c, mix_z, cutoff, noise_seed, aug_seed = self._draws(phase, seed, sample_idx)
            with tf.GradientTape() as tape:
                total = tf.constant(0.0)
                if phase.net == "G" and do_main:
                    out = loss.G_main(z, c, mix_z, cutoff, noise_seed, aug_seed.fold_in(0))
                    total += tf.reduce_sum(out["loss"]) * (gain / main_count)
                    for k in ("Loss/G/loss", "Loss/scores/fake", "Loss/signs/fake"):
                        add(k, out[k])
                    extras["w_sum"] = tf.reduce_sum(out["w"], axis=0)
                if do_pl:
                    pz, pc, pmix, pcut, pnoise, _ = self._draws(phase, seed, pl_idx, pl=True)
                    lengths, _ = loss.G_pl_lengths(pz, pc, pmix, pcut, pnoise, self._pl_noise(phase, seed, pl_idx))
                    if pl_update_inside:
                        pl_mean = pl_mean + (tf.reduce_mean(tf.stop_gradient(lengths)) - pl_mean) * o.pl_decay
                    out = loss.G_pl(lengths, pl_mean)
                    total += tf.reduce_sum(out["loss"]) * (gain / pl_total)
                    add("Loss/pl_penalty", out["Loss/pl_penalty"])
                    add("Loss/G/reg", out["Loss/G/reg"])
                    extras["pl_mean"] = pl_mean
                if phase.net == "D" and do_main:
                    out = loss.D_gen(z, c, mix_z, cutoff, noise_seed, aug_seed.fold_in(0))
                    total += tf.reduce_sum(out["loss"]) * (gain / main_count)
                    add("Loss/scores/fake", out["Loss/scores/fake"])
                    add("Loss/signs/fake", out["Loss/signs/fake"])
                    loss_dgen = out["loss"]
                if phase.net == "D" and (do_main or do_r1):
                    out = loss.D_real(real_img, real_c, aug_seed.fold_in(1), do_main, do_r1)
                    total += tf.reduce_sum(out["loss"]) * (gain / main_count)
                    add("Loss/scores/real", out["Loss/scores/real"])
                    add("Loss/signs/real", out["Loss/signs/real"])
                    if do_main:
                        add("Loss/D/loss", loss_dgen + out["loss_Dreal"])
                    if do_r1:
                        add("Loss/r1_penalty", out["Loss/r1_penalty"])
                        add("Loss/D/reg", out["Loss/D/reg"])
            grads = tape.gradient(total, variables)
            grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
            return grads, stats, extras

        # R1's second-order gradient through the augment pipe's data-dependent branches does not
        # compile usefully with XLA: first a tf2xla error (non-constant Transpose permutation in the
        # switch_case gradient); after the pipe's fixes, a first `tiny` step with XLA in all four
        # phases had not finished compiling after 9 minutes on this 2-core CPU (session 2), against
        # tens of seconds with this exception. So that phase alone runs as a plain graph; it is due
        # every 16 iterations, and the other three phases keep XLA.
        jit = self.xla and not (do_r1 and self.augment_pipe is not None)
        self._grad_fns[key] = _graph_fn(fn, jit_compile=jit)
        return self._grad_fns[key]

    @_graph_fn
    def _seed_fn(self):
        return dist.base_seed(self.rng_seed.value, self.batch_idx.value)

    def _make_phase(self, ph: Phase):
        """The compiled function of one phase: all rounds on all replicas, then one optimizer step."""
        o = self.opts
        R = self.num_replicas
        per_round = self.batch_gpu * R
        strategy = self.strategy
        opt, variables = (self.G_opt, self.G_vars) if ph.net == "G" else (self.D_opt, self.D_vars)
        do_pl = ph.net == "G" and ph.name.endswith(("reg", "both")) and o.pl_weight != 0

        def replica_fn(rounds, seed, pl_mean):
            ctx = tf.distribute.get_replica_context()
            rid = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
            stats = {}
            w_sum = None
            acc = None
            npl = self.pl_count

            def indices(r):
                sample_idx = r * per_round + rid * self.batch_gpu + tf.range(self.batch_gpu, dtype=tf.int32)
                pl_idx = r * npl * R + rid * npl + tf.range(npl, dtype=tf.int32)
                return sample_idx, pl_idx

            inside = True
            if do_pl and R * self.num_rounds > 1:
                # One pl_mean update per phase from the mean over the whole global batch, all-reduced
                # so replicas agree: stage 1 measures the lengths, stage 2 differentiates the penalty.
                # (NVIDIA updates per round and per GPU; this equals its reference 1-round set-up.)
                lsum = tf.add_n([self._pl_lengths_fn(ph)(seed, indices(r)[1]) for r in range(self.num_rounds)])
                if R > 1:
                    lsum = ctx.all_reduce(tf.distribute.ReduceOp.SUM, lsum)
                pl_mean = pl_mean + (lsum / float(npl * R * self.num_rounds) - pl_mean) * o.pl_decay
                inside = False
            for r, (real_img, real_c) in enumerate(rounds):
                sample_idx, pl_idx = indices(r)
                grads, st, extras = self._grad_fn(ph, inside)(
                    tf.cast(real_img, tf.float32), tf.cast(real_c, tf.float32), seed, sample_idx, pl_idx, pl_mean)
                if "pl_mean" in extras:
                    pl_mean = extras["pl_mean"]
                if "w_sum" in extras:
                    w_sum = extras["w_sum"] if w_sum is None else w_sum + extras["w_sum"]
                acc = grads if acc is None else [a + g for a, g in zip(acc, grads)]
                for k, (s_, c_) in st.items():
                    stats[k] = (stats[k][0] + s_, stats[k][1] + c_) if k in stats else (s_, c_)
            acc = [nan_to_num(g) for g in acc]
            opt.apply_gradients(zip(acc, variables))  # all-reduces SUM over replicas
            extras = {"pl_mean": pl_mean}
            if w_sum is not None:
                extras["w_sum"] = w_sum
            return stats, extras

        def phase_fn(rounds, seed):
            stats, extras = strategy.run(replica_fn, args=(rounds, seed, tf.convert_to_tensor(self.pl_mean)))
            red = lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None)  # noqa: E731
            sums = {k: tf.stack([red(s_), red(c_)]) for k, (s_, c_) in stats.items()}
            out = {}
            if do_pl:
                self.pl_mean.assign(strategy.experimental_local_results(extras["pl_mean"])[0])
            if "w_sum" in extras:
                out["w_sum"] = red(extras["w_sum"])
            return sums, out

        return phase_fn

    def _finish(self, beta, w_sum, signs_real):
        """End of an iteration (NVIDIA's order): w_avg, G_ema, ADA statistics, cur_nimg, batch_idx."""
        o = self.opts
        if w_sum.shape[0] and self._w_avg is not None and self._w_avg_beta is not None:
            w_mean = w_sum / float(o.batch_size)
            self._w_avg.assign(w_mean + (tf.convert_to_tensor(self._w_avg) - w_mean) * self._w_avg_beta)
        for v_ema, v, trainable in self._ema_pairs:
            v = tf.convert_to_tensor(v)
            if trainable:
                v_ema.assign(v + (tf.convert_to_tensor(v_ema) - v) * tf.cast(beta, v.dtype))
            else:
                v_ema.assign(v)
        self.cur_nimg.assign_add(o.batch_size)
        self.batch_idx.assign_add(1)
        # NVIDIA: after batch_idx += 1, every ada_interval iterations (the controller counts).
        if self.augment_pipe is not None:
            self.ada.add_signs(signs_real)
            self.ada.update(o.batch_size)


def _copy_vars(src, dst):
    s = src.named_variables()
    for name, v in dst.named_variables().items():
        v.assign(s[name])
