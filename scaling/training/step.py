"""The jitted train step (loss, gradient accumulation, AdamW update) and the held-out evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

# XLA:CPU rewrites every reduction over more than 32 elements into a reduce-window of 32-wide pieces
# and a second reduction (its tree_reduction_rewriter, for the precision of long sums). In these
# programs the long reductions are softmax rows (64 keys at the CPU ladder's context, 512 logits) and
# means over one batch, short enough to sum directly, and the rewrite kept XLA from fusing them with
# the exponentials that feed them: without it a train step of the ladder's rungs did 14-24% less work
# on one core (benchmarks/RESULTS.md). Per program, so GPU and TPU programs and anything else keep it.
CPU_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "tree_reduction_rewriter"}


def compiler_options() -> dict[str, str] | None:
    """XLA options for the train and evaluation programs on this process's backend."""
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else None


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
        return jax.jit(step, donate_argnums=(0, 1), compiler_options=compiler_options())
    return jax.jit(step, donate_argnums=(0, 1), out_shardings=out_shardings, compiler_options=compiler_options())


def make_packed_step(
    graphdef: nnx.GraphDef, optimizer: Callable[[jax.Array], optax.GradientTransformation], grad_accum: int
):
    """K runs of one shape in one program: `train_step` vmapped over a leading axis of the parameters,
    optimiser states, batches and schedules (each run its own seed, data order, lr and length)."""
    step = jax.vmap(train_step(graphdef, optimizer, grad_accum))
    return jax.jit(step, donate_argnums=(0, 1), compiler_options=compiler_options())


def eval_chunks(eval_NxT1: np.ndarray, batch_size: int) -> np.ndarray:
    """The held-out windows as (chunks, batch, T+1), dropping the remainder of the last chunk."""
    chunk = min(batch_size, len(eval_NxT1))
    n = len(eval_NxT1) // chunk * chunk
    return eval_NxT1[:n].reshape(-1, chunk, eval_NxT1.shape[-1])


def window_losses(graphdef: nnx.GraphDef, params: Any, seqs_BxW: jax.Array) -> jax.Array:
    """(B,) mean loss of each held-out row's targets, by the family's own objective (one row per window)."""
    return nnx.merge(graphdef, params).window_losses(seqs_BxW)


def make_eval(graphdef: nnx.GraphDef, micro: int = 1, out_sharding=None):
    """The loss of every held-out window, as (chunks * batch,) in the windows' order; one host sync per
    evaluation. Each chunk goes through the model in `micro` equal pieces, split as the train step
    splits its batch (the same windows whatever the split, so evaluations compare across machines).
    `out_sharding` (replicated on a mesh) lets every process read the whole vector."""

    def evaluate(params, chunks_CxBxT1):
        c, b, t1 = chunks_CxBxT1.shape
        pieces = jax.vmap(lambda chunk: micro_split(chunk, micro))(chunks_CxBxT1).reshape(c * micro, b // micro, t1)
        per_piece = jax.lax.map(lambda s: window_losses(graphdef, params, s), pieces)  # (c * micro, b / micro)
        # piece a of a chunk holds rows a, a + micro, ...: undo micro_split to restore the windows' order
        return per_piece.reshape(c, micro, b // micro).swapaxes(1, 2).reshape(c * b)

    if out_sharding is None:
        return jax.jit(evaluate, compiler_options=compiler_options())
    return jax.jit(evaluate, out_shardings=out_sharding, compiler_options=compiler_options())
