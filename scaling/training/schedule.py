"""Learning-rate schedules, pure functions of the step.

- cosine: linear warmup (lr * (s + 1) / warmup at step s), then cosine decay that reaches lr * min_lr_ratio exactly at
  step == total_steps, the end of the token budget (Hoffmann et al. 2022 found the cycle length
  must match the budget).
- wsd: warmup, constant, then a (1 - sqrt) cooldown to 0 over the last `decay_fraction` of
  steps (Hagele et al. 2024). `decay_start` moves the start of the cooldown, so cooldown branches
  taken from a long constant-LR run can reach shorter budgets.
- constant: warmup, then constant.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from scaling.config import TrainConfig

SCHEDULES = ("cosine", "wsd", "constant")


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    if cfg.warmup_steps is not None:
        return cfg.warmup_steps
    return min(cfg.max_warmup_steps, int(cfg.warmup_fraction * total_steps))


def decay_start(cfg: TrainConfig, total_steps: int) -> int:
    """First step of the WSD cooldown."""
    if cfg.decay_start is not None:
        return cfg.decay_start
    return total_steps - int(round(cfg.decay_fraction * total_steps))


def weight_decay(cfg: TrainConfig, total_steps: int) -> float:
    """The AdamW weight decay of a run of `total_steps`: train.weight_decay, or, with a timescale
    (Wang & Aitchison 2024), the decay whose EMA timescale 1 / (lr x decay) is that fraction of the steps."""
    if cfg.weight_decay_timescale is None:
        return cfg.weight_decay
    return 1.0 / (cfg.lr * cfg.weight_decay_timescale * max(total_steps, 1))


def schedule_values(cfg: TrainConfig, total_steps: int) -> np.ndarray:
    """The numbers that place the schedule (peak lr, warmup, length, cooldown start, floor, amplitude) and
    the weight decay, which may depend on the run's length.

    The train step takes them as an array argument instead of baking them in as constants, so runs
    that differ only in budget, lr or warmup compile to the same program and share the persistent
    compilation cache. Products are formed in float64 first, as Python would, then stored as float32.
    """
    lo = cfg.lr * cfg.min_lr_ratio if cfg.schedule == "cosine" else 0.0
    start = decay_start(cfg, total_steps) if cfg.schedule == "wsd" else total_steps
    values = (
        cfg.lr,
        warmup_steps(cfg, total_steps),
        total_steps,
        start,
        lo,
        cfg.lr - lo,
        weight_decay(cfg, total_steps),
    )
    return np.asarray(values, np.float32)


WEIGHT_DECAY_VALUE = 6  # where weight_decay sits in schedule_values


def schedule_lr(kind: str, values, step):
    """lr at `step` from `schedule_values` (concrete or traced); `kind` alone shapes the program."""
    step = jnp.asarray(step, jnp.float32)
    peak, warm, total, start, lo, amplitude = (values[i] for i in range(6))
    warmup = peak * (step + 1) / jnp.maximum(warm, 1)  # the first update already moves: lr/warm, not 0
    if kind == "cosine":
        progress = jnp.clip((step - warm) / jnp.maximum(total - warm, 1), 0.0, 1.0)
        after = lo + amplitude * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif kind == "wsd":
        progress = jnp.clip((step - start) / jnp.maximum(total - start, 1), 0.0, 1.0)
        after = peak * (1.0 - jnp.sqrt(progress))
    else:
        after = jnp.full_like(step, peak)
    return jnp.where(step < warm, warmup, after)


def learning_rate(cfg: TrainConfig, total_steps: int, step):
    """lr at `step` (int or traced array): the schedule as one pure function."""
    return schedule_lr(cfg.schedule, jnp.asarray(schedule_values(cfg, total_steps)), step)
