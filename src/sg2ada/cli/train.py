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

Exit status: 0 done, 2 bad input (a TF_CONFIG cluster that did not form within --cluster-timeout
included), 3 stopped by SIGTERM/SIGINT (after saving a checkpoint once training has begun: resume with
`--resume RUN_DIR`), 4 a loss became NaN/inf (the last checkpoint is intact).
"""

from __future__ import annotations

import argparse
import atexit
import glob
import os
import shutil
import tempfile

from sg2ada.errors import UserError

# sg2ada.training, sg2ada.storage backends and TensorFlow are imported inside the functions below, so
# that `sg2ada --help` and option errors answer at once.

HELP = "train a StyleGAN2-ADA model (NVIDIA's train.py options); --dry-run shows the resolved options"


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
    g.add_argument("--backup-uri", metavar="URI", help="also copy checkpoints, snapshots and logs, in the "
                   "background, to this location: s3://, gs://, az://, any fsspec URL or a mounted path "
                   "(`pip install 'sg2ada[cloud]'` for the object stores)")
    d = p.add_argument_group("dataset")
    d.add_argument("--data", metavar="PATH", help="training data: a folder from `sg2ada dataset`")
    _flag(d, "--cond", "train a conditional model on the dataset labels [default: false]")
    d.add_argument("--subset", type=int, metavar="INT", help="train with only N images [default: all]")
    d.add_argument("--val", type=int, metavar="N", help="hold out N of the training images: D's outputs on them "
                   "against training images show when D overfits [default: 0]")
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
    f.add_argument("--cluster-timeout", type=float, default=10, metavar="MIN", help="how long each task of a "
                   "TF_CONFIG cluster waits for the others to start, naming the missing ones every 10 s "
                   "[default: 10]")


# ------------------------------------------------------------------------------------------------
# Running


def _run_to_continue(resume: str | None, outdir: str | None, dry_run: bool, backup_uri: str | None) -> str | None:
    """The run directory `--resume` names (fetched first when it is a backup in a bucket), or None
    when it names weights (transfer learning) or when `--resume latest` finds no run yet, locally or
    under --backup-uri (so a restarted job can use one command from its very first start)."""
    from sg2ada.training.checkpoint import latest_run
    from sg2ada.training.run_dir import CHECKPOINT_SUBDIR, is_run_dir, latest_run_dir

    if resume is None or resume == "noresume":  # NVIDIA's spelling of "no transfer learning"
        return None
    if _is_backed_up_run(resume):
        return _fetch_backed_up_run(resume, outdir, dry_run)
    if resume == "latest":
        if not outdir:
            raise UserError("--resume latest needs --outdir to look in")
        found = latest_run_dir(outdir)
        if found is None and backup_uri:  # a fresh machine: the run lives on in the bucket
            uri = latest_run(backup_uri)
            if uri is not None:
                return _fetch_backed_up_run(uri, outdir, dry_run)
        if found is None:
            print(f"Note: --resume latest: no run with checkpoints in {outdir} yet; starting a new run")
        return found
    if os.path.isdir(resume) and (is_run_dir(resume) or os.path.isdir(os.path.join(resume, CHECKPOINT_SUBDIR))):
        if not is_run_dir(resume):
            raise UserError(f"--resume {resume}: training_options.json is missing, so the run cannot be continued")
        return os.path.abspath(resume)
    from sg2ada.training.transfer import check_resume_spec

    # Names and URLs are checked without the network (the download comes later, and never in a dry
    # run); a dry run only shows options, so it does not insist that local weights exist yet.
    check_resume_spec(resume, must_exist=not dry_run)
    return None


def _is_backed_up_run(resume: str) -> bool:
    """s3://, gs://, az://... a run directory backed up with --backup-uri (URLs of weights are http(s))."""
    return "://" in resume and not resume.startswith(("http://", "https://", "file://")) and \
        not resume.endswith(".pkl")


