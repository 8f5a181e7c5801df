"""Quality benchmark: ADA against no augmentation at equal kimg on small built-in datasets (issue 17).

The ADA paper's claim (Karras et al. 2020, Sec. 3-4): on small datasets the discriminator overfits,
the overfitting signal r_t = E[sign(D(x_real))] rises and the Fréchet distance turns upward; adaptive
augmentation keeps r_t near its target and the distance low. This script measures that on the product:

- Data: `builtin:shapes` subsets of --images N at --res R (`sg2ada dataset --source builtin:shapes
  --max-images N --resolution R --seed S`), the same pixels as `generate_shapes(N, R, S)`.
- Feature space: a small Keras CNN trained deterministically (fixed seeds, op determinism) on
  images of the same generator drawn with another seed, to predict the generator's own labels:
  shape class, hue bucket of the shape's colour (6), and the shape's centre and size (regression).
  Its penultimate layer (FEATURE_DIM wide) is the feature space. The trained weights are cached in
  $SG2ADA_CACHE/quality-features/<key>.npz, the key hashing the classifier's configuration.
- Distance: the Fréchet distance (sg2ada.metrics.formulas, the FID formula) with the FID protocol:
  all reals of the training subset against --num-gen images of G_ema on fixed latents.
- Arms, each a real `sg2ada train` subprocess (`--cfg tiny --metrics none`, equal --kimg, a
  snapshot every --snap ticks): `noaug` (--aug noaug), `ada` (the defaults, with --ada-kimg),
  `fixed` (--aug fixed --p --fixed-p), and `nvidia` (NVIDIA's stylegan2-ada-pytorch networks,
  loss, AugmentPipe and ADA rule from a user's checkout, --nvidia PATH, on the same images;
  its pickles are read with sg2ada.load_network). For every snapshot: kimg, FD, and from the
  tick statistics the augmentation probability p and r_t.
- Summary per arm: FD averaged over the snapshots of the run's second half (kimg > --kimg/2) and
  over seeds, and its ratio to the noaug arm.

Output in --out: quality.json (everything), quality-<N>x<R>.png per setting (FD, p and r_t against
kimg per arm), the datasets, and the run directories (reused on a rerun when complete). The full run
and its cost are in docs/quality.md; --smoke proves the pipeline end to end in minutes (and is what
the script does without arguments, as `make bench` runs it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from sg2ada.training.run_dir import atomic_write_text

HERE = os.path.dirname(os.path.abspath(__file__))
ARMS = ("noaug", "ada", "fixed", "nvidia")
ADA_TARGET = 0.6  # sg2ada train's --target default (NVIDIA's)
HUE_BUCKETS = 6
FEATURE_DIM = 128
DATA_SEED = 0  # the training subsets
LATENT_SEED = 123  # the fixed latents of the generated set

# The feature classifier. Part of the cache key: change a value and it is trained anew.
# With equal weights the shape head stays near 0.57 held-out accuracy for epochs while colour and
# geometry are learned; weighting it 5x lets it reach 0.99 within the 6 epochs.
FEATURE_NET = dict(version=1, train_images=8192, val_images=1024, epochs=6, batch=64, width=32, lr=1e-3,
                   loss_weights=dict(shape=5.0, hue=1.0, geometry=100.0), seed=2026, data_seed=1_000_003,
                   hue_buckets=HUE_BUCKETS, feature_dim=FEATURE_DIM)
SMOKE_FEATURE_NET = dict(FEATURE_NET, train_images=2048, val_images=512, epochs=2)

# The full benchmark (docs/quality.md) and the smoke configuration.
FULL = dict(images="100,500,2000", res="32", kimg=400, tick=4, snap=5, ada_kimg=100, fixed_p=0.2, num_gen=2000,
            seeds="0", arms="noaug,ada,fixed")
SMOKE = dict(images="100", res="32", kimg=3, tick=1, snap=1, ada_kimg=2, fixed_p=0.2, num_gen=256, seeds="0",
             arms="noaug,ada,fixed")


# ------------------------------------------------------------------------------------ feature net


def feature_net_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _labelled_images(count: int, resolution: int, seed: int, hue_buckets: int):
    """Images of the shapes generator and its own labels: shape, hue bucket, and (x, y, size)."""
    from sg2ada.data.builtin import generate_shapes_with_attributes

    images, a = generate_shapes_with_attributes(count, resolution, seed)
    hue = np.minimum((a["hue"] * hue_buckets).astype(np.int64), hue_buckets - 1)
    geometry = np.stack([a["x"], a["y"], a["size"]], axis=1).astype(np.float32)
    return images, {"shape": a["shape"], "hue": hue, "geometry": geometry}


def _to_float(images_uint8) -> np.ndarray:
    return np.asarray(images_uint8, np.float32) / 127.5 - 1.0


def _build_classifier(config: dict, resolution: int):
    """-> (classifier with the three heads, feature model sharing its layers)."""
    import keras

    w = config["width"]
    x = inp = keras.Input([resolution, resolution, 3])
    for filters, stride in ((w, 1), (w, 2), (2 * w, 1), (2 * w, 2), (4 * w, 2)):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)  # keeps where things are; global pooling would discard it
    features = keras.layers.Dense(config["feature_dim"], activation="relu", name="features")(x)
    outputs = {"shape": keras.layers.Dense(3, name="shape")(features),
               "hue": keras.layers.Dense(config["hue_buckets"], name="hue")(features),
               "geometry": keras.layers.Dense(3, name="geometry")(features)}
    return keras.Model(inp, outputs), keras.Model(inp, features)


@contextlib.contextmanager
def _op_determinism():
    """TensorFlow's deterministic kernels for the block, restored afterwards (the switch is global)."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # the public API has no way back

    was = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if not was:
            tf_config.disable_op_determinism()


