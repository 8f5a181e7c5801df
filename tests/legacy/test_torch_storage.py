"""The torch-free decoder of torch's pickled tensors (sg2ada.legacy.pytorch_pickle), against torch.

Tests marked by the `torch` fixture use the installed PyTorch as the oracle (they build the bytes
with torch itself and compare our decode with torch's) and skip where torch is absent; the others
build torch's formats with `legacy_testutil` and run without torch.
"""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from sg2ada.errors import UserError
from sg2ada.legacy.pytorch_pickle import load_storage_from_bytes, read_pytorch_pickle, rebuild_tensor
from sg2ada.legacy.restricted import RefusedGlobal, RestrictedUnpickler

from legacy_testutil import (LEGACY_MAGIC_NUMBER, FakeGlobal, FakeGlobalPickler, FakeStorage, FakeTensor,
                             fake_dumps, legacy_storage_bytes, zip_storage_bytes)

DTYPES = ["float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool", "bfloat16"]


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is the oracle for torch's formats")


def ours(b: bytes):
    """Unpickle `b` (an outer pickle holding tensors) through the reader's allow-list."""
    from sg2ada.legacy.pytorch_pickle import _allowed_globals

    return RestrictedUnpickler(io.BytesIO(b), _allowed_globals()).load()


def _tensor(torch, dtype: str, shape=(3, 4)):
    g = torch.Generator().manual_seed(1)
    n = int(np.prod(shape))
    if dtype == "bool":
        return torch.rand(n, generator=g).reshape(shape) > 0.5
    if dtype in ("float32", "float16", "float64", "bfloat16"):
        return (torch.randn(n, generator=g) * 100).to(getattr(torch, dtype)).reshape(shape)
    return torch.randint(0 if dtype == "uint8" else -100, 100, (n,), generator=g).to(getattr(torch, dtype)).reshape(shape)


def _numpy(t):
    import torch

    return t.detach().to(torch.float32).numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()


def _expect_equal(got, t):
    want = _numpy(t)
    assert isinstance(got, np.ndarray) and got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------------
# Against torch.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("protocol", [2, 4])
def test_pickled_tensor_matches_torch(torch, dtype, protocol):
    t = _tensor(torch, dtype)
    b = pickle.dumps(t, protocol=protocol)  # _rebuild_tensor_v2(_load_from_bytes(<legacy torch.save>), ...)
    _expect_equal(ours(b), t)
    _expect_equal(ours(b), pickle.loads(b))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("zip_format", [False, True])
def test_saved_storage_matches_torch(torch, dtype, zip_format):
    t = _tensor(torch, dtype, (7,))
    buf = io.BytesIO()
    torch.save(t._typed_storage(), buf, _use_new_zipfile_serialization=zip_format)
    b = buf.getvalue()
    assert b.startswith(b"PK\x03\x04") == zip_format
    st = load_storage_from_bytes(b)
    _expect_equal(rebuild_tensor(st, 0, (7,), (1,)), t)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "bool"])
def test_views_offsets_and_strides_match_torch(torch, dtype):
    base = _tensor(torch, dtype, (5, 12))
    views = {
        "rows_every_other_column": base[1:, ::2], "transposed": base.t(), "row_offset": base[3],
        "block": base[2:4, 5:], "scalar": base[4, 7], "expanded": base[:1, :3].expand(4, 3),
        "empty": base[:, :0], "empty_storage": base[:0].clone(), "permuted_3d": base.reshape(5, 3, 4).permute(2, 0, 1)[1:, :, ::3],
    }
    for name, v in views.items():
        b = pickle.dumps(v, protocol=4)
        got = ours(b)
        assert got.flags.writeable, name
        _expect_equal(got, v)
        _expect_equal(got, pickle.loads(b))


def test_parameter_and_tensor_with_attributes_match_torch(torch):
    t = _tensor(torch, "float32")
    p = torch.nn.Parameter(t.clone(), requires_grad=True)
    _expect_equal(ours(pickle.dumps(p)), t)
    sub = t.clone()
    sub.note = "python state"  # pickled through torch._tensor._rebuild_from_type_v2
    b = pickle.dumps(sub, protocol=4)
    assert b"_rebuild_from_type_v2" in b
    _expect_equal(ours(b), t)
    p2 = torch.nn.Parameter(t.clone())
    p2.note = 1  # torch._utils._rebuild_parameter_with_state
    b = pickle.dumps(p2, protocol=4)
    assert b"_rebuild_parameter_with_state" in b
    _expect_equal(ours(b), t)


