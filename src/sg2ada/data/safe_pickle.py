"""A restricted unpickler for dataset pickles (the CIFAR batches) that cannot run arbitrary code.

A pickle names the callables it wants invoked; a normal `pickle.load` imports and calls whatever it
names, so a hostile file can run anything. This unpickler resolves only the handful of globals that
plain numpy arrays need and refuses every other name, so loading yields dicts, lists, bytes,
numbers and numeric numpy arrays, or fails with `UnsafePickleError`.
"""

from __future__ import annotations

import io
import pickle

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list."""


def _reconstruct(*args):
    # numpy's own array reconstructor, found at either of its homes (numpy 1.x and 2.x).
    try:
        from numpy._core.multiarray import _reconstruct as rec
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as rec  # type: ignore[no-redef]
    return rec(*args)


def _dtype(*args, **kwargs):
    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        # Object arrays would let the pickle smuggle arbitrary objects through array state.
        raise UnsafePickleError("object arrays are not allowed in dataset pickles")
    return dt


def _codecs_encode(text, encoding="utf-8", errors="strict"):
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(str, 'latin1').
    if not isinstance(text, str):
        raise UnsafePickleError("_codecs.encode expects a str")
    return text.encode(encoding, errors)


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to load {module}.{name} from a dataset pickle") from None


def safe_load(data: bytes, encoding: str = "bytes"):
    """Unpickle `data` allowing only numeric numpy arrays and builtin containers."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