def _accuracy(model, images, labels) -> dict:
    out = model.predict(_to_float(images), batch_size=256, verbose=0)
    return {"shape": float(np.mean(np.argmax(out["shape"], 1) == labels["shape"])),
            "hue": float(np.mean(np.argmax(out["hue"], 1) == labels["hue"])),
            "geometry_rmse": float(np.sqrt(np.mean(np.square(out["geometry"] - labels["geometry"]))))}


def train_feature_net(config: dict, resolution: int):
    """Trains the classifier from seeds alone: the same config gives the same weights.
    -> (feature model, held-out accuracies)."""
    import keras

    images, labels = _labelled_images(config["train_images"] + config["val_images"], resolution,
                                      config["data_seed"], config["hue_buckets"])
    n = config["train_images"]
    train = {k: v[:n] for k, v in labels.items()}
    val = {k: v[n:] for k, v in labels.items()}
    with _op_determinism():
        keras.utils.set_random_seed(config["seed"])
        model, features = _build_classifier(config, resolution)
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.Adam(config["lr"]),
                      loss={"shape": ce, "hue": ce, "geometry": keras.losses.MeanSquaredError()},
                      loss_weights=config["loss_weights"])
        model.fit(_to_float(images[:n]), train, batch_size=config["batch"], epochs=config["epochs"], shuffle=True,
                  verbose=0)
    return features, _accuracy(model, images[n:], val)


