"""The lazy-regularisation schedule, Adam's lazy correction, G_ema's beta and the ADA step, as
NVIDIA's training_loop.py computes them."""

import math

import pytest

from sg2ada.training.trainer import ema_beta, lazy_adam_params, make_phases


def test_phase_list_and_intervals():
    ph = make_phases(4, 16)
    assert [(p.name, p.interval) for p in ph] == [("Gmain", 1), ("Greg", 4), ("Dmain", 1), ("Dreg", 16)]
    ph = make_phases(None, 16)
    assert [(p.name, p.interval) for p in ph] == [("Gboth", 1), ("Dmain", 1), ("Dreg", 16)]
    ph = make_phases(None, None)
    assert [p.name for p in ph] == ["Gboth", "Dboth"]


def _due(phases, batch_idx):
    return [p.name for p in phases if batch_idx % p.interval == 0]


def test_which_phases_run_when():
    ph = make_phases(4, 16)
    assert _due(ph, 0) == ["Gmain", "Greg", "Dmain", "Dreg"]
    assert _due(ph, 1) == ["Gmain", "Dmain"]
    assert _due(ph, 4) == ["Gmain", "Greg", "Dmain"]
    assert _due(ph, 16) == ["Gmain", "Greg", "Dmain", "Dreg"]
    runs = [_due(ph, i) for i in range(64)]
    assert sum("Greg" in r for r in runs) == 16 and sum("Dreg" in r for r in runs) == 4
    # The gain of a reg phase is its interval, so the regulariser's average weight per iteration is
    # exactly pl_weight (resp. gamma/2): 16 Greg runs x gain 4 = 64 iterations' worth.
    assert sum(p.interval for i in range(64) for p in ph if p.name == "Greg" and i % p.interval == 0) == 64


def test_adam_lazy_correction():
    lr, betas = lazy_adam_params(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17)
    assert betas[0] == 0.0 and betas[1] == pytest.approx(0.99 ** (16 / 17))
    lr, betas = lazy_adam_params(0.002, (0.0, 0.99), 4)
    assert lr == pytest.approx(0.0016) and betas[1] == pytest.approx(0.99 ** 0.8)
    assert lazy_adam_params(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))


def test_ema_beta_half_life_and_rampup():
    # At the start the ramp-up makes G_ema a copy of G.
    assert ema_beta(32, 0, 10, 0.05) == 0.0
    # Half-life: after ema_kimg*1000 images the old weights' share has halved.
    b = ema_beta(32, 10**9, 10, 0.05)
    assert b ** (10_000 / 32) == pytest.approx(0.5)
    # Ramp-up: ema_nimg = min(ema_kimg*1000, cur_nimg*rampup).
    assert ema_beta(32, 100_000, 10, 0.05) == pytest.approx(0.5 ** (32 / 5000))
    assert ema_beta(32, 100_000, 10, None) == pytest.approx(0.5 ** (32 / 10_000))
