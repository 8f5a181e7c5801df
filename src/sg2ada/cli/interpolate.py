"""`sg2ada interpolate`: a looping latent-space walk through seeds as a GIF or MP4.

Between consecutive seeds (and from the last back to the first) `--frames` frames are rendered:
spherical interpolation of z (`--space z`, the latents are Gaussian) or linear interpolation of w
(`--space w`). Noise is constant so the loop does not flicker. `.gif` is written with Pillow,
`.mp4` with imageio + imageio-ffmpeg (optional packages).
"""

from __future__ import annotations

HELP = "looping interpolation video between seeds (z slerp or w lerp), .gif or .mp4"


def add_arguments(parser) -> None:
    parser.add_argument("--network", required=True, metavar="NET", help="network snapshot directory or NVIDIA .pkl")
    parser.add_argument("--seeds", required=True, metavar="LIST", help="seeds visited in order, e.g. 1,5,9")
    parser.add_argument("--frames", type=int, default=30, metavar="N",
                        help="frames per transition between consecutive seeds (default 30)")
    parser.add_argument("--space", choices=("z", "w"), default="z", help="interpolate in Z (slerp) or W (lerp)")
    parser.add_argument("--trunc", type=float, default=1.0, metavar="PSI", help="truncation psi (default 1)")
    parser.add_argument("--class", dest="class_idx", type=int, default=None, metavar="IDX")
    parser.add_argument("--noise-mode", choices=("const", "random", "none"), default="const")
    parser.add_argument("--fps", type=float, default=30, help="frames per second (default 30)")
    parser.add_argument("--out", required=True, metavar="FILE", help="video file: .gif or .mp4")


def main(args) -> int:
    from sg2ada.errors import UserError
    from sg2ada.tools.common import check_network_path, check_psi, parse_num_range
    from sg2ada.tools.video import check_video_path

    seeds = parse_num_range(args.seeds, "--seeds")
    if len(seeds) < 2:
        raise UserError("--seeds: give at least two seeds to interpolate between")
    if args.frames < 1 or args.frames > 10000:
        raise UserError(f"--frames {args.frames}: must be between 1 and 10000")
    if not args.fps > 0:
        raise UserError(f"--fps {args.fps}: must be positive")
    psi = check_psi(args.trunc)
    check_video_path(args.out)
    check_network_path(args.network)

    from sg2ada.tools import generate as gen
    from sg2ada.tools.common import labels_for, load_generator
    from sg2ada.tools.video import write_video

    G = load_generator(args.network)
    labels_for(G, args.class_idx)
    frames = gen.interpolation_frames(G, seeds, args.frames, args.space, psi, args.class_idx, args.noise_mode)
    n = write_video(frames, args.out, fps=args.fps)
    print(f"wrote {args.out}: {n} frames, {args.space}-space loop through seeds {','.join(map(str, seeds))}")
    return 0
