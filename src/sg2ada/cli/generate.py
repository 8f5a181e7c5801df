"""`sg2ada generate`: images from seeds (or from saved ws) with a trained generator.

Behaves as NVIDIA's `generate.py`: seed s -> z = RandomState(s).randn(1, z_dim) -> G_ema with
truncation psi and the chosen noise mode -> `seed%04d.png` quantised as (x*127.5+128).clip(0,255).
`--projected-w FILE.npz` synthesises the ws saved by `sg2ada project` (or NVIDIA's projector)
instead, writing `proj%02d.png`. `--grid` also writes all images as one `grid.png`.
"""

from __future__ import annotations

import os

from sg2ada.errors import UserError

HELP = "generate images from seeds (or projected ws) with a trained network"


def add_arguments(parser) -> None:
    parser.add_argument("--network", required=True, metavar="NET",
                        help="network snapshot directory, or NVIDIA TF1/PyTorch .pkl (G_ema is used)")
    parser.add_argument("--seeds", metavar="LIST", help="seeds, e.g. 0-35,40,50-52")
    parser.add_argument("--projected-w", metavar="FILE.npz", help="synthesise the ws of a projected_w.npz instead")
    parser.add_argument("--trunc", type=float, default=1.0, metavar="PSI", help="truncation psi (default 1)")
    parser.add_argument("--trunc-cutoff", type=int, default=None, metavar="N",
                        help="truncate only the first N ws (default: all)")
    parser.add_argument("--class", dest="class_idx", type=int, default=None, metavar="IDX",
                        help="class label for a conditional network")
    parser.add_argument("--noise-mode", choices=("const", "random", "none", "tf1"), default="const",
                        help="noise inputs: the network's constant noise (default, as NVIDIA's PyTorch tools), "
                             "per-seed random, none, or tf1 (per-seed noise as NVIDIA's TF1 generate.py)")
    parser.add_argument("--grid", action="store_true", help="also write all images as one grid.png")
    parser.add_argument("--outdir", required=True, metavar="DIR", help="where to write the images")


def main(args) -> int:
    import numpy as np

    from sg2ada.images import image_grid, save_png, to_uint8
    from sg2ada.tools.common import check_cutoff, check_network_path, check_psi, parse_num_range, prepare_outdir

    if (args.seeds is None) == (args.projected_w is None):
        raise UserError("pass either --seeds or --projected-w")
    seeds = parse_num_range(args.seeds, "--seeds") if args.seeds is not None else None
    psi = check_psi(args.trunc)
    if args.projected_w is not None and not os.path.isfile(args.projected_w):
        raise UserError(f"{args.projected_w}: no such file; pass --projected-w a projected_w.npz")
    check_network_path(args.network)

    from sg2ada.tools import generate as gen
    from sg2ada.tools.common import labels_for, load_generator

    G = load_generator(args.network)
    cutoff = check_cutoff(args.trunc_cutoff, G.num_ws)
    ws = gen.load_projected_ws(args.projected_w, G) if args.projected_w is not None else None
    if ws is None:
        labels_for(G, args.class_idx)  # check --class before creating anything
    outdir = prepare_outdir(args.outdir)
    images = []
    if ws is not None:
        if args.noise_mode == "tf1":
            raise UserError("--noise-mode tf1 draws noise from seeds; with --projected-w use const, random or none")
        for i, img in enumerate(np.asarray(to_uint8(gen.synthesize(G, ws, args.noise_mode)))):
            save_png(img, os.path.join(outdir, f"proj{i:02d}.png"))
            images.append(img)
        print(f"wrote {len(images)} image(s) from {args.projected_w} to {outdir}")
    else:
        for seed, img in gen.seed_images(G, seeds, psi, cutoff, args.class_idx, args.noise_mode):
            save_png(img, os.path.join(outdir, f"seed{seed:04d}.png"))
            images.append(img)
        print(f"wrote {len(images)} image(s) to {outdir}")
    if args.grid:
        save_png(image_grid(np.stack(images)), os.path.join(outdir, "grid.png"))
        print(f"wrote {os.path.join(outdir, 'grid.png')}")
    return 0
