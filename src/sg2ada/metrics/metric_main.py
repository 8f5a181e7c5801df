"""The metric registry and runner: NVIDIA's StyleGAN2-ADA metrics by name, computed for a generator.

Metric names, sample counts and result keys are those of NVIDIA's two StyleGAN2-ADA releases (Karras
et al. 2020, "Training Generative Adversarial Networks with Limited Data", Appendix: `fid50k_full`,
`kid50k_full`, `pr50k3_full`, `is50k`, `ppl2_wend`, and the legacy StyleGAN/StyleGAN2 metrics
`fid50k`, `kid50k`, `pr50k3`, `ppl_zfull`, `ppl_wfull`, `ppl_zend`, `ppl_wend`). NVIDIA defines no
shorter variants; the `*10k*`/`fid1k_full` entries are sg2ada's own, for quicker runs, and are marked
as such in `METRICS`.

How the pieces are computed follows NVIDIA: generated images come from `G(z, c, truncation_psi=1,
noise_mode='random')` with labels drawn uniformly from the dataset, are quantised as x*127.5+128
clipped to uint8, grayscale repeated to RGB, and fed to the feature network; real images are the
dataset in order (the `_full` metrics take all of it without mirroring; the legacy ones take the
dataset as training sees it, with x-flipped copies appended when training mirrors). Real-image
statistics are cached under `<cache>/gan-metrics/`, keyed by a hash of the dataset's files (paths,
sizes, modification times), the feature network and the options, so a changed dataset is re-measured.

A result is NVIDIA's dict `{results, metric, total_time, total_time_str, num_gpus}`; `report_metric`
appends it (plus `snapshot_pkl`, `timestamp`) as one line of `metric-<name>.jsonl` in the run
directory and `write_tensorboard` adds `Metrics/<key>` scalars.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
import warnings

import numpy as np

from sg2ada.console import format_time
from sg2ada.data import LabelSampler, label_sampler, make_dataset, open_dataset
from sg2ada.errors import UserError
from sg2ada.images import to_uint8
from sg2ada.metrics import formulas
from sg2ada.metrics.common import MetricOptions, fake_labels, report_progress, run_replicated
from sg2ada.metrics.feature_nets import FEATURE_NETS, cache_dir, get_feature_net
from sg2ada.metrics.memorization import copy_rate_metric
from sg2ada.metrics.ppl import compute_ppl_distances
from sg2ada.version import __version__

__all__ = [
    "METRICS",
    "DatasetSource",
    "MetricOptions",
    "compute_metric",
    "is_valid_metric",
    "list_valid_metrics",
    "parse_metric_list",
    "report_metric",
    "run_metrics",
    "try_compute_metric",
    "write_tensorboard",
]

_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # 'fid' | 'kid' | 'pr' | 'is' | 'ppl' | 'copy'
    params: dict
    nvidia: bool = True  # False: an sg2ada addition (not in NVIDIA's registries)
    full: bool = True  # True: all real images, never mirrored; False: the dataset as training sees it

    @property
    def feature_net(self) -> str:
        return {"fid": "inception", "kid": "inception", "is": "inception", "pr": "vgg16", "ppl": "lpips",
                "copy": "inception"}[self.kind]


def _m(name, kind, nvidia=True, full=True, **params):
    return name, MetricSpec(name, kind, params, nvidia, full)


_PR_BATCH = dict(row_batch_size=10000, col_batch_size=10000)

METRICS = dict(
    [
        # ADA paper (NVIDIA's primary metrics).
        _m("fid50k_full", "fid", max_real=None, num_gen=50000),
        _m("kid50k_full", "kid", max_real=1000000, num_gen=50000, num_subsets=100, max_subset_size=1000),
        _m("pr50k3_full", "pr", max_real=200000, num_gen=50000, nhood_size=3, **_PR_BATCH),
        _m("ppl2_wend", "ppl", num_samples=50000, epsilon=1e-4, space="w", sampling="end", crop=False),
        _m("is50k", "is", num_gen=50000, num_splits=10),
        # Legacy: StyleGAN2 / StyleGAN.
        _m("fid50k", "fid", full=False, max_real=50000, num_gen=50000),
        _m("kid50k", "kid", full=False, max_real=50000, num_gen=50000, num_subsets=100, max_subset_size=1000),
        _m("pr50k3", "pr", full=False, max_real=50000, num_gen=50000, nhood_size=3, **_PR_BATCH),
        _m("ppl_zfull", "ppl", num_samples=50000, epsilon=1e-4, space="z", sampling="full", crop=True),
        _m("ppl_wfull", "ppl", num_samples=50000, epsilon=1e-4, space="w", sampling="full", crop=True),
        _m("ppl_zend", "ppl", num_samples=50000, epsilon=1e-4, space="z", sampling="end", crop=True),
        _m("ppl_wend", "ppl", num_samples=50000, epsilon=1e-4, space="w", sampling="end", crop=True),
        # sg2ada additions: the same definitions with fewer samples, for quick checks during training.
        _m("fid10k_full", "fid", nvidia=False, max_real=None, num_gen=10000),
        _m("fid10k", "fid", nvidia=False, full=False, max_real=10000, num_gen=10000),
        _m("fid1k_full", "fid", nvidia=False, max_real=None, num_gen=1000),
        _m("kid10k_full", "kid", nvidia=False, max_real=1000000, num_gen=10000, num_subsets=100, max_subset_size=1000),
        _m("pr10k3_full", "pr", nvidia=False, max_real=200000, num_gen=10000, nhood_size=3, **_PR_BATCH),
        _m("is10k", "is", nvidia=False, num_gen=10000, num_splits=10),
        # sg2ada's memorisation check (memorization.py): Inception features when present, else pixels.
        _m("copy1k_full", "copy", nvidia=False, max_real=None, num_gen=1000),
    ]
)


def is_valid_metric(name: str) -> bool:
    return name in METRICS


def list_valid_metrics() -> list[str]:
    return list(METRICS)


def parse_metric_list(text, option="--metrics") -> list[str]:
    """'fid50k_full,kid50k_full' -> names; 'none' or '' -> []. Unknown names: UserError."""
    if text is None:
        return []
    names = text if isinstance(text, (list, tuple)) else [s.strip() for s in str(text).split(",")]
    names = [n for n in names if n and n.lower() != "none"]
    bad = [n for n in names if n not in METRICS]
    if bad:
        raise UserError(f"{option}: unknown metric {', '.join(bad)}; choose from {', '.join(METRICS)}")
    return names


# ---------------------------------------------------------------------------------------------------
# Real images.


def _path_fingerprint(path: str) -> list:
    """(relative name, size, mtime_ns) of every file making up the dataset, so any edit changes it."""
    if path.startswith("builtin:"):
        return [path, __version__]
    apath = os.path.abspath(path)
    if os.path.isfile(apath):
        st = os.stat(apath)
        return [apath, st.st_size, st.st_mtime_ns]
    if not os.path.isdir(apath):
        raise UserError(f"--data {path}: no such file or directory")
    out = [apath]
    for root, dirs, files in os.walk(apath):
        dirs.sort()
        for fn in sorted(files):
            full = os.path.join(root, fn)
            st = os.stat(full)
            out.append([os.path.relpath(full, apath), st.st_size, st.st_mtime_ns])
    return out


class DatasetSource:
    """The real images and labels of a dataset, in order, through `sg2ada.data.make_dataset`.

    Subclass and override `_batches` (and `labels`) to feed other data; `fingerprint()` covers the
    files under `path`, so the statistics cache follows the dataset's content.
    """

    def __init__(self, path: str):
        self.path = str(path)
        self._labels = None

    @property
    def name(self) -> str:
        path = self.path.split(":", 1)[-1] if self.path.startswith("builtin:") else self.path
        base = os.path.basename(os.path.normpath(path))
        return os.path.splitext(base)[0] or "dataset"

    def fingerprint(self) -> list:
        return _path_fingerprint(self.path)

    def _batches(self, batch_size: int):
        """Yields (images, labels) in dataset order, images uint8 NHWC."""
        # uint8 straight from the files: no round trip through [-1, 1]
        yield from make_dataset(self.path, batch_size, mirror=False, shuffle=False, repeat=False, as_uint8=True)

    def iterate(self, batch_size: int, mirror: bool = False, max_items: int | None = None):
        """uint8 NHWC batches; with `mirror`, the x-flipped copies follow the originals (NVIDIA's xflip)."""
        import tensorflow as tf

        count = 0
        for flip in (False, True) if mirror else (False,):
            for images, _labels in self._batches(batch_size):
                if max_items is not None and count >= max_items:
                    return
                images = tf.convert_to_tensor(images)
                if flip:
                    images = tf.reverse(images, axis=[2])
                if max_items is not None:
                    images = images[: max_items - count]
                count += int(images.shape[0])
                yield images

    def label_sampler(self) -> LabelSampler | None:
        """The dataset's labels as a `sg2ada.data.LabelSampler` (NVIDIA's "label of a random dataset
        image"), or None when unlabelled."""
        if self._labels is None:
            self._labels = self._sampler_from_data_module()
            if self._labels is None:  # not a dataset the data module reads: go through _batches
                out = [np.asarray(lab, np.float32) for _img, lab in self._batches(256)]
                labels = np.concatenate(out) if out else np.zeros([0, 0], np.float32)
                if labels.size:
                    self._labels = LabelSampler.of_rows(labels)
                else:
                    self._labels = ()
        return self._labels or None

    def _sampler_from_data_module(self):
        try:
            if not open_dataset(self.path).has_labels:
                return ()
            return label_sampler(self.path)
        except UserError:
            return None


# ---------------------------------------------------------------------------------------------------


def _detector_fn(net, kind: str, probabilities: bool = False):
    if kind == "inception":
        return net.probabilities if probabilities else net.features
    return net.features


def _stats_cache_file(opts: MetricOptions, spec: MetricSpec, detector, stats_kwargs: dict, max_items, mirror: bool):
    args = dict(
        version=_CACHE_VERSION,
        dataset=opts.dataset.fingerprint(),
        detector=detector.name,
        detector_file=[os.path.basename(detector.path), os.path.getsize(detector.path)],
        stats_kwargs=sorted(stats_kwargs.items()),
        max_items=max_items,
        mirror=mirror,
    )
    md5 = hashlib.md5(json.dumps(args, sort_keys=True, default=str).encode("utf-8")).hexdigest()
    return cache_dir("gan-metrics", f"{opts.dataset.name}-{detector.name}-{md5}.npz")


def compute_feature_stats_for_dataset(opts: MetricOptions, spec: MetricSpec, max_items=None, **stats_kwargs):
    import tensorflow as tf

    detector = get_feature_net(spec.feature_net, opts.feature_net, opts.download)
    mirror = bool(opts.mirror) and not spec.full
    cache_file = _stats_cache_file(opts, spec, detector, stats_kwargs, max_items, mirror) if opts.cache else None
    if cache_file and os.path.isfile(cache_file):
        try:
            with np.load(cache_file, allow_pickle=False) as a:
                return formulas.FeatureStats.from_arrays(a)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is simply recomputed
    stats = formulas.FeatureStats(max_items=max_items, **stats_kwargs)
    fn = tf.function(_detector_fn(detector, spec.feature_net), reduce_retracing=True)
    state: dict = {}
    for images in opts.dataset.iterate(opts.batch_size, mirror=mirror, max_items=max_items):
        stats.append(run_replicated(opts, fn, images.numpy()).numpy())
        report_progress(opts, stats.num_items, max_items or stats.num_items, "dataset features", state)
    if stats.num_items == 0:
        raise UserError(f"--data {opts.dataset.path}: the dataset holds no images")
    if cache_file:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cache_file), suffix=".npz")
        os.close(fd)
        np.savez(tmp, **stats.to_arrays())
        os.replace(tmp, cache_file)  # atomic, so concurrent runs never read half a file
    return stats


