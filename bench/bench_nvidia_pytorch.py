"""Training-iteration benchmark of NVIDIA's stylegan2-ada-pytorch, the reference for issues 4 and 3.

Issue 4 asks sg2ada to reach >= 1.5x the images/s of NVIDIA's PyTorch StyleGAN2-ADA
(NVlabs/stylegan2-ada-pytorch) on the small32 configuration on the same CPU; this script measures
NVIDIA's side, bench_training.py ours, in the same way and with the same output keys. With
--aug p0.5 it measures what NVIDIA's own augment pipe adds to that iteration (issue 3's overhead
target; bench_augment.py --trainer measures ours).

NVIDIA's code is not part of this repository (its licence is non-commercial) and nothing of it is
copied here: the user supplies a checkout and this script imports its public classes
(`training.networks.Generator`, `training.networks.Discriminator`, `training.loss.StyleGAN2Loss`) and
calls them in the order NVIDIA's training loop does. One iteration runs, for a batch of N images,
  Gmain; Greg every 4th iteration (gradient gain 4); Dmain; Dreg every 16th iteration (gain 16);
each phase zeroing its network's gradients, enabling them, accumulating the loss's gradients,
disabling them, replacing non-finite gradient entries (nan -> 0, +-inf -> +-1e5) and taking an Adam
step; then the G_ema update. Adam uses lr 0.0025, betas (0, 0.99), eps 1e-8, with the lazy-
regularisation correction (lr * k/(k+1), beta ** (k/(k+1)) for interval k). Precision is fp32
(no fp16 layers, no conv clamping), there is no augmentation unless --aug p0.5 (NVIDIA's
AugmentPipe, bgc preset, fixed p = 0.5), and there is no data loading: the real
batch is one fixed tensor of uniform [-1, 1] images (as bench_training.py feeds a fixed batch) and
the latents are drawn afresh for every phase. Per-tick work (statistics, snapshots, metrics) is not
part of an iteration and is not run.

Configurations (NVIDIA's train.py `auto` preset at 32x32; gamma 0.0064, mapping 2 layers,
minibatch-std group 4, ema 10 kimg with ramp-up 0.05, style mixing 0.9, path-length weight 2):
  small32  z = w = 128, channel_base 1024, channel_max 128  (overhead-bound; issue 4's target)
  auto32   z = w = 512, channel_base 16384, channel_max 512 (the preset itself)

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch ~/src/stylegan2-ada-pytorch
    python bench/bench_nvidia_pytorch.py --nvidia-repo ~/src/stylegan2-ada-pytorch
    NVIDIA_SG2ADA_PYTORCH=~/src/stylegan2-ada-pytorch python bench/bench_nvidia_pytorch.py --json nv.json

It needs torch (the CPU build suffices: `pip install torch --index-url
https://download.pytorch.org/whl/cpu`). The defaults, --warmup 5 and --iters 16, time iterations
5..20: one full regularisation cycle, i.e. 16 Gmain, 4 Greg, 16 Dmain and 1 Dreg (reported as
phase_counts). The printed JSON line shares its key names with bench_training.py (images_per_s,
sec_per_iter, warmup_s, load_avg, ...).

A virtual machine's speed drifts by tens of percent over minutes, so compare the two benchmarks in
alternation, several rounds, and take ratios of neighbouring runs rather than of runs taken far apart:

    for i in 1 2 3; do
      python bench/bench_training.py --config small32 --no-flops    # plus the --mode under test
      python bench/bench_nvidia_pytorch.py --config small32 --nvidia-repo ~/src/stylegan2-ada-pytorch
    done

Both use every core by default; --threads here (torch.set_num_threads) pins PyTorch's count. Run
nothing else meanwhile: PyTorch's threads wait for one another at every operation, and with another
busy process on a 2-core machine its time per iteration has been seen to grow 25-fold. A load_avg
well above the core count means another process shared the CPU during the run.

Without --nvidia-repo or $NVIDIA_SG2ADA_PYTORCH the script says it is skipped and exits 0 (so that
`make bench` passes on); a path that is not such a checkout, or a Python without torch, is an error.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time

ENV_VAR = "NVIDIA_SG2ADA_PYTORCH"
NVIDIA_URL = "https://github.com/NVlabs/stylegan2-ada-pytorch"

# The network shapes of each configuration. Everything else is shared (TRAINING below).
CONFIGS = {
    "small32": dict(resolution=32, z_dim=128, w_dim=128, channel_base=1024, channel_max=128, map_layers=2),
    "auto32": dict(resolution=32, z_dim=512, w_dim=512, channel_base=16384, channel_max=512, map_layers=2),
}

# Hyperparameters of the `auto` preset at 32x32 (its batch is 32; like train.py's --batch, a
# different --batch here changes only the batch, not these).
TRAINING = dict(
    lr=0.0025, betas=(0.0, 0.99), eps=1e-8,
    r1_gamma=0.0064, pl_weight=2.0, style_mixing_prob=0.9, mbstd_group=4,
    G_reg_interval=4, D_reg_interval=16,
    ema_kimg=10.0, ema_rampup=0.05,
)

# Files whose presence marks a checkout of NVlabs/stylegan2-ada-pytorch.
_MARKERS = ("training/networks.py", "training/loss.py", "torch_utils/misc.py", "dnnlib/__init__.py")


class SetupError(Exception):
    """A problem with the environment that the user fixes; printed as one line, no traceback."""


def _load_nvidia(repo):
    """Imports torch and NVIDIA's classes from the checkout at `repo`; returns (torch, Generator,
    Discriminator, StyleGAN2Loss)."""
    repo = os.path.abspath(os.path.expanduser(repo))
    if not os.path.isdir(repo):
        raise SetupError(f"--nvidia-repo {repo}: no such directory; pass the path of a checkout of {NVIDIA_URL} "
                         f"(git clone it), or set {ENV_VAR}")
    missing = [m for m in _MARKERS if not os.path.isfile(os.path.join(repo, m))]
    if missing:
        raise SetupError(f"--nvidia-repo {repo} is not a checkout of NVlabs/stylegan2-ada-pytorch (no {missing[0]}); "
                         f"pass the directory that holds training/, torch_utils/ and dnnlib/ ({NVIDIA_URL})")
    try:
        import torch
    except ImportError:
        raise SetupError(f"torch is not installed in {sys.executable}; install it, e.g. `{sys.executable} -m pip "
                         "install torch --index-url https://download.pytorch.org/whl/cpu`") from None
    sys.path.insert(0, repo)
    try:
        from training.loss import StyleGAN2Loss
        from training.networks import Discriminator, Generator
    except Exception as e:  # noqa: BLE001 - any failure here is the checkout's or its dependencies'
        raise SetupError(f"importing NVIDIA's code from {repo} failed: {type(e).__name__}: {e}") from None
    import training

    if not os.path.abspath(training.__file__).startswith(repo + os.sep):
        raise SetupError(f"`training` was imported from {training.__file__}, not from {repo}: another package "
                         "named `training` shadows NVIDIA's; run from a directory without one")
    try:  # CUDA-only custom gradient op: a no-op on CPU, enabled as NVIDIA's loop does
        from torch_utils.ops import conv2d_gradfix

        conv2d_gradfix.enabled = True
    except ImportError:
        pass
    return torch, Generator, Discriminator, StyleGAN2Loss


# NVIDIA's bgc preset: every blit, geometric and colour transformation with multiplier 1 (the same
# set as sg2ada.augment.PRESETS['bgc'], spelled out so that this torch-only process never imports
# TensorFlow, whose threads would compete with PyTorch's during the timing).
_BGC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac",
        "brightness", "contrast", "lumaflip", "hue", "saturation")


def _nvidia_augment_pipe(torch, p):
    """NVIDIA's AugmentPipe (training/augment.py of the checkout) with the bgc preset at a fixed p."""
    try:
        from training.augment import AugmentPipe
    except Exception as e:  # noqa: BLE001 - the checkout's or its dependencies' (scipy) failure
        raise SetupError(f"importing NVIDIA's training/augment.py failed: {type(e).__name__}: {e}") from None
    pipe = AugmentPipe(**{op: 1 for op in _BGC}).train().requires_grad_(False)
    pipe.p.copy_(torch.as_tensor(p))
    return pipe


