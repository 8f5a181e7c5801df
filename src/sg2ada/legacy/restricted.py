"""Safe reading of NVIDIA's network pickles: a restricted unpickler and content sniffing.

A pickle is a program: any global it names can be called on load, so `pickle.load` on a file from
the internet can run arbitrary commands. NVIDIA's pickles are the opposite problem in the same
place: its TF1 pickles (NVlabs/stylegan2-ada, `dnnlib/tflib/network.py` `Network.__setstate__`)
carry their own network-building source in `build_module_src`, and its PyTorch pickles
(NVlabs/stylegan2-ada-pytorch, `torch_utils/persistence.py`) carry whole modules in `module_src`
and `exec` them on load. We never execute either. The unpickler here resolves only an explicit
allow-list of `(module, name)` globals, each mapped to an object we chose (a numpy constructor, our
torch-free decoder of torch's tensors and storages, or a stand-in class that only records state); any
other global is refused before it is imported.

`sniff_format` looks at a file without unpickling it (`pickletools.genops` only parses opcodes), so
`load_network` can route a file by its content rather than its extension.
"""

from __future__ import annotations

import codecs
import os
import pickle
import pickletools
import struct

import numpy as np

from sg2ada.errors import UserError


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that is not on the allow-list."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module = module
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that resolves only the `(module, name)` pairs of `allowed`.

    `allowed` maps each pair to the object the pickle gets instead of importing anything, so an
    allowed name can never pull in a module (or its side effects) that the caller did not choose.
    """

    def __init__(self, file, allowed: dict, persistent_load=None, **kwargs):
        super().__init__(file, **kwargs)
        self._allowed = dict(allowed)
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise RefusedGlobal(str(module), str(name)) from None

    def persistent_load(self, pid):
        if self._persistent_load is None:
            # Only torch.save files use persistent ids; NVIDIA's pickles are plain pickle.dump.
            raise pickle.UnpicklingError("persistent id in a plain pickle")
        return self._persistent_load(pid)


class EasyDict(dict):
    """Stand-in for `dnnlib.util.EasyDict` (a dict with attribute access); data only."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def jsonable(v):
    """An unpickled value (kwargs of NVIDIA's networks) as JSON data for snapshot metadata; anything
    that is not plain data is recorded by its repr."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return repr(v)


def _plain_dtype(*args, **kwargs):
    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        # An object array unpickles arbitrary objects through its state: none of our formats needs one.
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dt


def _latin1_encode(obj, encoding="latin1", errors="strict"):
    # Protocol-2 pickles written by Python 3 store bytes as `_codecs.encode(str, 'latin1')`.
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise TypeError("only latin1 string encoding is allowed in a pickle")
    return codecs.encode(obj, "latin1", errors)


def numpy_globals() -> dict:
    """numpy's pickle constructors for numeric arrays and scalars, under every module path numpy has
    pickled them from (numpy 2 moved `numpy.core` to `numpy._core`). The functions are taken from
    live objects instead of importing either path, so no deprecated module is touched."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1, np.float32))[0]
    scalar = np.float32(0).__reduce__()[0]
    frombuffer = np.zeros(1, np.float32).__reduce_ex__(5)[0]  # protocol 5 (pickle.PickleBuffer) arrays
    out = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "_reconstruct")] = reconstruct
        out[(mod, "scalar")] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        out[(mod, "_frombuffer")] = frombuffer
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = _plain_dtype
    out[("_codecs", "encode")] = _latin1_encode
    return out


# Errors that a corrupt or truncated pickle raises from inside pickle.Unpickler.load().
LOAD_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
               struct.error, UnicodeDecodeError, OverflowError, MemoryError, ImportError, RecursionError)


def restricted_load(path, allowed: dict, kind: str, persistent_load=None):
    """Unpickle `path` with only `allowed` globals; every failure becomes a one-line UserError.

    `kind` names the expected format in messages ("NVIDIA TF1 network pickle")."""
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; pass the path of an existing {kind}") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected an {kind} file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot open ({e.strerror or e}); check the path and its permissions") from None
    with f:
        try:
            return RestrictedUnpickler(f, allowed, persistent_load).load()
        except RefusedGlobal as e:
            other = _classify_global(e.module, e.name)
            if other == PYTORCH and "PyTorch" not in kind:
                raise UserError(f"{path}: is an NVIDIA PyTorch network pickle, not an {kind}; load it with "
                                "`sg2ada convert` or sg2ada.load_network, which recognise both") from None
            if other == TF1 and "TF1" not in kind:
                raise UserError(f"{path}: is an NVIDIA TF1 network pickle, not an {kind}; load it with "
                                "`sg2ada convert` or sg2ada.load_network, which recognise both") from None
            raise UserError(
                f"{path}: refusing to load '{e.module}.{e.name}': it is not part of an {kind}, and loading it could "
                "run code; only convert network pickles from NVIDIA's releases") from None
        except UserError:
            raise
        except LOAD_ERRORS as e:
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            if isinstance(e, EOFError) or "truncated" in detail.lower() or "ran out of input" in detail.lower():
                raise UserError(f"{path}: the pickle is truncated ({detail}); download or copy the file again") from None
            raise UserError(f"{path}: not a readable {kind} ({type(e).__name__}: {detail[:200]}); "
                            "check that this is the right file") from None


