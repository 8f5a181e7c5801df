"""`sg2ada project`: find the w whose image matches a target photo (NVIDIA's projector).

The target is centre-cropped to a square and resized to the generator's resolution; w (one vector
broadcast to all ws) and the noise buffers are optimised against the LPIPS/VGG16 distance with
NVIDIA's schedule (see sg2ada.tools.projector). Writes `projected_w.npz` (key `w`, [1, num_ws,
w_dim], NVIDIA's format, usable with `generate --projected-w`), `target.png`, `proj.png`, and with
`--save-video` `proj.mp4` (target | projection per step; needs imageio + imageio-ffmpeg).
The LPIPS network is NVIDIA's `vgg16_zhang_perceptual.pkl`: `--feature-net PATH`, or found by
sg2ada.metrics (SG2ADA_LPIPS, the cache, or a download).
"""

from __future__ import annotations

import os

HELP = "project an image into the generator's W space (NVIDIA's projector)"


def add_arguments(parser) -> None:
    parser.add_argument("--network", required=True, metavar="NET", help="network snapshot directory or NVIDIA .pkl")
    parser.add_argument("--target", required=True, metavar="IMAGE", help="target image (cropped and resized)")
    parser.add_argument("--num-steps", type=int, default=1000, metavar="N", help="optimisation steps (default 1000)")
    parser.add_argument("--seed", type=int, default=303, help="random seed (default 303, as NVIDIA)")
    parser.add_argument("--w-avg-samples", type=int, default=10000, metavar="N",
                        help="latents used for the W mean and spread (default 10000)")
    parser.add_argument("--feature-net", metavar="PATH", default=None,
                        help="LPIPS network file (NVIDIA's vgg16_zhang_perceptual.pkl)")
    parser.add_argument("--save-video", action="store_true", help="also write proj.mp4 of the optimisation")
    parser.add_argument("--out", "--outdir", dest="out", required=True, metavar="DIR", help="output directory")


def main(args) -> int:
    import numpy as np

    from sg2ada.errors import UserError
    from sg2ada.images import save_png
    from sg2ada.tools.common import check_network_path, prepare_outdir

    if not 1 <= args.num_steps <= 1_000_000:
        raise UserError(f"--num-steps {args.num_steps}: must be between 1 and 1000000")
    if args.w_avg_samples < 1:
        raise UserError(f"--w-avg-samples {args.w_avg_samples}: must be at least 1")
    if args.save_video:
        from sg2ada.tools.video import require_mp4

        require_mp4()
    check_network_path(args.network)
    if not os.path.isfile(args.target):
        raise UserError(f"{args.target}: no such file; pass --target an image")

    from sg2ada.tools import projector
    from sg2ada.tools.common import load_generator

    G = load_generator(args.network)
    target = projector.load_target(args.target, G.img_resolution, G.img_channels)
    feature_net = projector.load_feature_net(args.feature_net)
    outdir = prepare_outdir(args.out)

    every = max(1, args.num_steps // 20)

    def progress(step, total, dist, loss):
        if step % every == 0 or step == total:
            print(f"step {step:>5d}/{total}: dist {dist:<8.4f} loss {loss:<8.4f}", flush=True)

    result = projector.project(G, target, feature_net=feature_net, num_steps=args.num_steps,
                               w_avg_samples=args.w_avg_samples, seed=args.seed, progress=progress)
    save_png(target, os.path.join(outdir, "target.png"))
    np.savez(os.path.join(outdir, "projected_w.npz"), w=result.w)
    save_png(projector.synth_uint8(G, result.w)[0], os.path.join(outdir, "proj.png"))
    final = projector.perceptual_distance(G, result.w, target, feature_net)
    print(f"projected in {result.seconds:.1f} s; final distance {final:.4f} (const noise of the network); "
          f"wrote {outdir}/projected_w.npz, proj.png, target.png")
    if args.save_video:
        from sg2ada.tools.video import write_video

        frames = (np.concatenate([target, projector.synth_uint8(G, result.ws_at(i))[0]], axis=1)
                  for i in range(args.num_steps))
        write_video(frames, os.path.join(outdir, "proj.mp4"), fps=10)
        print(f"wrote {outdir}/proj.mp4")
    return 0
