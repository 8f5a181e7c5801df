"""The restricted TF1 pickle reader: NVIDIA's structure is read, nothing is executed, and every kind of
bad input becomes one clear error naming the file (no TensorFlow networks are built here)."""

from __future__ import annotations

import os
import pickle
import subprocess

import numpy as np
import pytest

from sg2ada.errors import UserError
from sg2ada.legacy import restricted
from sg2ada.legacy.tf1_pickle import read_tf1_pickle

from legacy_testutil import Network, dump_tf1, marker_src, repickle_tf1, tf1_state


@pytest.fixture(scope="module")
def manifest(reference_dir):
    import json

    return json.loads((reference_dir / "tf1_small_manifest.json").read_text())


def test_reads_reference_pickle_structure(tf1_pkl, manifest):
    G, D, Gs = read_tf1_pickle(tf1_pkl)
    assert [n.name for n in (G, D, Gs)] == ["G", "D", "Gs"]
    for net, key in ((G, "G"), (D, "D"), (Gs, "Gs")):
        m = manifest["networks"][key]
        assert net.build_func_name == m["build_func_name"]
        assert net.static_kwargs == m["static_kwargs"]
        assert set(net.components) == set(m.get("components", {}))
        expected = {name: shape for name, shape, _ in m["variables"]}
        for cname, comp in m.get("components", {}).items():
            expected.update({f"{cname}/{name}": shape for name, shape, _ in comp["variables"]})
        got = net.collect_variables(str(tf1_pkl))
        assert {k: list(v.shape) for k, v in got.items()} == expected
        assert all(v.dtype == np.float32 for v in got.values())
    # build_module_src is kept as inert text, never compiled.
    assert isinstance(Gs.components["synthesis"].state["build_module_src"], str)
    assert restricted.sniff_format(tf1_pkl) == restricted.TF1


def test_manifest_globals_are_all_admitted(manifest):
    from sg2ada.legacy.tf1_pickle import tf1_allowed_globals

    allowed = tf1_allowed_globals()
    for entry in manifest["pickle_globals"]:
        module, name = entry.split(" ")
        assert (module, name) in allowed, entry


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_other_pickle_protocols_read_identically(tf1_pkl, tmp_path, protocol):
    # Protocol 2 stores bytes via _codecs.encode, 4/5 name globals with STACK_GLOBAL.
    dst = tmp_path / f"p{protocol}.pkl"
    repickle_tf1(tf1_pkl, dst, protocol=protocol)
    assert restricted.sniff_format(dst) == restricted.TF1
    ref = [n.collect_variables() for n in read_tf1_pickle(tf1_pkl)]
    got = [n.collect_variables() for n in read_tf1_pickle(dst)]
    for r, g in zip(ref, got):
        assert r.keys() == g.keys()
        for k in r:
            np.testing.assert_array_equal(r[k], g[k])


def test_build_module_src_is_never_executed(tf1_pkl, tmp_path):
    marker = tmp_path / "marker"
    dst = tmp_path / "evil_src.pkl"
    repickle_tf1(tf1_pkl, dst, build_module_src=marker_src(marker))
    G, D, Gs = read_tf1_pickle(dst)
    assert Gs.components["synthesis"].state["build_module_src"] == marker_src(marker)
    assert not marker.exists()


class _RunsCommand:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil_payloads(marker):
    return {
        "os.system": _RunsCommand(os.system, (f"touch {marker}",)),
        "subprocess.call": _RunsCommand(subprocess.call, (["touch", str(marker)],)),
        "builtins.exec": _RunsCommand(exec, (marker_src(marker),)),
    }