class FeatureNet:
    """The benchmark's feature space: `features(images)` for NHWC uint8 images -> float32 [N, D]."""

    def __init__(self, config: dict, resolution: int, cache_root: str | None = None):
        from sg2ada.cache import cache_dir

        self.config, self.resolution = dict(config), resolution
        self.key = feature_net_key({**self.config, "resolution": resolution})
        root = cache_root or cache_dir("quality-features")
        self.path = os.path.join(root, f"{self.key}.npz")
        self.trained_now = not os.path.isfile(self.path)
        if self.trained_now:
            self.model, self.accuracy = train_feature_net(self.config, resolution)
            self._save(root)
        else:
            self.model = _build_classifier(self.config, resolution)[1]
            with np.load(self.path) as f:
                self.model.set_weights([f[f"w{i}"] for i in range(int(f["count"]))])
                self.accuracy = json.loads(str(f["accuracy"]))

    def _save(self, root: str) -> None:
        os.makedirs(root, exist_ok=True)
        weights = self.model.get_weights()
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=root)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, count=len(weights), accuracy=json.dumps(self.accuracy),
                         **{f"w{i}": w for i, w in enumerate(weights)})
            os.replace(tmp, self.path)  # atomic: a concurrent benchmark sees the whole file or none
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def features(self, images_uint8, batch_size: int = 256) -> np.ndarray:
        return np.asarray(self.model.predict(_to_float(images_uint8), batch_size=batch_size, verbose=0), np.float32)

    def stats(self, images_uint8):
        from sg2ada.metrics.formulas import FeatureStats

        s = FeatureStats(capture_mean_cov=True)
        s.append(self.features(images_uint8))
        return s


def frechet_distance(stats_a, stats_b) -> float:
    from sg2ada.metrics.formulas import fid_from_stats

    return fid_from_stats(*stats_a.get_mean_cov(), *stats_b.get_mean_cov())


# ------------------------------------------------------------------------------------ data and runs


def _run(cmd, log_path, env=None) -> None:
    with open(log_path, "w") as log:
        r = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {r.returncode}; see {log_path}")


def build_dataset(out: str, images: int, res: int) -> str:
    dest = os.path.join(out, "data", f"shapes-{images}x{res}")
    if not os.path.isfile(os.path.join(dest, "dataset.json")):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        _run([sys.executable, "-m", "sg2ada", "dataset", "--source", "builtin:shapes", "--dest", dest, "--max-images",
              str(images), "--resolution", str(res), "--seed", str(DATA_SEED), "--force"], dest + ".log")
    return dest


def build_png_folder(out: str, images: np.ndarray) -> str:
    """The same images in NVIDIA's dataset layout: a folder of PNGs and dataset.json (no labels)."""
    from sg2ada.data.images import encode_png

    n, res = len(images), images.shape[1]
    dest = os.path.join(out, "data", f"shapes-{n}x{res}-png")
    if not os.path.isfile(os.path.join(dest, "dataset.json")):
        tmp = dest + ".tmp"
        os.makedirs(tmp, exist_ok=True)
        for i, img in enumerate(images):
            with open(os.path.join(tmp, f"img{i:08d}.png"), "wb") as f:
                f.write(encode_png(img))
        with open(os.path.join(tmp, "dataset.json"), "w") as f:
            json.dump({"labels": None}, f)
        os.replace(tmp, dest)
    return dest


def _env(threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads),
                   OMP_NUM_THREADS=str(threads))
    return env


def train_arm(a, arm: str, seed: int, dataset: str, png_folder: str, run_root: str) -> dict:
    """One arm's training run (skipped when complete, continued when interrupted); -> {run_dir, train_sec}."""
    outdir = os.path.join(run_root, f"{arm}-seed{seed}")
    done = os.path.join(outdir, "bench-done.json")
    if os.path.isfile(done):
        with open(done) as f:
            return json.load(f)
    os.makedirs(outdir, exist_ok=True)
    if arm == "nvidia":
        cmd = [sys.executable, os.path.abspath(__file__), "--nvidia-worker", "--nvidia", a.nvidia, "--data", png_folder,
               "--run-dir", outdir, "--kimg", str(a.kimg), "--tick", str(a.tick), "--snap", str(a.snap),
               "--ada-kimg", str(a.ada_kimg), "--seed", str(seed)]
        run_dir = outdir
    else:
        aug = {"noaug": ["--aug", "noaug"], "ada": ["--aug", "ada", "--ada-kimg", str(a.ada_kimg)],
               "fixed": ["--aug", "fixed", "--p", str(a.fixed_p)]}[arm]
        cmd = [sys.executable, "-m", "sg2ada", "train", "--data", dataset, "--outdir", outdir, "--cfg", "tiny",
               "--metrics", "none", "--kimg", str(a.kimg), "--tick", str(a.tick), "--snap", str(a.snap),
               "--seed", str(seed), "--resume", "latest", *aug]
        run_dir = None
    t0 = time.time()
    _run(cmd, os.path.join(outdir, "bench-train.log"), env=_env(a.threads))
    if run_dir is None:
        runs = sorted(d for d in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, d)))
        run_dir = os.path.join(outdir, runs[-1])
    info = {"run_dir": run_dir, "train_sec": round(time.time() - t0, 1)}
    atomic_write_text(done, json.dumps(info))
    return info