def _commit(repo):
    """The checkout's git commit, when it is a git work tree (read-only query)."""
    try:
        out = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], check=False,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class NvidiaIteration:
    """NVIDIA's networks, loss and optimisers for one configuration, and one training iteration over
    them (`step`), with a fixed real batch."""

    def __init__(self, torch, Generator, Discriminator, StyleGAN2Loss, config, batch, seed, aug="noaug", hp=None):
        """`config`: a CONFIGS name or such a dict; `hp`: TRAINING's keys (default TRAINING); `aug`:
        noaug, or pP for NVIDIA's AugmentPipe at p = P (bench_quality.py adapts it from p0)."""
        self.torch = torch
        net = CONFIGS[config] if isinstance(config, str) else config
        hp = TRAINING if hp is None else hp
        self.batch, self.hp = batch, hp
        res = net["resolution"]
        torch.manual_seed(seed)
        G = Generator(z_dim=net["z_dim"], c_dim=0, w_dim=net["w_dim"], img_resolution=res, img_channels=3,
                      mapping_kwargs=dict(num_layers=net["map_layers"]),
                      synthesis_kwargs=dict(channel_base=net["channel_base"], channel_max=net["channel_max"],
                                            num_fp16_res=0, conv_clamp=None))
        D = Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=net["channel_base"],
                          channel_max=net["channel_max"], num_fp16_res=0, conv_clamp=None,
                          epilogue_kwargs=dict(mbstd_group_size=min(hp["mbstd_group"], batch)))
        self.G = G.train().requires_grad_(False)
        self.D = D.train().requires_grad_(False)
        self.G_ema = copy.deepcopy(self.G).eval()
        augment_pipe = None if aug == "noaug" else _nvidia_augment_pipe(torch, float(aug[1:]))
        self.loss = StyleGAN2Loss(device=torch.device("cpu"), G_mapping=self.G.mapping, G_synthesis=self.G.synthesis,
                                  D=self.D, augment_pipe=augment_pipe, style_mixing_prob=hp["style_mixing_prob"],
                                  r1_gamma=hp["r1_gamma"], pl_weight=hp["pl_weight"])

        # One Adam per network, shared by its main and regularisation phases, with the lazy-
        # regularisation correction for an update every `interval` iterations.
        self.phases = []  # (name, module, optimiser, interval)
        for prefix, module, interval in (("G", self.G, hp["G_reg_interval"]), ("D", self.D, hp["D_reg_interval"])):
            r = interval / (interval + 1)
            opt = torch.optim.Adam(module.parameters(), lr=hp["lr"] * r, betas=tuple(b ** r for b in hp["betas"]),
                                   eps=hp["eps"])
            self.phases += [(prefix + "main", module, opt, 1), (prefix + "reg", module, opt, interval)]

        # No data pipeline: one fixed batch of uniform [-1, 1] images, unlabelled (c_dim 0).
        gen = torch.Generator().manual_seed(seed + 1)
        self.real_img = torch.rand([batch, 3, res, res], generator=gen) * 2 - 1
        self.real_c = torch.zeros([batch, 0])
        self.z_dim = net["z_dim"]
        self.index = 0  # NVIDIA's batch_idx: which phases run depends on it
        self.images_seen = 0  # NVIDIA's cur_nimg: the G_ema ramp-up depends on it

    def step(self):
        """One training iteration; returns the names of the phases it ran."""
        torch = self.torch
        ran = []
        for name, module, opt, interval in self.phases:
            if self.index % interval:
                continue
            gen_z = torch.randn([self.batch, self.z_dim])
            gen_c = torch.zeros([self.batch, 0])
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            self.loss.accumulate_gradients(phase=name, real_img=self.real_img, real_c=self.real_c, gen_z=gen_z,
                                           gen_c=gen_c, sync=True, gain=interval)
            module.requires_grad_(False)
            for p in module.parameters():
                if p.grad is not None:
                    p.grad.nan_to_num_(nan=0.0, posinf=1e5, neginf=-1e5)
            opt.step()
            ran.append(name)
        self._update_ema()
        self.images_seen += self.batch
        self.index += 1
        return ran

    def _update_ema(self):
        # G_ema's half-life is ema_kimg thousand images, shortened early in training to ema_rampup
        # times the images seen so far (0 at the start: G_ema = G).
        half_life = self.hp["ema_kimg"] * 1000
        if self.hp["ema_rampup"] is not None:
            half_life = min(half_life, self.images_seen * self.hp["ema_rampup"])
        beta = 0.5 ** (self.batch / max(half_life, 1e-8))
        with self.torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                b_ema.copy_(b)

    def finite(self):
        nets = (self.G, self.D, self.G_ema)
        return bool(all(self.torch.isfinite(p).all() for net in nets for p in net.parameters()))


