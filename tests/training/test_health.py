"""Training health: each unhealthy condition, built deterministically, raises its warning once (not at
every tick) naming cause and fix; a healthy sequence of ticks raises none."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sg2ada.data import generate_shapes
from sg2ada.training import monitor as mon
from sg2ada.training.health import WARNING_PREFIX, HealthMonitor, feature_spread

RES = 16


@pytest.fixture(scope="module")
def shapes():
    images, _ = generate_shapes(96, RES, seed=0)
    return images[:32], images[32:48], images[48:]  # training reals, held-out reals, a fresh batch


def _tick(kimg, rt=0.6, p=0.0, g=1.6, d=1.1, r1=0.02, fake=-1.0, real=0.6):
    """One tick of statistics in stats.jsonl's layout, at NVIDIA-typical healthy values by default."""
    values = {"Progress/kimg": kimg, "Loss/signs/real": rt, "Progress/augment": p, "Loss/G/loss": g,
              "Loss/D/loss": d, "Loss/r1_penalty": r1, "Loss/scores/fake": fake, "Loss/scores/real": real}
    return {k: {"num": 1, "mean": v, "std": 0.0} for k, v in values.items()}


def _run(monitor, ticks, **kw):
    out = []
    for stats in ticks:
        h = monitor.update(stats, **kw)
        assert all(np.isfinite(v) for v in h.numbers.values()) and "Health/warnings" in h.numbers
        out += h.warnings
    return out


def _monitor(**kw):
    return HealthMonitor(**{"aug": "ada", "ada_target": 0.6, "ada_kimg": 20, "r1_gamma": 1.0, **kw})


class MemorisingD:
    """A discriminator that has memorised its training images: logit 4 on them, falling with the
    pixel distance to the nearest of them (below 0 for anything else)."""

    def __init__(self, train):
        self.train = train.reshape(len(train), -1).astype(np.float32) / 255

    def __call__(self, images):
        x = images.reshape(len(images), -1).astype(np.float32) / 255
        d = np.sqrt(((x[:, None] - self.train[None]) ** 2).mean(-1)).min(1)
        return 4.0 - 100.0 * d


def test_healthy_run_raises_nothing(shapes):
    train, held_out, fresh = shapes
    m = _monitor()
    m.set_reals(train)
    rng = np.random.RandomState(0)
    warnings = []
    for i in range(200):  # 40 kimg: p rises early and levels off, r_t hovers at the target
        kimg = i * 0.2
        p = 0.3 * (1 - np.exp(-kimg / 4))
        stats = _tick(kimg, rt=0.6 + 0.05 * rng.randn(), p=p, g=1.6 + 0.2 * rng.randn(), d=1.1 + 0.1 * rng.randn())
        d_train, d_val = 0.5 + rng.randn(16), 0.5 + rng.randn(16)  # D rates both sets alike
        h = m.update(stats, fakes=fresh[rng.permutation(len(fresh))[:32]], d_train=d_train, d_val=d_val)
        warnings += h.warnings
    assert warnings == []
    assert 0.8 < h.numbers["Health/diversity"] < 1.25 and abs(h.numbers["Health/p_rise_per_100kimg"]) < 0.5
    assert h.numbers["Health/warnings"] == 0


def test_memorising_d_is_overfitting(shapes):
    train, held_out, _ = shapes
    D = MemorisingD(train[:16])
    d_train, d_val = D(train[:16]), D(held_out)
    rt = float(np.mean(np.sign(d_train)))
    assert rt == 1.0 and np.mean(np.sign(d_val)) < 0
    m = _monitor(aug="noaug")
    warnings = _run(m, [_tick(k, rt=rt, p=0.0) for k in range(10)], d_train=d_train, d_val=d_val)
    assert len(warnings) == 2 and all(w.startswith(WARNING_PREFIX) and "\n" not in w for w in warnings)
    assert "r_t = 1.00" in warnings[0] and "--aug ada" in warnings[0]
    assert "held-out reals lower" in warnings[1] and "fix:" in warnings[1]
    assert warnings[0].startswith(f"{WARNING_PREFIX}kimg 2.0:")  # after `patience` = 3 ticks, not at the first
    assert _monitor().update(_tick(0, rt=0.55), d_train=d_train[:8], d_val=d_train[8:]).numbers["Health/val_gap"] == 0


def test_p_forced_upward_by_the_ada_controller():
    from sg2ada.augment.controller import AdaController

    ada = AdaController("ada", kimg=20, batch_size=32)
    m = _monitor()
    warnings = []
    for it in range(800):  # D keeps r_t at 0.9: the controller raises p at full speed, 1 per 20 kimg
        ada.add_signs(np.array([0.9 * 32, 32], np.float32))
        p = float(ada.update(32))
        if it % 8 == 7:
            warnings += m.update(_tick((it + 1) * 32 / 1000, rt=0.9, p=p)).warnings
    assert p > 1.0  # NVIDIA clamps p at 0 only
    counts = [sum(key in w for w in warnings) for key in ("keeps rising", "past 0.7", "r_t = 0.90")]
    assert counts == [1, 1, 1], warnings  # each once, though the condition lasts 100 ticks
    rising = next(w for w in warnings if "keeps rising" in w)
    assert "--mirror" in rising and "--freezed" in rising and "--p-max" in rising


