"""`sg2ada export`: the SavedModel loads in a fresh Python process in which sg2ada cannot be imported
and gives the Python model's images; TFLite conversion is attempted and reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tools_testutil import run_tflite

from sg2ada.cli.main import main
from sg2ada.images import to_uint8
from sg2ada.tools import common
from sg2ada.tools import generate as gen

# Runs in `python -I` (no PYTHONPATH, no user site, no script dir on sys.path) from a directory outside
# the repository. The venv installs sg2ada in editable mode, so a meta-path hook refuses it outright.
FRESH_SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    class BlockSg2ada(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "sg2ada" or name.startswith("sg2ada."):
                raise ImportError("sg2ada is blocked in this process")
            return None

    sys.meta_path.insert(0, BlockSg2ada())
    try:
        import sg2ada  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("sg2ada is importable: the test would prove nothing")

    import numpy as np
    import tensorflow as tf

    model_dir, inputs, out = sys.argv[1:4]
    m = tf.saved_model.load(model_dir)
    x = np.load(inputs)
    z, c, ws = tf.constant(x["z"]), tf.constant(x["c"]), tf.constant(x["ws"])
    res = {
        "generate": m.generate(z, c)["images"].numpy(),
        "generate_psi": m.generate_psi(z, c, tf.constant(0.5))["images"].numpy(),
        "mapping": m.mapping(z, c, tf.constant(1.0))["ws"].numpy(),
        "synthesize": m.synthesize(ws)["images"].numpy(),
        "synthesize_random": m.synthesize_random(ws, tf.constant([7, 9], tf.int32))["images"].numpy(),
        "sig_generate": m.signatures["generate"](z=z, c=c)["images"].numpy(),
    }
    assert not any(k == "sg2ada" or k.startswith("sg2ada.") for k in sys.modules), "sg2ada got imported"
    np.savez(out, **res)
    print("ok", sorted(m.signatures.keys()))
""")


@pytest.fixture(scope="module")
def exported(tiny_snapshot, tmp_path_factory):
    dest = tmp_path_factory.mktemp("export") / "saved"
    code = main(["export", "--network", tiny_snapshot, "--dest", str(dest), "--trunc", "0.7"])
    assert code == 0
    return str(dest)


def test_saved_model_in_fresh_process_without_sg2ada(exported, tiny_snapshot, tmp_path):
    G = common.load_generator(tiny_snapshot)
    seeds = [3, 4]
    z = np.concatenate([common.seed_to_z(s, G.z_dim) for s in seeds])
    c = np.zeros([2, 0], np.float32)
    ws = gen.map_seeds(G, [8, 9], 0.9)
    np.savez(tmp_path / "inputs.npz", z=z, c=c, ws=ws)
    (tmp_path / "fresh.py").write_text(FRESH_SCRIPT)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / "fresh.py"), exported, str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npz")], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok" in proc.stdout
    got = np.load(tmp_path / "out.npz")

    def close(a, b, what):
        err = np.abs(np.asarray(a) - np.asarray(b)).max()
        assert err < 1e-4, f"{what}: max abs error {err:.3g}"

    close(got["generate"], gen.synthesize(G, gen.map_seeds(G, seeds, 0.7)), "generate (psi 0.7 baked)")
    close(got["sig_generate"], got["generate"], "signature generate")
    close(got["generate_psi"], gen.synthesize(G, gen.map_seeds(G, seeds, 0.5)), "generate_psi")
    close(got["mapping"], gen.map_seeds(G, seeds, 1.0), "mapping")
    close(got["synthesize"], gen.synthesize(G, ws), "synthesize")
    want_random = G.synthesis(ws, noise_mode="random", noise_seed=np.array([7, 9], np.int32), force_fp32=True)
    close(got["synthesize_random"], want_random, "synthesize_random")
    assert not np.allclose(got["synthesize_random"], got["synthesize"])
    # and the images are the ones `sg2ada generate` writes
    np.testing.assert_array_equal(np.asarray(to_uint8(got["generate"]))[0],
                                  dict(gen.seed_images(G, [3], truncation_psi=0.7))[3])
    with open(os.path.join(exported, "assets.extra", "sg2ada_export.json")) as f:
        info = json.load(f)
    assert info["z_dim"] == G.z_dim and info["num_ws"] == G.num_ws and info["truncation_psi_generate"] == 0.7


def test_conditional_export(tiny_cond_snapshot, tmp_path):
    import tensorflow as tf

    from sg2ada.tools.export import export_saved_model

    G = common.load_generator(tiny_cond_snapshot)
    export_saved_model(G, tmp_path / "cond")
    m = tf.saved_model.load(str(tmp_path / "cond"))
    z = common.seed_to_z(5, G.z_dim)
    c = common.labels_for(G, 2)
    got = m.generate(tf.constant(z), tf.constant(c))["images"].numpy()
    want = gen.synthesize(G, gen.map_seeds(G, [5], 1.0, class_idx=2))
    assert np.abs(got - want).max() < 1e-4


def test_export_errors(tiny_snapshot, exported, tmp_path, capsys):
    for argv, needle in (
        (["export", "--network", tiny_snapshot, "--dest", exported], "already exists"),
        (["export", "--network", tiny_snapshot, "--dest", str(tmp_path / "x"), "--trunc", "-2.5"], "--trunc"),
        (["export", "--network", str(tmp_path / "nothing"), "--dest", str(tmp_path / "x")], "no such file"),
    ):
        assert main(argv) == 2
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_tflite_conversion(exported, tiny_snapshot, tmp_path):
    from sg2ada.tools.export import export_tflite

    report = export_tflite(exported, str(tmp_path / "g.tflite"))
    print("TFLite:", report)
    assert report["ok"], report["error"]
    assert os.path.getsize(report["path"]) > 0
    if report["select_tf_ops"]:
        # Only an interpreter linked with the Flex delegate runs it; the pip interpreter is not.
        assert report["flex_ops"], "Select TF ops were needed, so the file must name them"
        pytest.skip(f"TFLite model needs Flex ops {report['flex_ops']}: not runnable with tf.lite.Interpreter")
    G = common.load_generator(tiny_snapshot)
    z = common.seed_to_z(3, G.z_dim)
    out = run_tflite(report["path"], "generate", z=z, c=np.zeros([1, 0], np.float32))
    want = gen.synthesize(G, gen.map_seeds(G, [3], 0.7))
    assert np.abs(out["images"] - want).max() < 1e-3
