"""Schedules at their boundaries (pure functions of the step) and the optimiser's decay mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import TrainConfig
from scaling.training.optimizer import make_optimizer
from scaling.training.schedule import SCHEDULES, learning_rate, schedule_lr, schedule_values

TOTAL = 1000


def lr(cfg: TrainConfig, step: int) -> float:
    return float(learning_rate(cfg, TOTAL, step))


def test_weight_decay_skips_vectors():
    cfg = TrainConfig(lr=0.1, weight_decay=0.5, warmup_fraction=0.0, schedule="constant", grad_clip=1e9)
    tx = make_optimizer(cfg, TOTAL)
    params = {"w": jnp.ones((2, 2)), "scale": jnp.ones((2,))}
    grads = {"w": jnp.zeros((2, 2)), "scale": jnp.zeros((2,))}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert float(updates["w"][0, 0]) == pytest.approx(-0.1 * 0.5)  # decoupled decay, lr * wd * w
    assert float(updates["scale"][0]) == 0.0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_lr_inside_the_step_equals_the_logged_lr(schedule):
    """The step computes lr from its schedule argument under jit; the metrics log it on the host.

    Equal to float32 rounding only: XLA's fused division may differ from the unfused one by an ulp or two."""
    cfg = TrainConfig(lr=3e-3, warmup_fraction=0.05, schedule=schedule, decay_fraction=0.3)
    steps = jnp.arange(TOTAL + 1)
    in_step = jax.jit(lambda values, s: schedule_lr(schedule, values, s))(
        jnp.asarray(schedule_values(cfg, TOTAL)), steps
    )
    logged = np.array([float(learning_rate(cfg, TOTAL, int(s))) for s in steps[::97]], np.float32)
    np.testing.assert_allclose(np.asarray(in_step)[::97], logged, rtol=1e-5, atol=0)
