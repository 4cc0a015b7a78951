"""AdamW with global-norm clipping, built inside the jitted step from the schedule's values.

Pythia's defaults: betas (0.9, 0.95), weight decay 0.1 on matrices and embeddings only (not on norm
scales or biases), gradients clipped to global norm 1.0. The learning rate follows scaling/schedule.py.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from scaling.config import TrainConfig
from scaling.schedule import schedule_lr, schedule_values


def _decay_mask(params):
    """Weight decay on matrices and embeddings only, not on norm scales or biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def optimizer_factory(cfg: TrainConfig) -> Callable[[jax.Array], optax.GradientTransformation]:
    """schedule values -> AdamW with global-norm clipping; Pythia defaults (0.9, 0.95), wd 0.1, clip 1.0.

    The train step calls it inside jit with its schedule argument (see `schedule_values`)."""

    def build(values) -> optax.GradientTransformation:
        return optax.chain(
            optax.clip_by_global_norm(cfg.grad_clip),
            optax.adamw(lambda step: schedule_lr(cfg.schedule, values, step), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                        weight_decay=cfg.weight_decay, mask=_decay_mask),
        )  # fmt: skip

    return build


def make_optimizer(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """The optimiser with its schedule fixed: for `init`, and for code outside the train step."""
    return optimizer_factory(cfg)(jnp.asarray(schedule_values(cfg, total_steps)))
