"""`sg2ada doctor`: is this machine (or container) ready to train?

Reports the TensorFlow version, the GPUs TensorFlow sees, the CUDA and cuDNN versions TensorFlow was
built with and the ones it finds, an XLA compile of one tiny training step (G and D forward and
backward, as the trainer compiles them), and reduced-precision support. When no GPU is visible it
says why, as precisely as the evidence allows: a CPU-only TensorFlow build, no NVIDIA device nodes
(container started without `--gpus`), no driver, or CUDA/cuDNN libraries that do not match the build
(the official `tensorflow:*-gpu` images have shipped cuDNN 8.9 while TF 2.21 needs cuDNN 9).

Everything that touches the machine goes through `Probe`, so tests can fake a GPU being present or
absent at that boundary and check each diagnosis without skipping.
"""

from __future__ import annotations

import ctypes
import dataclasses
import glob
import json
import os
import sys

HELP = "check TensorFlow, GPUs, CUDA/cuDNN, XLA and mixed precision on this machine"


@dataclasses.dataclass
class GpuInfo:
    name: str
    compute_capability: tuple[int, int] | None


class Probe:
    """The machine as `doctor` sees it. Each method is one question; tests replace them."""

    def tf_version(self) -> str:
        import tensorflow as tf

        return tf.__version__

    def build_info(self) -> dict:
        import tensorflow as tf

        return dict(tf.sysconfig.get_build_info())

    def gpus(self) -> list[GpuInfo]:
        import tensorflow as tf

        out = []
        for dev in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(dev)
            out.append(GpuInfo(details.get("device_name", dev.name), details.get("compute_capability")))
        return out

    def device_nodes(self) -> list[str]:
        return sorted(glob.glob("/dev/nvidia[0-9]*"))

    def driver_version(self) -> str | None:
        try:
            with open("/proc/driver/nvidia/version") as f:
                return f.readline().strip()
        except OSError:
            return None

    def loaded_library_version(self, lib: str) -> str | None:
        """Version of a CUDA library the dynamic loader finds (what TF would load), or None."""
        candidates = {"cudnn": ["libcudnn.so.9", "libcudnn.so.8", "libcudnn.so"],
                      "cudart": ["libcudart.so.12", "libcudart.so.11.0", "libcudart.so"]}[lib]
        for name in candidates:
            try:
                handle = ctypes.CDLL(name)
            except OSError:
                continue
            try:
                if lib == "cudnn":
                    handle.cudnnGetVersion.restype = ctypes.c_size_t
                    v = int(handle.cudnnGetVersion())  # e.g. 90300 for 9.3.0
                    return f"{v // 10000}.{(v % 10000) // 100}.{v % 100}"
                ver = ctypes.c_int()
                handle.cudaRuntimeGetVersion(ctypes.byref(ver))  # e.g. 12050
                return f"{ver.value // 1000}.{(ver.value % 1000) // 10}"
            except AttributeError:
                return name
        return None

    def xla_step(self) -> str:
        """Compile and run one tiny G+D training step under XLA; returns a short description."""
        import numpy as np
        import tensorflow as tf

        from sg2ada.networks import Discriminator, Generator
        from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig, MappingConfig

        G = Generator(GeneratorConfig(z_dim=16, w_dim=16, img_resolution=8, channel_base=64, channel_max=16,
                                      mapping=MappingConfig(num_layers=1)))
        D = Discriminator(DiscriminatorConfig(img_resolution=8, channel_base=64, channel_max=16, mbstd_group_size=2))

        @tf.function(jit_compile=True)
        def step(z):
            with tf.GradientTape() as tape:
                img = G(z, tf.zeros([2, 0]))
                loss = tf.reduce_mean(tf.nn.softplus(-D(img, tf.zeros([2, 0]))))
            grads = tape.gradient(loss, G.trainable_variables + D.trainable_variables)
            return loss, tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads])

        loss, gnorm = step(tf.constant(np.random.RandomState(0).randn(2, 16), tf.float32))
        if not (np.isfinite(loss.numpy()) and np.isfinite(gnorm.numpy())):
            raise RuntimeError("non-finite loss or gradients in the XLA step")
        return f"loss {float(loss):.4f}, grad norm^2 {float(gnorm):.4g}"


@dataclasses.dataclass
class Check:
    name: str
    ok: bool | None  # None: informational
    detail: str


def _major(v: str | None) -> str | None:
    return v.split(".")[0] if v else None