def compute_feature_stats_for_generator(opts: MetricOptions, spec: MetricSpec, max_items, probabilities=False,
                                        **stats_kwargs):
    import tensorflow as tf

    detector = get_feature_net(spec.feature_net, opts.feature_net, opts.download)
    detect = _detector_fn(detector, spec.feature_net, probabilities)
    G = opts.G
    z_dim = int(G.z_dim)
    rng = np.random.RandomState(opts.seed)
    labels = fake_labels(opts, opts.seed)
    g_kwargs = dict(opts.G_kwargs)

    @tf.function(reduce_retracing=True)
    def run(z, c):
        img = G(z, c, **g_kwargs)
        return detect(to_uint8(img))

    stats = formulas.FeatureStats(max_items=max_items, **stats_kwargs)
    state: dict = {}
    while not stats.is_full():
        z = rng.randn(opts.batch_size, z_dim).astype(np.float32)
        c = labels(opts.batch_size)
        stats.append(run_replicated(opts, run, z, c).numpy())
        report_progress(opts, stats.num_items, max_items, "generator features", state)
    return stats


# ---------------------------------------------------------------------------------------------------
# The five metric families.


def _fid(opts, spec, p):
    real = compute_feature_stats_for_dataset(opts, spec, p["max_real"], capture_mean_cov=True)
    gen = compute_feature_stats_for_generator(opts, spec, p["num_gen"], capture_mean_cov=True)
    mu_real, sigma_real = real.get_mean_cov()
    mu_gen, sigma_gen = gen.get_mean_cov()
    return {spec.name: formulas.fid_from_stats(mu_gen, sigma_gen, mu_real, sigma_real)}


