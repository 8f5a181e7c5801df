"""Safe unpickling of dataset pickles (the CIFAR-10/100 python batches).

The batches are dicts of numpy arrays, byte strings and lists. They are read with the project's one
restricted unpickler (sg2ada.legacy.restricted), which resolves only numpy's array constructors
and refuses every other global, so a hostile file cannot run code.
"""

from __future__ import annotations

import io
import pickle

from sg2ada.legacy.restricted import RefusedGlobal, RestrictedUnpickler, numpy_globals


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list, or for an object array."""


def safe_load(data: bytes, encoding: str = "bytes"):
    """Unpickle `data` allowing only numeric numpy arrays and builtin containers."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), numpy_globals(), encoding=encoding).load()
    except RefusedGlobal as e:
        raise UnsafePickleError(f"refusing to load {e.module}.{e.name} from a dataset pickle") from None
    except pickle.UnpicklingError as e:
        if "object arrays" in str(e):
            raise UnsafePickleError(f"{e} in dataset pickles") from None
        raise
