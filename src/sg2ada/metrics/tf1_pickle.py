"""Read the variables out of a dnnlib TF1 network pickle without running any of its code.

NVIDIA's TensorFlow 1 releases (StyleGAN, StyleGAN2, StyleGAN2-ADA) ship their metric feature
networks (`vgg16.pkl` for the precision/recall metric of Kynkaanniemi et al. 2019,
`vgg16_zhang_perceptual.pkl` for LPIPS of Zhang et al. 2018 used by PPL) as pickled
`dnnlib.tflib.network.Network` objects. Their state is a plain dict holding, among other things,
`variables`: a list of `(name, numpy array)` pairs in creation order, and `build_module_src`: the
Python source of the builder, which a normal unpickle would exec. This reader uses a restricted
unpickler that knows only the handful of classes such a pickle needs, turns `Network` objects into
inert records and never executes the embedded source, so a hostile file cannot run code.
"""

from __future__ import annotations

import collections
import io
import pickle

import numpy as np

try:  # numpy >= 2 moved the pickle helpers; pickles name either location
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

from sg2ada.errors import UserError

__all__ = ["TF1Network", "load_tf1_pickle"]


class TF1Network:
    """The inert content of a `dnnlib.tflib.network.Network`: its name, kwargs and variables."""

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("dnnlib Network state is not a dict")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name", ""))

    @property
    def static_kwargs(self) -> dict:
        return dict(self.state.get("static_kwargs", {}) or {})

    @property
    def components(self) -> dict:
        return dict(self.state.get("components", {}) or {})

    def variables(self) -> "collections.OrderedDict[str, np.ndarray]":
        """All variables in creation order, components' variables under `<component>/<name>`."""
        out = collections.OrderedDict()
        for name, value in self.state.get("variables", []):
            out[str(name)] = np.asarray(value)
        for comp_name, comp in self.components.items():
            if isinstance(comp, TF1Network):
                for name, value in comp.variables().items():
                    out[f"{comp_name}/{name}"] = value
        return out


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict (a dict with attribute access); data only."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


# (module, name) -> object. Only data-carrying classes: nothing here can run code on load.
_ALLOWED = {
    ("dnnlib.tflib.network", "Network"): TF1Network,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "range"): range,
    ("builtins", "complex"): complex,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _multiarray.scalar,
    ("_codecs", "encode"): __import__("codecs").encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not a known data class)")
        return obj


def load_tf1_pickle(path: str):
    """Unpickle a dnnlib TF1 pickle with the restricted unpickler. Returns what the pickle holds
    (a TF1Network or a tuple of them). Raises UserError naming `path` when it is not such a file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 - any decoding failure means "not a usable pickle"
        raise UserError(f"{path} is not a readable NVIDIA TF1 network pickle ({e})") from None
    return obj
