"""Reading NVIDIA's PyTorch network pickles (NVlabs/stylegan2-ada-pytorch) without NVIDIA's source and
without running the code they embed. Needs PyTorch (the optional `torch` extra) for the tensors.

NVIDIA's `training/training_loop.py` writes `network-snapshot-*.pkl` with plain `pickle.dump` of a
dict `{G, D, G_ema, augment_pipe, training_set_kwargs}`. The networks are instances of classes
decorated by `torch_utils.persistence.persistent_class`, whose `__reduce__` pickles every instance
as a call `_reconstruct_persistent_obj(meta)` with
    meta = {type: 'class', version: 6, module_src: <the module's full source>,
            class_name: 'Generator' | 'MappingNetwork' | ..., state: <the instance __dict__>}
and NVIDIA's loader `exec`s `module_src` to rebuild the class. The state is a `torch.nn.Module`
`__dict__`: `_parameters`, `_buffers` (OrderedDicts of tensors), `_modules` (child objects, again
persistent), `_non_persistent_buffers_set`, hooks, `_init_args`, `_init_kwargs` (the constructor
arguments, often `dnnlib.util.EasyDict`s) and plain attributes. Tensors are pickled by torch:
`torch._utils._rebuild_tensor_v2(storage, ...)` / `_rebuild_parameter(...)`, with each storage as
`torch.storage._load_from_bytes(<legacy torch.save bytes>)`.

Our restricted unpickler maps `_reconstruct_persistent_obj` to a function that returns a
`PersistentObject` stand-in (class name + state; `module_src` is dropped unread), admits torch's
tensor-rebuild functions, reads storages with `torch.load(weights_only=True)` (torch's own
restricted loader), and refuses everything else. The configs come from the networks'
`init_kwargs`, the weights from `state_dict`-style names through `sg2ada.legacy.pytorch_layout`.
"""

from __future__ import annotations

import collections
import io
import os

import numpy as np

from sg2ada.errors import UserError
from sg2ada.legacy.restricted import restricted_load
from sg2ada.legacy.restricted import EasyDict, numpy_globals

KIND = "NVIDIA PyTorch network pickle"
PERSISTENCE_VERSION = 6  # torch_utils.persistence._version of the public releases
NETWORK_CLASSES = {"G": "Generator", "G_ema": "Generator", "D": "Discriminator"}



