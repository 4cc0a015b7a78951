"""Learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import TrainConfig
from scaling.training.schedule import decay_start, learning_rate, warmup_steps

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


def test_schedule_is_pure():
    cfg = dataclasses.replace(TrainConfig(), schedule="cosine")
    assert lr(cfg, 321) == lr(cfg, 321)