@pytest.mark.parametrize("kind", ["os.system", "subprocess.call", "builtins.exec"])
@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_code_running_pickle_is_refused(tmp_path, kind, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    payload = _evil_payloads(marker)[kind]
    # Hide it inside an otherwise NVIDIA-shaped pickle, as a network variable.
    dump_tf1(path, Network(tf1_state("G", "G_main", {}, [("x", payload)])),
             Network(tf1_state("D", "D_main", {}, [])), Network(tf1_state("Gs", "G_main", {}, [])), protocol=protocol)
    with pytest.raises(UserError) as e:
        read_tf1_pickle(path)
    msg = str(e.value)
    assert not marker.exists()
    assert str(path) in msg and "refusing" in msg and "\n" not in msg
    func = payload.__reduce__()[0]
    assert func.__name__ in msg  # names the class/function it refused


def test_bare_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_evil_payloads(marker)["os.system"]))
    with pytest.raises(UserError, match="refusing to load '(posix|os|nt).system'"):
        read_tf1_pickle(path)
    assert not marker.exists()


def test_not_a_pickle(tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_text("hello, this is not a pickle\n")
    with pytest.raises(UserError, match="notes.pkl") as e:
        read_tf1_pickle(path)
    assert "\n" not in str(e.value)
    assert restricted.sniff_format(path) == restricted.UNKNOWN


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="empty.pkl.*truncated"):
        read_tf1_pickle(path)


def test_truncated_pickle(tf1_pkl, tmp_path):
    path = tmp_path / "trunc.pkl"
    path.write_bytes(tf1_pkl.read_bytes()[:100_000])
    with pytest.raises(UserError, match="trunc.pkl.*truncated"):
        read_tf1_pickle(path)


def test_pickle_of_something_else(tmp_path):
    path = tmp_path / "dict.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UserError, match=r"dict.pkl: is a pickle but not an NVIDIA TF1 network pickle \(it holds a dict"):
        read_tf1_pickle(path)
    assert restricted.sniff_format(path) == restricted.OTHER_PICKLE


def test_pickle_with_foreign_class_is_refused_by_name(tmp_path):
    path = tmp_path / "od.pkl"
    import collections

    path.write_bytes(pickle.dumps(collections.OrderedDict(a=1)))
    with pytest.raises(UserError, match=r"od.pkl: refusing to load 'collections.OrderedDict'"):
        read_tf1_pickle(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="nope.pkl: no such file"):
        read_tf1_pickle(tmp_path / "nope.pkl")


def test_single_network_and_old_version(tmp_path):
    from legacy_testutil import fake_modules

    path = tmp_path / "one.pkl"

    with fake_modules(**{"dnnlib.tflib.network": {"Network": Network}}):
        path.write_bytes(pickle.dumps(Network(tf1_state("Gs", "G_main", {}, []))))
        (tmp_path / "d.pkl").write_bytes(pickle.dumps(Network(tf1_state("D", "D_main", {}, []))))
    G, D, Gs = read_tf1_pickle(path)  # a generator on its own is taken as Gs, as NVIDIA's legacy.py does
    assert G is None and D is None and Gs.name == "Gs"
    with pytest.raises(UserError, match="d.pkl: holds a single D_main network"):
        read_tf1_pickle(tmp_path / "d.pkl")
    old = tmp_path / "old.pkl"
    states = [tf1_state(n, "G_main", {}, []) for n in ("G", "D", "Gs")]
    for s in states:
        s["version"] = 3
    dump_tf1(old, *(Network(s) for s in states))
    with pytest.raises(UserError, match="pickle version 3"):
        read_tf1_pickle(old)


def test_network_state_must_be_a_dict(tmp_path):
    path = tmp_path / "bad_state.pkl"
    dump_tf1(path, Network([1, 2]), Network({}), Network({}))
    with pytest.raises(UserError, match="bad_state.pkl: not a readable"):
        read_tf1_pickle(path)


def test_sniffs_pytorch_pickle(tmp_path):
    # A pickle naming torch_utils.persistence is routed to the PyTorch reader by content.
    from legacy_testutil import fake_modules

    def _reconstruct_persistent_obj(meta):
        return meta

    class Obj:
        def __reduce__(self):
            return (_reconstruct_persistent_obj, ({"type": "class", "class_name": "Generator", "state": {}},))

    path = tmp_path / "network-snapshot.pkl"
    with fake_modules(**{"torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj}}):
        path.write_bytes(pickle.dumps({"G": Obj()}, protocol=4))
    assert restricted.sniff_format(path) == restricted.PYTORCH
