"""Helpers for the legacy-import tests: pickles shaped like NVIDIA's, written without NVIDIA's code.

`fake_modules` puts throw-away modules named like NVIDIA's (`dnnlib.tflib.network`,
`torch_utils.persistence`, `dnnlib.util`) into `sys.modules` only while pickling, so the pickles
name exactly NVIDIA's globals and the reader under test cannot import them back.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import types

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


def nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def nhwc(x):
    return np.transpose(np.asarray(x), (0, 2, 3, 1))