class PersistentObject:
    """Stand-in for an instance of one of NVIDIA's persistent classes: keeps the class name and the
    pickled `__dict__`; the embedded module source is never kept, compiled or executed."""

    def __init__(self, class_name: str, state: dict, version=None):
        self.class_name = class_name
        self.state = state
        self.version = version

    def __repr__(self):
        return f"PersistentObject({self.class_name})"

    @property
    def init_kwargs(self) -> dict:
        return _plain(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    def children(self) -> dict:
        return dict(self.state.get("_modules") or {})

    def state_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        """What `torch.nn.Module.state_dict()` would return, as float32 numpy arrays: parameters and
        persistent buffers of this object and its children, with dotted names."""
        out: dict[str, np.ndarray] = {}
        non_persistent = set(self.state.get("_non_persistent_buffers_set") or ())
        for name, t in (self.state.get("_parameters") or {}).items():
            if t is not None:
                out[prefix + name] = _to_numpy(t)
        for name, t in (self.state.get("_buffers") or {}).items():
            if t is not None and name not in non_persistent:
                out[prefix + name] = _to_numpy(t)
        for name, child in self.children().items():
            if child is None:
                continue
            if not isinstance(child, PersistentObject):
                raise TypeError(f"submodule {prefix + name!r} is a {type(child).__name__}, not an NVIDIA network module")
            out.update(child.state_dict(f"{prefix}{name}."))
        return out


def _plain(v):
    """EasyDicts and OrderedDicts -> plain dicts, recursively (for JSON and for config translation)."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(x) for x in v) if isinstance(v, list) else tuple(_plain(x) for x in v)
    return v


def _to_numpy(t) -> np.ndarray:
    import torch

    if isinstance(t, torch.Tensor):
        return t.detach().to(torch.float32).cpu().numpy().copy()
    if isinstance(t, np.ndarray):
        return t.astype(np.float32)
    raise TypeError(f"expected a tensor, found {type(t).__name__}")


def _reconstruct_persistent_obj(meta):
    """Our replacement for `torch_utils.persistence._reconstruct_persistent_obj`: no exec."""
    if not isinstance(meta, dict):
        raise TypeError("persistent object metadata is not a dict")
    if meta.get("type") != "class":
        raise TypeError(f"persistent object of type {meta.get('type')!r}, expected 'class'")
    class_name = meta.get("class_name")
    if not isinstance(class_name, str):
        raise TypeError("persistent object without a class name")
    state = meta.get("state")
    if state is None:
        state = {}
    if not isinstance(state, dict):
        raise TypeError(f"persistent {class_name} state is a {type(state).__name__}, expected a dict")
    return PersistentObject(class_name, state, meta.get("version"))


def _torch_globals() -> dict:
    try:
        import torch
        import torch._utils
    except ImportError:
        raise UserError("reading NVIDIA PyTorch pickles needs PyTorch: pip install 'sg2ada[torch]' "
                        "(or convert the file where torch is installed)") from None

    def load_from_bytes(b):
        if not isinstance(b, (bytes, bytearray)):
            raise TypeError("tensor storage is not bytes")
        # torch's own restricted unpickler: storages and tensors only, never arbitrary globals.
        return torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")

    rebuild_funcs = {}
    for name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter", "_rebuild_parameter_with_state",
                 "_rebuild_tensor"):
        fn = getattr(torch._utils, name, None)
        if fn is not None:
            rebuild_funcs[name] = fn
    allowed_funcs = set(rebuild_funcs.values())

    def rebuild_from_type_v2(func, new_type, args, state):
        # torch wraps tensors with Python state this way; only plain tensors/parameters are allowed.
        if func not in allowed_funcs or new_type not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError("unsupported tensor subclass in a network pickle")
        ret = func(*args)
        return ret

    allowed = dict(numpy_globals())
    allowed.update({("torch._utils", k): v for k, v in rebuild_funcs.items()})
    allowed[("torch._tensor", "_rebuild_from_type_v2")] = rebuild_from_type_v2
    allowed[("torch.storage", "_load_from_bytes")] = load_from_bytes
    allowed[("torch", "Tensor")] = torch.Tensor
    allowed[("torch.nn.parameter", "Parameter")] = torch.nn.Parameter
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("builtins", "set")] = set
    allowed[("builtins", "frozenset")] = frozenset
    allowed[("torch_utils.persistence", "_reconstruct_persistent_obj")] = _reconstruct_persistent_obj
    allowed[("dnnlib.util", "EasyDict")] = EasyDict
    allowed[("dnnlib", "EasyDict")] = EasyDict
    return allowed


def read_pytorch_pickle(path) -> dict:
    """Unpickle an NVIDIA PyTorch network pickle into a dict of stand-ins, safely."""
    path = os.fspath(path)
    data = restricted_load(path, _torch_globals(), KIND)
    if not isinstance(data, dict):
        raise UserError(f"{path}: is a pickle but not an {KIND} (it holds a {type(data).__name__}, expected a dict "
                        "with G, D, G_ema); check that this is the right file")
    missing = [k for k in ("G", "D", "G_ema") if k not in data]
    if missing:
        raise UserError(f"{path}: {KIND} without {', '.join(missing)}; pass a full network-snapshot-*.pkl")
    for key, cls in NETWORK_CLASSES.items():
        net = data[key]
        if not isinstance(net, PersistentObject) or net.class_name != cls:
            what = net.class_name if isinstance(net, PersistentObject) else type(net).__name__
            raise UserError(f"{path}: {key} is a {what}, expected NVIDIA's {cls}; only StyleGAN2-ADA networks "
                            "can be converted")
        if net.version is not None and net.version != PERSISTENCE_VERSION:
            raise UserError(f"{path}: {key} was pickled by torch_utils.persistence version {net.version}, "
                            f"this importer reads version {PERSISTENCE_VERSION}")
    return data


def import_pytorch_pickle(path, networks=("G", "D", "G_ema")):
    """Build G, D, G_ema from an NVIDIA PyTorch pickle. Returns snapshot.Networks; the networks not
    named in `networks` are None."""
    from sg2ada.legacy import pytorch_layout
    from sg2ada.networks.snapshot import Networks, build_networks

    path = os.fspath(path)
    data = read_pytorch_pickle(path)
    kwargs = {k: data[k].init_kwargs for k in ("G", "D", "G_ema")}
    try:
        g_cfg = pytorch_layout.generator_config_from_pytorch(kwargs["G_ema"], source=path)
        g_cfg_train = pytorch_layout.generator_config_from_pytorch(kwargs["G"], source=path)
        d_cfg = pytorch_layout.discriminator_config_from_pytorch(kwargs["D"], source=path)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: cannot translate the networks' init_kwargs ({type(e).__name__}: {e}); "
                        "only StyleGAN2-ADA networks can be converted") from None
    if g_cfg != g_cfg_train:
        raise UserError(f"{path}: G and G_ema have different configurations; the pickle is damaged")

    G, D, G_ema = build_networks(g_cfg, d_cfg, tuple(networks), source=path)
    for net, key in ((G, "G"), (D, "D"), (G_ema, "G_ema")):
        if net is None:
            continue
        try:
            state = data[key].state_dict()
        except TypeError as e:
            raise UserError(f"{path}: {key}: {e}; the pickle is damaged") from None
        source = f"{path} ({key})"
        if key == "D":
            arrays = pytorch_layout.discriminator_from_pytorch(state, source=source)
        else:
            arrays = pytorch_layout.generator_from_pytorch(state, source=source)
        from sg2ada.legacy.tf1_import import tf1_arrays_for

        arrays = tf1_arrays_for(net, arrays, path, key)
        for name, var in net.named_variables().items():
            var.assign(arrays[name])

    tsk = data.get("training_set_kwargs")
    dataset = _jsonable(_plain(tsk)) if isinstance(tsk, dict) else None
    meta = {
        "format": "nvidia-pytorch-pickle",
        "source": os.path.abspath(path),
        "G": g_cfg.to_dict(),
        "D": d_cfg.to_dict(),
        "dataset": dataset,
        "kimg": None,
        "pytorch_init_kwargs": {k: _jsonable(v) for k, v in kwargs.items()},
        "augment_pipe": _augment_summary(data.get("augment_pipe")),
    }
    return Networks(G, D, G_ema, meta)


def _augment_summary(pipe):
    if not isinstance(pipe, PersistentObject):
        return None
    out = {"class_name": pipe.class_name, "init_kwargs": _jsonable(pipe.init_kwargs)}
    params = pipe.state.get("_buffers") or {}
    if "p" in params and params["p"] is not None:
        try:
            out["p"] = float(_to_numpy(params["p"]).reshape(-1)[0])
        except (TypeError, IndexError, ValueError):
            pass
    return out


def _jsonable(v):
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return repr(v)


__all__ = ["PersistentObject", "EasyDict", "read_pytorch_pickle", "import_pytorch_pickle", "KIND"]
