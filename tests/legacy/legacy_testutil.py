"""Helpers for the legacy-import tests: pickles shaped like NVIDIA's, written without NVIDIA's code.

`fake_modules` puts throw-away modules named like NVIDIA's (`dnnlib.tflib.network`,
`torch_utils.persistence`, `dnnlib.util`) into `sys.modules` only while pickling, so the pickles
name exactly NVIDIA's globals and the reader under test cannot import them back. `FakeTensor`,
`FakeParameter`, `legacy_storage_bytes` and `zip_storage_bytes` pickle tensors the way torch does
(torch/_tensor.py, torch/serialization.py) without torch, naming torch's globals through
`FakeGlobalPickler`, so tests of the PyTorch-pickle reader can run where torch is absent.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import pickle
import sys
import types
import typing
import zipfile

import numpy as np


def marker_src(marker) -> str:
    """Python source that leaves a marker file if anyone executes it."""
    return f"open({os.fspath(marker)!r}, 'w').write('executed')\n"


@contextlib.contextmanager
def fake_modules(**modules):
    """Install modules given as {dotted_name: {attr: value}} in sys.modules for the duration, and
    make each value claim to live there (so pickle writes that module path)."""
    created, renamed = [], []
    try:
        for name, attrs in modules.items():
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                sub = ".".join(parts[:i])
                if sub not in sys.modules:
                    sys.modules[sub] = types.ModuleType(sub)
                    created.append(sub)
            assert name in created, f"{name} already exists; refusing to patch a real module"
            mod = sys.modules[name]
            for k, v in attrs.items():
                setattr(mod, k, v)
                renamed.append((v, v.__module__, v.__qualname__))
                v.__module__ = name
                v.__qualname__ = k
        yield
    finally:
        for v, module, qualname in renamed:
            v.__module__ = module
            v.__qualname__ = qualname
        for sub in reversed(created):
            sys.modules.pop(sub, None)


class Network:
    """Pickles like `dnnlib.tflib.network.Network`: NEWOBJ + BUILD with a state dict."""

    def __init__(self, state):
        self._state = state

    def __getstate__(self):
        return self._state


def tf1_state(name, func, static_kwargs, variables, components=None, src="# not NVIDIA source\n"):
    return {
        "version": 5, "name": name, "static_kwargs": dict(static_kwargs), "components": dict(components or {}),
        "build_module_src": src, "build_func_name": func, "variables": list(variables),
        "input_shapes": [], "output_shapes": [], "input_names": [], "output_names": [],
    }


def dump_tf1(path, G, D, Gs, protocol=3):
    """Pickle three Network objects (built with tf1_state) as NVIDIA's TF1 release does."""
    with fake_modules(**{"dnnlib.tflib.network": {"Network": Network}}):
        with open(path, "wb") as f:
            pickle.dump((G, D, Gs), f, protocol=protocol)


def repickle_tf1(src_path, dst_path, protocol=3, build_module_src=None):
    """Re-create a TF1 pickle from our stand-ins (optionally replacing build_module_src)."""
    from sg2ada.legacy.tf1_pickle import read_tf1_pickle

    def convert(net):
        state = dict(net.state)
        state["components"] = {k: convert(v) for k, v in net.components.items()}
        if build_module_src is not None:
            state["build_module_src"] = build_module_src
        state["variables"] = [(n, np.array(v) if isinstance(v, np.ndarray) else v) for n, v in net.own_variables()]
        return Network(state)

    G, D, Gs = read_tf1_pickle(src_path)
    dump_tf1(dst_path, convert(G), convert(D), convert(Gs), protocol=protocol)


def assert_close(a, b, rel=1e-5, abs_=1e-4, what=""):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    err = np.abs(a - b)
    rel_err = err.max() / max(np.abs(b).max(), 1e-12)
    assert err.max() <= abs_ and rel_err <= rel, f"{what}: max abs {err.max():.3g}, rel {rel_err:.3g}"




# ---------------------------------------------------------------------------------------------------
# torch's tensor pickling, written without torch (for tests that must run where torch is absent, and
# for storage layouts current torch no longer writes, such as legacy storage views).

class FakeGlobal:
    """A global named in a pickle without its module existing: pickled as exactly `module.name`."""

    _made: typing.ClassVar[dict] = {}

    def __new__(cls, module: str, name: str):
        key = (module, name)
        if key not in cls._made:
            obj = super().__new__(cls)
            obj.module, obj.name = module, name
            cls._made[key] = obj
        return cls._made[key]

    def __reduce__(self):
        return self.name  # a string: the pickler saves the object as a global (FakeGlobalPickler.save_global)

    def __call__(self, *args):  # pickle wants reduce callables to be callable; never called
        raise AssertionError(f"{self.module}.{self.name} called")