def tick_series(run_dir: str) -> list[dict]:
    """kimg, p and r_t of every tick, from stats.jsonl (NVIDIA's layout; the nvidia arm writes it too)."""
    out = []
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        for line in f:
            try:
                s = json.loads(line)
            except ValueError:
                continue
            mean = lambda k: s[k]["mean"] if isinstance(s.get(k), dict) else None  # noqa: E731
            if mean("Progress/kimg") is not None:
                out.append({"kimg": mean("Progress/kimg"), "p": mean("Progress/augment"), "r_t": mean("Loss/signs/real")})
    return out


def snapshots(run_dir: str) -> list[tuple[float, str]]:
    """(kimg, path) of every network snapshot: ours (directories whose snapshot.json holds the exact
    kimg) or NVIDIA's (.pkl files named by whole kimg)."""
    from sg2ada.networks.snapshot import META_FILE

    out = []
    for name in os.listdir(run_dir):
        if not name.startswith("network-snapshot-") or name.endswith(".tmp"):
            continue
        path = os.path.join(run_dir, name)
        kimg = float(name[len("network-snapshot-"):].split(".")[0])
        if os.path.isfile(os.path.join(path, META_FILE)):
            with open(os.path.join(path, META_FILE)) as f:
                kimg = json.load(f).get("kimg", kimg)
        out.append((kimg, path))
    return sorted(out)


def evaluate_run(run_dir: str, net: FeatureNet, real_stats, num_gen: int) -> dict:
    import sg2ada
    from sg2ada.images import to_uint8
    from sg2ada.networks.generator import generate_images

    ticks = tick_series(run_dir)
    rows = []
    for kimg, path in snapshots(run_dir):
        G = sg2ada.load_network(path, networks=("G_ema",)).G_ema
        rng = np.random.RandomState(LATENT_SEED)
        z = rng.standard_normal([num_gen, G.z_dim]).astype(np.float32)
        fakes = to_uint8(generate_images(G, z, np.zeros([num_gen, G.c_dim], np.float32))).numpy()
        fd = frechet_distance(real_stats, net.stats(fakes))
        near = min(ticks, key=lambda t: abs(t["kimg"] - kimg)) if ticks else {}
        rows.append({"kimg": round(kimg, 3), "fd": round(fd, 4), "p": near.get("p"), "r_t": near.get("r_t")})
    return {"run_dir": run_dir, "snapshots": rows, "ticks": ticks}


def second_half_mean(rows: list[dict], kimg: float) -> float | None:
    fds = [r["fd"] for r in rows if r["kimg"] > kimg / 2]
    return float(np.mean(fds)) if fds else None


def summarise(arms: dict, kimg: float) -> dict:
    out = {}
    for arm, runs in arms.items():
        means = [m for m in (second_half_mean(r["snapshots"], kimg) for r in runs) if m is not None]
        rts = [t["r_t"] for r in runs for t in r["ticks"] if t["r_t"] is not None and t["kimg"] > kimg / 2]
        out[arm] = {"fd_second_half": round(float(np.mean(means)), 4) if means else None,
                    "r_t_second_half": round(float(np.mean(rts)), 4) if rts else None,
                    "p_last": runs[0]["ticks"][-1]["p"] if runs and runs[0]["ticks"] else None}
    base = out.get("noaug", {}).get("fd_second_half")
    for arm, s in out.items():
        s["ratio_to_noaug"] = round(s["fd_second_half"] / base, 4) if base and s["fd_second_half"] is not None else None
    return out


