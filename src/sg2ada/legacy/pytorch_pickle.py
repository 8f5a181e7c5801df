"""Reading NVIDIA's PyTorch network pickles (NVlabs/stylegan2-ada-pytorch) without PyTorch, without
NVIDIA's source, and without running the code they embed.

NVIDIA's `training/training_loop.py` writes `network-snapshot-*.pkl` with plain `pickle.dump` of a
dict `{G, D, G_ema, augment_pipe, training_set_kwargs}`. The networks are instances of classes
decorated by `torch_utils.persistence.persistent_class`, whose `__reduce__` pickles every instance
as a call `_reconstruct_persistent_obj(meta)` with
    meta = {type: 'class', version: 6, module_src: <the module's full source>,
            class_name: 'Generator' | 'MappingNetwork' | ..., state: <the instance __dict__>}
and NVIDIA's loader `exec`s `module_src` to rebuild the class. The state is a `torch.nn.Module`
`__dict__`: `_parameters`, `_buffers` (OrderedDicts of tensors), `_modules` (child objects, again
persistent), `_non_persistent_buffers_set`, hooks, `_init_args`, `_init_kwargs` (the constructor
arguments, often `dnnlib.util.EasyDict`s) and plain attributes.

Tensors are pickled by torch (`torch/_tensor.py`, `torch/nn/parameter.py`, `torch/storage.py`) as
    torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                                    backward_hooks[, metadata])
    torch._utils._rebuild_parameter(<tensor>, requires_grad, backward_hooks)
possibly wrapped in `torch._tensor._rebuild_from_type_v2(func, type, args, state)`, and each storage
as `torch.storage._load_from_bytes(<bytes>)`, where the bytes are `torch.save(storage)` output in
one of two formats (both decoded here, as `torch/serialization.py` does):
- legacy (what every torch writes here, NVIDIA's torch 1.7-1.9 included): consecutive pickles of
  the magic number 0x1950A86A20F9469CFC6C, the protocol version 1001 and a sys_info dict; then the
  object pickle, in which each storage is the persistent id
  `('storage', <torch.FloatStorage|HalfStorage|...>, key, location, numel, view_metadata)`
  (`view_metadata` None or `(view_key, offset, numel)` into the root storage); then a pickle of the
  list of storage keys; then, per key in that order, an 8-byte little-endian element count and the
  raw little-endian elements.
- zip (torch >= 1.6 `_use_new_zipfile_serialization`): `<prefix>/data.pkl` with persistent ids
  `('storage', <storage type>, key, location, numel)`, the elements in `<prefix>/data/<key>`, and
  their byte order in `<prefix>/byteorder` (little when absent).
Storages become 1-D numpy arrays of the matching dtype (bfloat16 widened to float32) and tensors
numpy arrays cut from them with their offset, size and stride (`as_strided`, bounds-checked, then
copied); `state_dict` hands the importer float32. torch's pre-1.0 tar format is refused.

Everything goes through our restricted unpickler, the pickles inside the storage bytes included:
`_reconstruct_persistent_obj` becomes a function that returns a `PersistentObject` stand-in (class
name + state; `module_src` is dropped unread), the tensor-rebuild and storage names map to the
decoders here, the storage types to dtype records, and every other global is refused. The configs
come from the networks' `init_kwargs`, the weights from `state_dict`-style names through
`sg2ada.legacy.pytorch_layout`.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
import zlib

import numpy as np
from numpy.lib.stride_tricks import as_strided

from sg2ada.errors import UserError
from sg2ada.legacy import pytorch_layout
from sg2ada.legacy.restricted import EasyDict, RestrictedUnpickler, jsonable, numpy_globals, restricted_load
from sg2ada.legacy.tf1_import import tf1_arrays_for
from sg2ada.networks.layers import assign_named
from sg2ada.networks.snapshot import Networks, build_networks

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


# ---------------------------------------------------------------------------------------------------
# torch.save storages and tensors, decoded without torch.

class StorageType:
    """Stand-in for a `torch.<Name>Storage` class named in a pickle: the element type only."""

    def __init__(self, name: str, dtype: str | None, bfloat16: bool = False):
        self.name = name
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.bfloat16 = bfloat16

    def __repr__(self):
        return f"torch.{self.name}"


# torch/storage.py `_dtype_to_storage_type_map`, plus UntypedStorage (bytes). bfloat16 has no numpy
# type: its storages are read as uint16 and widened to float32 when a tensor is cut from them.
STORAGE_TYPES = {name: StorageType(name, dtype, name == "BFloat16Storage") for name, dtype in (
    ("DoubleStorage", "<f8"), ("FloatStorage", "<f4"), ("HalfStorage", "<f2"), ("BFloat16Storage", "<u2"),
    ("LongStorage", "<i8"), ("IntStorage", "<i4"), ("ShortStorage", "<i2"), ("CharStorage", "i1"),
    ("ByteStorage", "u1"), ("BoolStorage", "?"), ("UntypedStorage", "u1"),
)}
# Storage types torch can write that no network weight uses: named, so the error can say what they
# are rather than calling them foreign globals.
UNSUPPORTED_STORAGE_TYPES = {name: StorageType(name, None) for name in (
    "ComplexFloatStorage", "ComplexDoubleStorage", "QInt8Storage", "QInt32Storage", "QUInt8Storage",
    "QUInt4x2Storage", "QUInt2x4Storage",
)}

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
LEGACY_PROTOCOL_VERSION = 1001


class Storage:
    """A decoded torch storage: `numel` elements of `stype`, or a view into a root storage."""

    def __init__(self, stype: StorageType, numel: int, root: Storage | None = None, offset: int = 0):
        self.stype = stype
        self.numel = numel
        self.root = root
        self.offset = offset
        self.data: np.ndarray | None = None  # 1-D, set once the bytes are read (roots only)

    def array(self) -> np.ndarray:
        if self.root is not None:
            return self.root.array()[self.offset:self.offset + self.numel]
        if self.data is None:
            raise pickle.UnpicklingError("tensor storage without data; the pickle is damaged")
        return self.data


def _bad(msg: str):
    return pickle.UnpicklingError(f"tensor storage: {msg}")


def _nonneg_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _bad(f"{what} is {v!r}, expected a non-negative integer")
    return v


def _storage_type(stype) -> StorageType:
    if not isinstance(stype, StorageType):
        raise _bad(f"storage type is a {type(stype).__name__}")
    if stype.dtype is None:
        raise _bad(f"torch.{stype.name} is not supported (network weights are float, half, int or bool tensors)")
    return stype


def _storage_unpickler(f, persistent_load) -> RestrictedUnpickler:
    allowed = {("torch", name): t for name, t in {**STORAGE_TYPES, **UNSUPPORTED_STORAGE_TYPES}.items()}
    return RestrictedUnpickler(f, allowed, persistent_load)


def _plain_pickle(f):
    # The header pickles and the key list hold plain data: no global at all is allowed.
    return RestrictedUnpickler(f, {}).load()


def _load_legacy(b: bytes) -> Storage:
    f = io.BytesIO(b)
    if _plain_pickle(f) != LEGACY_MAGIC_NUMBER:
        raise _bad("not torch.save data (wrong magic number)")
    version = _plain_pickle(f)
    if version != LEGACY_PROTOCOL_VERSION:
        raise _bad(f"torch.save protocol version {version!r}, expected {LEGACY_PROTOCOL_VERSION}")
    if not isinstance(_plain_pickle(f), dict):
        raise _bad("torch.save sys_info is not a dict")

    roots: dict = {}
    views: dict = {}

    def persistent_load(pid):
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] not in ("storage", b"storage"):
            raise _bad(f"unexpected persistent id {str(pid)[:80]}")
        stype, key, _location, numel = _storage_type(pid[1]), pid[2], pid[3], _nonneg_int(pid[4], "numel")
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(key, (str, int)):
            raise _bad(f"storage key is a {type(key).__name__}")
        root = roots.get(key)
        if root is None:
            root = roots[key] = Storage(stype, numel)
        elif root.stype is not stype or root.numel != numel:
            raise _bad(f"storage {key!r} is described twice, differently")
        if view is None:
            return root
        if not isinstance(view, tuple) or len(view) != 3:
            raise _bad("malformed storage view")
        view_key, offset, size = view[0], _nonneg_int(view[1], "view offset"), _nonneg_int(view[2], "view size")
        if not isinstance(view_key, (str, int)):
            raise _bad(f"storage view key is a {type(view_key).__name__}")
        if offset + size > numel:
            raise _bad("storage view extends past its storage")
        if view_key not in views:
            views[view_key] = Storage(stype, size, root, offset)
        return views[view_key]

    obj = _storage_unpickler(f, persistent_load).load()
    keys = _plain_pickle(f)
    if not isinstance(keys, list):
        raise _bad("torch.save storage key list is not a list")
    pos = f.tell()
    for key in keys:
        st = roots.get(key) if isinstance(key, (str, int)) else None
        if st is None or st.data is not None:
            raise _bad(f"unexpected storage key {str(key)[:40]!r}")
        if pos + 8 > len(b):
            raise _bad("data truncated")
        count = int.from_bytes(b[pos:pos + 8], "little", signed=True)
        pos += 8
        if count != st.numel:
            raise _bad(f"storage {key!r} holds {count} elements, expected {st.numel}")
        nbytes = count * st.stype.dtype.itemsize
        if pos + nbytes > len(b):
            raise _bad("data truncated")
        st.data = np.frombuffer(b, st.stype.dtype, count, offset=pos)
        pos += nbytes
    if not isinstance(obj, Storage):
        raise _bad(f"torch.save data holds a {type(obj).__name__}, expected a storage")
    return obj


def _load_zip(b: bytes) -> Storage:
    try:
        with zipfile.ZipFile(io.BytesIO(b)) as zf:
            pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise _bad("torch.save zip data without exactly one <archive>/data.pkl")
            prefix = pkls[0][:-len("data.pkl")]
            order = "<"
            if prefix + "byteorder" in zf.namelist():
                name = zf.read(prefix + "byteorder")
                if name not in (b"little", b"big"):
                    raise _bad(f"unknown byte order {name[:20]!r}")
                order = "<" if name == b"little" else ">"
            storages: dict = {}

            def persistent_load(pid):
                if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] not in ("storage", b"storage"):
                    raise _bad(f"unexpected persistent id {str(pid)[:80]}")
                stype, key, numel = _storage_type(pid[1]), pid[2], _nonneg_int(pid[4], "numel")
                if not isinstance(key, str) or "/" in key or key in ("", ".", ".."):
                    raise _bad(f"storage key {str(key)[:40]!r}")
                if key in storages:
                    st = storages[key]
                    if st.stype is not stype or st.numel != numel:
                        raise _bad(f"storage {key!r} is described twice, differently")
                    return st
                dtype = stype.dtype.newbyteorder(order)
                info = zf.getinfo(f"{prefix}data/{key}")
                if info.file_size != numel * dtype.itemsize:
                    raise _bad(f"storage {key!r} holds {info.file_size} bytes, expected {numel * dtype.itemsize}")
                st = storages[key] = Storage(stype, numel)
                st.data = np.frombuffer(zf.read(info), dtype, numel)
                return st

            obj = _storage_unpickler(io.BytesIO(zf.read(pkls[0])), persistent_load).load()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, KeyError, OSError) as e:
        raise _bad(f"damaged torch.save zip data ({type(e).__name__}: {e})") from None
    if not isinstance(obj, Storage):
        raise _bad(f"torch.save data holds a {type(obj).__name__}, expected a storage")
    return obj


def load_storage_from_bytes(b) -> Storage:
    """Our `torch.storage._load_from_bytes`: the `torch.save` bytes of one storage -> `Storage`."""
    if not isinstance(b, (bytes, bytearray)):
        raise _bad(f"storage data is a {type(b).__name__}, expected bytes")
    b = bytes(b)
    if b[:4] == b"PK\x03\x04":
        return _load_zip(b)
    if b[257:262] == b"ustar":
        raise _bad("torch's pre-1.0 tar serialization is not supported; re-save the network with torch >= 1.0")
    return _load_legacy(b)


def rebuild_tensor(storage, storage_offset, size, stride, metadata=None) -> np.ndarray:
    """A tensor as a numpy array cut from its storage (a copy, native byte order)."""
    if not isinstance(storage, Storage):
        raise _bad(f"tensor built from a {type(storage).__name__}, expected a storage")
    offset = _nonneg_int(storage_offset, "tensor offset")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride):
        raise _bad("tensor size and stride are not tuples of the same length")
    size = tuple(_nonneg_int(s, "tensor size") for s in size)
    stride = tuple(_nonneg_int(s, "tensor stride") for s in stride)
    data = storage.array()
    dtype = data.dtype
    if 0 in size:
        out = np.empty(size, dtype.newbyteorder("="))
    else:
        # as_strided does no bounds check: a hostile size or stride must not read outside the storage.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= data.shape[0]:
            raise _bad(f"tensor of size {size} and stride {stride} at offset {offset} extends past its "
                       f"storage of {data.shape[0]} elements")
        view = as_strided(data[offset:], shape=size, strides=tuple(s * dtype.itemsize for s in stride),
                          writeable=False)
        out = view.astype(dtype.newbyteorder("="), copy=True)
    if storage.stype.bfloat16:
        out = (out.astype(np.uint32) << 16).view(np.float32)
    if metadata:
        if not isinstance(metadata, dict):
            raise _bad("tensor metadata is not a dict")
        # torch's lazy negation bit (torch._C._get_tensor_metadata); conj is a no-op on real data.
        if metadata.get("neg"):
            out = np.negative(out)
    return out


def _rebuild_tensor(storage, storage_offset, size, stride):
    return rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return rebuild_tensor(storage, storage_offset, size, stride, metadata)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, np.ndarray):
        raise _bad(f"parameter data is a {type(data).__name__}, expected a tensor")
    return data


class TorchTensorType:
    """Stand-in for `torch.Tensor` as named in `_rebuild_from_type_v2`."""


class TorchParameterType:
    """Stand-in for `torch.nn.Parameter` as named in `_rebuild_from_type_v2`."""


REBUILD_FUNCS = {
    "_rebuild_tensor": _rebuild_tensor,
    "_rebuild_tensor_v2": _rebuild_tensor_v2,
    "_rebuild_parameter": _rebuild_parameter,
    "_rebuild_parameter_with_state": _rebuild_parameter,
}


def _rebuild_from_type_v2(func, new_type, args, state):
    # torch wraps tensors that carry Python attributes this way; the attributes are dropped and only
    # plain tensors and parameters are accepted.
    if func not in REBUILD_FUNCS.values() or new_type not in (TorchTensorType, TorchParameterType):
        raise _bad("unsupported tensor subclass")
    if not isinstance(args, tuple):
        raise _bad("tensor arguments are not a tuple")
    return func(*args)


def _allowed_globals() -> dict:
    allowed = dict(numpy_globals())
    allowed.update({("torch._utils", k): v for k, v in REBUILD_FUNCS.items()})
    allowed[("torch._tensor", "_rebuild_from_type_v2")] = _rebuild_from_type_v2
    allowed[("torch.storage", "_load_from_bytes")] = load_storage_from_bytes
    allowed[("torch", "Tensor")] = TorchTensorType
    allowed[("torch.nn.parameter", "Parameter")] = TorchParameterType
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
    data = restricted_load(path, _allowed_globals(), KIND)
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
        assign_named(net, tf1_arrays_for(net, arrays, path, key), source=source)

    tsk = data.get("training_set_kwargs")
    dataset = jsonable(_plain(tsk)) if isinstance(tsk, dict) else None
    meta = {
        "format": "nvidia-pytorch-pickle",
        "source": os.path.abspath(path),
        "G": g_cfg.to_dict(),
        "D": d_cfg.to_dict(),
        "dataset": dataset,
        "kimg": None,
        "pytorch_init_kwargs": {k: jsonable(v) for k, v in kwargs.items()},
        "augment_pipe": _augment_summary(data.get("augment_pipe")),
    }
    return Networks(G, D, G_ema, meta)


def _augment_summary(pipe):
    if not isinstance(pipe, PersistentObject):
        return None
    out = {"class_name": pipe.class_name, "init_kwargs": jsonable(pipe.init_kwargs)}
    params = pipe.state.get("_buffers") or {}
    if "p" in params and params["p"] is not None:
        try:
            out["p"] = float(_to_numpy(params["p"]).reshape(-1)[0])
        except (TypeError, IndexError, ValueError):
            pass
    return out


__all__ = ["PersistentObject", "EasyDict", "read_pytorch_pickle", "import_pytorch_pickle", "load_storage_from_bytes",
           "rebuild_tensor", "KIND"]
