"""Where reduced-precision (float16/bfloat16) activations are accumulated.

StyleGAN2-ADA's mixed precision (Karras et al. 2020b, Appendix D.2) assumes that a float16
convolution multiplies float16 inputs but accumulates in float32 and rounds its result once: that is
what cuDNN/cuBLAS do on GPUs, and what PyTorch's CPU kernels do (NVIDIA's `img_as_loaded` reference
was computed that way). TensorFlow's stock CPU (Eigen) kernels do not all do this. Measured with
TF 2.21 on random data, against the float32 result rounded once to float16:
  - conv2d, matmul: float32 accumulation (differences only in the last bit, from summation order);
  - conv2d_transpose: ~80% of outputs differ, by up to 6e-3 (float16 accumulation);
  - depthwise_conv2d (our FIR filtering): ~60% differ, by up to 8e-3.
In a generator these errors compound block after block (1.6x NVIDIA's own fp16 error on the TF1
reference network), so on CPU the reduced-precision blocks run their convolutions and filters as
"cast up, compute in float32, cast the result down once": float16 inputs and outputs, float32
arithmetic. On GPUs TF's half kernels already accumulate in float32 (cuDNN with float32 compute,
depthwise kernels with a float accumulator), so they keep running natively for tensor-core speed.

The choice is made at trace time (`compute_in_float32`). 'auto' (the default) computes in float32
when TensorFlow sees no GPU; 'float32' and 'native' force either behaviour (e.g. 'float32' to
reproduce CPU numbers on a GPU host, 'native' to benchmark TF's half kernels).

Elementwise epilogues (bias_act, the demodulation multiply-add) always compute in float32 and round
once, like NVIDIA's CUDA kernels, whatever this setting: that costs nothing under XLA (the casts fuse)
and avoids rounding gains and slopes such as sqrt(2) and 0.2 to float16 first.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["set_reduced_precision_compute", "get_reduced_precision_compute", "compute_in_float32", "REDUCED"]

REDUCED = (tf.float16, tf.bfloat16)
_MODES = ("auto", "float32", "native")
_MODE = "auto"
_HAS_GPU = None


def set_reduced_precision_compute(mode: str) -> None:
    """'auto' (float32 arithmetic for float16/bfloat16 convolutions and filters unless a GPU is
    visible), 'float32' (always) or 'native' (TF's half kernels as they are). Affects functions
    traced after the call."""
    global _MODE
    if mode not in _MODES:
        raise ValueError(f"reduced-precision compute must be one of {', '.join(_MODES)}, got {mode!r}")
    _MODE = mode


def get_reduced_precision_compute() -> str:
    return _MODE


def _has_gpu() -> bool:
    global _HAS_GPU
    if _HAS_GPU is None:
        _HAS_GPU = bool(tf.config.list_logical_devices("GPU"))
    return _HAS_GPU


def compute_in_float32(dtype) -> bool:
    """True if convolutions/filters of `dtype` activations should run in float32 (see module doc)."""
    if tf.as_dtype(dtype) not in REDUCED or _MODE == "native":
        return False
    return _MODE == "float32" or not _has_gpu()
