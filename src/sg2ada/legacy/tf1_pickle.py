"""Reading NVIDIA's TensorFlow 1 network pickles without TensorFlow 1 and without running their code.

The released StyleGAN2 / StyleGAN2-ADA TF1 pickles (`ffhq.pkl`, `metfaces.pkl`, ... of
NVlabs/stylegan2-ada, and the `stylegan2-*-config-f.pkl` of NVlabs/stylegan2) hold a tuple
`(G, D, Gs)` of `dnnlib.tflib.network.Network` objects. `Network.__getstate__` (in
`dnnlib/tflib/network.py`) reduces each to a plain dict: `version`, `name`, `static_kwargs`,
`components` (a dict of sub-Networks: `mapping`, `synthesis` for G and Gs), `build_module_src`
(the Python source of the building module), `build_func_name`, `variables` (a list of
`(name, numpy array)`), plus input/output shape and name lists in later versions. The arrays are
pickled by numpy (`_reconstruct`, `dtype`, `scalar`).

We map `dnnlib.tflib.network.Network` to `TF1Network`, which keeps that dict and nothing else:
`build_module_src` is kept as text and never compiled. Every other global is refused.
"""

from __future__ import annotations

import os

import numpy as np

from sg2ada.errors import UserError
from sg2ada.legacy.restricted import EasyDict, numpy_globals, restricted_load

KIND = "NVIDIA TF1 network pickle"


class TF1Network:
    """Stand-in for `dnnlib.tflib.network.Network`: holds the pickled state dict, executes nothing."""

    def __init__(self, state: dict | None = None):
        self.state = dict(state or {})

    def __setstate__(self, state):
        if not isinstance(state, dict):
            # Raised inside unpickling; restricted_load turns it into a UserError naming the file.
            raise TypeError(f"dnnlib.tflib.network.Network state is a {type(state).__name__}, expected a dict")
        self.state = state

    def __repr__(self):
        return f"TF1Network(name={self.name!r}, build_func_name={self.build_func_name!r})"

    @property
    def name(self) -> str:
        return str(self.state.get("name", "?"))

    @property
    def version(self) -> int:
        return int(self.state.get("version", 0) or 0)

    @property
    def build_func_name(self) -> str:
        return str(self.state.get("build_func_name", ""))

    @property
    def static_kwargs(self) -> dict:
        return dict(self.state.get("static_kwargs") or {})

    @property
    def components(self) -> dict:
        return dict(self.state.get("components") or {})

    def own_variables(self) -> list:
        return list(self.state.get("variables") or [])

    def collect_variables(self, path: str = "?") -> dict[str, np.ndarray]:
        """All variables of this network and its components, keyed like TF1's scopes
        (`dlatent_avg`, `mapping/Dense0/weight`, `synthesis/4x4/Conv/weight`), as float32 arrays."""
        out: dict[str, np.ndarray] = {}

        def recurse(prefix: str, net: "TF1Network", depth: int):
            if depth > 8:
                raise UserError(f"{path}: network {self.name!r} nests components too deeply; the pickle is damaged")
            for item in net.own_variables():
                if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
                    raise UserError(f"{path}: network {net.name!r} has a malformed variable entry; the pickle is damaged")
                name, value = item
                out[prefix + name] = _as_float_array(value, prefix + name, path)
            for cname, comp in net.components.items():
                if not isinstance(comp, TF1Network):
                    raise UserError(f"{path}: component {cname!r} of {net.name!r} is a {type(comp).__name__}, "
                                    "not a Network; the pickle is damaged")
                recurse(f"{prefix}{cname}/", comp, depth + 1)

        recurse("", self, 0)
        return out


def _as_float_array(value, name: str, path: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiub":
        raise UserError(f"{path}: variable {name!r} holds {arr.dtype} data, not numbers; the pickle is damaged")
    return np.asarray(arr, dtype=np.float32)  # no copy for the usual float32 arrays


def tf1_allowed_globals() -> dict:
    allowed = numpy_globals()
    allowed[("dnnlib.tflib.network", "Network")] = TF1Network
    allowed[("dnnlib.util", "EasyDict")] = EasyDict
    allowed[("dnnlib", "EasyDict")] = EasyDict
    return allowed


def read_tf1_network(path, kind: str = "NVIDIA TF1 network pickle") -> TF1Network:
    """Unpickle a dnnlib pickle that holds one network (NVIDIA's metric feature networks, e.g.
    `vgg16_zhang_perceptual.pkl`), or the first network of a tuple, safely."""
    path = os.fspath(path)
    data = restricted_load(path, tf1_allowed_globals(), kind)
    if isinstance(data, (tuple, list)):
        data = next((n for n in data if isinstance(n, TF1Network)), None)
    if not isinstance(data, TF1Network):
        raise UserError(f"{path}: does not hold a dnnlib.tflib.network.Network; expected an {kind}")
    return data


def read_tf1_pickle(path) -> tuple[TF1Network | None, TF1Network | None, TF1Network]:
    """Unpickle an NVIDIA TF1 network pickle into `(G, D, Gs)` stand-ins, safely. A pickle holding
    only a generator gives `(None, None, Gs)`."""
    path = os.fspath(path)
    data = restricted_load(path, tf1_allowed_globals(), KIND)
    if isinstance(data, TF1Network):
        # Some releases hold the generator alone (NVIDIA's legacy.py accepts that as G_ema).
        if data.build_func_name != "G_main":
            raise UserError(f"{path}: holds a single {data.build_func_name or 'unknown'} network ({data.name!r}); "
                            "only a generator (G_main) or NVIDIA's (G, D, Gs) tuple can be converted")
        data = (None, None, data)
    if not (isinstance(data, tuple) and len(data) == 3 and isinstance(data[2], TF1Network)
            and all(isinstance(n, TF1Network) for n in data if n is not None)):
        what = type(data).__name__
        if isinstance(data, (tuple, list)):
            what = f"{what} of {len(data)} items"
        raise UserError(f"{path}: is a pickle but not an {KIND} (it holds a {what}, expected a (G, D, Gs) tuple of "
                        "dnnlib.tflib.network.Network); check that this is the right file")
    for net in data:
        if net is None:
            continue
        if net.version < 4:
            raise UserError(f"{path}: network {net.name!r} has pickle version {net.version}; only StyleGAN2 and "
                            "StyleGAN2-ADA pickles (version 4 or later) are supported")
        if "variables" not in net.state or "static_kwargs" not in net.state:
            raise UserError(f"{path}: network {net.name!r} has no variables or static_kwargs; the pickle is damaged")
    return data


__all__ = ["TF1Network", "read_tf1_pickle", "tf1_allowed_globals", "KIND"]