def _kid(opts, spec, p):
    real = compute_feature_stats_for_dataset(opts, spec, p["max_real"], capture_all=True).get_all()
    gen = compute_feature_stats_for_generator(opts, spec, p["num_gen"], capture_all=True).get_all()
    kid = formulas.kid_from_features(real, gen, p["num_subsets"], p["max_subset_size"], seed=opts.seed)
    return {spec.name: kid}


def _pr(opts, spec, p):
    real = compute_feature_stats_for_dataset(opts, spec, p["max_real"], capture_all=True).get_all()
    gen = compute_feature_stats_for_generator(opts, spec, p["num_gen"], capture_all=True).get_all()
    precision, recall = formulas.precision_recall(real, gen, p["nhood_size"], p["row_batch_size"], p["col_batch_size"])
    return {f"{spec.name}_precision": precision, f"{spec.name}_recall": recall}


def _is(opts, spec, p):
    stats = compute_feature_stats_for_generator(opts, spec, p["num_gen"], probabilities=True, capture_all=True)
    probs = stats.get_all()
    # A smoke run with fewer images than splits would leave splits empty (NaN): use one image per split.
    mean, std = formulas.inception_score(probs, min(p["num_splits"], len(probs)))
    return {f"{spec.name}_mean": mean, f"{spec.name}_std": std}