def _fetch_backed_up_run(uri: str, outdir: str | None, dry_run: bool) -> str:
    """The backed-up run `uri` as a local run directory `<outdir>/<its name>`: an existing local copy
    with checkpoints is continued as it is; otherwise the run's files and its newest complete
    checkpoint are fetched (into a temporary folder for a dry run, which writes nothing)."""
    from sg2ada.training.checkpoint import fetch_run, list_checkpoints
    from sg2ada.training.run_dir import CHECKPOINT_SUBDIR

    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if dry_run:
        local = os.path.join(tempfile.mkdtemp(prefix="sg2ada-dry-run-"), name)
        atexit.register(shutil.rmtree, os.path.dirname(local), True)
    elif not outdir:
        raise UserError(f"--resume {uri}: give --outdir, where the run continues on this machine")
    else:
        local = os.path.join(outdir, name)
        if list_checkpoints(os.path.join(local, CHECKPOINT_SUBDIR)):
            print(f"Note: {local} already holds this run's checkpoints; continuing it")
            return os.path.abspath(local)
    print(f"Fetching the run backed up at {uri} into {local}...")
    if fetch_run(uri, local) is None:
        print(f"Note: {uri} has no complete checkpoint yet; the run starts again from kimg 0")
    return os.path.abspath(local)


def _print_summary(opts, run_dir: str, num_replicas: int) -> None:
    print("\nTraining options:")
    print(opts.to_json())
    print(f"Output directory:   {run_dir}")
    print(f"Training data:      {opts.data}")
    print(f"Training duration:  {opts.total_kimg:g} kimg")
    print(f"Number of replicas: {num_replicas}")
    print(f"Image resolution:   {opts.resolution}")
    print(f"Conditional model:  {bool(opts.c_dim)}")
    print(f"Dataset x-flips:    {opts.mirror}")
    print()


def main(args) -> int:
    return _train(args)[0]


def train(*, outdir: str | None = None, progress: bool | None = True, **options) -> str:
    """`sg2ada train` from Python, with the command line's option names: returns the run directory.

        run_dir = sg2ada.train(outdir="runs", data="data/shapes", cfg="tiny", kimg=1, metrics="none")
        sg2ada.train(resume=run_dir, kimg=2)   # continue it

    Bad options raise `UserError`; a non-finite loss raises `NonFiniteLossError`; an interrupt
    (SIGINT, a notebook's stop button) saves a checkpoint, then raises KeyboardInterrupt.
    """
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    from sg2ada.data.remote import remove_copies
    from sg2ada.training.training_loop import EXIT_PREEMPTED

    args = parser.parse_args([])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise TypeError(f"sg2ada.train() got unknown options {unknown}; see `sg2ada train --help`")
    for name, value in options.items():
        setattr(args, name, value)
    args.outdir, args.dry_run = outdir, False
    try:
        status, run_dir = _train(args, progress=progress)
    finally:
        remove_copies()  # a bucket dataset's local copy: nothing of the data stays on the machine
    if status == EXIT_PREEMPTED:
        raise KeyboardInterrupt(f"stopped after saving a checkpoint; continue with sg2ada.train(resume={run_dir!r})")
    return run_dir


