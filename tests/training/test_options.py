"""Tests of sg2ada.training.options: presets, NVIDIA's train.py checks, JSON round trip, Freeze-D."""

import json

import pytest

from sg2ada.errors import UserError
from sg2ada.networks.config import DiscriminatorConfig
from sg2ada.training.options import TrainingOptions, frozen_d_layers, resolve_options

GEOM = dict(resolution=32, img_channels=3, label_dim=0)


def test_auto_preset_values_follow_nvidia():
    o = resolve_options(**GEOM, num_replicas=2)
    # auto @32px, 2 GPUs: batch = max(min(2*min(4096//32, 32), 64), 2) = 64, mbstd 4, gamma 0.0002*32^2/64
    assert o.batch_size == 64 and o.batch_gpu == 32
    assert o.D.mbstd_group_size == 4
    assert o.r1_gamma == pytest.approx(0.0002 * 32**2 / 64)
    assert o.ema_kimg == pytest.approx(64 * 10 / 32) and o.ema_rampup == 0.05
    assert o.glr == o.dlr == 0.0025
    assert o.G.num_fp16_res == 4 and o.G.conv_clamp == 256 and o.precision == "fp16"
    assert o.aug == "ada" and o.ada_target == 0.6 and o.ada_kimg == 500 and o.augment_p == 0
    assert o.G_reg_interval == 4 and o.D_reg_interval == 16 and o.pl_weight == 2


def test_fixed_preset_batch_gpu_is_batch_over_ref_gpus():
    o = resolve_options(**GEOM, cfg="stylegan2")
    assert o.batch_size == 32 and o.batch_gpu == 4 and o.num_rounds(1) == 8
    o = resolve_options(**GEOM, cfg="stylegan2", batch=16, num_replicas=2)
    assert o.batch_gpu == 8 and o.num_rounds(2) == 1


def test_cifar_disables_pl_and_mixing():
    o = resolve_options(**GEOM, cfg="cifar")
    assert o.pl_weight == 0 and o.style_mixing_prob == 0 and o.D.architecture == "orig"


def test_overrides_and_fp32():
    o = resolve_options(**GEOM, cfg="tiny", gamma=0.5, kimg=3, batch=8, batch_gpu=2, glr=0.001, dlr=0.002, map=3,
                        mbstd=2, ema=1.5, cbase=512, cmax=32, fp32=True, seed=7)
    assert (o.r1_gamma, o.total_kimg, o.batch_size, o.batch_gpu, o.glr, o.dlr) == (0.5, 3, 8, 2, 0.001, 0.002)
    assert o.G.mapping.num_layers == 3 and o.D.mbstd_group_size == 2 and o.ema_kimg == 1.5
    assert o.G.channel_base == o.D.channel_base == 512 and o.G.channel_max == 32
    assert o.G.num_fp16_res == 0 and o.G.conv_clamp is None and o.precision == "fp32" and o.seed == 7


def test_bf16_precision():
    o = resolve_options(**GEOM, cfg="tiny", precision="bf16")
    assert o.G.fp16_dtype == "bfloat16" and o.D.num_fp16_res == 4 and o.D.conv_clamp == 256


def test_resume_speeds_up_ada_and_disables_ema_rampup():
    o = resolve_options(**GEOM, resume="some.pkl")
    assert o.ada_kimg == 100 and o.ema_rampup is None and o.resume == "some.pkl"
    assert resolve_options(**GEOM, resume="some.pkl", ada_kimg=50).ada_kimg == 50


@pytest.mark.parametrize("kwargs, msg", [
    (dict(batch=12, batch_gpu=8), "divisible by --batch-gpu"),
    (dict(batch=8, batch_gpu=4, num_replicas=3), "divisible by the number of replicas"),
    (dict(p=0.2), "--p can only be specified"),
    (dict(aug="fixed"), "requires specifying --p"),
    (dict(aug="fixed", p=1.5), "--p must be between"),
    (dict(aug="noaug", target=0.5), "--target can only"),
    (dict(aug="noaug", augpipe="bgc"), "--augpipe cannot"),
    (dict(augpipe="xyz"), "--augpipe must be one of"),
    (dict(aug="sometimes"), "--aug must be one of"),
    (dict(gamma=-1.0), "--gamma"),
    (dict(cfg="huge"), "--cfg"),
    (dict(freezed=-1), "--freezed"),
    (dict(cond=True), "--cond requires labels"),
    (dict(precision="fp8"), "--precision"),
    (dict(fp32=True, precision="fp16"), "contradicts"),
    (dict(batch=8, batch_gpu=8, mbstd=3), "minibatch-stddev group"),
    (dict(strategy="tpu"), "--strategy"),
    (dict(val=-1), "--val must be an integer >= 0"),
    (dict(val=8, subset=8), "--val 8 must hold out fewer than the 8 images"),
])
def test_user_errors(kwargs, msg):
    with pytest.raises(UserError, match=msg):
        resolve_options(**{**GEOM, **kwargs})


def test_fixed_aug_with_p():
    o = resolve_options(**GEOM, aug="fixed", p=0.3)
    assert o.augment_p == 0.3 and o.ada_target is None and o.augment_enabled
    assert not resolve_options(**GEOM, aug="noaug").augment_enabled


