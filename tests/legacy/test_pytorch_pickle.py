"""NVIDIA PyTorch network pickles (stylegan2-ada-pytorch `network-snapshot-*.pkl`), read without NVIDIA's
source and without executing the source they embed.

The test pickle is built here the way NVIDIA's are: a dict {G, D, G_ema, augment_pipe,
training_set_kwargs} dumped with plain `pickle`, where each network object reduces to
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with
meta = {type: 'class', version: 6, module_src, class_name, state: <torch.nn.Module __dict__>}, and
constructor arguments kept in `_init_kwargs` as `dnnlib.util.EasyDict`. The weights are NVIDIA's
reference (../shared/reference/pytorch_small_reference.npz); `module_src` would leave a marker file
if anything executed it. The pickle is written twice: with torch's own tensors (tests that need torch,
which skip without it), and with the same pickling done by `legacy_testutil` without torch, which the
reference tests read with torch made unimportable (the reader needs no PyTorch).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from reference_testutil import load_reference_npz, nchw, nhwc

from sg2ada.errors import UserError
from sg2ada.legacy import restricted

from legacy_testutil import (FakeParameter, FakeTensor, assert_close, fake_dumps, fake_modules, marker_src,
                             module_state)

BUFFERS = ("w_avg", "noise_const", "resample_filter")
G_CLASSES = {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "affine": "FullyConnectedLayer",
             "embed": "FullyConnectedLayer", "conv0": "SynthesisLayer", "conv1": "SynthesisLayer",
             "torgb": "ToRGBLayer"}
D_CLASSES = {"mapping": "MappingNetwork", "fromrgb": "Conv2dLayer", "conv0": "Conv2dLayer", "conv1": "Conv2dLayer",
             "skip": "Conv2dLayer", "conv": "Conv2dLayer", "fc": "FullyConnectedLayer", "out": "FullyConnectedLayer",
             "embed": "FullyConnectedLayer", "mbstd": "MinibatchStdLayer"}


def _reconstruct_persistent_obj(meta):  # named like NVIDIA's so pickle refers to it; must never run
    raise AssertionError("NVIDIA's reconstruct function was called")


class EasyDict(dict):  # pickled as dnnlib.util.EasyDict
    pass


def _easy(d):
    return EasyDict({k: _easy(v) if isinstance(v, dict) else v for k, v in d.items()})


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="torch is the oracle: these tests read pickles torch itself writes")


@pytest.fixture(params=["torch-free", "torch"])
def writer_torch(request):
    """None (pickle written by legacy_testutil) or the torch module (pickle written with torch's tensors)."""
    if request.param == "torch":
        return pytest.importorskip("torch", reason="torch is the oracle: these tests read pickles torch itself writes")
    return None


@pytest.fixture(scope="module")
def ref(reference_dir):
    return load_reference_npz(reference_dir, "pytorch_small_reference.npz")


def _persistent_class(torch, src):
    class Persistent(torch.nn.Module):
        def __init__(self, class_name, init_kwargs=None):
            super().__init__()
            self._test_class_name = class_name
            self._init_args = ()
            self._init_kwargs = init_kwargs if init_kwargs is not None else EasyDict()

        def __reduce__(self):
            state = dict(self.__dict__)
            class_name = state.pop("_test_class_name")
            meta = dict(type="class", version=6, module_src=src, class_name=class_name, state=state)
            return _reconstruct_persistent_obj, (meta,)

    return Persistent


class FakePersistent:
    """A persistent NVIDIA module pickled without torch: the same `_reconstruct_persistent_obj(meta)` call,
    with the `torch.nn.Module.__dict__` state and tensors as `legacy_testutil.FakeTensor`s."""

    def __init__(self, class_name, init_kwargs=None, src=""):
        self.class_name, self.src, self.version = class_name, src, 6
        self.state = module_state(_init_args=(), _init_kwargs=init_kwargs if init_kwargs is not None else EasyDict())

    @property
    def _modules(self):
        return self.state["_modules"]

    def add_module(self, name, mod):
        self._modules[name] = mod

    def register_buffer(self, name, value):
        self.state["_buffers"][name] = value

    def register_parameter(self, name, value):
        self.state["_parameters"][name] = value

    def __reduce__(self):
        meta = dict(type="class", version=self.version, module_src=self.src, class_name=self.class_name, state=self.state)
        return _reconstruct_persistent_obj, (meta,)


def _module_tree(torch, Persistent, class_name, init_kwargs, state, classes):
    root = Persistent(class_name, init_kwargs)
    for key, value in state.items():
        *path, leaf = key.split(".")
        mod = root
        for part in path:
            if part not in mod._modules:
                name = classes.get(part) or ("DiscriminatorEpilogue" if classes is D_CLASSES and part == "b4" else
                                             "DiscriminatorBlock" if classes is D_CLASSES else
                                             "SynthesisBlock" if part.startswith("b") else "FullyConnectedLayer")
                mod.add_module(part, Persistent(name))
            mod = mod._modules[part]
        value = np.array(value, np.float32)
        if torch is None:
            if leaf in BUFFERS:
                mod.register_buffer(leaf, FakeTensor(value))
            else:
                mod.register_parameter(leaf, FakeParameter(value))
        elif leaf in BUFFERS:
            mod.register_buffer(leaf, torch.from_numpy(value))
        else:
            mod.register_parameter(leaf, torch.nn.Parameter(torch.from_numpy(value), requires_grad=False))
    if classes is D_CLASSES:
        root._modules["b4"].add_module("mbstd", Persistent("MinibatchStdLayer"))
    return root


def write_nvidia_pytorch_pickle(torch, ref, path, marker, protocol=4, extra_state=None):
    """NVIDIA's network-snapshot pickle of the reference weights. With `torch` the tensors are torch's
    own; with torch None they are pickled the same way by legacy_testutil, without torch."""
    meta = json.loads(str(ref["meta_json"]))
    src = "# NVIDIA's training/networks.py would be here\n" + marker_src(marker)
    if torch is None:
        def Persistent(class_name, init_kwargs=None):
            return FakePersistent(class_name, init_kwargs, src)
    else:
        Persistent = _persistent_class(torch, src)
    g_state = {k[2:]: v for k, v in ref.items() if k.startswith("G/")}
    d_state = {k[2:]: v for k, v in ref.items() if k.startswith("D/")}
    g_kwargs, d_kwargs = _easy(meta["generator_kwargs"]), _easy(meta["discriminator_kwargs"])
    G_ema = _module_tree(torch, Persistent, "Generator", g_kwargs, g_state, G_CLASSES)
    # G (the trained, non-EMA copy) gets a different w_avg so a swap with G_ema would show.
    G = _module_tree(torch, Persistent, "Generator", g_kwargs, {**g_state, "mapping.w_avg": 0 * g_state["mapping.w_avg"]},
                     G_CLASSES)
    D = _module_tree(torch, Persistent, "Discriminator", d_kwargs, d_state, D_CLASSES)
    pipe = Persistent("AugmentPipe", _easy(dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                                                brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)))
    pipe.register_buffer("p", FakeTensor(np.float32(0.25)) if torch is None else torch.tensor(0.25))
    if extra_state is not None:
        if torch is None:
            pipe.state["extra"] = extra_state
        else:
            pipe.extra = extra_state
    data = dict(G=G, D=D, G_ema=G_ema, augment_pipe=pipe,
                training_set_kwargs=_easy(dict(class_name="training.dataset.ImageFolderDataset", path="/data/x.zip",
                                               use_labels=False, max_size=4, xflip=False, resolution=32)))
    with fake_modules(**{"torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
                         "dnnlib.util": {"EasyDict": EasyDict}}):
        if torch is None:
            path.write_bytes(fake_dumps(data, protocol=protocol))
        else:
            with open(path, "wb") as f:
                pickle.dump(data, f, protocol=protocol)
    return path


