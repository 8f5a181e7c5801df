"""`sg2ada train`: train StyleGAN2-ADA, with NVIDIA's option names (stylegan2-ada-pytorch `train.py`).

    sg2ada train --outdir runs --data mydata --cfg auto --mirror --kimg 5000 --snap 10

A new run goes to `<outdir>/<NNNNN>-<desc>/`. `--resume` takes
  * a run directory (or `latest`: the newest run in --outdir): continue that run where it stopped,
    at the same kimg with the same augmentation probability (options come from its
    training_options.json; only --kimg, --snap, --tick, --metrics, --keep, --backup-uri may change);
  * a network snapshot directory or an NVIDIA pickle (TF1 or PyTorch), a URL of one, or a named
    source (`ffhq256`, ..., see `sg2ada.training.transfer`, downloaded once into the cache): a new run
    initialised with those weights (transfer learning; as NVIDIA, ADA reacts faster and EMA has no
    ramp-up).

Exit status: 0 done, 2 bad input, 3 stopped by SIGTERM/SIGINT after saving a checkpoint (resume with
`--resume RUN_DIR`), 4 a loss became NaN/inf (the last checkpoint is intact).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os

from sg2ada.errors import UserError

HELP = "train a StyleGAN2-ADA model (NVIDIA's train.py options); --dry-run shows the resolved options"

# Options that may change when continuing a run; everything else comes from its training_options.json.
DEFAULT_METRICS = "fid50k_full"
CONTINUE_OVERRIDES = ("kimg", "snap", "tick", "metrics", "keep", "backup_uri", "time_limit")
LOOP_KEYS = ("kimg_per_tick", "snap", "metrics", "keep", "backup_uri", "run_dir", "run_desc")


def _bool(text) -> bool:
    if isinstance(text, bool):
        return text
    t = str(text).strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0/true/false), got {text!r}")


def _flag(parser, name, help):
    # `--mirror` alone means true; NVIDIA's `--mirror=1` / `--mirror 0` spellings work too.
    parser.add_argument(name, type=_bool, nargs="?", const=True, default=None, metavar="BOOL", help=help)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("general")
    g.add_argument("--outdir", metavar="DIR", help="where to make the run directory (required for a new run)")
    g.add_argument("--snap", type=int, metavar="TICKS", help="snapshot interval in ticks [default: 50]")
    g.add_argument("--tick", type=float, metavar="KIMG", help="kimg per tick (progress line, stats, checkpoint) "
                   "[default: 4]")
    g.add_argument("--metrics", metavar="LIST", help="comma-separated metrics at snapshots, or none [default: fid50k_full]")
    g.add_argument("--seed", type=int, metavar="INT", help="random seed [default: 0]")
    g.add_argument("-n", "--dry-run", action="store_true", help="print the resolved options and exit, writing nothing")
    g.add_argument("--time-limit", type=float, metavar="MIN", help="end the session after this many minutes, "
                   "with a final snapshot and checkpoint (continue later with --resume)")
    g.add_argument("--keep", type=int, metavar="N", help="checkpoints to keep [default: 5]")
    g.add_argument("--backup-uri", metavar="URI", help="also copy checkpoints and snapshots to this tf.io.gfile "
                   "location (a mounted path, gs://...)")
    d = p.add_argument_group("dataset")
    d.add_argument("--data", metavar="PATH", help="training data: a folder from `sg2ada dataset`")
    _flag(d, "--cond", "train a conditional model on the dataset labels [default: false]")
    d.add_argument("--subset", type=int, metavar="INT", help="train with only N images [default: all]")
    _flag(d, "--mirror", "add x-flipped copies of the images [default: false]")
    b = p.add_argument_group("base config")
    b.add_argument("--cfg", metavar="NAME", help="auto, stylegan2, paper256, paper512, paper1024, cifar, tiny "
                   "[default: auto]")
    b.add_argument("--gamma", type=float, help="override R1 gamma")
    b.add_argument("--kimg", type=float, help="override training duration (thousands of real images)")
    b.add_argument("--batch", type=int, help="override the global batch size")
    b.add_argument("--batch-gpu", type=int, metavar="INT", help="images per device per accumulation round")
    b.add_argument("--glr", type=float, help="override G learning rate")
    b.add_argument("--dlr", type=float, help="override D learning rate")
    b.add_argument("--map", type=int, metavar="INT", help="override mapping network depth")
    b.add_argument("--mbstd", type=int, metavar="INT", help="override minibatch-stddev group size")
    b.add_argument("--ema", type=float, metavar="KIMG", help="override G_ema half-life")
    b.add_argument("--cbase", type=int, metavar="INT", help="override channel base")
    b.add_argument("--cmax", type=int, metavar="INT", help="override max channels")
    a = p.add_argument_group("discriminator augmentation")
    a.add_argument("--aug", metavar="MODE", help="ada, noaug or fixed [default: ada]")
    a.add_argument("--p", type=float, help="augmentation probability for --aug fixed")
    a.add_argument("--target", type=float, help="ADA target for --aug ada [default: 0.6]")
    a.add_argument("--augpipe", metavar="NAME", help="augmentation pipeline [default: bgc]")
    a.add_argument("--ada-kimg", type=float, metavar="KIMG", help="ADA adjustment speed [default: 500]")
    a.add_argument("--p-max", type=float, metavar="P", help="upper limit on the adaptive p (ours, off by default: "
                   "NVIDIA has none; augmentations can leak into generated images when p runs high)")
    t = p.add_argument_group("resume and transfer learning")
    t.add_argument("--resume", metavar="PATH", help="a run directory or `latest` (continue it); or, for transfer "
                   "learning, a network snapshot, an NVIDIA pickle (TF1 or PyTorch), its URL, or a named source: "
                   "ffhq256, ffhq512, ffhq1024, celebahq256, lsundog256 (downloaded once into "
                   "CACHE/transfer-sources, CACHE being $SG2ADA_CACHE or ~/.cache/sg2ada; offline, put the file "
                   "there or pass its local path)")
    t.add_argument("--freezed", type=int, metavar="INT", help="Freeze-D: discriminator layers to freeze [default: 0]")
    f = p.add_argument_group("performance")
    _flag(f, "--fp32", "disable mixed precision")
    f.add_argument("--precision", choices=("fp32", "fp16", "bf16"), help="precision of the top resolutions")
    f.add_argument("--xla", dest="xla", action="store_true", default=None, help="compile with XLA [default: on GPUs]")
    f.add_argument("--no-xla", dest="xla", action="store_false", help="do not compile with XLA")
    f.add_argument("--strategy", metavar="NAME", help="auto, mirrored, multiworker or default [default: auto]")


# ------------------------------------------------------------------------------------------------
# Resolving


def _given(args) -> dict:
    """The options the user actually gave (argparse leaves the others at None)."""
    skip = {"command", "_run", "dry_run", "outdir"}
    return {k: v for k, v in vars(args).items() if k not in skip and v is not None}


def _metrics_list(text) -> list[str]:
    if text is None:
        return []
    try:
        from sg2ada.metrics import parse_metric_list
    except ImportError:
        names = [s.strip() for s in str(text).split(",") if s.strip() and s.strip().lower() != "none"]
        if names:
            raise UserError(f"--metrics {text}: metrics are not available in this build; use --metrics none") from None
        return []
    return parse_metric_list(text)


def _resolve(given: dict, num_replicas: int):
    from sg2ada.training.options import resolve_options

    accepted = set(inspect.signature(resolve_options).parameters)
    kw = {k: v for k, v in given.items() if k in accepted}
    for k in ("mirror", "cond", "fp32"):
        if k in kw:
            kw[k] = bool(kw[k])
    kw["num_replicas"] = num_replicas
    if "seed" not in kw:
        kw["seed"] = 0
    return resolve_options(**kw)


def _desc(given: dict, opts, num_replicas: int) -> str:
    from sg2ada.training.run_dir import run_desc

    return run_desc(given["data"], cfg=given.get("cfg", "auto"), gpus=num_replicas, cond=bool(given.get("cond")),
                    subset=given.get("subset"), mirror=bool(given.get("mirror")), gamma=given.get("gamma"),
                    kimg=given.get("kimg"), batch=given.get("batch"), aug=given.get("aug"), p=given.get("p"),
                    target=given.get("target"), augpipe=given.get("augpipe"), resume=given.get("resume"),
                    freezed=given.get("freezed"))


def _loop_options(given: dict, base: dict | None = None) -> dict:
    base = dict(base or {})
    out = {
        "kimg_per_tick": float(given.get("tick", base.get("kimg_per_tick", 4))),
        "snap": int(given.get("snap", base.get("snap", 50))),
        # NVIDIA's default for a new run is fid50k_full; a continued run keeps what it was started with.
        # Without the Inception file (offline) the metric is skipped with a warning and training goes on.
        "metrics": (_metrics_list(given["metrics"]) if "metrics" in given
                    else list(base.get("metrics", [])) if base else _metrics_list(DEFAULT_METRICS)),
        "keep": int(given.get("keep", base.get("keep", 5))),
        "backup_uri": given.get("backup_uri", base.get("backup_uri")),
    }
    if given.get("time_limit") is not None and given["time_limit"] <= 0:  # per session, not saved
        raise UserError("--time-limit must be a positive number of minutes")
    if out["snap"] < 1:
        raise UserError("--snap must be at least 1")
    if out["kimg_per_tick"] <= 0:
        raise UserError("--tick must be a positive number of kimg")
    if out["keep"] < 1:
        raise UserError("--keep must be at least 1")
    return out


def _find_run_to_continue(resume: str, outdir: str | None, dry_run: bool = False) -> str | None:
    """The run directory `--resume` names, or None when it names weights (transfer learning)."""
    from sg2ada.training.run_dir import CHECKPOINT_SUBDIR, is_run_dir, latest_run_dir

    if resume == "latest":
        if not outdir:
            raise UserError("--resume latest needs --outdir to look in")
        found = latest_run_dir(outdir)
        if found is None:  # lets a restarted job use one command line from its very first start
            print(f"Note: --resume latest: no run with checkpoints in {outdir} yet; starting a new run")
        return found
    if os.path.isdir(resume) and (is_run_dir(resume) or os.path.isdir(os.path.join(resume, CHECKPOINT_SUBDIR))):
        if not is_run_dir(resume):
            raise UserError(f"--resume {resume}: training_options.json is missing, so the run cannot be continued")
        return os.path.abspath(resume)
    if resume == "noresume":  # NVIDIA's spelling of "no transfer learning"
        return None
    from sg2ada.training.transfer import check_resume_spec

    # Names and URLs are checked without the network (the download comes later, and never in a dry
    # run); a dry run only shows options, so it does not insist that local weights exist yet.
    check_resume_spec(resume, must_exist=not dry_run)
    return None


def _planned_strategy(name: str, dry_run: bool):
    """(strategy or None, replica count). A dry run only counts the replicas: building a multi-worker
    strategy would wait for the other workers to join."""
    from sg2ada.training import distribute

    if not dry_run:
        strategy = distribute.make_strategy(name)
        return strategy, int(strategy.num_replicas_in_sync)
    import tensorflow as tf

    local = max(len(tf.config.list_logical_devices("GPU")), 1)
    cluster = distribute.tf_config_cluster() if name in ("auto", "multiworker") else None
    if name == "multiworker" and cluster is None:
        raise UserError("--strategy multiworker needs TF_CONFIG describing a cluster of >1 tasks")
    if cluster is not None:
        tasks = sum(len(v) for k, v in cluster["cluster"].items() if k in ("chief", "worker"))
        return None, tasks * local
    return None, 1 if name == "default" else local


def _print_summary(opts_dict: dict, run_dir: str, num_replicas: int) -> None:
    print("\nTraining options:")
    print(json.dumps(opts_dict, indent=2, default=str))
    print()
    print(f"Output directory:   {run_dir}")
    print(f"Training data:      {opts_dict.get('data')}")
    print(f"Training duration:  {opts_dict.get('total_kimg'):g} kimg")
    print(f"Number of replicas: {num_replicas}")
    print(f"Image resolution:   {opts_dict.get('resolution')}")
    print(f"Conditional model:  {bool(opts_dict.get('c_dim'))}")
    print(f"Dataset x-flips:    {opts_dict.get('mirror')}")
    print()


def main(args) -> int:
    from sg2ada.training.run_dir import (
        create_run_dir,
        next_run_dir,
        read_options,
        write_options,
    )
    from sg2ada.training.training_loop import training_loop

    given = _given(args)
    continue_dir = _find_run_to_continue(given["resume"], args.outdir, args.dry_run) if "resume" in given else None
    if given.get("resume") == "latest" and continue_dir is None:
        del given["resume"]  # nothing to continue: an ordinary new run

    from sg2ada.training.options import TrainingOptions

    if continue_dir:
        saved = read_options(continue_dir)
        ignored = sorted(k for k in given if k not in CONTINUE_OVERRIDES + ("resume",))
        if ignored:
            print(f"Note: continuing {continue_dir} with its own options; ignoring "
                  f"{', '.join('--' + k.replace('_', '-') for k in ignored)}")
        opts = TrainingOptions.from_dict(saved)
        if "kimg" in given:
            if given["kimg"] <= 0:
                raise UserError("--kimg must be positive")
            opts = opts.replace(total_kimg=float(given["kimg"]))
        loop = _loop_options(given, saved)
        strategy, num_replicas = _planned_strategy(opts.strategy, args.dry_run)
        if num_replicas != opts.num_replicas:
            print(f"Note: the run was started with {opts.num_replicas} replica(s), now {num_replicas}; "
                  "the global batch stays the same")
            opts = opts.replace(num_replicas=num_replicas)
        run_dir = continue_dir
    else:
        if not args.outdir:
            raise UserError("--outdir is required for a new run (where to make the run directory)")
        if "data" not in given:
            raise UserError("--data is required: a dataset folder made by `sg2ada dataset`")
        if not os.path.exists(given["data"]) and not str(given["data"]).startswith(("gs://", "s3://")):
            raise UserError(f"--data {given['data']}: no such dataset; make one with "
                            "`sg2ada dataset --source ... --dest DIR`")
        strategy, num_replicas = _planned_strategy(given.get("strategy", "auto"), args.dry_run)
        opts = _resolve(given, num_replicas)
        loop = _loop_options(given)
        run_dir = next_run_dir(args.outdir, _desc(given, opts, num_replicas))

    transfer = given.get("resume") if (not continue_dir and given.get("resume") not in (None, "noresume")) else None
    opts_dict = dict(opts.to_dict(), **loop)
    _print_summary(opts_dict, run_dir, num_replicas)
    if args.dry_run:
        if transfer is not None:
            from sg2ada.training.transfer import describe_resume

            print(f"Transfer from:      {describe_resume(transfer)}")  # a dry run downloads nothing
        print("Dry run; exiting.")
        return 0
    if transfer is not None:
        from sg2ada.training.transfer import resolve_resume_weights

        # Before the run directory exists, so a failed download leaves no empty run behind.
        transfer = resolve_resume_weights(transfer)

    if not continue_dir:
        print("Creating output directory...")
        run_dir = create_run_dir(args.outdir, os.path.basename(run_dir).split("-", 1)[1])
        opts_dict["run_dir"] = os.path.abspath(run_dir)
        write_options(run_dir, opts_dict)
    else:
        write_options(run_dir, dict(read_options(run_dir), **loop, total_kimg=opts.total_kimg))

    # A continued run restores the newest readable checkpoint of its own directory (if it has none
    # yet, because it was stopped before its first tick, it starts again from the beginning).
    settings = _settings(loop)
    if given.get("time_limit") is not None:
        settings["time_limit_sec"] = float(given["time_limit"]) * 60
    return training_loop(opts, run_dir, strategy=strategy, transfer_from=transfer, **settings)


def _settings(loop: dict) -> dict:
    return {"kimg_per_tick": loop["kimg_per_tick"], "snap": loop["snap"], "metrics": loop["metrics"],
            "keep": loop["keep"], "backup_uri": loop["backup_uri"]}
