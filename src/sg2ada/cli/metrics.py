"""`sg2ada metrics`: evaluate a trained generator with NVIDIA's StyleGAN2-ADA metrics.

The metrics are those of NVIDIA's `calc_metrics.py` (Karras et al. 2020), computed by
`sg2ada.metrics` on the original feature networks: FID/KID/IS on the 2015-12-05 Inception graph,
precision/recall on NVIDIA's VGG16, PPL on LPIPS (VGG16). `--network` is anything `load_network`
reads (a snapshot directory, an NVIDIA TF1 or PyTorch pickle); the generator used is G_ema. Each
result is printed as one JSON line and appended to `metric-<name>.jsonl` next to the network (or in
`--run-dir`), NVIDIA's format.
"""

from __future__ import annotations

import os

from sg2ada.errors import UserError

HELP = "compute FID/KID/PR/IS/PPL (NVIDIA's metric definitions) or the memorisation copy rate for a trained network"


def add_arguments(parser) -> None:
    from sg2ada.metrics.metric_main import METRICS  # no TensorFlow: the registry is plain data

    nvidia = ", ".join(n for n, s in METRICS.items() if s.nvidia)
    ours = ", ".join(n for n, s in METRICS.items() if not s.nvidia)
    parser.add_argument("--network", required=True, metavar="PATH",
                        help="network snapshot directory or NVIDIA .pkl (TF1 or PyTorch)")
    parser.add_argument("--metrics", default="fid50k_full", metavar="LIST",
                        help=f"comma-separated metric names (default fid50k_full). NVIDIA's: {nvidia}. "
                             f"Shorter sg2ada variants: {ours}")
    parser.add_argument("--data", metavar="PATH",
                        help="dataset to compare with (default: the dataset recorded in the snapshot)")
    parser.add_argument("--mirror", action="store_true",
                        help="the dataset was trained with x-flips (only the legacy non-_full metrics use it)")
    parser.add_argument("--feature-net", action="append", default=[], metavar="PATH",
                        help="local feature network file or a folder holding them (inception-2015-12-05.tgz, "
                             "vgg16.pkl, vgg16_zhang_perceptual.pkl); repeatable. Default: $SG2ADA_INCEPTION, "
                             "$SG2ADA_VGG16, $SG2ADA_LPIPS, then the cache ($SG2ADA_CACHE or ~/.cache/sg2ada), "
                             "then a download")
    parser.add_argument("--offline", action="store_true", help="never download feature networks")
    parser.add_argument("--run-dir", metavar="DIR",
                        help="where to append metric-<name>.jsonl (default: the folder holding --network)")
    parser.add_argument("--batch", type=int, default=32, metavar="N",
                        help="images per feature-network call (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for latents and labels (default 0)")
    parser.add_argument("--truncation-psi", type=float, default=1.0, metavar="PSI",
                        help="truncation psi for generated images (default 1, as NVIDIA)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the real-image statistics")
    parser.add_argument("--num-gen", type=int, metavar="N",
                        help="smoke test: generate N images instead of the metric's count "
                             "(the result is then not NVIDIA's metric)")
    parser.add_argument("--max-real", type=int, metavar="N", help="smoke test: use at most N real images")
    parser.add_argument("--num-samples", type=int, metavar="N", help="smoke test: PPL samples instead of 50000")
    parser.add_argument("--replicas", choices=("auto", "none"), default="auto",
                        help="auto: split the work over all local GPUs when there are several (default); "
                             "none: one device")
    parser.add_argument("--verbose", action="store_true", help="print progress")


def _load_generator(path: str):
    from sg2ada.legacy.load import load_network

    nets = load_network(path, networks=("G_ema",))
    return nets.G_ema, dict(nets.meta or {})


def _strategy(mode: str):
    """A MirroredStrategy over the local GPUs when there are several, else None (one device)."""
    if mode == "none":
        return None
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) < 2:
        return None
    return tf.distribute.MirroredStrategy([d.name for d in gpus])


def main(args) -> int:
    from sg2ada.metrics.metric_main import METRICS, compute_metric, parse_metric_list, report_metric

    names = parse_metric_list(args.metrics)
    if not names:
        raise UserError("--metrics: give at least one metric name")
    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: must be at least 1")
    for opt in ("num_gen", "max_real", "num_samples"):
        value = getattr(args, opt)
        if value is not None and value < 2:
            raise UserError(f"--{opt.replace('_', '-')} {value}: must be at least 2")
    if not os.path.exists(args.network):
        raise UserError(f"--network {args.network}: no such file or directory")
    for p in args.feature_net:
        from sg2ada.metrics.feature_nets import _match_kind

        if not os.path.exists(p):
            raise UserError(f"--feature-net {p}: no such file or directory")
        if os.path.isfile(p) and _match_kind(p) is None:
            raise UserError(f"--feature-net {p}: not a known feature network file (inception-2015-12-05.tgz, "
                            "classify_image_graph_def.pb, vgg16.pkl, vgg16_zhang_perceptual.pkl)")
    if args.run_dir and not os.path.isdir(args.run_dir):
        raise UserError(f"--run-dir {args.run_dir}: no such directory")
    strategy = _strategy(args.replicas)
    if strategy is not None:
        with strategy.scope():  # mirrored weights: each replica reads its own copy
            G, meta = _load_generator(args.network)
    else:
        G, meta = _load_generator(args.network)
    data = args.data
    if data is None:
        recorded = (meta.get("dataset") or {}) if isinstance(meta.get("dataset"), dict) else {}
        data = recorded.get("path") or recorded.get("data")
    needs_data = [n for n in names if METRICS[n].kind in ("fid", "kid", "pr", "copy")]
    if needs_data and data is None:
        raise UserError(f"--data: {', '.join(needs_data)} compare with real images; give the dataset path")
    if data is not None and not data.startswith("builtin:") and "://" not in data and not os.path.exists(data):
        raise UserError(f"--data {data}: no such file or directory")
    run_dir = args.run_dir or os.path.dirname(os.path.abspath(args.network.rstrip("/\\")))
    overrides = {k: getattr(args, k) for k in ("num_gen", "max_real", "num_samples") if getattr(args, k) is not None}
    for name in names:
        result = compute_metric(
            name, G, data, feature_net=args.feature_net or None, cache=not args.no_cache, batch_size=args.batch,
            mirror=args.mirror, seed=args.seed, G_kwargs=dict(truncation_psi=args.truncation_psi),
            download=False if args.offline else None, verbose=args.verbose, strategy=strategy, run_dir=run_dir,
            **overrides,
        )
        report_metric(result, run_dir=run_dir, snapshot_pkl=os.path.abspath(args.network))
    return 0
