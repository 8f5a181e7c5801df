"""Console text shared by the commands, training and the metrics: NVIDIA's compact elapsed-time
format (dnnlib.util.format_time), used in training's status lines and in a metric result's
total_time_str; and a TensorFlow import without its start-up banner (the CLI, `make demo`, the
quick-start notebook).
"""

from __future__ import annotations

import os
import sys

# Messages TensorFlow's C++ runtime prints on import whatever TF_CPP_MIN_LOG_LEVEL says (they are
# written before absl's logging is initialised): noise for a user, so lines ending in them are dropped.
TF_IMPORT_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on. You may see slightly different numerical results due to floating-point "
    "round-off errors from different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
)


def format_time(seconds: float) -> str:
    """`42s`, `3m 07s`, `2h 05m 09s`, `1d 02h 03m`."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 60 * 60:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 24 * 60 * 60:
        return f"{s // 3600}h {(s // 60) % 60:02d}m {s % 60:02d}s"
    return f"{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m"


def import_tensorflow_quietly():
    """Import TensorFlow with its start-up banner removed from stderr; anything else it prints is kept."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines(keepends=True):
                if not line.rstrip("\r\n").endswith(TF_IMPORT_NOISE):
                    sys.stderr.write(line)
    return tf


__all__ = ["format_time", "import_tensorflow_quietly"]