def test_zip_storages_inside_a_pickle_match_torch(torch):
    class ZipStoragePickler(pickle.Pickler):
        # torch itself writes legacy bytes here; a newer torch might write its zip format instead.
        def reducer_override(self, obj):
            if isinstance(obj, torch.storage.TypedStorage):
                buf = io.BytesIO()
                torch.save(obj, buf)
                return torch.storage._load_from_bytes, (buf.getvalue(),)
            return NotImplemented

    base = _tensor(torch, "float16", (6, 5))
    obj = {"a": base, "b": base[2:, 1::2], "p": torch.nn.Parameter(base.float())}
    buf = io.BytesIO()
    ZipStoragePickler(buf, protocol=4).dump(obj)
    b = buf.getvalue()
    assert b.count(b"PK\x03\x04") >= 2
    got, want = ours(b), pickle.loads(b)
    for k, t in obj.items():
        _expect_equal(got[k], want[k])
        _expect_equal(got[k], t)


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
@pytest.mark.parametrize("view", [None, ("view", 3, 4), ("view", 0, 10), ("view", 10, 0)])
def test_legacy_writer_and_storage_views_match_torch(torch, view):
    # Storage views (view_metadata) are what torch < 1.? wrote for sliced storages; torch still reads them.
    arr = np.arange(10, dtype=np.float32) * 1.5
    b = legacy_storage_bytes(arr, view=view)
    want = np.array(torch.storage._load_from_bytes(b).tolist(), np.float32)
    st = load_storage_from_bytes(b)
    np.testing.assert_array_equal(st.array(), want)
    if view is not None:
        np.testing.assert_array_equal(want, arr[view[1]:view[1] + view[2]])


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
@pytest.mark.parametrize("byteorder", ["little", "big", None])
def test_zip_writer_and_byte_order_match_torch(torch, byteorder):
    arr = (np.arange(12, dtype=np.float32) - 5.25).astype(np.float16)
    b = zip_storage_bytes(arr, byteorder=byteorder)
    want = np.array(torch.storage._load_from_bytes(b).tolist(), np.float16)
    np.testing.assert_array_equal(load_storage_from_bytes(b).array(), want)
    np.testing.assert_array_equal(want, arr)


# ---------------------------------------------------------------------------------------------------
# Without torch.