def plot(setting: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, (arm, runs) in enumerate(setting["arms"].items()):
        colour = f"C{i}"
        for j, r in enumerate(runs):
            label = arm if j == 0 else None
            rows, ticks = r["snapshots"], r["ticks"]
            axes[0].plot([s["kimg"] for s in rows], [s["fd"] for s in rows], "o-", color=colour, label=label)
            axes[1].plot([t["kimg"] for t in ticks], [t["p"] or 0 for t in ticks], color=colour, label=label)
            axes[2].plot([t["kimg"] for t in ticks], [t["r_t"] for t in ticks], color=colour, label=label)
    axes[0].set_yscale("log")  # the first snapshots are orders of magnitude above the rest
    axes[2].axhline(ADA_TARGET, color="grey", linestyle="--", label="ADA target")
    for ax, title in zip(axes, ("Fréchet distance (feature net)", "augmentation p", "r_t = E[sign D(real)]")):
        ax.set_xlabel("kimg")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"builtin:shapes, {setting['images']} images at {setting['res']}x{setting['res']}")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def run_benchmark(a) -> dict:
    from sg2ada.data.builtin import generate_shapes

    os.makedirs(a.out, exist_ok=True)
    arms = [x for x in a.arms.split(",") if x]
    seeds = [int(x) for x in a.seeds.split(",")]
    net_config = SMOKE_FEATURE_NET if a.smoke else FEATURE_NET
    result = {"command": " ".join(sys.argv), "options": vars(a), "feature_net": {}, "settings": []}
    with concurrent.futures.ThreadPoolExecutor(a.jobs) as pool:
        # Every training run is queued first, so that the feature nets train while they run.
        queued = []
        for res in [int(x) for x in a.res.split(",")]:
            for images in [int(x) for x in a.images.split(",")]:
                dataset = build_dataset(a.out, images, res)
                reals = generate_shapes(images, res, DATA_SEED)[0]  # the dataset's pixels
                png_folder = build_png_folder(a.out, reals) if "nvidia" in arms else None
                run_root = os.path.join(a.out, "runs", f"shapes-{images}x{res}")
                futures = {(arm, seed): pool.submit(train_arm, a, arm, seed, dataset, png_folder, run_root)
                           for seed in seeds for arm in arms}
                queued.append((res, images, dataset, reals, futures))
        nets = {}
        for res, images, dataset, reals, futures in queued:
            if res not in nets:
                t0 = time.time()
                net = nets[res] = FeatureNet(net_config, res, cache_root=a.feature_cache)
                result["feature_net"][str(res)] = {"key": net.key, "path": net.path, "config": net.config,
                                                   "val_accuracy": net.accuracy, "trained_now": net.trained_now,
                                                   "sec": round(time.time() - t0, 1)}
                print(f"feature net {res}x{res}: {net.path} (held-out: {net.accuracy})", flush=True)
            net = nets[res]
            real_stats = net.stats(reals)
            setting = {"images": images, "res": res, "dataset": dataset, "arms": {}}
            for (arm, seed), future in futures.items():
                info = future.result()
                r = evaluate_run(info["run_dir"], net, real_stats, a.num_gen)
                r.update(seed=seed, train_sec=info["train_sec"])
                setting["arms"].setdefault(arm, []).append(r)
            setting["summary"] = summarise(setting["arms"], a.kimg)
            setting["plot"] = os.path.join(a.out, f"quality-{images}x{res}.png")
            plot(setting, setting["plot"])
            result["settings"].append(setting)
            print(f"shapes {images}x{res}: " + json.dumps(setting["summary"]), flush=True)
            atomic_write_text(os.path.join(a.out, "quality.json"), json.dumps(result, indent=1))
    return result