# ---------------------------------------------------------------------------------------------------
# Content sniffing.

TF1 = "nvidia-tf1-pickle"
PYTORCH = "nvidia-pytorch-pickle"
SNAPSHOT = "sg2ada-snapshot"
OTHER_PICKLE = "pickle"
ZIP = "zip"
UNKNOWN = "unknown"

_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def pickle_globals(f, stop=None, max_ops: int = 10_000_000):
    """Yield the `(module, name)` globals a pickle stream names, in order, without unpickling.

    STACK_GLOBAL (protocol 4+) takes its two names from the stack; we follow the strings pushed and
    memoised just before it, which is how every pickler emits them. Stops quietly at the first
    opcode it cannot parse (the caller decides what a truncated file means)."""
    memo: dict = {}
    recent: list = []  # strings on top of the stack, most recent last
    n_memo = 0
    try:
        for i, (op, arg, _pos) in enumerate(pickletools.genops(f)):
            if i >= max_ops:
                return
            name = op.name
            if name in _STRING_OPS:
                recent = (recent + [arg])[-2:]
                continue
            if name == "MEMOIZE":
                if recent:
                    memo[n_memo] = recent[-1]
                n_memo += 1
                continue
            if name in _PUT_OPS:
                if recent:
                    memo[arg] = recent[-1]
                continue
            if name in _GET_OPS:
                if arg in memo:
                    recent = (recent + [memo[arg]])[-2:]
                else:
                    recent = []
                continue
            if name == "GLOBAL":
                module, _, gname = str(arg).partition(" ")
                yield module, gname
            elif name == "STACK_GLOBAL" and len(recent) == 2:
                yield recent[0], recent[1]
            if name == "STOP":
                return
            recent = []
    except (ValueError, EOFError, struct.error, UnicodeDecodeError, pickle.UnpicklingError):
        return


def _classify_global(module: str, name: str) -> str | None:
    if module.startswith("dnnlib.tflib"):
        return TF1
    if module.startswith("torch_utils") or module == "torch" or module.startswith("torch."):
        return PYTORCH
    return None


def sniff_format(path) -> str:
    """What `path` holds, judged by content: one of TF1, PYTORCH, SNAPSHOT, OTHER_PICKLE, ZIP, UNKNOWN.

    Raises UserError for a path that does not exist."""
    path = os.fspath(path)
    if "://" in path:
        raise UserError(f"{path}: URLs are not fetched; download the file first and pass its local path")
    if os.path.isdir(path):
        return SNAPSHOT
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or directory; pass a network snapshot directory or an NVIDIA .pkl")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
                return ZIP
            if not head:
                return UNKNOWN
            f.seek(0)
            # A pickle starts with PROTO (protocol 2+) or, for protocols 0/1, with one of a few
            # opcodes; anything else is not worth parsing.
            if head[0] not in b"\x80(]}cN)":
                return UNKNOWN
            for module, name in pickle_globals(f):
                kind = _classify_global(module, name)
                if kind is not None:
                    return kind
            # No NVIDIA global: a complete pickle of something else (to be refused by name, or
            # reported as the wrong kind of data), or not a pickle at all.
            f.seek(0)
            last = None
            try:
                for op, _arg, _pos in pickletools.genops(f):
                    last = op.name
            except (ValueError, EOFError, struct.error, UnicodeDecodeError, pickle.UnpicklingError):
                return UNKNOWN
            return OTHER_PICKLE if last == "STOP" else UNKNOWN
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e}); check the path and its permissions") from None


__all__ = ["RefusedGlobal", "RestrictedUnpickler", "restricted_load", "pickle_globals", "sniff_format", "jsonable",
           "TF1", "PYTORCH", "SNAPSHOT", "OTHER_PICKLE", "ZIP", "UNKNOWN"]