def _ppl(opts, spec, p):
    dist = compute_ppl_distances(opts, spec, p)
    return {spec.name: formulas.ppl_from_distances(dist)}


_KINDS = {"fid": _fid, "kid": _kid, "pr": _pr, "is": _is, "ppl": _ppl, "copy": copy_rate_metric}

_OVERRIDABLE = {
    "num_gen", "max_real", "num_samples", "num_subsets", "max_subset_size", "num_splits", "row_batch_size",
    "col_batch_size",
}


def compute_metric(name: str, G, dataset_path=None, *, feature_net=None, strategy=None, cache=True, batch_size=32,
                   mirror=False, seed=0, G_kwargs=None, download=None, verbose=False, progress=None, dataset=None,
                   run_dir=None, **overrides) -> dict:
    """Compute metric `name` for generator `G` against the dataset at `dataset_path`.

    Returns NVIDIA's result dict `{results: {key: value}, metric, total_time, total_time_str, num_gpus}`.
    `overrides` (num_gen, max_real, num_samples, ...) shrink a metric for tests and smoke runs; the
    result then records them under `overrides`, since it is no longer NVIDIA's metric.
    Raises UserError for unknown names, missing datasets or missing feature networks.
    """
    if name not in METRICS:
        raise UserError(f"--metrics: unknown metric {name!r}; choose from {', '.join(METRICS)}")
    bad = set(overrides) - _OVERRIDABLE
    if bad:
        raise TypeError(f"compute_metric() got unexpected arguments {sorted(bad)}")
    spec = METRICS[name]
    if dataset is None and dataset_path is not None:
        dataset = DatasetSource(dataset_path)
    if dataset is None and spec.kind in ("fid", "kid", "pr", "copy"):
        raise UserError(f"metric {name} compares with real images: give --data")
    if isinstance(feature_net, str):
        feature_net = [feature_net]
    opts = MetricOptions(
        G=G, dataset=dataset, feature_net=feature_net, download=download, strategy=strategy, cache=cache,
        batch_size=int(batch_size), mirror=mirror, seed=seed, verbose=verbose, progress=progress, run_dir=run_dir,
    )
    if G_kwargs:
        opts.G_kwargs.update(G_kwargs)
    # Overrides that do not apply to this metric (num_samples for FID, ...) are ignored.
    overrides = {k: v for k, v in overrides.items() if v is not None and k in spec.params}
    params = dict(spec.params)
    params.update(overrides)
    start = time.time()
    results = _KINDS[spec.kind](opts, spec, params)
    total = time.time() - start
    out = dict(
        results={k: float(v) for k, v in results.items()},
        metric=name,
        total_time=total,
        total_time_str=format_time(total),
        num_gpus=opts.num_replicas,
    )
    if overrides:
        out["overrides"] = dict(overrides)
    return out