# ------------------------------------------------------------------------------------ NVIDIA's arm


# The tiny preset (sg2ada.presets.PRESETS['tiny']) in NVIDIA's network arguments: channel_base =
# fmaps * 32768 = 1024, channel_max 64, z = w = 64, 2 mapping layers, fp32, no conv clamping.
def _nvidia_tiny(res: int):
    from sg2ada.presets import PRESETS

    t = PRESETS["tiny"]
    net = dict(resolution=res, z_dim=t.z_dim, w_dim=t.w_dim, channel_base=int(t.fmaps * 32768),
               channel_max=t.channel_max, map_layers=t.map_layers)
    hp = dict(lr=t.lrate, betas=(0.0, 0.99), eps=1e-8, r1_gamma=t.gamma, pl_weight=2.0, style_mixing_prob=0.9,
              mbstd_group=t.mbstd_group, G_reg_interval=4, D_reg_interval=16, ema_kimg=t.ema_kimg,
              ema_rampup=t.ema_rampup)
    return net, hp, t.batch


def _bench_nvidia_pytorch():
    """The sibling script that drives NVIDIA's code (the same loader and training iteration)."""
    sys.path.insert(0, HERE)
    import bench_nvidia_pytorch

    return bench_nvidia_pytorch


def nvidia_worker(a) -> int:
    """Trains NVIDIA's networks on the PNG folder with their loss, AugmentPipe (bgc) and the ADA rule
    (every 4 iterations p += sign(r_t - target) * batch * 4 / (ada_kimg * 1000), p >= 0), writing
    NVIDIA-style snapshot pickles and a stats.jsonl with our key names. Runs in its own process:
    torch only, no TensorFlow."""
    import copy
    import pickle

    nv = _bench_nvidia_pytorch()
    try:
        torch, Generator, Discriminator, StyleGAN2Loss = nv._load_nvidia(a.nvidia)
    except nv.SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from torch_utils import training_stats
    from training.dataset import ImageFolderDataset

    dataset = ImageFolderDataset(a.data, use_labels=False)
    res = dataset.resolution
    net, hp, batch = _nvidia_tiny(res)
    it = nv.NvidiaIteration(torch, Generator, Discriminator, StyleGAN2Loss, net, batch, a.seed, aug="p0", hp=hp)
    pipe = it.loss.augment_pipe
    ada_stats = training_stats.Collector(regex="Loss/signs/real")
    tick_stats = training_stats.Collector(regex="Loss/signs/real")
    gen = np.random.RandomState(a.seed)
    ada_interval, tick_nimg, stats_lines = 4, int(a.tick * 1000), []
    tick = 0
    while it.images_seen < a.kimg * 1000:
        idx = gen.randint(len(dataset), size=batch)
        it.real_img = torch.from_numpy(np.stack([dataset[i][0] for i in idx]).astype(np.float32) / 127.5 - 1)
        it.step()
        if it.index % ada_interval == 0:
            ada_stats.update()
            r_t = ada_stats.mean("Loss/signs/real")
            adjust = np.sign(r_t - ADA_TARGET) * (batch * ada_interval) / (a.ada_kimg * 1000)
            pipe.p.copy_(torch.clamp(pipe.p + float(adjust), min=0))
        if it.images_seen >= (tick + 1) * tick_nimg or it.images_seen >= a.kimg * 1000:
            tick += 1
            tick_stats.update()
            kimg = it.images_seen / 1000
            stats_lines.append(json.dumps({"Progress/kimg": {"num": 1, "mean": kimg},
                                           "Progress/augment": {"num": 1, "mean": float(pipe.p)},
                                           "Loss/signs/real": {"num": 1, "mean": tick_stats.mean("Loss/signs/real")},
                                           "timestamp": time.time()}))
            atomic_write_text(os.path.join(a.run_dir, "stats.jsonl"), "\n".join(stats_lines) + "\n")
            if tick % a.snap == 0 or it.images_seen >= a.kimg * 1000:
                snap = {k: copy.deepcopy(m).eval().requires_grad_(False) for k, m in
                        (("G", it.G), ("D", it.D), ("G_ema", it.G_ema), ("augment_pipe", pipe))}
                path = os.path.join(a.run_dir, f"network-snapshot-{int(kimg):06d}.pkl")
                with open(path + ".tmp", "wb") as f:
                    pickle.dump(dict(snap, training_set_kwargs=None), f)
                os.replace(path + ".tmp", path)
            print(f"tick {tick} kimg {kimg:.1f} p {float(pipe.p):.4f} r_t {tick_stats.mean('Loss/signs/real')}",
                  flush=True)
    return 0


