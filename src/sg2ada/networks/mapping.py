"""The StyleGAN mapping network `G_mapping` (Karras et al. 2019, Sec. 2; StyleGAN2 Appendix B) and the
discriminator's label mapping, as NVIDIA's `MappingNetwork` in `training/networks.py` and TF1
`G_mapping`/`D_main` label branch.

z (and the label embedding of c) are normalised to unit second moment, concatenated and passed
through `num_layers` dense layers with learning-rate multiplier 0.01. The generator tracks the
moving average `w_avg` (TF1 `dlatent_avg`, decay 0.995) and truncates toward it.

TF1 variable names: G `LabelEmbed/*`, `Dense{i}/*`; D `LabelEmbed/*`, `Mapping{i}/*`
(`layer_name` picks the pattern). `w_avg` is kept here but reported by the Generator as
`dlatent_avg`, which is where TF1 keeps it.
"""

from __future__ import annotations

import tensorflow as tf

from sg2ada.networks.layers import FullyConnectedLayer, Layer, normalize_2nd_moment, prefixed


class MappingNetwork(Layer):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995, layer_name="Dense", **kwargs):
        super().__init__(**kwargs)
        self.z_dim = int(z_dim)
        self.c_dim = int(c_dim)
        self.w_dim = int(w_dim)
        self.num_ws = num_ws
        self.num_layers = int(num_layers)
        self.w_avg_beta = w_avg_beta
        self.layer_name = layer_name
        if embed_features is None:
            embed_features = w_dim
        if self.c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        if self.z_dim + embed_features == 0:
            raise ValueError("MappingNetwork needs z_dim > 0 or c_dim > 0")
        features = [self.z_dim + embed_features] + [layer_features] * (self.num_layers - 1) + [self.w_dim]

        # The label embedding has no learning-rate multiplier (NVIDIA: FullyConnectedLayer default).
        self.embed = FullyConnectedLayer(c_dim, embed_features, name="LabelEmbed") if self.c_dim > 0 else None
        self.fcs = [
            FullyConnectedLayer(features[i], features[i + 1], activation=activation, lr_multiplier=lr_multiplier,
                                name=f"{layer_name}{i}")
            for i in range(self.num_layers)
        ]
        self.w_avg = None
        # The generator always has `w_avg` (TF1 `dlatent_avg`); w_avg_beta None only stops updates.
        if num_ws is not None:
            # Mean over replicas when updated in a replica context: each replica sees its own batch.
            self.w_avg = self.add_weight(name="w_avg", shape=(self.w_dim,), initializer="zeros", dtype="float32",
                                         trainable=False, aggregation="mean")
        self.built = True

    @property
    def out_features(self) -> int:
        return self.w_dim if self.num_layers > 0 else (self.embed.out_features if self.embed else self.z_dim)

    def named_variables(self) -> dict:
        out = {}
        if self.embed is not None:
            out.update(prefixed("LabelEmbed", self.embed.named_variables()))
        for i, fc in enumerate(self.fcs):
            out.update(prefixed(f"{self.layer_name}{i}", fc.named_variables()))
        return out

    def call(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_w_avg=False):
        x = None
        if self.z_dim > 0:
            z = tf.convert_to_tensor(z)
            _check_dim("z", z, self.z_dim)
            x = normalize_2nd_moment(tf.cast(z, tf.float32))
        if self.c_dim > 0:
            if c is None:
                raise ValueError(f"this network is conditional: pass labels c of shape [N, {self.c_dim}]")
            c = tf.convert_to_tensor(c)
            _check_dim("c", c, self.c_dim)
            y = normalize_2nd_moment(self.embed(tf.cast(c, tf.float32)))
            x = tf.concat([x, y], axis=1) if x is not None else y

        for fc in self.fcs:
            x = fc(x)

        if update_w_avg and self.w_avg is not None and self.w_avg_beta is not None:
            # w_avg <- lerp(mean(w), w_avg, beta)
            batch_mean = tf.reduce_mean(tf.stop_gradient(x), axis=0)
            self.w_avg.assign(batch_mean + (tf.convert_to_tensor(self.w_avg) - batch_mean) * self.w_avg_beta)

        if self.num_ws is not None:
            x = tf.tile(x[:, None, :], [1, self.num_ws, 1])

        if not _is_one(truncation_psi):
            if self.w_avg is None:
                raise ValueError("truncation needs w_avg tracking (w_avg_beta is None)")
            w_avg = tf.convert_to_tensor(self.w_avg)
            psi = tf.cast(truncation_psi, tf.float32)
            truncated = w_avg + (x - w_avg) * psi
            if self.num_ws is None or truncation_cutoff is None:
                x = truncated
            else:
                cutoff = int(truncation_cutoff)
                layer_mask = tf.reshape(tf.range(self.num_ws) < cutoff, [1, self.num_ws, 1])
                x = tf.where(layer_mask, truncated, x)
        return x


def _is_one(psi) -> bool:
    return isinstance(psi, (int, float)) and psi == 1


def _check_dim(name, t, dim):
    if t.shape.rank != 2 or (t.shape[1] is not None and t.shape[1] != dim):
        raise ValueError(f"{name} must have shape [N, {dim}], got {t.shape}")


__all__ = ["MappingNetwork"]
