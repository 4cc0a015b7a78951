"""Schedules at their boundaries (pure functions of the step) and the optimiser's decay mask."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import TrainConfig
from scaling.optimizer import SCHEDULES, decay_start, learning_rate, make_optimizer, schedule_lr, schedule_values, warmup_steps

TOTAL = 1000


def lr(cfg: TrainConfig, step: int) -> float:
    return float(learning_rate(cfg, TOTAL, step))


def test_cosine_warmup_then_tenfold_decay_exactly_at_the_budget():
    cfg = TrainConfig(lr=1e-3, warmup_fraction=0.1, schedule="cosine")
    assert warmup_steps(cfg, TOTAL) == 100
    assert lr(cfg, 0) == pytest.approx(1e-5)  # first update already moves
    assert lr(cfg, 99) == pytest.approx(1e-3)
    assert lr(cfg, 100) == pytest.approx(1e-3)
    assert lr(cfg, 550) == pytest.approx(0.55e-3, rel=1e-5)  # halfway through the cosine
    assert lr(cfg, TOTAL) == pytest.approx(1e-4)
    steps = np.arange(100, TOTAL + 1)
    values = np.asarray(learning_rate(cfg, TOTAL, jnp.asarray(steps)))
    assert np.all(np.diff(values) <= 1e-12)


def test_wsd_stable_then_one_minus_sqrt_cooldown_to_zero():
    cfg = TrainConfig(lr=2e-3, warmup_fraction=0.05, schedule="wsd", decay_fraction=0.2)
    start = decay_start(cfg, TOTAL)
    assert start == 800
    assert lr(cfg, 500) == pytest.approx(2e-3)
    assert lr(cfg, start) == pytest.approx(2e-3)
    assert lr(cfg, 900) == pytest.approx(2e-3 * (1 - np.sqrt(0.5)), rel=1e-5)
    assert lr(cfg, TOTAL) == pytest.approx(0.0, abs=1e-12)


def test_wsd_branch_moves_the_cooldown():
    cfg = TrainConfig(lr=1e-3, schedule="wsd", decay_start=600)
    assert lr(cfg, 599) == pytest.approx(1e-3)
    assert lr(cfg, 800) == pytest.approx(1e-3 * (1 - np.sqrt(0.5)), rel=1e-5)


def test_constant_schedule_and_zero_warmup():
    cfg = TrainConfig(lr=1e-3, warmup_fraction=0.0, schedule="constant")
    assert lr(cfg, 0) == pytest.approx(1e-3)
    assert lr(cfg, TOTAL) == pytest.approx(1e-3)


def test_weight_decay_skips_vectors():
    cfg = TrainConfig(lr=0.1, weight_decay=0.5, warmup_fraction=0.0, schedule="constant", grad_clip=1e9)
    tx = make_optimizer(cfg, TOTAL)
    params = {"w": jnp.ones((2, 2)), "scale": jnp.ones((2,))}
    grads = {"w": jnp.zeros((2, 2)), "scale": jnp.zeros((2,))}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(updates["w"][0, 0]) == pytest.approx(-0.1 * 0.5)  # decoupled decay, lr * wd * w
    assert float(updates["scale"][0]) == 0.0


def test_schedule_is_pure():
    cfg = dataclasses.replace(TrainConfig(), schedule="cosine")
    assert lr(cfg, 321) == lr(cfg, 321)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_lr_inside_the_step_equals_the_logged_lr(schedule):
    """The step computes lr from its schedule argument under jit; the metrics log it on the host.

    Equal to float32 rounding only: XLA's fused division may differ from the unfused one by an ulp or two."""
    cfg = TrainConfig(lr=3e-3, warmup_fraction=0.05, schedule=schedule, decay_fraction=0.3)
    steps = jnp.arange(TOTAL + 1)
    in_step = jax.jit(lambda values, s: schedule_lr(schedule, values, s))(jnp.asarray(schedule_values(cfg, TOTAL)), steps)
    logged = np.array([float(learning_rate(cfg, TOTAL, int(s))) for s in steps[::97]], np.float32)
    np.testing.assert_allclose(np.asarray(in_step)[::97], logged, rtol=1e-5, atol=0)