def diagnose(probe: Probe) -> tuple[list[Check], list[str]]:
    """Run every check; return them and the diagnosis lines (what to do), if any."""
    checks: list[Check] = []
    advice: list[str] = []

    tf_version = probe.tf_version()
    checks.append(Check("TensorFlow", True, tf_version))
    build = probe.build_info()
    built_cuda = bool(build.get("is_cuda_build"))
    want_cuda, want_cudnn = build.get("cuda_version"), build.get("cudnn_version")
    checks.append(Check("built with", None, f"CUDA {want_cuda}, cuDNN {want_cudnn}" if built_cuda else "CPU only"))

    gpus = probe.gpus()
    if gpus:
        listing = "; ".join(f"{g.name} (compute {'.'.join(map(str, g.compute_capability)) if g.compute_capability else '?'})"
                            for g in gpus)
        checks.append(Check("GPUs", True, f"{len(gpus)}: {listing}"))
    else:
        # On a CPU-only build no GPU is expected; on a CUDA build it is a failure worth explaining.
        checks.append(Check("GPUs", False if built_cuda else None, "none visible to TensorFlow"))
    found_cudnn = probe.loaded_library_version("cudnn") if built_cuda else None
    found_cudart = probe.loaded_library_version("cudart") if built_cuda else None
    if built_cuda:
        checks.append(Check("found", None, f"CUDA runtime {found_cudart or 'not found'}, cuDNN {found_cudnn or 'not found'}"))

    if not gpus:
        nodes, driver = probe.device_nodes(), probe.driver_version()
        if not built_cuda:
            advice.append("this TensorFlow is a CPU-only build (tensorflow-cpu): for GPUs install "
                          "`pip install 'sg2ada[gpu]'` (tensorflow[and-cuda]) or use docker/Dockerfile")
        elif not nodes:
            advice.append("no /dev/nvidia* device nodes: in a container, start it with `--gpus all` "
                          "(docker) or request `nvidia.com/gpu` (Kubernetes); on a host, install the NVIDIA driver")
        elif driver is None:
            advice.append("NVIDIA device nodes exist but no driver is loaded (/proc/driver/nvidia/version "
                          "missing): install or reload the NVIDIA kernel driver")
        elif found_cudnn is None or _major(found_cudnn) != _major(want_cudnn):
            advice.append(f"TensorFlow {tf_version} needs cuDNN {want_cudnn} but the loader finds "
                          f"{found_cudnn or 'none'}: `pip install 'tensorflow[and-cuda]=={tf_version}'` brings the "
                          "matching libraries (the official -gpu images ship cuDNN 8.9)")
        elif found_cudart is None or _major(found_cudart) != _major(want_cuda):
            advice.append(f"TensorFlow {tf_version} needs CUDA {want_cuda} but the loader finds "
                          f"{found_cudart or 'no CUDA runtime'}: install the matching CUDA runtime")
        else:
            advice.append(f"driver ({driver}) and libraries look right but TensorFlow sees no GPU: run with "
                          "TF_CPP_MIN_LOG_LEVEL=0 to see the loader's messages, and check CUDA_VISIBLE_DEVICES")

    try:
        checks.append(Check("XLA training step", True, probe.xla_step()))
    except Exception as e:  # the doctor reports every failure instead of stopping at the first
        checks.append(Check("XLA training step", False, f"{type(e).__name__}: {e}"))
        advice.append("XLA could not compile a training step: train with --no-xla and report the error above")

    if gpus:
        caps = [g.compute_capability for g in gpus if g.compute_capability]
        fp16 = all(c >= (7, 0) for c in caps) if caps else None
        bf16 = all(c >= (8, 0) for c in caps) if caps else None
        checks.append(Check("mixed precision", fp16, f"float16 tensor cores: {'yes' if fp16 else 'no'}, "
                                                      f"bfloat16: {'yes' if bf16 else 'no'}"))
        if fp16 is False:
            advice.append("these GPUs lack float16 tensor cores (compute < 7.0): train with --fp32")
    else:
        checks.append(Check("mixed precision", None, "no GPU: training runs in float32 on the CPU (--fp32)"))
    return checks, advice


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def main(args, probe: Probe | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    checks, advice = diagnose(probe or Probe())
    if args.json:
        print(json.dumps({"checks": [dataclasses.asdict(c) for c in checks], "advice": advice}, indent=1))
    else:
        mark = {True: "ok  ", False: "FAIL", None: "    "}
        for c in checks:
            print(f"{mark[c.ok]} {c.name:<18} {c.detail}")
        for line in advice:
            print(f"diagnosis: {line}")
    failed = any(c.ok is False for c in checks)
    sys.stdout.flush()
    return 1 if failed else 0
