"""Exporting a generator as a TensorFlow SavedModel (and optionally TFLite) that needs neither sg2ada
nor Keras code to run: `tf.saved_model.load(dir)` in any TensorFlow 2 program.

Signatures (all images NHWC float32 in [-1, 1], batch size free):
- `generate(z [N, z_dim], c [N, c_dim])` -> `{"images"}`: truncation psi baked in at export time
  (`--trunc`, default 1), the network's constant noise (NVIDIA's `noise_mode='const'`). For an
  unconditional network c has shape [N, 0] (pass `tf.zeros([N, 0])`).
- `generate_psi(z, c, truncation_psi [])` -> `{"images"}`: psi as an input.
- `mapping(z, c, truncation_psi [])` -> `{"ws" [N, num_ws, w_dim]}`.
- `synthesize(ws [N, num_ws, w_dim])` -> `{"images"}`: constant noise (e.g. for projected_w.npz).
- `synthesize_random(ws, noise_seed [2] int32)` -> `{"images"}`: stateless random noise.
A seed becomes a latent as in NVIDIA's tools: `numpy.random.RandomState(seed).randn(1, z_dim)`.
The exported graph uses the shared-weight (non-grouped) modulated convolution and float32 throughout,
the most portable form; it gives the same images as the Python model up to float rounding.
`assets.extra/sg2ada_export.json` describes the network and the signatures.

TFLite (`export_tflite`): the `generate` and `synthesize` signatures with frozen weights, converted
with the builtin op set, falling back to Select TF ops when a builtin is missing; the report says
which Flex ops were needed. With TensorFlow 2.21 the conversion needs one Flex op, `FlexPad` (the
6-D pad of upfirdn2d's zero-insertion up-sampling, beyond TFLite's 5-D builtin PAD), so the
.tflite file runs only with an interpreter that links the Flex delegate (e.g. Android's
`tensorflow-lite-select-tf-ops`); the pip `tf.lite.Interpreter` does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

from sg2ada.errors import UserError

EXPORT_INFO = "sg2ada_export.json"


def _export_module(G, truncation_psi: float):
    import tensorflow as tf

    z_spec = tf.TensorSpec([None, G.z_dim], tf.float32, name="z")
    c_spec = tf.TensorSpec([None, G.c_dim], tf.float32, name="c")
    psi_spec = tf.TensorSpec([], tf.float32, name="truncation_psi")
    ws_spec = tf.TensorSpec([None, G.num_ws, G.w_dim], tf.float32, name="ws")
    seed_spec = tf.TensorSpec([2], tf.int32, name="noise_seed")
    conditional = G.c_dim > 0
    baked_psi = float(truncation_psi)

    def synth(ws, noise_mode="const", noise_seed=None):
        return G.synthesis(ws, noise_mode=noise_mode, noise_seed=noise_seed, force_fp32=True, fused_modconv=False)

    class Exported(tf.Module):
        def __init__(self):
            super().__init__(name="sg2ada_generator")
            self.G = G  # tracked: its variables are saved with the module

        @tf.function(input_signature=[z_spec, c_spec])
        def generate(self, z, c):
            ws = G.mapping(z, c if conditional else None, truncation_psi=baked_psi)
            return {"images": synth(ws)}

        @tf.function(input_signature=[z_spec, c_spec, psi_spec])
        def generate_psi(self, z, c, truncation_psi):
            ws = G.mapping(z, c if conditional else None, truncation_psi=truncation_psi)
            return {"images": synth(ws)}

        @tf.function(input_signature=[z_spec, c_spec, psi_spec])
        def mapping(self, z, c, truncation_psi):
            return {"ws": G.mapping(z, c if conditional else None, truncation_psi=truncation_psi)}

        @tf.function(input_signature=[ws_spec])
        def synthesize(self, ws):
            return {"images": synth(ws)}

        @tf.function(input_signature=[ws_spec, seed_spec])
        def synthesize_random(self, ws, noise_seed):
            return {"images": synth(ws, "random", noise_seed)}

    return Exported()


SIGNATURES = ("generate", "generate_psi", "mapping", "synthesize", "synthesize_random")


def export_saved_model(G, dest: str, truncation_psi: float = 1.0, overwrite: bool = False, source: str = "") -> str:
    """Write the SavedModel directory `dest` (via a temporary sibling, renamed into place)."""
    import tensorflow as tf

    dest = os.path.abspath(os.fspath(dest))
    if os.path.lexists(dest) and not overwrite:
        raise UserError(f"{dest}: already exists; choose another --dest or pass --force to replace it")
    module = _export_module(G, truncation_psi)
    signatures = {name: getattr(module, name) for name in SIGNATURES}
    info = {
        "format": "sg2ada-savedmodel", "version": 1, "source": source,
        "z_dim": G.z_dim, "c_dim": G.c_dim, "w_dim": G.w_dim, "num_ws": G.num_ws,
        "img_resolution": G.img_resolution, "img_channels": G.img_channels,
        "truncation_psi_generate": float(truncation_psi), "noise": "const except synthesize_random",
        "image_layout": "NHWC float32 in [-1, 1]; uint8 = clip(x * 127.5 + 128, 0, 255)",
        "seed_to_z": "numpy.random.RandomState(seed).randn(1, z_dim)",
        "signatures": {
            "generate": "z [N, z_dim], c [N, c_dim] -> images (baked psi, const noise)",
            "generate_psi": "z, c, truncation_psi [] -> images (const noise)",
            "mapping": "z, c, truncation_psi -> ws [N, num_ws, w_dim]",
            "synthesize": "ws -> images (const noise)",
            "synthesize_random": "ws, noise_seed [2] int32 -> images (stateless random noise)",
        },
        "config": G.config.to_dict(),
    }
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(dest)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tf.saved_model.save(module, tmp, signatures=signatures)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, "assets.extra", EXPORT_INFO), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        if os.path.lexists(dest):
            shutil.rmtree(dest) if os.path.isdir(dest) and not os.path.islink(dest) else os.unlink(dest)
        os.rename(tmp, dest)
    except OSError as e:
        raise UserError(f"{dest}: cannot write the SavedModel ({e.strerror or e}); check the path and free space") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def export_tflite(saved_model_dir: str, dest_file: str, signature_keys=("generate", "synthesize")) -> dict:
    """Convert signatures of an exported SavedModel to one .tflite file with the weights frozen as
    constants (TFLite's resource-variable support does not survive the SavedModel path). Tries the
    builtin op set first, then builtins + Select TF ops. Returns {"ok", "select_tf_ops",
    "flex_ops": [...], "error", "path"}; the TFLite signature keys are `signature_wrapper_<name>`."""
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    fns = [loaded.signatures[k] for k in signature_keys]
    last_error = None
    for select in (False, True):
        try:
            conv = tf.lite.TFLiteConverter.from_concrete_functions(fns, loaded)
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            if select:
                ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
            conv.target_spec.supported_ops = ops
            with _quiet_stderr():
                data = conv.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises many types; report its message
            last_error = _first_error_line(str(e)) or type(e).__name__
            continue
        with open(dest_file, "wb") as f:
            f.write(data)
        flex = sorted({m.decode("ascii", "replace") for m in _flex_ops(data)}) if select else []
        return {"ok": True, "select_tf_ops": select, "flex_ops": flex, "error": None, "path": dest_file}
    return {"ok": False, "select_tf_ops": None, "flex_ops": [], "error": last_error, "path": None}


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 while the converter runs: its MLIR diagnostics print a call stack
    per failing op (thousands of lines) straight from C++; the exception message keeps the gist."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _first_error_line(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            return line[line.index("error:") + 6:].strip()[:300]
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _flex_ops(data: bytes):
    # Flex custom ops are stored by name ("FlexPad", ...) in the flatbuffer; a byte scan is enough
    # for a report and avoids depending on the flatbuffer schema package.
    import re

    return set(re.findall(rb"Flex[A-Z][A-Za-z0-9]+", data))


__all__ = ["EXPORT_INFO", "SIGNATURES", "export_saved_model", "export_tflite"]
