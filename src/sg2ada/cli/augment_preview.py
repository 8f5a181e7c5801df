"""`sg2ada augment-preview`: a PNG grid showing what each ADA augmentation does to real images.

Rows: every transformation of the pipe alone at probability 1, then the full pipe at --p (ADA paper,
App. B lists the transformations); the first column is the real image. See sg2ada.augment.preview.
"""

from __future__ import annotations

import os

from sg2ada.errors import UserError

HELP = "write a grid of real images and their ADA augmentations (one row per operation)"

_PIPES = ("blit", "geom", "color", "filter", "noise", "cutout", "bg", "bgc", "bgcf", "bgcfn", "bgcfnc")


def add_arguments(parser) -> None:
    parser.add_argument("--data", required=True, metavar="PATH",
                        help="dataset (sg2ada dataset output), image folder or zip, or builtin:shapes")
    parser.add_argument("--pipe", default="bgc", choices=_PIPES, help="augmentation pipe (default bgc)")
    parser.add_argument("--p", type=float, default=0.5, help="probability for the full-pipe row (default 0.5)")
    parser.add_argument("--out", required=True, metavar="FILE.png", help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--num", type=int, default=8, metavar="N", help="augmented samples per row (default 8)")


def main(args) -> int:
    if not 0.0 <= args.p <= 1.0:
        raise UserError(f"--p {args.p} is out of range: give a probability in [0, 1]")
    if not 1 <= args.num <= 64:
        raise UserError(f"--num {args.num} is out of range: give 1..64 samples per row")
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out {args.out}: the preview is a PNG; give a file name ending in .png")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UserError(f"--out {args.out}: folder {out_dir} does not exist; create it first")

    from sg2ada.augment.preview import load_reals, preview_rows, render_grid
    from sg2ada.images import save_png

    reals = load_reals(args.data, len(preview_rows(args.pipe, args.p)))
    grid = render_grid(reals, args.pipe, args.p, seed=args.seed, num=args.num)
    save_png(grid, args.out)
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]})")
    return 0
