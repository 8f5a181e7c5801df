"""Live training health: the checks a practitioner makes on a StyleGAN2-ADA run, once per tick.

`HealthMonitor.update(stats, ...)` takes the tick's statistics (NVIDIA's names, as `stats.jsonl`
holds them) and, optionally, a fixed batch of fakes and D's outputs on training and held-out reals;
it returns `Health/...` numbers to log and one-line warnings, each naming the likely cause and the fix:

- overfitting: the ADA paper's r_t = E[sign(D(x_real))] (Karras et al. 2020, Sec. 3) far above the
  target, or D's outputs on held-out reals falling behind those on training reals (its Fig. 1);
- the augmentation probability p rising for a long stretch without levelling off (the dataset is too
  small for the model), or passing the range where the ADA paper (Sec. 2.3, Fig. 3) saw
  augmentations leak into the generated images;
- the R1 term (Mescheder et al. 2018) out of its range, D winning outright, G or D diverging;
- diversity: the spread of a fixed batch of fakes in a cheap feature space collapsing against the
  reals' spread (mode collapse).

A warning is printed when its condition starts (after `patience` consecutive ticks for the noisy
ones) and again only after it has cleared and returned. A healthy run raises none.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import numpy as np

from sg2ada.metrics.memorization import pixel_features

__all__ = ["HealthMonitor", "TickHealth", "feature_spread"]

WARNING_PREFIX = "warning: "

# Thresholds, from the ADA paper and NVIDIA's released training logs.
RT_TARGET_DEFAULT = 0.6  # NVIDIA's ADA target: r_t at which overfitting starts to hurt FID (Sec. 3)
RT_MARGIN = 0.2  # a controlled run hovers within ~0.05 of the target; 0.8+ is where noaug runs end up
VAL_GAP_MAX = 0.4  # sign gap train-minus-held-out; equal in a healthy run (~0.1 noise for 64 images)
P_LEAK = 0.7  # the paper's bgc augmentations stayed non-leaking up to p ~0.8: warn a step before it
P_RISE_MIN = 0.1  # early p growth in NVIDIA's large-data runs levels off well before adding 0.1 per window
P_LEVEL_RATIO = 0.75  # levelling off: the window's second half rises at most 3/4 as fast as its first
R1_TERM_MAX = 1.0  # gamma/2*E|grad D|^2 comparable to the whole logistic loss (2 ln 2 at equilibrium)
D_LOSS_MIN = 0.2  # D's logistic loss near 0: both logits beyond about +-2.3 on every image
G_LOSS_MAX = 4.0  # softplus(-D(G(z))) = 4: D(fake) logits below -4; NVIDIA's runs keep G loss ~1-2.5
LOSS_EXPLODE = 100.0  # logistic losses this large mean logits of order 100: the networks blew up
DIVERSITY_MIN = 0.3  # fakes' feature spread under 30% of the reals'...
DIVERSITY_DROP = 0.5  # ...and under half the best seen: a collapse, not an initial G still finding variety


def _mean(stats: dict, name: str) -> float | None:
    """A tick statistic from `StatsCollector.as_dict()` ({'mean': ...}) or a plain number / array."""
    v = stats.get(name)
    if v is None:
        return None
    if isinstance(v, dict):
        v = v.get("mean")
        if v is None:
            return None
    return float(np.mean(np.asarray(v, np.float64)))


def feature_spread(images, feature_fn=pixel_features) -> float:
    """Mean pairwise Euclidean distance of `feature_fn(images)`; 0 when every image is the same.

    The default features (box-filtered pixels, unit length per image) need no network and cost
    microseconds per image; any function NHWC images -> [N, D] (D's penultimate layer, Inception)
    works the same."""
    f = np.asarray(feature_fn(images), np.float64)
    n = len(f)
    if n < 2:
        raise ValueError("feature_spread needs at least two images")
    sq = np.square(f).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * f @ f.T, 0.0))
    return float(d.sum() / (n * (n - 1)))


class TickHealth(NamedTuple):
    numbers: dict  # `Health/<name>` -> float, for stats.jsonl and TensorBoard
    warnings: list  # new warning lines ('warning: ...'), for the console and log.txt


class _Condition:
    def __init__(self, need: int):
        self.need = need  # consecutive ticks before it fires
        self.streak = 0
        self.active = False

    def step(self, raw: bool | None) -> bool:
        """Feed this tick's raw state (None: not measured this tick); True when the warning is due."""
        if raw is None:
            return False
        if not raw:
            self.streak, self.active = 0, False
            return False
        self.streak += 1
        if self.active or self.streak < self.need:
            return False
        self.active = True
        return True


class HealthMonitor:
    """Per-tick training diagnostics; see the module docstring.

    aug, ada_target, ada_kimg, p_max, r1_gamma: the run's resolved options (`--aug`, `--target`,
    `ada_kimg`, `--p-max`, `--gamma`). patience: consecutive ticks a noisy condition must hold.
    feature_fn: NHWC images -> [N, D] features for the diversity spread (reals and fakes alike).
    """

    def __init__(self, *, aug: str = "ada", ada_target: float | None = RT_TARGET_DEFAULT, ada_kimg: float = 500,
                 p_max: float | None = None, r1_gamma: float | None = None, patience: int = 3,
                 feature_fn=pixel_features):
        self.aug = aug
        self.feature_fn = feature_fn
        self.rt_limit = (RT_TARGET_DEFAULT if ada_target is None else float(ada_target)) + RT_MARGIN
        self.p_window_kimg = float(ada_kimg)  # the time ADA takes to move p across [0, 1] at full speed
        self.p_max = p_max
        self.r1_gamma = r1_gamma
        self.real_spread = None
        self.best_diversity = 0.0
        self._p_history: deque = deque()  # (kimg, p)
        self._cond = {name: _Condition(1 if name == "diverging" else patience)
                      for name in ("overfit", "val_gap", "p_rising", "p_high", "r1", "d_wins", "diverging",
                                   "collapse")}

    def replay(self, history: list[dict]) -> None:
        """Catch up with a resumed run's earlier ticks (`stats.jsonl` records), so that the p trend and
        the streaks continue as in an uninterrupted run; their warnings were printed when they happened."""
        for record in history:
            self.update(record)
            diversity = _mean(record, "Health/diversity")
            if diversity is not None:
                self.best_diversity = max(self.best_diversity, diversity)

    def set_reals(self, images) -> float:
        """The reference spread: a fixed batch of reals (e.g. those of the reals grid), once per run."""
        self.real_spread = feature_spread(images, self.feature_fn)
        return self.real_spread

    # ------------------------------------------------------------------------------------------
    def update(self, stats: dict, *, kimg: float | None = None, fakes=None, d_train=None, d_val=None) -> TickHealth:
        """One tick. `stats`: the tick's statistics (`collector.as_dict()` or name -> float);
        `fakes`: a fixed batch of generated images (NHWC, same latents every time; needs `set_reals`);
        `d_train`, `d_val`: D's logits on training reals and on held-out reals (`--val`)."""
        kimg = _mean(stats, "Progress/kimg") if kimg is None else float(kimg)
        kimg = 0.0 if kimg is None else kimg
        numbers: dict = {}
        found: list = []

        def check(name, raw, message):
            if self._cond[name].step(raw):
                found.append(f"{WARNING_PREFIX}kimg {kimg:.1f}: {message()}")

        rt, p = _mean(stats, "Loss/signs/real"), _mean(stats, "Progress/augment")
        g_loss, d_loss = _mean(stats, "Loss/G/loss"), _mean(stats, "Loss/D/loss")

        # G or D diverging: checked first, the other numbers mean little once this happens.
        bad = sorted(k for k in stats if k.startswith("Loss/") and not math.isfinite(_mean(stats, k) or 0.0))
        huge = [k for k in ("Loss/G/loss", "Loss/D/loss") if k not in bad and abs(_mean(stats, k) or 0) > LOSS_EXPLODE]
        check("diverging", bool(bad or huge), lambda: (
            f"training diverged: {(bad + huge)[0]} = {_mean(stats, (bad + huge)[0]):.4g}; likely cause: learning "
            "rates too high for this batch or too little R1; fix: resume the last good checkpoint with a lower "
            "--glr/--dlr, a higher --gamma, or --fp32"))

        remedies = self._overfit_remedies(p)
        check("overfit", None if rt is None else rt > self.rt_limit, lambda: (
            f"D is overfitting: r_t = {rt:.2f} stays above {self.rt_limit:.2f} (ADA target + {RT_MARGIN}); "
            f"likely cause: too few training images for this D; fix: {remedies}"))

        if d_train is not None and d_val is not None:
            gap = float(np.mean(np.sign(d_train)) - np.mean(np.sign(d_val)))
            numbers["Health/val_gap"] = gap
            check("val_gap", gap > VAL_GAP_MAX, lambda: (
                f"D is overfitting: it rates held-out reals lower than training reals (sign gap {gap:.2f} > "
                f"{VAL_GAP_MAX}); likely cause: D memorises the training set; fix: {remedies}"))

        self._check_p(p, kimg, numbers, check)

        if self.r1_gamma is not None and _mean(stats, "Loss/r1_penalty") is not None:
            r1_term = 0.5 * float(self.r1_gamma) * _mean(stats, "Loss/r1_penalty")
            numbers["Health/r1_term"] = r1_term
            check("r1", r1_term > R1_TERM_MAX, lambda: (
                f"R1 out of range: gamma/2*E|grad D(x)|^2 = {r1_term:.3g} rivals D's whole loss; likely cause: "
                "--gamma too high for this resolution, or D's gradients sharpening; fix: start from NVIDIA's "
                "--gamma 0.0002*res^2/batch (the auto preset) and adjust by factors of 2-10"))

        if g_loss is not None and d_loss is not None:
            check("d_wins", d_loss < D_LOSS_MIN and g_loss > G_LOSS_MAX, lambda: (
                f"D wins outright: D loss {d_loss:.3f}, G loss {g_loss:.2f} (fakes scored "
                f"{_mean(stats, 'Loss/scores/fake') or float('nan'):.1f}); likely cause: D overfits or learns far "
                "faster than G; fix: --aug ada, a higher --gamma, or a lower --dlr"))

        if fakes is not None and self.real_spread:
            ratio = feature_spread(fakes, self.feature_fn) / self.real_spread
            numbers["Health/diversity"] = ratio
            collapsed = ratio < DIVERSITY_MIN and ratio < DIVERSITY_DROP * self.best_diversity
            self.best_diversity = max(self.best_diversity, ratio)
            check("collapse", collapsed, lambda: (
                f"mode collapse: the fakes' spread fell to {ratio:.2f} of the reals' (best {self.best_diversity:.2f}); "
                "likely cause: G maps most latents to a few images; fix: resume an earlier snapshot with a higher "
                "--gamma or a lower --glr, and use --aug ada on small data"))

        numbers["Health/warnings"] = float(sum(c.active for c in self._cond.values()))
        return TickHealth(numbers, found)

    def _overfit_remedies(self, p) -> str:
        if self.aug != "ada":
            return "--aug ada (adaptive augmentation), --mirror, or a smaller model (--cfg, --cbase)"
        capped = self.p_max is not None and p is not None and p >= self.p_max - 1e-6
        first = f"raise --p-max (p is held at {self.p_max:g}), " if capped else ""
        return f"{first}--mirror, a smaller model (--cfg, --cbase), or transfer learning (--resume SRC --freezed N)"

    def _check_p(self, p, kimg, numbers, check) -> None:
        if p is None or self.aug != "ada":
            return
        hist = self._p_history
        hist.append((kimg, p))
        start = kimg - self.p_window_kimg
        while len(hist) > 2 and hist[1][0] <= start:  # keep one entry at or before the window's start
            hist.popleft()
        k0, p0 = hist[0]
        if kimg > k0:
            numbers["Health/p_rise_per_100kimg"] = (p - p0) / (kimg - k0) * 100
        rising = None
        if k0 <= start:
            ks, ps = np.array([h[0] for h in hist]), np.array([h[1] for h in hist])
            p_start, p_mid = np.interp([start, kimg - self.p_window_kimg / 2], ks, ps)
            rise1, rise2 = p_mid - p_start, p - p_mid
            rising = (p - p_start) >= P_RISE_MIN and rise2 >= P_LEVEL_RATIO * rise1
        remedies = ("--mirror, a smaller model (--cfg, --cbase), transfer learning (--resume SRC --freezed N), "
                    "or cap p with --p-max")
        check("p_rising", rising, lambda: (
            f"augmentation p keeps rising ({p_start:.2f} -> {p:.2f} over the last {self.p_window_kimg:g} kimg) "
            f"without levelling off; likely cause: the dataset is too small for this model; fix: {remedies}"))
        check("p_high", p > P_LEAK, lambda: (
            f"augmentation p = {p:.2f} is past {P_LEAK}, near where the ADA paper saw augmentations leak into the "
            f"generated images; fix: {remedies}"))
