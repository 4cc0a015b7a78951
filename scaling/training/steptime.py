"""How long one train step of a run's shape takes, measured on random tokens (no corpus is read).

`python -m scaling.bench` reports it, and a sweep's plan estimates its time from it. Each timed step
ends in one host sync (waiting for the new parameters); nothing inside the step syncs.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.config import ModelConfig, RunConfig
from scaling.model import families
from scaling.model.mup import optimizer_multipliers
from scaling.model.objectives import make_batch
from scaling.training.optimizer import make_optimizer, optimizer_factory
from scaling.training.schedule import schedule_values
from scaling.training.step import make_train_step


def random_batches(n: int, batch_size: int, model: ModelConfig, vocab_size: int, seed: int) -> list[jax.Array]:
    """`n` batches of uniform random token windows (B, T + 1) as the model's family trains on them, on the device."""
    rng = np.random.default_rng(seed)
    windows = [rng.integers(0, vocab_size, (batch_size, model.seq_len + 1)) for _ in range(n)]
    return [jnp.asarray(make_batch(model, vocab_size, w, seed, i), jnp.int32) for i, w in enumerate(windows)]


class StepTimer:
    """A run's train step on random batches, compiled by the first call of `time` (its warm-up)."""

    def __init__(self, cfg: RunConfig, plan, n_steps: int):
        graphdef, params = nnx.split(families.build(plan.model, plan.vocab_size, cfg.train.seed), nnx.Param)
        self.params = nnx.to_pure_dict(params)
        multipliers = optimizer_multipliers(self.params, plan.model)
        self.opt_state = make_optimizer(cfg.train, n_steps, multipliers).init(self.params)
        self.schedule = jnp.asarray(schedule_values(cfg.train, n_steps))
        self.step_fn = make_train_step(graphdef, optimizer_factory(cfg.train, multipliers), plan.grad_accum)
        self.batches = random_batches(n_steps, cfg.train.batch_size, plan.model, plan.vocab_size, cfg.train.seed)
        self.done = 0

    def time(self, steps: int) -> list[float]:
        """Seconds of each of the next `steps` steps."""
        times = []
        for seqs_BxT1 in self.batches[self.done : self.done + steps]:
            t0 = time.perf_counter()
            self.params, self.opt_state, metrics = self.step_fn(self.params, self.opt_state, seqs_BxT1, self.schedule)
            jax.block_until_ready((self.params, metrics))
            times.append(time.perf_counter() - t0)
        self.done += steps
        return times


def time_steps(cfg: RunConfig, plan, steps: int, warmup: int) -> list[float]:
    """Seconds per step for `steps` steps after `warmup` untimed ones (the first compiles)."""
    timer = StepTimer(cfg, plan, warmup + steps)
    timer.time(warmup)
    return timer.time(steps)
