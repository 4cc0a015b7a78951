"""Learning-rate schedules (pure functions of the step) and the AdamW optimiser.

- cosine: linear warmup (lr * (s + 1) / warmup at step s), then cosine decay that reaches lr * min_lr_ratio exactly at
  step == total_steps, the end of the token budget (Hoffmann et al. 2022 found the cycle length
  must match the budget).
- wsd: warmup, constant, then a (1 - sqrt) cooldown to 0 over the last `decay_fraction` of
  steps (Hagele et al. 2024). `decay_start` moves the start of the cooldown, so cooldown branches
  taken from a long constant-LR run can reach shorter budgets.
- constant: warmup, then constant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

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


def learning_rate(cfg: TrainConfig, total_steps: int, step):
    """lr at `step` (int or traced array): the schedule as one pure function."""
    step = jnp.asarray(step, jnp.float32)
    warm = warmup_steps(cfg, total_steps)
    warmup = cfg.lr * (step + 1) / max(warm, 1)  # the first update already moves: lr/warm, not 0
    if cfg.schedule == "cosine":
        progress = jnp.clip((step - warm) / max(total_steps - warm, 1), 0.0, 1.0)
        lo = cfg.lr * cfg.min_lr_ratio
        after = lo + (cfg.lr - lo) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    elif cfg.schedule == "wsd":
        start = decay_start(cfg, total_steps)
        progress = jnp.clip((step - start) / max(total_steps - start, 1), 0.0, 1.0)
        after = cfg.lr * (1.0 - jnp.sqrt(progress))
    else:
        after = jnp.full_like(step, cfg.lr)
    return jnp.where(step < warm, warmup, after)


def _decay_mask(params):
    """Weight decay on matrices and embeddings only, not on norm scales or biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; Pythia defaults (0.9, 0.95), wd 0.1, clip 1.0."""
    schedule = lambda step: learning_rate(cfg, total_steps, step)  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=_decay_mask),
    )