def _train(args, progress: bool | None = None) -> tuple[int, str | None]:
    from sg2ada.storage import open_store
    from sg2ada.training import distribute
    from sg2ada.training.options import CONTINUE_OVERRIDES, resolve_options
    from sg2ada.training.run_dir import (
        CHECKPOINT_SUBDIR,
        create_run_dir,
        find_run_dir,
        next_run_dir,
        read_options,
        run_desc,
    )
    from sg2ada.training.training_loop import training_loop

    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in ("command", "_run", "dry_run", "outdir", "cluster_timeout")}
    if not args.cluster_timeout > 0:
        raise UserError(f"--cluster-timeout must be a positive number of minutes, got {args.cluster_timeout:g}")

    # ---- What to train: a run to continue, or a new run --------------------------------------
    continue_dir = _run_to_continue(given.get("resume"), args.outdir, args.dry_run, given.get("backup_uri"))
    if continue_dir:
        saved = read_options(continue_dir)
        ignored = sorted(k for k in given if k not in CONTINUE_OVERRIDES + ("resume",))
        if ignored:
            print(f"Note: continuing {continue_dir} with its own options; ignoring "
                  f"{', '.join('--' + k.replace('_', '-') for k in ignored)}")
        opts = saved.continued(**{k: v for k, v in given.items() if k in CONTINUE_OVERRIDES})
    else:
        if given.get("resume") == "latest":
            del given["resume"]  # nothing to continue: an ordinary new run
        if not args.outdir:
            raise UserError("--outdir is required for a new run (where to make the run directory)")
        if "data" not in given:
            raise UserError("--data is required: a dataset folder made by `sg2ada dataset`")
        if not os.path.exists(given["data"]) and "://" not in given["data"] and \
                not given["data"].startswith("builtin:"):
            raise UserError(f"--data {given['data']}: no such dataset; make one with "
                            "`sg2ada dataset --source ... --dest DIR`")

    # ---- Devices (a dry run only counts them: a cluster would wait for all its workers) ---------
    strategy_name = opts.strategy if continue_dir else given.get("strategy", "auto")
    if args.dry_run:
        strategy, num_replicas = None, distribute.count_replicas(strategy_name)
    else:
        strategy = distribute.make_strategy(strategy_name, cluster_timeout_sec=args.cluster_timeout * 60)
        num_replicas = int(strategy.num_replicas_in_sync)
    if not continue_dir:
        opts = resolve_options(num_replicas=num_replicas, **given)
    opts.batch_per_device(num_replicas)  # the global batch must split over these devices

    # ---- The run directory: chosen and made by the chief alone, learnt by the other workers ----
    transfer = opts.resume if not continue_dir and opts.resume else None
    desc = None if continue_dir else run_desc(
        opts.data, cfg=opts.cfg, gpus=num_replicas, cond=opts.cond, subset=opts.subset, mirror=opts.mirror,
        gamma=given.get("gamma"), kimg=given.get("kimg"), batch=given.get("batch"), aug=given.get("aug"),
        p=given.get("p"), target=given.get("target"), augpipe=given.get("augpipe"), resume=given.get("resume"),
        freezed=given.get("freezed"))  # the new run directory's name, NVIDIA's way
    if args.dry_run:
        _print_summary(opts, continue_dir or next_run_dir(args.outdir, desc), num_replicas)
        if transfer is not None:
            from sg2ada.training.transfer import describe_resume

            print(f"Transfer from:      {describe_resume(transfer)}")  # a dry run downloads nothing
        print("Dry run; exiting.")
        return 0, None
    if transfer is not None:
        from sg2ada.training.transfer import resolve_resume_weights

        # Before the run directory exists, so a failed download leaves no empty run behind.
        transfer = resolve_resume_weights(transfer)
    chief = distribute.is_chief(strategy)
    if chief and opts.backup_uri:  # bad credentials or a wrong bucket: one line, and nothing made locally
        open_store(opts.backup_uri, what="--backup-uri").check_access()
    run_dir = continue_dir
    if run_dir is None and chief:
        print("Creating output directory...")
        run_dir = create_run_dir(args.outdir, desc)
    if distribute.num_workers(strategy) > 1:
        # Every worker must train the chief's run: `latest` and a new run's number are its choice.
        outdir = os.path.dirname(run_dir) if run_dir else args.outdir
        run_id = distribute.broadcast_from_chief(strategy, int(os.path.basename(run_dir)[:5]) if chief else 0)
        run_dir = find_run_dir(outdir, run_id)
    if chief:
        _print_summary(opts, run_dir, num_replicas)
    try:
        return training_loop(opts, run_dir, strategy, transfer_from=transfer, progress=progress), run_dir
    except BaseException:
        # A new run that failed before its first checkpoint leaves nothing behind.
        if chief and not continue_dir and not glob.glob(os.path.join(run_dir, CHECKPOINT_SUBDIR, "ckpt-*.index")):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