class FakeGlobalPickler(pickle._Pickler):
    """The pure-Python pickler, writing FakeGlobals as GLOBAL opcodes without importing anything."""

    def save_global(self, obj, name=None):
        if isinstance(obj, FakeGlobal):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def fake_dumps(obj, protocol=4) -> bytes:
    buf = io.BytesIO()
    FakeGlobalPickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


STORAGE_NAMES = {"float32": "FloatStorage", "float16": "HalfStorage", "float64": "DoubleStorage",
                 "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
                 "uint8": "ByteStorage", "bool": "BoolStorage"}
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C


def legacy_storage_bytes(arr, storage_name=None, key="0", view=None, numel=None, count=None) -> bytes:
    """torch.save(<storage of arr>, _use_new_zipfile_serialization=False), as torch/serialization.py
    `_legacy_save` writes it. `view` = (view_key, offset, numel) makes the pickled object a view of
    the root storage; `numel`/`count` override the recorded sizes (to damage the file)."""
    arr = np.ascontiguousarray(np.asarray(arr).reshape(-1))
    storage_name = storage_name or STORAGE_NAMES[arr.dtype.name]
    numel = arr.size if numel is None else numel
    marker = object()

    class P(FakeGlobalPickler):
        def persistent_id(self, obj):
            if obj is marker:
                return ("storage", FakeGlobal("torch", storage_name), key, "cpu", numel, view)
            return None

    buf = io.BytesIO()
    for header in (LEGACY_MAGIC_NUMBER, 1001,
                   {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        pickle.dump(header, buf, protocol=2)
    P(buf, protocol=2).dump(marker)
    pickle.dump([key], buf, protocol=2)
    buf.write(int(arr.size if count is None else count).to_bytes(8, "little", signed=True))
    buf.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return buf.getvalue()


def zip_storage_bytes(arr, storage_name=None, key="0", byteorder="little", prefix="archive") -> bytes:
    """torch.save(<storage of arr>) in torch's zip format (torch/serialization.py `_save`)."""
    arr = np.ascontiguousarray(np.asarray(arr).reshape(-1))
    storage_name = storage_name or STORAGE_NAMES[arr.dtype.name]
    marker = object()

    class P(FakeGlobalPickler):
        def persistent_id(self, obj):
            if obj is marker:
                return ("storage", FakeGlobal("torch", storage_name), key, "cpu", arr.size)
            return None

    pkl = io.BytesIO()
    P(pkl, protocol=2).dump(marker)
    order = ">" if byteorder == "big" else "<"  # torch reads a file without a byteorder record as little
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl.getvalue())
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        zf.writestr(f"{prefix}/data/{key}", arr.astype(arr.dtype.newbyteorder(order)).tobytes())
        zf.writestr(f"{prefix}/version", "3\n")
    return buf.getvalue()


class FakeStorage:
    """Pickles as torch's storages do: `torch.storage._load_from_bytes(<torch.save bytes>)`."""

    def __init__(self, data: bytes):
        self.data = data

    def __reduce__(self):
        return FakeGlobal("torch.storage", "_load_from_bytes"), (self.data,)


class FakeTensor:
    """Pickles as a torch tensor: `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`."""

    def __init__(self, value, storage_format="legacy"):
        self.value = np.ascontiguousarray(value)
        encode = legacy_storage_bytes if storage_format == "legacy" else zip_storage_bytes
        self.storage = FakeStorage(encode(self.value))

    def __reduce__(self):
        v = self.value
        stride = tuple(s // v.itemsize for s in v.strides) if v.size else (1,) * v.ndim
        return (FakeGlobal("torch._utils", "_rebuild_tensor_v2"),
                (self.storage, 0, tuple(v.shape), stride, False, collections.OrderedDict()))


class FakeParameter(FakeTensor):
    """Pickles as `torch.nn.Parameter`: `torch._utils._rebuild_parameter(<tensor>, requires_grad, hooks)`."""

    def __reduce__(self):
        return (FakeGlobal("torch._utils", "_rebuild_parameter"),
                (_as_tensor(self), False, collections.OrderedDict()))


def _as_tensor(p: FakeParameter) -> FakeTensor:
    t = FakeTensor.__new__(FakeTensor)
    t.value, t.storage = p.value, p.storage
    return t


def module_state(parameters=None, buffers=None, modules=None, **attrs) -> dict:
    """A `torch.nn.Module.__dict__` as torch 1.x/2.x pickles it."""
    od = collections.OrderedDict
    state = dict(training=True, _parameters=od(parameters or {}), _buffers=od(buffers or {}),
                 _non_persistent_buffers_set=set(), _backward_hooks=od(), _forward_hooks=od(),
                 _forward_pre_hooks=od(), _state_dict_hooks=od(), _load_state_dict_pre_hooks=od(),
                 _modules=od(modules or {}))
    state.update(attrs)
    return state
