"""Shared test set-up.

TensorFlow sees two logical CPU devices in every test process, so distribution tests can build a
two-replica MirroredStrategy on one CPU. This has to happen before TensorFlow initialises its
devices, hence at import time here. `reference_dir` is NVIDIA's numerical reference material in
`../shared/reference/` (see its README); tests that need it skip with a reason when it is absent.
"""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests never download (feature networks for metrics included): a missing file is reported, not fetched.
os.environ["SG2ADA_OFFLINE"] = "1"

from sg2ada.console import import_tensorflow_quietly  # noqa: E402

tf = import_tensorflow_quietly()  # no start-up banner at the end of every test run

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
    )
except RuntimeError:  # already initialised by an earlier import: leave it
    pass

PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_DIR = pathlib.Path(os.environ.get("SG2ADA_REFERENCE_DIR", PROJECT_ROOT.parent / "shared" / "reference"))


def pytest_collection_modifyitems(config, items):
    """Files with slow tests first, the rest after, each in collection order. `make test` runs each
    file whole on one worker (`--dist loadfile`, its module fixtures built once), so the long files
    start early and short ones fill the end instead of one worker finishing a long file alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"NVIDIA reference material not found at {REFERENCE_DIR} (set SG2ADA_REFERENCE_DIR)")
    return REFERENCE_DIR


@pytest.fixture(autouse=True)
def _reset_keras_state():
    import keras

    # Fresh layer-name counters, so variable names are stable per test. Without a garbage collection:
    # a full one over a test process's TensorFlow objects costs seconds, and the counters need none.
    keras.utils.clear_session(free_memory=False)
    yield