@pytest.fixture(scope="module")
def pt_pkl(ref, tmp_path_factory):
    # Written without torch, read below with torch unimportable: the import path needs no PyTorch.
    d = tmp_path_factory.mktemp("pt")
    path = write_nvidia_pytorch_pickle(None, ref, d / "network-snapshot-000100.pkl", d / "marker")
    return path, d / "marker"


@pytest.fixture(scope="module")
def pt_pkl_torch(torch, ref, tmp_path_factory):
    d = tmp_path_factory.mktemp("pt_torch")
    path = write_nvidia_pytorch_pickle(torch, ref, d / "network-snapshot-000100.pkl", d / "marker")
    return path, d / "marker"


@pytest.fixture(scope="module")
def nets(pt_pkl):
    from sg2ada.legacy.load import load_network

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torch", None)  # makes `import torch` fail
        return load_network(pt_pkl[0])


def _all_state_dicts(data):
    out = {f"{k}/{n}": v for k in ("G", "D", "G_ema") for n, v in data[k].state_dict().items()}
    out["augment_pipe/p"] = np.asarray(data["augment_pipe"].state["_buffers"]["p"], np.float32)
    return out


def test_torch_written_pickle_reads_identically(pt_pkl, pt_pkl_torch, ref):
    """torch's own tensor pickling (legacy storages inside `_load_from_bytes`) decodes, without torch,
    to exactly the arrays the torch-free writer put in, and to the reference weights."""
    from sg2ada.legacy.pytorch_pickle import read_pytorch_pickle

    a = _all_state_dicts(read_pytorch_pickle(pt_pkl_torch[0]))
    b = _all_state_dicts(read_pytorch_pickle(pt_pkl[0]))
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == np.float32 and a[k].flags.writeable, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k, v in ref.items():
        if k.startswith(("G/", "D/")):
            np.testing.assert_array_equal(a[("G_ema/" if k.startswith("G/") else "D/") + k[2:]], v, err_msg=k)
    assert float(a["augment_pipe/p"]) == 0.25
    assert not pt_pkl_torch[1].exists()
    # The torch-free writer names what torch names (so the torch-free reference tests mean something).
    names = []
    for path in (pt_pkl[0], pt_pkl_torch[0]):
        with open(path, "rb") as f:
            names.append({f"{m}.{n}" for m, n in restricted.pickle_globals(f)})
    assert names[0] == names[1]


_BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def test_reads_in_a_process_where_torch_cannot_be_imported(pt_pkl, ref, tmp_path):
    code = _BLOCK_TORCH + f"""
import time
import numpy as np
t0 = time.perf_counter()
from sg2ada.legacy.pytorch_pickle import read_pytorch_pickle
data = read_pytorch_pickle({str(pt_pkl[0])!r})
sd = {{k: data[k].state_dict() for k in ("G", "D", "G_ema")}}
dt = time.perf_counter() - t0
np.savez({str(tmp_path / "sd.npz")!r}, **{{f"{{k}}/{{n}}": v for k, d in sd.items() for n, v in d.items()}})
assert "torch" not in sys.modules
print(f"read in {{dt:.3f}}s")
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "sd.npz") as got:
        assert len(got.files) == 187
        for k in got.files:
            net, name = k.split("/", 1)
            want = ref[f"{'D' if net == 'D' else 'G'}/{name}"]
            if net == "G" and name == "mapping.w_avg":
                want = 0 * want
            np.testing.assert_array_equal(got[k], want, err_msg=k)


def test_truncated_pytorch_pickle(pt_pkl, tmp_path):
    from sg2ada.legacy.pytorch_pickle import read_pytorch_pickle

    raw = pt_pkl[0].read_bytes()
    for n in (100, len(raw) // 2, len(raw) - 3):
        p = tmp_path / f"trunc{n}.pkl"
        p.write_bytes(raw[:n])
        with pytest.raises(UserError, match=rf"trunc{n}.pkl: the pickle is truncated") as e:
            read_pytorch_pickle(p)
        assert "\n" not in str(e.value)


def test_pickle_names_nvidia_globals_only(pt_pkl):
    with open(pt_pkl[0], "rb") as f:
        names = {f"{m}.{n}" for m, n in restricted.pickle_globals(f)}
    assert "torch_utils.persistence._reconstruct_persistent_obj" in names
    assert "dnnlib.util.EasyDict" in names
    assert "torch._utils._rebuild_tensor_v2" in names and "torch.storage._load_from_bytes" in names
    assert restricted.sniff_format(pt_pkl[0]) == restricted.PYTORCH
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


def test_reads_structure_without_running_embedded_code(pt_pkl, ref):
    from sg2ada.legacy.pytorch_pickle import PersistentObject, read_pytorch_pickle

    data = read_pytorch_pickle(pt_pkl[0])
    assert not pt_pkl[1].exists()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert isinstance(data["G_ema"], PersistentObject) and data["G_ema"].class_name == "Generator"
    assert data["G_ema"].init_kwargs["synthesis_kwargs"]["channel_base"] == 1024
    sd = data["G_ema"].state_dict()
    assert set(sd) == {k[2:] for k in ref if k.startswith("G/")}
    np.testing.assert_array_equal(sd["synthesis.b8.conv0.weight"], ref["G/synthesis.b8.conv0.weight"])
    assert "module_src" not in vars(data["G_ema"]) and "module_src" not in data["G_ema"].state
    assert data["training_set_kwargs"]["resolution"] == 32


def test_reproduces_nvidia_outputs(nets, pt_pkl, ref):
    assert not pt_pkl[1].exists()
    g = nets.G_ema.config
    assert (g.channel_base, g.channel_max, g.mapping.num_layers, g.num_fp16_res) == (1024, 128, 2, 0)
    ws = nets.G_ema.mapping(ref["z"], ref["c"]).numpy()
    assert_close(ws, ref["ws"], what="ws")
    img = nets.G_ema.synthesis(ws, noise_mode="const", force_fp32=True).numpy()
    assert_close(nchw(img), ref["img"], what="img")
    ws_psi = nets.G_ema.mapping(ref["z"], ref["c"], truncation_psi=0.5).numpy()
    assert_close(ws_psi, ref["ws_psi"], what="ws_psi")
    assert_close(nchw(nets.G_ema.synthesis(ws_psi, noise_mode="const").numpy()), ref["img_psi"], what="img_psi")
    assert_close(nets.D(nhwc(ref["img"]), ref["c"]).numpy(), ref["logits"], what="logits")
    assert_close(nets.D(nhwc(ref["real_img"]), ref["c"]).numpy(), ref["real_logits"], what="real_logits")
    # G is not G_ema: its w_avg was zeroed in the pickle.
    assert not nets.G.named_variables()["dlatent_avg"].numpy().any()
    assert nets.meta["format"] == "nvidia-pytorch-pickle"
    assert nets.meta["dataset"]["path"] == "/data/x.zip"
    assert nets.meta["augment_pipe"]["p"] == 0.25


def test_convert_cli_round_trip(nets, pt_pkl, ref, tmp_path, capsys):
    from sg2ada.cli.main import main
    from sg2ada.legacy.load import load_network

    dest = tmp_path / "snap"
    assert main(["convert", "--source", str(pt_pkl[0]), "--dest", str(dest)]) == 0, capsys.readouterr().err
    back = load_network(dest, networks=("G_ema",))
    assert back.meta["dataset"]["resolution"] == 32
    a = nets.G_ema(ref["z"], ref["c"], noise_mode="const").numpy()
    np.testing.assert_array_equal(a, back.G_ema(ref["z"], ref["c"], noise_mode="const").numpy())
    assert not pt_pkl[1].exists()


def test_protocol_3_pickle(writer_torch, ref, tmp_path):
    from sg2ada.legacy.pytorch_pickle import read_pytorch_pickle

    path = write_nvidia_pytorch_pickle(writer_torch, ref, tmp_path / "p3.pkl", tmp_path / "marker", protocol=3)
    data = read_pytorch_pickle(path)  # protocol 3 pickles sets as builtins.set
    np.testing.assert_array_equal(data["D"].state_dict()["b4.out.weight"], ref["D/b4.out.weight"])
    assert not (tmp_path / "marker").exists()


def test_code_running_object_inside_is_refused(writer_torch, ref, tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'evil-marker'}",)

    from sg2ada.legacy.load import load_network

    path = write_nvidia_pytorch_pickle(writer_torch, ref, tmp_path / "evil.pkl", tmp_path / "marker", extra_state=Evil())
    with pytest.raises(UserError, match=r"evil.pkl: refusing to load '(posix|os|nt).system'"):
        load_network(path)
    assert not (tmp_path / "evil-marker").exists() and not (tmp_path / "marker").exists()


def test_tf1_reader_routes_pytorch_pickle(pt_pkl):
    from sg2ada.legacy.tf1_pickle import read_tf1_pickle

    with pytest.raises(UserError, match="is an NVIDIA PyTorch network pickle, not an NVIDIA TF1 network pickle"):
        read_tf1_pickle(pt_pkl[0])


def test_no_install_hint_without_torch(tmp_path, monkeypatch):
    # Reading needs no torch: with torch unimportable a PyTorch-shaped pickle gets the ordinary answer.
    class Obj:
        def __reduce__(self):
            return _reconstruct_persistent_obj, ({"type": "class", "class_name": "Generator", "state": {}},)

    path = tmp_path / "pt.pkl"
    with fake_modules(**{"torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj}}):
        path.write_bytes(pickle.dumps({"G": Obj()}))
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    from sg2ada.legacy.load import load_network

    with pytest.raises(UserError, match="pt.pkl: NVIDIA PyTorch network pickle without D, G_ema") as e:
        load_network(path)
    assert "torch" not in str(e.value).replace("PyTorch", "")


def test_wrong_classes_versions_and_missing_networks(tmp_path):
    from sg2ada.legacy.pytorch_pickle import read_pytorch_pickle

    Persistent = FakePersistent
    old = Persistent("Discriminator")
    old.version = 5
    for name, data, match in (
        ("missing.pkl", {"G": Persistent("Generator")}, "missing.pkl: NVIDIA PyTorch network pickle without D, G_ema"),
        ("wrong.pkl", {"G": Persistent("Generator"), "D": Persistent("Generator"), "G_ema": Persistent("Generator")},
         "wrong.pkl: D is a Generator, expected NVIDIA's Discriminator"),
        ("version.pkl", {"G": Persistent("Generator"), "D": old, "G_ema": Persistent("Generator")},
         "version.pkl: D was pickled by torch_utils.persistence version 5, this importer reads version 6"),
        ("list.pkl", [1, 2], "list.pkl: is a pickle but not an NVIDIA PyTorch network pickle"),
    ):
        path = tmp_path / name
        with fake_modules(**{"torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
                             "dnnlib.util": {"EasyDict": EasyDict}}):
            path.write_bytes(pickle.dumps(data))
        with pytest.raises(UserError, match=match):
            read_pytorch_pickle(path)
