"""Schedules at their boundaries (pure functions of the step), the optimiser's decay mask, and weight decay set
by timescale."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import TrainConfig
from scaling.sweeping.wsd import wsd_ladder
from scaling.training.optimizer import make_optimizer
from scaling.training.schedule import SCHEDULES, learning_rate, schedule_lr, schedule_values, weight_decay
from tests.helpers import compose_config

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


@pytest.mark.parametrize("schedule", ["constant", "wsd"])
def test_weight_decay_by_timescale_follows_its_formula(schedule):
    """Weight decay by timescale (Wang & Aitchison 2024): a fraction f of the run's T steps gives wd = 1 /
    (lr f T), so a matrix shrinks by lr_t x wd per step (zero gradients: Adam's part is 0), at every length."""
    cfg = TrainConfig(
        lr=0.01, weight_decay_timescale=0.5, schedule=schedule, warmup_fraction=0.0, grad_clip=1e9, decay_fraction=0.2
    )
    params = {"w": jnp.full((2, 2), 3.0), "scale": jnp.ones((2,))}
    zero = jax.tree.map(jnp.zeros_like, params)
    for total in (200, 2000):
        assert weight_decay(cfg, total) == pytest.approx(1.0 / (0.01 * 0.5 * total))
        tx = make_optimizer(cfg, total)
        state = tx.init(params)
        update = jax.jit(tx.update)  # one compile; step by step eagerly took 10-25 s
        for step in range(total):
            updates, state = update(zero, state, params)
            if step in (0, int(0.9 * total)):  # in the stable phase, and in the cooldown under wsd
                lr_t = float(learning_rate(cfg, total, step))
                expected = -lr_t * weight_decay(cfg, total) * 3.0
                assert float(updates["w"][0, 0]) == pytest.approx(expected, rel=1e-5)
                assert float(updates["scale"][0]) == 0.0
            if step > int(0.9 * total):
                break
    assert weight_decay(TrainConfig(weight_decay=0.1), 5000) == 0.1  # unset: the fixed decay as before


def test_a_wsd_branch_keeps_the_weight_decay_of_the_run_it_starts_from(tmp_path):
    cfg = compose_config(
        [
            f"results_root={tmp_path}",
            "sweep.name=t",
            "train.tokens=204800",
            "train.schedule=wsd",
            "train.weight_decay_timescale=0.5",
            "sweep.branches=[0.25,0.5]",
            "model.seq_len=64",
        ]
    )
    cfg = dataclasses.replace(cfg, run_dir=str(tmp_path / "main"))
    runs = wsd_ladder(cfg)
    main_steps = 204800 // (cfg.train.batch_size * 64)
    decay = weight_decay(cfg.train, main_steps)
    assert runs[0][0].train.weight_decay_timescale == 0.5
    for branch, _ in runs[1:]:
        assert branch.train.weight_decay_timescale is None and branch.train.weight_decay == pytest.approx(decay)