def try_compute_metric(name: str, G, dataset_path=None, **kwargs) -> dict | None:
    """compute_metric for the training loop: a missing feature network (or other UserError) gives a
    warning and None, so training continues without that metric."""
    try:
        return compute_metric(name, G, dataset_path, **kwargs)
    except UserError as e:
        warnings.warn(f"metric {name} skipped: {e}", RuntimeWarning, stacklevel=2)
        return None


def report_metric(result: dict, run_dir=None, snapshot_pkl=None, quiet=False) -> str:
    """Print the result as one JSON line and append it to `<run_dir>/metric-<name>.jsonl`."""
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    if not quiet:
        print(line, flush=True)
    if run_dir is not None and os.path.isdir(run_dir):
        with open(os.path.join(run_dir, f"metric-{result['metric']}.jsonl"), "at") as f:
            f.write(line + "\n")
    return line


def write_tensorboard(result: dict, writer, step: int) -> None:
    """`Metrics/<key>` scalars for every result key; `writer` is a tf.summary writer or a log dir."""
    import tensorflow as tf

    own = isinstance(writer, (str, os.PathLike))
    if own:
        writer = tf.summary.create_file_writer(os.fspath(writer))
    with writer.as_default():
        for key, value in result["results"].items():
            tf.summary.scalar(f"Metrics/{key}", float(value), step=int(step))
    writer.flush()
    if own:
        writer.close()


def run_metrics(names, G, snapshot=None, options=None, run_dir=None, **kwargs) -> dict:
    """What the training loop calls at each snapshot: every metric in `names` for `G`, each appended
    to `metric-<name>.jsonl` in the run directory; returns the flat {result key: value} dict for
    TensorBoard. Metrics whose feature network is unavailable are skipped with a warning."""
    options = dict(options or {})
    names = parse_metric_list(names)
    if run_dir is None and snapshot is not None:
        run_dir = os.path.dirname(os.path.abspath(os.fspath(snapshot)).rstrip(os.sep))
    dataset_path = kwargs.pop("dataset_path", None) or options.get("data")
    kwargs.setdefault("mirror", bool(options.get("mirror", False)))
    kwargs.setdefault("run_dir", run_dir)
    out = {}
    for name in names:
        result = try_compute_metric(name, G, dataset_path, **kwargs)
        if result is None:
            continue
        report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot)
        out.update(result["results"])
    return out


__all__ += ["compute_feature_stats_for_dataset", "compute_feature_stats_for_generator", "FEATURE_NETS"]