def test_a_resumed_run_replays_its_history_and_warns_as_an_uninterrupted_run():
    ticks = [_tick(k / 2, rt=0.9, p=k / 80) for k in range(120)]  # p rising steadily for 60 kimg
    whole = _run(_monitor(), ticks)
    assert sum("keeps rising" in w for w in whole) == 1
    rising_tick = next(i for i in range(len(ticks))
                       if any("keeps rising" in w for w in _run(_monitor(), ticks[: i + 1])))
    for cut in (1, rising_tick - 1, rising_tick + 5):  # resumed before each warning, and after them
        resumed = _monitor()
        resumed.replay(ticks[:cut])
        assert _run(_monitor(), ticks[:cut]) + _run(resumed, ticks[cut:]) == whole, cut
    fresh = _monitor()  # the same ticks without their history: the streaks and the p trend start over
    assert _run(fresh, ticks[rising_tick + 5:]) != whole[len(_run(_monitor(), ticks[: rising_tick + 5])):]


def test_p_that_levels_off_is_not_a_warning():
    m = _monitor()
    p = lambda k: min(0.5, k / 20)  # noqa: E731 - full speed up to 0.5, then flat
    assert _run(m, [_tick(k / 4, p=p(k / 4)) for k in range(200)]) == []


def test_p_cap_is_named_when_it_holds_p():
    m = _monitor(p_max=0.3)
    warnings = _run(m, [_tick(k, rt=0.95, p=0.3) for k in range(5)])
    assert len(warnings) == 1 and "raise --p-max (p is held at 0.3)" in warnings[0]


def test_collapsed_generator_is_mode_collapse(shapes):
    train, _, fresh = shapes
    m = _monitor()
    assert m.set_reals(train) > 0
    healthy = _run(m, [_tick(k) for k in range(3)], fakes=fresh[:32])
    one_image = np.repeat(fresh[:1], 32, axis=0)  # G(z) = the same picture for every z
    assert feature_spread(one_image) == pytest.approx(0, abs=1e-6)
    collapsed = _run(m, [_tick(k) for k in range(3, 10)], fakes=one_image)
    assert healthy == [] and len(collapsed) == 1 and "mode collapse" in collapsed[0]
    back = _run(m, [_tick(k) for k in range(10, 12)], fakes=fresh[:32])
    again = _run(m, [_tick(k) for k in range(12, 16)], fakes=one_image)
    assert back == [] and len(again) == 1  # cleared, then raised once more when it returned


def test_diverging_losses_warn_at_once():
    m = _monitor()
    ticks = [_tick(0), _tick(1, g=30.0), _tick(2, g=1e4), _tick(3, g=float("inf")), _tick(4, g=float("nan"))]
    warnings = _run(m, ticks)
    assert len(warnings) == 1 and "Loss/G/loss = 1e+04" in warnings[0] and "--glr" in warnings[0]
    assert warnings[0].startswith(f"{WARNING_PREFIX}kimg 2.0:")


def test_d_winning_outright_and_r1_out_of_range():
    m = _monitor(r1_gamma=10.0)
    ticks = [_tick(k, d=0.05 + 0.1 * k / 10, g=2 + k, fake=-(2 + k), r1=0.01 + 0.05 * k) for k in range(10)]
    warnings = _run(m, ticks)
    (d_wins,) = [w for w in warnings if "D wins outright" in w]
    (r1,) = [w for w in warnings if "R1 out of range" in w]
    assert "--gamma" in r1 and "--dlr" in d_wins
    assert d_wins.startswith(f"{WARNING_PREFIX}kimg 5.0:")  # G loss above 4 from tick 3: fires after three such ticks
    assert m.update(_tick(10, r1=0.01)).numbers["Health/r1_term"] == pytest.approx(0.05)


def test_numbers_reach_stats_jsonl_and_tensorboard_through_the_monitor(shapes, tmp_path):
    """The way the loop records them: into the tick's collector before Monitor.write_tick."""
    train, _, fresh = shapes
    health = _monitor()
    health.set_reals(train)
    writer = mon.Monitor(str(tmp_path))
    collector = mon.StatsCollector()
    for k in range(3):
        collector.update({name: v["mean"] for name, v in _tick(k * 0.5, p=0.01 * k).items()})
        h = health.update(collector.as_dict(), fakes=fresh[:32])
        collector.update(h.numbers)
        writer.write_tick(collector.as_dict(), cur_nimg=k * 500)
        collector.reset()
    writer.close()
    last = json.loads((tmp_path / "stats.jsonl").read_text().splitlines()[-1])
    assert last["Health/diversity"]["mean"] == pytest.approx(h.numbers["Health/diversity"])
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert {"Health/diversity", "Health/r1_term", "Health/p_rise_per_100kimg", "Health/warnings"} <= set(tags)
    assert [e.step for e in acc.Tensors("Health/diversity")] == [0, 500, 1000]