@pytest.mark.parametrize("fmt", ["legacy", "zip"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "bool"])
def test_round_trip_without_torch(fmt, dtype, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    arr = (np.arange(24).reshape(2, 3, 4) % 7 - 2).astype(dtype)
    got = ours(fake_dumps({"t": FakeTensor(arr, fmt)}))["t"]
    assert got.dtype == arr.dtype
    np.testing.assert_array_equal(got, arr)


def test_rebuild_refuses_out_of_bounds_views():
    st = load_storage_from_bytes(legacy_storage_bytes(np.arange(12, dtype=np.float32)))
    np.testing.assert_array_equal(rebuild_tensor(st, 2, (2, 5), (5, 1)), np.arange(2, 12).reshape(2, 5))
    for offset, size, stride in ((3, (2, 5), (5, 1)), (0, (13,), (1,)), (12, (1,), (1,)), (0, (2, 2), (11, 1)),
                                 (-1, (2,), (1,)), (0, (2,), (-1,)), (0, [2], [1]), (0, (2, 3), (1,))):
        with pytest.raises(pickle.UnpicklingError, match="tensor storage"):
            rebuild_tensor(st, offset, size, stride)


@pytest.mark.parametrize("case, match", [
    ("magic", "wrong magic number"),
    ("count", "holds 11 elements, expected 12"),
    ("short", "data truncated"),
    ("unsupported", "torch.QInt8Storage is not supported"),
    ("tar", "tar serialization is not supported"),
    ("not_bytes", "storage data is a str"),
    ("view_past_end", "view extends past its storage"),
    ("zip_size", "holds 48 bytes, expected 52"),
    ("zip_missing", "damaged torch.save zip data"),
])
def test_damaged_storage_bytes(case, match):
    arr = np.arange(12, dtype=np.float32)
    b = {
        "magic": lambda: pickle.dumps(123, protocol=2) + legacy_storage_bytes(arr)[12:],
        "count": lambda: legacy_storage_bytes(arr, count=11),
        "short": lambda: legacy_storage_bytes(arr)[:-5],
        "unsupported": lambda: legacy_storage_bytes(arr.astype(np.int8), storage_name="QInt8Storage"),
        "tar": lambda: b"\0" * 257 + b"ustar" + b"\0" * 250,
        "not_bytes": lambda: "abc",
        "view_past_end": lambda: legacy_storage_bytes(arr, view=("v", 10, 3)),
        "zip_size": lambda: _zip_with_numel(arr, 13),
        "zip_missing": lambda: zip_storage_bytes(arr, key="0").replace(b"archive/data/0", b"archive/data/9"),
    }[case]()
    with pytest.raises(pickle.UnpicklingError, match=match):
        load_storage_from_bytes(b)


def _zip_with_numel(arr, numel):
    import zipfile

    good = zipfile.ZipFile(io.BytesIO(zip_storage_bytes(arr)))
    pid = ("storage", FakeGlobal("torch", "FloatStorage"), "0", "cpu", numel)

    class P(FakeGlobalPickler):
        def persistent_id(self, obj):
            return pid if obj is marker else None

    marker = object()
    pkl = io.BytesIO()
    P(pkl, protocol=2).dump(marker)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name in good.namelist():
            zf.writestr(name, pkl.getvalue() if name.endswith("data.pkl") else good.read(name))
    return out.getvalue()


def test_unknown_storage_type_is_refused_as_a_global():
    b = legacy_storage_bytes(np.zeros(3, np.float32), storage_name="EvilStorage")
    with pytest.raises(RefusedGlobal, match="torch.EvilStorage"):
        load_storage_from_bytes(b)


# ---------------------------------------------------------------------------------------------------
# Globals smuggled through the storage path, in a whole network pickle.

class _System:
    """Pickles as a call of os.system (the marker file appears if anything runs it)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_legacy_object_pickle(marker) -> bytes:
    buf = io.BytesIO()
    for header in (LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    pickle.dump(_System(marker), buf, protocol=2)
    pickle.dump([], buf, protocol=2)
    return buf.getvalue()


def _evil_storage_type(marker) -> bytes:
    # The storage-type slot of the persistent id names os.system instead of torch.FloatStorage.
    b = legacy_storage_bytes(np.zeros(3, np.float32))
    return b.replace(b"ctorch\nFloatStorage\n", b"cposix\nsystem\n")


def _evil_header(marker) -> bytes:
    return pickle.dumps(_System(marker), protocol=2) + legacy_storage_bytes(np.zeros(3, np.float32))


def _evil_zip(marker) -> bytes:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(_System(marker), protocol=2))
    return out.getvalue()


@pytest.mark.parametrize("make", [_evil_legacy_object_pickle, _evil_storage_type, _evil_header, _evil_zip])
def test_globals_smuggled_through_storage_bytes_are_refused(make, tmp_path):
    marker = tmp_path / "marker"
    b = make(marker)
    assert b"system" in b
    with pytest.raises(RefusedGlobal, match=r"(posix|os|nt)\.system"):
        load_storage_from_bytes(b)
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(fake_dumps({"G": _TensorOn(FakeStorage(b))}))
    with pytest.raises(UserError, match=r"network-snapshot-000000.pkl: refusing to load '(posix|os|nt)\.system'"):
        read_pytorch_pickle(path)
    assert not marker.exists()


class _TensorOn:
    def __init__(self, storage):
        self.storage = storage

    def __reduce__(self):
        return FakeGlobal("torch._utils", "_rebuild_tensor_v2"), (self.storage, 0, (3,), (1,), False, None)


def test_damaged_storage_in_a_network_pickle_is_one_line(tmp_path):
    path = tmp_path / "network-snapshot-000000.pkl"
    b = legacy_storage_bytes(np.zeros(3, np.float32))[:-4]
    path.write_bytes(fake_dumps({"G": _TensorOn(FakeStorage(b))}))
    with pytest.raises(UserError, match=r"network-snapshot-000000.pkl: the pickle is truncated") as e:
        read_pytorch_pickle(path)
    assert "\n" not in str(e.value)
    path.write_bytes(fake_dumps({"G": _TensorOn(FakeStorage(b"not torch data"))}))
    with pytest.raises(UserError, match=r"network-snapshot-000000.pkl: not a readable NVIDIA PyTorch network pickle"):
        read_pytorch_pickle(path)
