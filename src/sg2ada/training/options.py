"""Resolved training options: the command line plus a `--cfg` preset, checked the way NVIDIA's
`train.py` checks them (stylegan2-ada-pytorch `train.py: setup_training_loop_kwargs`, and the
`--batch-gpu/--glr/--dlr/--map/--mbstd-group/--cbase/--cmax` overrides of its successor).

`resolve_options(**cli_values)` is the single place where user input becomes a `TrainingOptions`,
the one typed configuration of a run: the CLI writes it whole as `training_options.json`, reads it
back whole on `--resume` (`continued()` applies the few options a resume may change), and the
training loop and the Trainer read nothing else. Bad combinations raise `UserError` with one line
naming the option at fault.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from sg2ada.errors import UserError
from sg2ada.networks.config import DiscriminatorConfig, GeneratorConfig, MappingConfig
from sg2ada.presets import CFG_NAMES, get_preset, network_configs

AUG_MODES = ("ada", "noaug", "fixed")
# NVIDIA's pipeline names (train.py `augpipe_specs`); the ops they enable live in sg2ada.augment.
AUGPIPES = ("blit", "geom", "color", "filter", "noise", "cutout", "bg", "bgc", "bgcf", "bgcfn", "bgcfnc")
PRECISIONS = ("fp32", "fp16", "bf16")
STRATEGIES = ("auto", "mirrored", "multiworker", "default")


# Options a continued run may change; everything else comes from its training_options.json. The
# cluster-shape options are among them: a checkpoint resumes on any number of hosts and devices.
CONTINUE_OVERRIDES = ("kimg", "tick", "snap", "metrics", "keep", "backup_uri", "time_limit", "batch_gpu",
                      "strategy", "xla")
DEFAULT_METRICS = ("fid50k_full",)  # NVIDIA's default for a new run
# Fields a training_options.json may lack, and the value that their absence means (the feature off).
OPTIONAL_FIELDS = {"val": 0}


@dataclass(frozen=True)
class TrainingOptions:
    """One run's whole configuration: written as training_options.json, read back on --resume."""

    # Dataset.
    data: str | None
    resolution: int
    img_channels: int
    c_dim: int  # 0 unless --cond
    cond: bool
    mirror: bool
    subset: int | None
    val: int  # training images held out to show D's overfitting (ADA paper Fig. 1); 0 = none
    # Base config.
    cfg: str
    total_kimg: float
    batch_size: int  # global minibatch, NVIDIA's `batch_size`
    # Most images per device per accumulation round (NVIDIA's `batch_gpu`). A cluster with more
    # devices uses fewer (batch_size / replicas), so the same run fits any cluster shape.
    batch_gpu: int
    G: GeneratorConfig
    D: DiscriminatorConfig
    # Optimisation (Adam, NVIDIA's betas/eps; lazy regularisation intervals of the StyleGAN2 paper).
    glr: float
    dlr: float
    betas: tuple[float, float]
    eps: float
    G_reg_interval: int | None
    D_reg_interval: int | None
    # Loss.
    r1_gamma: float
    pl_weight: float
    pl_decay: float
    pl_batch_shrink: int
    style_mixing_prob: float
    # G_ema.
    ema_kimg: float
    ema_rampup: float | None
    # Augmentation.
    aug: str
    augpipe: str
    augment_p: float
    ada_target: float | None
    ada_interval: int
    ada_kimg: float
    ada_p_max: float | None  # optional ceiling on p (ours; NVIDIA has none): None = no limit
    # Transfer learning.
    resume: str | None
    freezed: int
    # Performance / reproducibility.
    seed: int
    precision: str
    xla: bool | None  # None: on GPUs (see trainer.default_xla)
    strategy: str
    # Loop (NVIDIA's training_loop arguments): ticks, snapshots, metrics, checkpoints, backups.
    kimg_per_tick: float
    snap: int  # ticks between image grids + network snapshots
    metrics: tuple[str, ...]
    keep: int  # checkpoints to keep
    backup_uri: str | None
    time_limit_min: float | None  # end this session after this much training (then --resume)

    # ---- serialisation ----
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["metrics"] = list(self.metrics)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict, where: str = "training options") -> "TrainingOptions":
        """The options exactly as written; a missing or unknown field is a UserError naming `where`."""
        if not isinstance(d, dict):
            raise UserError(f"{where} does not hold an options object; restore it from a backup")
        names = [f.name for f in dataclasses.fields(cls)]
        d = {**OPTIONAL_FIELDS, **d}
        missing = [n for n in names if n not in d]
        unknown = sorted(set(d) - set(names))
        if missing or unknown:
            what = f"lacks {', '.join(missing[:3])}" if missing else f"has unknown fields {', '.join(unknown[:3])}"
            raise UserError(f"{where} {what}: it was not written by this version of sg2ada train; "
                            "restore it from a backup or start a new run")
        d = dict(d)
        try:
            d["G"] = GeneratorConfig.from_dict(d["G"])
            d["D"] = DiscriminatorConfig.from_dict(d["D"])
            d["betas"] = tuple(d["betas"])
            d["metrics"] = tuple(d["metrics"])
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise UserError(f"{where} has a malformed network configuration ({e}); restore it from a backup") from None
        return cls(**d)

    @classmethod
    def from_json(cls, text: str, where: str = "training options") -> "TrainingOptions":
        try:
            d = json.loads(text)
        except ValueError as e:
            raise UserError(f"{where} is not valid JSON ({e}); it may be truncated: restore it from a "
                            "backup (--backup-uri) or start a new run") from None
        return cls.from_dict(d, where)

    def replace(self, **changes) -> "TrainingOptions":
        return dataclasses.replace(self, **changes)

    def continued(self, **given) -> "TrainingOptions":
        """These options with what a continued run may change (CONTINUE_OVERRIDES, None = keep)."""
        given = {k: v for k, v in given.items() if v is not None}
        bad = sorted(set(given) - set(CONTINUE_OVERRIDES))
        if bad:
            raise ValueError(f"options a continued run cannot change: {bad}")
        loop = _loop_values(tick=given.get("tick", self.kimg_per_tick), snap=given.get("snap", self.snap),
                            metrics=given.get("metrics", self.metrics), keep=given.get("keep", self.keep),
                            time_limit=given.get("time_limit"))
        changes = dict(loop, backup_uri=given.get("backup_uri", self.backup_uri))
        if "kimg" in given:
            changes["total_kimg"] = _check_float("kimg", given["kimg"], lo=1e-9)
        if "batch_gpu" in given:
            changes["batch_gpu"] = _check_int("batch-gpu", given["batch_gpu"], 1)
        if "strategy" in given:
            changes["strategy"] = _check_choice("strategy", given["strategy"], STRATEGIES)
        if "xla" in given:
            changes["xla"] = bool(given["xla"])
        return self.replace(**changes)

    # ---- derived values ----
    def batch_per_device(self, num_replicas: int) -> int:
        """Images per device per round on `num_replicas` devices: at most batch_gpu, and the global
        batch split evenly, so rounds = batch_size / (batch_per_device * num_replicas) is whole."""
        per_device = min(self.batch_gpu, self.batch_size // num_replicas)
        if per_device < 1 or self.batch_size % (per_device * num_replicas):
            raise UserError(f"--batch ({self.batch_size}) cannot be split evenly over {num_replicas} replicas "
                            f"with at most --batch-gpu {self.batch_gpu} images each; choose a --batch divisible "
                            f"by the replica count times --batch-gpu")
        return per_device

    def num_rounds(self, num_replicas: int) -> int:
        """Gradient-accumulation rounds per phase on `num_replicas` devices."""
        return self.batch_size // (self.batch_per_device(num_replicas) * num_replicas)

    @property
    def augment_enabled(self) -> bool:
        # NVIDIA builds the pipe only when it can ever be non-identity.
        return self.aug != "noaug" and (self.augment_p > 0 or self.ada_target is not None)


def _check_int(name, value, minimum):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"--{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_float(name, value, lo=None, hi=None):
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"between {lo:g} and {hi:g}" if hi is not None else f">= {lo:g}"
        raise UserError(f"--{name} must be {rng}, got {value:g}")
    return value


def _check_choice(name, value, choices):
    if value not in choices:
        raise UserError(f"--{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _metrics_tuple(metrics) -> tuple[str, ...]:
    """NVIDIA's --metrics: a comma-separated list (or `none`); unknown names fail now, not at a snapshot."""
    from sg2ada.metrics import parse_metric_list

    if isinstance(metrics, str):
        metrics = [m for m in metrics.split(",") if m.strip()]
    names = [m.strip() for m in metrics if m.strip().lower() != "none"]
    return tuple(parse_metric_list(names)) if names else ()


def _loop_values(*, tick, snap, metrics, keep, time_limit) -> dict:
    if time_limit is not None:
        _check_float("time-limit", time_limit, lo=1e-9)
    return dict(kimg_per_tick=_check_float("tick", tick, lo=1e-9), snap=_check_int("snap", snap, 1),
                metrics=_metrics_tuple(metrics), keep=_check_int("keep", keep, 1),
                time_limit_min=None if time_limit is None else float(time_limit))


def resolve_options(
    *,
    data: str | None = None,
    resolution: int | None = None,
    img_channels: int | None = None,
    label_dim: int | None = None,
    dataset_size: int | None = None,
    num_replicas: int = 1,
    cfg: str = "auto",
    gamma: float | None = None,
    kimg: float | None = None,
    batch: int | None = None,
    batch_gpu: int | None = None,
    glr: float | None = None,
    dlr: float | None = None,
    map: int | None = None,  # noqa: A002 (NVIDIA's option name)
    mbstd: int | None = None,
    ema: float | None = None,
    cbase: int | None = None,
    cmax: int | None = None,
    aug: str | None = None,
    p: float | None = None,
    target: float | None = None,
    augpipe: str | None = None,
    ada_kimg: float | None = None,
    p_max: float | None = None,
    mirror: bool = False,
    cond: bool = False,
    subset: int | None = None,
    val: int | None = None,
    freezed: int | None = None,
    resume: str | None = None,
    seed: int = 0,
    precision: str | None = None,
    fp32: bool = False,
    xla: bool | None = None,
    strategy: str = "auto",
    tick: float | None = None,
    snap: int | None = None,
    metrics=None,
    keep: int | None = None,
    backup_uri: str | None = None,
    time_limit: float | None = None,
) -> TrainingOptions:
    """Build the run configuration from CLI values (None = not given) with NVIDIA's semantics.

    The dataset geometry (`resolution`, `img_channels`, `label_dim`, `dataset_size`) is read from
    `data` with `sg2ada.data.open_dataset` when not given explicitly.
    """
    # None means "not given" for every option, including those with defaults.
    cfg = "auto" if cfg is None else cfg
    strategy = "auto" if strategy is None else strategy
    seed = 0 if seed is None else seed
    mirror, cond, fp32 = bool(mirror), bool(cond), bool(fp32)

    # ---- dataset ----
    if resolution is None or img_channels is None or label_dim is None:
        if data is None:
            raise UserError("--data is required")
        from sg2ada.data import open_dataset

        info = open_dataset(data)
        resolution = info.resolution if resolution is None else resolution
        img_channels = info.channels if img_channels is None else img_channels
        label_dim = info.label_dim if label_dim is None else label_dim
        dataset_size = info.count if dataset_size is None else dataset_size
    if resolution < 4 or resolution & (resolution - 1):
        raise UserError(f"dataset resolution must be a power of two >= 4, got {resolution}")
    if cond and not label_dim:
        raise UserError("--cond requires labels in the dataset (dataset.json has none)")
    c_dim = int(label_dim) if cond else 0
    if subset is not None:
        _check_int("subset", subset, 1)
        if dataset_size is not None and subset > dataset_size:
            raise UserError(f"--subset must be between 1 and {dataset_size}")
    val = 0 if val is None else _check_int("val", val, 0)
    used = subset or dataset_size
    if val and used is not None and val >= used:
        raise UserError(f"--val {val} must hold out fewer than the {used} images training would use")
    num_replicas = _check_int("gpus", num_replicas, 1)

    # ---- base config ----
    if cfg not in CFG_NAMES:
        raise UserError(f"--cfg must be one of {', '.join(CFG_NAMES)}, got {cfg!r}")
    preset = get_preset(cfg, resolution, num_replicas)
    total_kimg = preset.kimg
    batch_size = preset.batch
    # NVIDIA: a preset's per-GPU batch is its batch over its reference GPU count; --batch splits
    # evenly over the GPUs actually used.
    default_batch_gpu = max(preset.batch // preset.ref_gpus, 1)
    if batch is not None:
        _check_int("batch", batch, 1)
        if batch % num_replicas:
            raise UserError(f"--batch ({batch}) must be divisible by the number of replicas ({num_replicas})")
        batch_size = batch
        default_batch_gpu = batch // num_replicas
    if batch_gpu is not None:
        _check_int("batch-gpu", batch_gpu, 1)
    else:
        batch_gpu = min(default_batch_gpu, batch_size // num_replicas) or 1
    if batch_size % (batch_gpu * num_replicas):
        raise UserError(f"--batch ({batch_size}) must be divisible by --batch-gpu ({batch_gpu}) times the "
                        f"number of replicas ({num_replicas})")
    if kimg is not None:
        _check_float("kimg", kimg, lo=1e-9)
        total_kimg = kimg
    r1_gamma = preset.gamma if gamma is None else _check_float("gamma", gamma, lo=0)
    glr = preset.lrate if glr is None else _check_float("glr", glr, lo=1e-12)
    dlr = preset.lrate if dlr is None else _check_float("dlr", dlr, lo=1e-12)
    ema_kimg = preset.ema_kimg if ema is None else _check_float("ema", ema, lo=0)
    ema_rampup = preset.ema_rampup

    G_cfg, D_cfg = network_configs(preset, resolution, img_channels=img_channels, c_dim=c_dim)
    g_changes, d_changes = {}, {}
    if map is not None:
        _check_int("map", map, 1)
        g_changes["mapping"] = MappingConfig(**{**dataclasses.asdict(G_cfg.mapping), "num_layers": map})
    if mbstd is not None:
        _check_int("mbstd", mbstd, 1)
        d_changes["mbstd_group_size"] = mbstd
    if cbase is not None:
        _check_int("cbase", cbase, 1)
        g_changes["channel_base"] = d_changes["channel_base"] = cbase
    if cmax is not None:
        _check_int("cmax", cmax, 1)
        g_changes["channel_max"] = d_changes["channel_max"] = cmax
    group = d_changes.get("mbstd_group_size", D_cfg.mbstd_group_size)
    if group is not None and group < batch_gpu and batch_gpu % group:
        raise UserError(f"--batch-gpu ({batch_gpu}) must be divisible by the minibatch-stddev group ({group}); "
                        "set --mbstd")

    # ---- precision (NVIDIA: mixed precision = fp16 in the top 4 resolutions + conv_clamp 256) ----
    if fp32:
        if precision not in (None, "fp32"):
            raise UserError(f"--fp32 contradicts --precision {precision}")
        precision = "fp32"
    if precision is None:
        precision = "fp16" if preset.num_fp16_res > 0 else "fp32"
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        g_changes.update(num_fp16_res=0, conv_clamp=None)
        d_changes.update(num_fp16_res=0, conv_clamp=None)
    else:
        dt = "float16" if precision == "fp16" else "bfloat16"
        nres = preset.num_fp16_res or 4
        g_changes.update(num_fp16_res=nres, conv_clamp=256, fp16_dtype=dt)
        d_changes.update(num_fp16_res=nres, conv_clamp=256, fp16_dtype=dt)
    G_cfg = dataclasses.replace(G_cfg, **g_changes)
    D_cfg = dataclasses.replace(D_cfg, **d_changes)

    # ---- augmentation ----
    ada_target = None
    augment_p = 0.0
    aug = "ada" if aug is None else aug
    if aug not in AUG_MODES:
        raise UserError(f"--aug must be one of {', '.join(AUG_MODES)}, got {aug!r}")
    if aug == "ada":
        ada_target = 0.6
    if aug == "fixed" and p is None:
        raise UserError("--aug=fixed requires specifying --p")
    if p is not None:
        if resume != "latest" and aug != "fixed":
            raise UserError("--p can only be specified with --aug=fixed (or --resume=latest)")
        augment_p = _check_float("p", p, 0, 1)
    if target is not None:
        if aug != "ada":
            raise UserError("--target can only be specified with --aug=ada")
        ada_target = _check_float("target", target, 0, 1)
    if augpipe is None:
        augpipe = "bgc"
    else:
        if aug == "noaug":
            raise UserError("--augpipe cannot be specified with --aug=noaug")
        if augpipe not in AUGPIPES:
            raise UserError(f"--augpipe must be one of {', '.join(AUGPIPES)}, got {augpipe!r}")
    ada_kimg_value = 500.0

    # ---- transfer learning ----
    if resume is not None and resume != "noresume":
        # NVIDIA: react faster at the beginning of a transfer run, and no EMA warm-up.
        ada_kimg_value = 100.0
        ema_rampup = None
    else:
        resume = None
    if ada_kimg is not None:
        ada_kimg_value = _check_float("ada-kimg", ada_kimg, lo=1e-9)
    if p_max is not None:
        if aug != "ada":
            raise UserError("--p-max can only be specified with --aug=ada (it caps the adaptive p)")
        p_max = _check_float("p-max", p_max, 0, 1)
        if p_max == 0:
            raise UserError("--p-max must be above 0 (use --aug=noaug to turn augmentation off)")
        if augment_p > p_max:
            raise UserError(f"--p={augment_p:g} exceeds --p-max={p_max:g}: lower --p or raise --p-max")
    freezed = 0 if freezed is None else _check_int("freezed", freezed, 0)
    if freezed:
        # The network makes those weights non-trainable; the Trainer also leaves them out of D's
        # optimizer by name (frozen_d_layers), which is what guarantees they never change.
        D_cfg = dataclasses.replace(D_cfg, freeze_layers=freezed)

    if strategy not in STRATEGIES:
        raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")

    loop = _loop_values(tick=4 if tick is None else tick, snap=50 if snap is None else snap,
                        metrics=DEFAULT_METRICS if metrics is None else metrics, keep=5 if keep is None else keep,
                        time_limit=time_limit)
    return TrainingOptions(
        data=data, resolution=resolution, img_channels=img_channels, c_dim=c_dim, cond=bool(cond),
        mirror=bool(mirror), subset=subset, val=val, cfg=cfg, total_kimg=float(total_kimg), batch_size=batch_size,
        batch_gpu=batch_gpu, G=G_cfg, D=D_cfg, glr=glr, dlr=dlr, betas=(0.0, 0.99), eps=1e-8,
        G_reg_interval=4, D_reg_interval=16, r1_gamma=r1_gamma, pl_weight=preset.pl_weight, pl_decay=0.01,
        pl_batch_shrink=2, style_mixing_prob=preset.style_mixing_prob, ema_kimg=ema_kimg, ema_rampup=ema_rampup,
        aug=aug, augpipe=augpipe, augment_p=augment_p, ada_target=ada_target, ada_interval=4,
        ada_kimg=ada_kimg_value, ada_p_max=p_max, resume=resume, freezed=freezed, seed=seed,
        precision=precision, xla=xla, strategy=strategy, backup_uri=backup_uri, **loop,
    )


def frozen_d_layers(D_config: DiscriminatorConfig, freezed: int) -> list[str]:
    """Freeze-D: the TF1 layer names (`<res>x<res>/<layer>`) of the first `freezed` D layers.

    NVIDIA counts layers, not blocks, from the top resolution down, in creation order: FromRGB
    (top block, or every block with the skip architecture), Conv0, Conv1_down, Skip (resnet). The
    4x4 epilogue and the output layer are never frozen (stylegan2-ada-pytorch `DiscriminatorBlock`
    `freeze_layers`; only block layers take part in the count there).
    """
    names = []
    for res in D_config.block_resolutions:
        pre = f"{res}x{res}/"
        if D_config.architecture == "skip" or res == D_config.img_resolution:
            names.append(pre + "FromRGB")
        names += [pre + "Conv0", pre + "Conv1_down"]
        if D_config.architecture == "resnet":
            names.append(pre + "Skip")
    return names[:freezed]
