"""`sg2ada convert`: an NVIDIA network pickle (TF1 or PyTorch StyleGAN2-ADA) -> our snapshot directory.

The counterpart of NVIDIA's `legacy.py` converter in NVlabs/stylegan2-ada-pytorch, except that the
output holds no code (see sg2ada.networks.snapshot) and the input is read with a restricted
unpickler (see sg2ada.legacy), so converting an untrusted file cannot run anything.
"""

from __future__ import annotations

import os

from sg2ada.errors import UserError

HELP = "convert an NVIDIA StyleGAN2-ADA network pickle (TF1 or PyTorch) into an sg2ada snapshot directory"


def add_arguments(parser) -> None:
    parser.add_argument("--source", required=True, metavar="PKL",
                        help="NVIDIA network pickle (TF1 (G, D, Gs) or PyTorch {G, D, G_ema}; PyTorch itself is not "
                             "needed); or a snapshot dir")
    parser.add_argument("--dest", required=True, metavar="DIR", help="snapshot directory to write")
    parser.add_argument("--force", action="store_true", help="replace DEST if it already exists")


def main(args) -> int:
    source = os.fspath(args.source)
    dest = os.path.abspath(os.fspath(args.dest))
    if "://" in source:
        raise UserError(f"{source}: URLs are not fetched; download the file first and pass its local path to --source")
    if not os.path.exists(source):
        raise UserError(f"{source}: no such file; pass --source an NVIDIA network pickle")
    if os.path.lexists(dest) and not args.force:
        raise UserError(f"{dest}: already exists; choose another --dest or pass --force to replace it")
    if os.path.abspath(source) == dest:
        raise UserError(f"{dest}: --source and --dest are the same path; choose another --dest")

    from sg2ada.legacy.load import load_network
    from sg2ada.networks.snapshot import save_snapshot

    nets = load_network(source)
    meta = nets.meta
    extra = {k: meta[k] for k in ("tf1_runtime_kwargs", "tf1_static_kwargs", "pytorch_init_kwargs", "note")
             if k in meta}
    try:
        save_snapshot(dest, nets.G, nets.D, nets.G_ema, dataset=meta.get("dataset"), kimg=meta.get("kimg"),
                      source=f"{meta.get('format', 'snapshot')}:{os.path.abspath(source)}", overwrite=args.force,
                      extra={"converted_from": extra} if extra else None)
    except OSError as e:
        raise UserError(f"{dest}: cannot write the snapshot ({e.strerror or e}); check the --dest path, its "
                        "permissions and free space") from None
    g = nets.G_ema.config
    print(f"wrote {dest}: {g.img_resolution}x{g.img_resolution}x{g.img_channels}, z {g.z_dim}, w {g.w_dim}, "
          f"c {g.c_dim}, from {meta.get('format', '?')}")
    missing = [k for k in ("G", "D") if getattr(nets, k) is None]
    if missing:
        print(f"note: the source holds no {' and no '.join(missing)}; the snapshot has G_ema only "
              "(enough to generate and evaluate, not to resume training)")
    if "note" in meta:
        print(f"note: {meta['note']}")
    return 0
