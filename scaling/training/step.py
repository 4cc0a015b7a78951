"""The jitted train step (loss, gradient accumulation, AdamW update) and the held-out evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


def loss_fn(graphdef: nnx.GraphDef, params: Any, seqs_BxW: jax.Array) -> jax.Array:
    """The family's own training loss of a batch (scaling/model/objectives.py says what a row holds)."""
    return nnx.merge(graphdef, params).loss(seqs_BxW)


def micro_split(seqs_BxT1: jax.Array, n: int) -> jax.Array:
    """(B, T+1) -> (n, B/n, T+1), micro-batch a taking rows a, a + n, a + 2n, ...: with the batch
    sharded over devices in contiguous blocks, every micro-batch then spans all devices."""
    return seqs_BxT1.reshape(-1, n, seqs_BxT1.shape[-1]).swapaxes(0, 1)


def train_step(
    graphdef: nnx.GraphDef, optimizer: Callable[[jax.Array], optax.GradientTransformation], grad_accum: int
) -> Callable:
    """One optimiser step, `step(params, opt_state, seqs, schedule) -> (params, opt_state, metrics)`,
    unjitted: `make_train_step` jits it for one run and `make_packed_step` vmaps it over several.

    `optimizer(schedule)` builds the optimiser from `schedule.schedule_values(...)`, an array argument,
    so runs that differ only in budget or lr share one program. Gradients are accumulated over
    `grad_accum` micro-batches inside the step. The metrics are the loss and the global gradient norm
    before clipping."""
    grad_fn = jax.value_and_grad(lambda p, s: loss_fn(graphdef, p, s))

    def accumulate(params, seqs_BxT1):
        if grad_accum == 1:
            return grad_fn(params, seqs_BxT1)
        micro_AxMxT1 = micro_split(seqs_BxT1, grad_accum)

        def body(carry, micro_MxT1):
            loss, grads = grad_fn(params, micro_MxT1)
            return jax.tree.map(jnp.add, carry, (loss, grads)), None

        zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        total, _ = jax.lax.scan(body, zero, micro_AxMxT1)
        return jax.tree.map(lambda x: x / grad_accum, total)

    def step(params, opt_state, seqs_BxT1, schedule):
        loss, grads = accumulate(params, seqs_BxT1)
        updates, opt_state = optimizer(schedule).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return step


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: Callable[[jax.Array], optax.GradientTransformation],
    grad_accum: int,
    out_shardings=None,
):
    """`train_step` jitted whole, with the state donated. `out_shardings` (params, opt_state, metrics)
    pins the state's layout on a device mesh, so the donated buffers are reused step after step
    instead of being re-laid out."""
    step = train_step(graphdef, optimizer, grad_accum)
    if out_shardings is None:
        return jax.jit(step, donate_argnums=(0, 1))
    return jax.jit(step, donate_argnums=(0, 1), out_shardings=out_shardings)


def make_packed_step(
    graphdef: nnx.GraphDef, optimizer: Callable[[jax.Array], optax.GradientTransformation], grad_accum: int
):
    """K runs of one shape in one program: `train_step` vmapped over a leading axis of the parameters,
    optimiser states, batches and schedules (each run its own seed, data order, lr and length)."""
    return jax.jit(jax.vmap(train_step(graphdef, optimizer, grad_accum)), donate_argnums=(0, 1))


def eval_chunks(eval_NxT1: np.ndarray, batch_size: int) -> np.ndarray:
    """The held-out windows as (chunks, batch, T+1), dropping the remainder of the last chunk."""
    chunk = min(batch_size, len(eval_NxT1))
    n = len(eval_NxT1) // chunk * chunk
    return eval_NxT1[:n].reshape(-1, chunk, eval_NxT1.shape[-1])


def make_eval(graphdef: nnx.GraphDef, micro: int = 1):
    """Mean loss over the fixed held-out chunks; one host sync per evaluation. Each chunk goes
    through the model in `micro` equal pieces, split as the train step splits its batch (the same
    windows whatever the split, so evaluations compare across machines)."""

    @jax.jit
    def evaluate(params, chunks_CxBxT1):
        c, b, t1 = chunks_CxBxT1.shape
        pieces = jax.vmap(lambda chunk: micro_split(chunk, micro))(chunks_CxBxT1).reshape(c * micro, b // micro, t1)
        per_piece = jax.lax.map(lambda s: loss_fn(graphdef, params, s), pieces)
        return per_piece.mean()

    return evaluate
