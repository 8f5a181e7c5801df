"""Two-process MultiWorkerMirroredStrategy training on loopback: both workers (TF_CONFIG on
127.0.0.1, free ports) complete iterations and end with the same weights.

The test launches this file as a script twice (`python test_multiworker.py <index> <ports> <out>`);
the worker part lives below `__main__`.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ITERATIONS = 2


def _free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow
def test_two_workers_on_loopback_agree(tmp_path):
    ports = _free_ports(2)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    procs = []
    for i in range(2):
        log = open(tmp_path / f"worker{i}.log", "w")
        procs.append((subprocess.Popen([sys.executable, __file__, str(i), ",".join(map(str, ports)),
                                        str(tmp_path / f"w{i}.npz")], env=env, stdout=log, stderr=subprocess.STDOUT),
                      log))
    try:
        for p, _ in procs:
            p.wait(timeout=900)
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    for i, (p, _) in enumerate(procs):
        assert p.returncode == 0, (tmp_path / f"worker{i}.log").read_text()[-4000:]
    a, b = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert int(a["cur_nimg"]) == int(b["cur_nimg"]) == 8 * ITERATIONS
    assert int(a["num_replicas"]) == 2 and bool(a["chief"]) and not bool(b["chief"])
    assert np.isfinite(a["losses"]).all() and np.isfinite(b["losses"]).all()
    names = [k for k in a.files if k.startswith(("G/", "D/", "G_ema/"))]
    assert len(names) > 20
    changed = 0
    for k in names:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-8, err_msg=k)
        changed += int(not np.array_equal(a[k], a["init/" + k]))
    assert changed > 10


def _worker(index, ports, out):
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})
    import dataclasses

    import tensorflow as tf

    from sg2ada.training.distribute import is_chief, make_strategy
    from sg2ada.training.options import resolve_options
    from sg2ada.training.trainer import Trainer

    strategy = make_strategy("auto")
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)
    opts = resolve_options(resolution=8, img_channels=3, label_dim=0, cfg="tiny", batch=8, batch_gpu=4,
                           num_replicas=strategy.num_replicas_in_sync, aug="noaug", cbase=128, cmax=16, xla=False)
    opts = opts.replace(G=dataclasses.replace(opts.G, use_noise=False))
    t = Trainer(opts, strategy)
    init = {}
    for prefix, net in (("G", t.G), ("D", t.D), ("G_ema", t.G_ema)):
        init.update({f"init/{prefix}/{n}": v.numpy() for n, v in net.named_variables().items()})
    rng = np.random.RandomState(100 + index)  # each worker reads its own reals
    img = rng.uniform(-1, 1, [4, 8, 8, 3]).astype(np.float32)

    def reals():
        while True:
            yield tf.constant(img), tf.zeros([4, 0])

    it = reals()
    losses = []
    for _ in range(ITERATIONS):
        stats = t.step(it)
        losses.append([float(stats["Loss/G/loss"]), float(stats["Loss/D/loss"])])
    res = dict(init, losses=np.array(losses), cur_nimg=int(t.cur_nimg.numpy()),
               num_replicas=strategy.num_replicas_in_sync, chief=is_chief(strategy))
    for prefix, net in (("G", t.G), ("D", t.D), ("G_ema", t.G_ema)):
        res.update({f"{prefix}/{n}": v.numpy() for n, v in net.named_variables().items()})
    np.savez(out, **res)


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))
    _worker(int(sys.argv[1]), [int(p) for p in sys.argv[2].split(",")], sys.argv[3])