def run(a):
    torch, Generator, Discriminator, StyleGAN2Loss = _load_nvidia(a.nvidia_repo)
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    it = NvidiaIteration(torch, Generator, Discriminator, StyleGAN2Loss, a.config, a.batch, a.seed, a.aug)

    t0 = time.perf_counter()
    for _ in range(a.warmup):
        it.step()
    warmup_s = time.perf_counter() - t0

    first_timed = it.index
    counts = {name: 0 for name, *_ in it.phases}
    t0 = time.perf_counter()
    for _ in range(a.iters):
        for name in it.step():
            counts[name] += 1
    dt = (time.perf_counter() - t0) / a.iters
    # As in bench_training.py: the 1-minute load average after the timed iterations.
    load = round(os.getloadavg()[0], 2)
    repo = os.path.abspath(os.path.expanduser(a.nvidia_repo))
    return dict(impl="nvidia-stylegan2-ada-pytorch", nvidia_repo=repo, nvidia_commit=_commit(repo),
                config=a.config, precision="fp32", aug=a.aug, batch=a.batch, torch=torch.__version__,
                threads=torch.get_num_threads(), load_avg=load, warmup=a.warmup, iters=a.iters,
                first_timed_iter=first_timed, phase_counts=counts, warmup_s=round(warmup_s, 1),
                sec_per_iter=round(dt, 4), iters_per_s=round(1 / dt, 3), images_per_s=round(a.batch / dt, 2),
                finite=it.finite())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nvidia-repo", default=os.environ.get(ENV_VAR) or None,
                    help=f"checkout of NVlabs/stylegan2-ada-pytorch (default: ${ENV_VAR}); without either, "
                         "the benchmark is skipped")
    ap.add_argument("--config", choices=sorted(CONFIGS), default="small32")
    ap.add_argument("--batch", type=int, default=32, help="images per iteration (NVIDIA's figures: 32)")
    ap.add_argument("--iters", type=int, default=16, help="timed iterations (16 = one Dreg cycle)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed iterations (the first runs every phase)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aug", choices=["noaug", "p0.5"], default="noaug",
                    help="p0.5: NVIDIA's AugmentPipe, bgc preset, fixed p = 0.5 (as bench_training.py --aug p0.5)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    if a.iters < 1 or a.warmup < 0 or (a.threads is not None and a.threads < 1):
        ap.error("--iters and --threads must be >= 1, --warmup >= 0")
    group = min(TRAINING["mbstd_group"], a.batch)
    if a.batch < 2 or a.batch % group:
        ap.error(f"--batch must be >= 2 and a multiple of the minibatch-std group ({TRAINING['mbstd_group']})")
    if a.nvidia_repo is None:
        # Not an error, so that `make bench` (every bench/bench_*.py, no arguments) runs on.
        print(f"skipped: NVIDIA's code is not part of sg2ada; pass --nvidia-repo PATH or set {ENV_VAR} to a "
              f"checkout of {NVIDIA_URL}", file=sys.stderr)
        return 0
    try:
        r = run(a)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": [r]}, f, indent=1)  # the layout of bench_training.py --json
    return 0


if __name__ == "__main__":
    sys.exit(main())