# ------------------------------------------------------------------------------------ command line


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a budget of minutes that proves the pipeline (the default "
                    "without arguments); measures nothing")
    ap.add_argument("--images", help=f"comma-separated subset sizes [full: {FULL['images']}]")
    ap.add_argument("--res", help=f"comma-separated resolutions [full: {FULL['res']}]")
    ap.add_argument("--kimg", type=float, help=f"training length of every arm [full: {FULL['kimg']}]")
    ap.add_argument("--tick", type=float, help=f"kimg per tick [full: {FULL['tick']}]")
    ap.add_argument("--snap", type=int, help=f"snapshot every this many ticks [full: {FULL['snap']}]")
    ap.add_argument("--ada-kimg", type=float, help=f"ADA adjustment speed of the ada arm [full: {FULL['ada_kimg']}]")
    ap.add_argument("--fixed-p", type=float, help=f"p of the fixed arm [full: {FULL['fixed_p']}]")
    ap.add_argument("--num-gen", type=int, help=f"generated images per FD [full: {FULL['num_gen']}]")
    ap.add_argument("--arms", help=f"comma-separated, from {','.join(ARMS)} [full: {FULL['arms']}]")
    ap.add_argument("--seeds", help=f"comma-separated training seeds [full: {FULL['seeds']}]")
    ap.add_argument("--nvidia", help="checkout of NVlabs/stylegan2-ada-pytorch: adds the nvidia arm")
    ap.add_argument("--jobs", type=int, default=1, help="training runs at once (one per core on an idle machine)")
    ap.add_argument("--threads", type=int, help="TensorFlow/OpenMP threads per training run")
    ap.add_argument("--out", default="quality-bench", help="output folder [default: quality-bench]")
    ap.add_argument("--feature-cache", help="folder of the cached feature nets [default: $SG2ADA_CACHE/quality-features]")
    ap.add_argument("--nvidia-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.nvidia_worker:
        return nvidia_worker(a)
    if not argv:
        print("no arguments: running --smoke (the full benchmark's command is in docs/quality.md)", flush=True)
        a.smoke = True
    for k, v in (SMOKE if a.smoke else FULL).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    unknown = set(a.arms.split(",")) - set(ARMS)
    if unknown:
        ap.error(f"--arms: unknown {sorted(unknown)}; choose from {', '.join(ARMS)}")
    if a.nvidia and "nvidia" not in a.arms.split(","):
        a.arms += ",nvidia"
    if "nvidia" in a.arms.split(","):
        nv = _bench_nvidia_pytorch()
        missing = [m for m in nv._MARKERS if not os.path.isfile(os.path.join(os.path.expanduser(a.nvidia or ""), m))]
        if not a.nvidia or missing:
            ap.error(f"the nvidia arm needs --nvidia PATH, a checkout of {nv.NVIDIA_URL} (no {missing[0]} in {a.nvidia})")
        a.nvidia = os.path.abspath(os.path.expanduser(a.nvidia))
    a.out = os.path.abspath(a.out)  # the run directories recorded in it stay valid from any folder
    t0 = time.time()
    run_benchmark(a)
    print(f"done in {time.time() - t0:.0f} s: {os.path.join(a.out, 'quality.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
