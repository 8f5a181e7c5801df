"""`sg2ada style-mix`: NVIDIA's style-mixing figure.

Every row seed's ws get the column seed's ws copied into the `--styles` indices (coarse styles
0-3 take pose and shape from the column, fine styles its colours). The grid shows the column
sources on the top row and the row sources in the left column; written as `grid.png`, plus every
cell as `<row>-<col>.png` with `--save-cells`.
"""

from __future__ import annotations

import os

HELP = "style-mixing grid: row seeds with the chosen styles taken from column seeds"


def add_arguments(parser) -> None:
    parser.add_argument("--network", required=True, metavar="NET", help="network snapshot directory or NVIDIA .pkl")
    parser.add_argument("--rows", required=True, metavar="LIST", help="row seeds, e.g. 85,100,75")
    parser.add_argument("--cols", required=True, metavar="LIST", help="column seeds, e.g. 55,821,1789")
    parser.add_argument("--styles", default="0-6", metavar="LIST",
                        help="style (w) indices taken from the column seeds (default 0-6)")
    parser.add_argument("--trunc", type=float, default=1.0, metavar="PSI", help="truncation psi (default 1)")
    parser.add_argument("--class", dest="class_idx", type=int, default=None, metavar="IDX",
                        help="class label for a conditional network")
    parser.add_argument("--noise-mode", choices=("const", "random", "none"), default="const")
    parser.add_argument("--save-cells", action="store_true", help="also write every cell as <row>-<col>.png")
    parser.add_argument("--outdir", required=True, metavar="DIR")


def main(args) -> int:
    from sg2ada.images import save_png
    from sg2ada.tools.common import check_network_path, check_psi, parse_num_range, prepare_outdir

    rows = parse_num_range(args.rows, "--rows")
    cols = parse_num_range(args.cols, "--cols")
    parse_num_range(args.styles, "--styles")
    psi = check_psi(args.trunc)
    check_network_path(args.network)

    from sg2ada.tools import generate as gen
    from sg2ada.tools.common import labels_for, load_generator

    G = load_generator(args.network)
    styles = gen.parse_styles(args.styles, G.num_ws)
    labels_for(G, args.class_idx)
    outdir = prepare_outdir(args.outdir)
    grid, cells = gen.style_mix(G, rows, cols, styles, psi, args.noise_mode, args.class_idx)
    if args.save_cells:
        for (r, q), img in cells.items():
            save_png(img, os.path.join(outdir, f"{r}-{q}.png"))
    path = save_png(grid, os.path.join(outdir, "grid.png"))
    print(f"wrote {path} ({len(rows)} rows x {len(cols)} columns, styles {args.styles})")
    return 0
