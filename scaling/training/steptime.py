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


def time_steps(cfg: RunConfig, plan, steps: int, warmup: int) -> list[float]:
    """Seconds per step for `steps` steps after `warmup` untimed ones (the first compiles)."""
    graphdef, params = nnx.split(families.build(plan.model, plan.vocab_size, cfg.train.seed), nnx.Param)
    params = nnx.to_pure_dict(params)
    n_total = warmup + steps
    multipliers = optimizer_multipliers(params, plan.model)
    opt_state = make_optimizer(cfg.train, n_total, multipliers).init(params)
    schedule = jnp.asarray(schedule_values(cfg.train, n_total))
    step_fn = make_train_step(graphdef, optimizer_factory(cfg.train, multipliers), plan.grad_accum)
    batches = random_batches(n_total, cfg.train.batch_size, plan.model, plan.vocab_size, cfg.train.seed)
    times = []
    for i, seqs_BxT1 in enumerate(batches):
        t0 = time.perf_counter()
        params, opt_state, metrics = step_fn(params, opt_state, seqs_BxT1, schedule)
        jax.block_until_ready((params, metrics))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times