def test_json_round_trip():
    o = resolve_options(**GEOM, cfg="tiny", cond=False, freezed=2, xla=True, metrics="none", tick=2, snap=3)
    s = o.to_json()
    assert json.loads(s)["kimg_per_tick"] == 2 and json.loads(s)["metrics"] == []
    back = TrainingOptions.from_json(s)
    assert back == o


@pytest.mark.parametrize("text, msg", [
    ("{}", "lacks data"),
    ('{"data": "x"', "not valid JSON"),
    ("[]", "does not hold an options object"),
])
def test_damaged_options_file_is_one_line_naming_it(text, msg):
    with pytest.raises(UserError, match=msg) as e:
        TrainingOptions.from_json(text, where="runs/00001/training_options.json")
    assert "runs/00001/training_options.json" in str(e.value) and "\n" not in str(e.value)


def test_val_is_kept_and_may_be_absent_from_an_options_file():
    o = resolve_options(**GEOM, cfg="tiny", val=16)
    assert o.val == 16 and TrainingOptions.from_json(o.to_json()) == o
    d = o.to_dict()
    del d["val"]  # a file without the field: nothing held out
    assert TrainingOptions.from_dict(d) == o.replace(val=0)


def test_unknown_field_is_refused():
    d = resolve_options(**GEOM, cfg="tiny").to_dict()
    d["from_the_future"] = 1
    with pytest.raises(UserError, match="unknown fields from_the_future"):
        TrainingOptions.from_dict(d)


def test_batch_splits_over_any_cluster_shape():
    """batch_gpu is a per-device ceiling: more devices take fewer images each, the global batch stays."""
    o = resolve_options(**GEOM, cfg="tiny", batch=8)  # resolved on 1 device: batch_gpu 8, 1 round
    assert (o.batch_per_device(1), o.num_rounds(1)) == (8, 1)
    assert (o.batch_per_device(2), o.num_rounds(2)) == (4, 1)
    assert (o.batch_per_device(8), o.num_rounds(8)) == (1, 1)
    o = o.continued(batch_gpu=2)  # a smaller device on resume: 4 rounds of 2
    assert (o.batch_per_device(1), o.num_rounds(1)) == (2, 4)
    with pytest.raises(UserError, match="cannot be split evenly over 3 replicas"):
        o.batch_per_device(3)


def test_metrics_default_is_nvidias_for_new_runs_and_kept_on_resume():
    o = resolve_options(**GEOM, cfg="tiny")
    assert o.metrics == ("fid50k_full",)  # a new run, as NVIDIA's train.py
    o = resolve_options(**GEOM, cfg="tiny", metrics="none")
    assert o.metrics == ()
    assert o.continued().metrics == ()  # a continued run keeps its own choice
    assert o.continued(metrics="kid50k_full").metrics == ("kid50k_full",)
    assert o.continued(kimg=7, tick=0.5, keep=2).total_kimg == 7
    with pytest.raises(UserError, match="--keep"):
        o.continued(keep=0)


@pytest.mark.parametrize("arch, expected", [
    ("resnet", ["32x32/FromRGB", "32x32/Conv0", "32x32/Conv1_down", "32x32/Skip", "16x16/Conv0"]),
    ("skip", ["32x32/FromRGB", "32x32/Conv0", "32x32/Conv1_down", "16x16/FromRGB", "16x16/Conv0"]),
    ("orig", ["32x32/FromRGB", "32x32/Conv0", "32x32/Conv1_down", "16x16/Conv0", "16x16/Conv1_down"]),
])
def test_freeze_d_counts_layers_like_nvidia(arch, expected):
    cfg = DiscriminatorConfig(img_resolution=32, architecture=arch, channel_base=256, channel_max=16)
    assert frozen_d_layers(cfg, 5) == expected
    assert frozen_d_layers(cfg, 0) == []
    # The epilogue (4x4) is never frozen, however large freezed is.
    assert not any(n.startswith("4x4") for n in frozen_d_layers(cfg, 100))


def test_p_max_is_checked_and_reaches_the_controller():
    assert resolve_options(**GEOM).ada_p_max is None  # off by default, as NVIDIA
    o = resolve_options(**GEOM, p_max=0.4)
    assert o.ada_p_max == 0.4
    assert TrainingOptions.from_json(o.to_json()).ada_p_max == 0.4  # survives training_options.json
    for bad, msg in ((dict(p_max=0), "above 0"), (dict(p_max=1.5), "between"),
                     (dict(p_max=0.5, aug="noaug"), "--aug=ada"), (dict(p_max=0.5, aug="fixed", p=0.3), "--aug=ada"),
                     (dict(p_max=0.2, p=0.3, resume="latest"), "exceeds")):
        with pytest.raises(UserError, match=msg):
            resolve_options(**GEOM, **bad)

    import tensorflow as tf

    from sg2ada.training.trainer import Trainer

    tiny = resolve_options(resolution=16, img_channels=3, label_dim=0, cfg="tiny", batch=4, p_max=0.01,
                           ada_kimg=0.001)
    t = Trainer(tiny, tf.distribute.get_strategy())
    assert t.ada.p_max == 0.01
    # r_t = 1 > target: an unbounded step would add 4 * 4 / 1 = 16 to p.
    t.ada.add_signs([4.0, 4.0])
    for _ in range(4):  # the adjustment is due every ada_interval = 4 iterations
        t.ada.update(4)
    assert float(t.augment_p.numpy()) == pytest.approx(0.01)
