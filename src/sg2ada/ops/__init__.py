"""sg2ada.ops: the pure-TensorFlow NHWC kernels of StyleGAN2-ADA.

Counterparts of NVIDIA's stylegan2-ada-pytorch `torch_utils/ops` (upfirdn2d, bias_act,
conv2d_resample) and `training/networks.py::modulated_conv2d`, without custom CUDA: built from
stock TF ops so that they run on CPU and GPU, compile under `tf.function(jit_compile=True)` and have
first- and second-order gradients (R1 and path-length regularisation need both). See
docs/design.md for the contract. `random` holds the one stateless sampler family (identical eager
and under XLA, per-sample draws independent of the batch split).
"""

from sg2ada.ops.bias_act import activation_funcs, bias_act
from sg2ada.ops.conv2d_resample import conv2d_resample
from sg2ada.ops.modulated_conv2d import modulated_conv2d
from sg2ada.ops.precision import compute_in_float32, get_reduced_precision_compute, set_reduced_precision_compute
from sg2ada.ops.random import SampleSeed, per_sample_normal, per_sample_uniform, stateless_normal, stateless_uniform
from sg2ada.ops.upfirdn2d import (downsample2d, filter2d, get_filter_size, set_fir_impl, setup_filter, upfirdn2d,
                                  upsample2d)

__all__ = [
    "setup_filter",
    "upfirdn2d",
    "filter2d",
    "upsample2d",
    "downsample2d",
    "get_filter_size",
    "set_fir_impl",
    "bias_act",
    "activation_funcs",
    "conv2d_resample",
    "modulated_conv2d",
    "SampleSeed",
    "set_reduced_precision_compute",
    "get_reduced_precision_compute",
    "compute_in_float32",
    "stateless_uniform",
    "stateless_normal",
    "per_sample_uniform",
    "per_sample_normal",
]
