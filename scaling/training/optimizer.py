"""AdamW with global-norm clipping, built inside the jitted step from the schedule's values.

Pythia's defaults: betas (0.9, 0.95), weight decay 0.1 on matrices and embeddings only (not on norm
scales or biases), gradients clipped to global norm 1.0. The learning rate follows scaling/training/schedule.py,
and so does the weight decay when it is set by timescale (`train.weight_decay_timescale`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from scaling.config import TrainConfig
from scaling.training.schedule import WEIGHT_DECAY_VALUE, schedule_lr, schedule_values


def _decay_mask(params):
    """Weight decay on matrices and embeddings only, not on norm scales or biases."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def scale_by_tree(factors: Any) -> optax.GradientTransformation:
    """Multiply each parameter's update by its own constant factor (muP's per-parameter learning rates)."""

    def update(updates, state, params=None):
        return jax.tree.map(lambda u, f: u * f, updates, factors), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def optimizer_factory(
    cfg: TrainConfig, lr_multipliers: Any = None
) -> Callable[[jax.Array], optax.GradientTransformation]:
    """schedule values -> AdamW with global-norm clipping; Pythia defaults (0.9, 0.95), wd 0.1, clip 1.0.

    The train step calls it inside jit with its schedule argument (see `schedule_values`), which carries the
    learning rate and the weight decay, so runs of different lengths share one program. The update of a
    parameter is -lr_t (adam + wd p), and decays each matrix by lr_t x wd per step.

    `lr_multipliers` (a tree like the parameters, from `mup.lr_multipliers`) scales each parameter's Adam
    update but not its decay: the mup package's MuAdamW divides a hidden matrix's lr by the width multiplier
    m and multiplies its weight decay by m, so torch's AdamW decays it by (lr / m)(wd m) = lr x wd per step
    at every width (Yang et al. 2022; Wang & Aitchison 2024 show that muP needs this to keep AdamW's
    timescale). None (SP) gives optax.adamw's chain exactly."""

    def build(values) -> optax.GradientTransformation:
        per_parameter = () if lr_multipliers is None else (scale_by_tree(lr_multipliers),)
        adamw = optax.chain(
            optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
            *per_parameter,
            optax.add_decayed_weights(values[WEIGHT_DECAY_VALUE], mask=_decay_mask),
            optax.scale_by_learning_rate(lambda step: schedule_lr(cfg.schedule, values, step)),
        )
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), adamw)

    return build


def make_optimizer(cfg: TrainConfig, total_steps: int, lr_multipliers: Any = None) -> optax.GradientTransformation:
    """The optimiser with its schedule fixed: for `init`, and for code outside the train step."""
    return optimizer_factory(cfg, lr_multipliers)(jnp.asarray(schedule_values(cfg, total_steps)))
