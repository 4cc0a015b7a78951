"""Greedy decoding with the model's own key/value cache (`Transformer.extend`): the prompt is
prefilled in one pass, then each new token is one cached step. Used by the memorisation probe and
the task suite; tests check it emits exactly what naive decoding through the full forward pass does."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.model.transformer import Transformer


def _next_token(model: Transformer, hidden_BxSxD: jax.Array) -> jax.Array:
    """argmax of the last position's logits: only those are computed, since a prefill's (B, S, V)
    logits would be the largest tensor of the whole decode."""
    return jnp.argmax(model.logits(hidden_BxSxD[:, -1]), axis=-1).astype(jnp.int32)


def greedy(model: Transformer, prompt_BxK: jax.Array, n_new: int) -> jax.Array:
    """(B, n_new) greedy continuation of the prompts."""
    b, k = prompt_BxK.shape
    caches = model.init_cache(b, k + n_new - 1)  # the last generated token is never fed back
    hidden_BxKxD, caches = model.extend(prompt_BxK, caches, jnp.int32(0))
    first_B = _next_token(model, hidden_BxKxD)

    def step(carry, position):
        token_B, caches = carry
        hidden_Bx1xD, caches = model.extend(token_B[:, None], caches, position)
        next_B = _next_token(model, hidden_Bx1xD)
        return (next_B, caches), next_B

    positions = k + jnp.arange(n_new - 1, dtype=jnp.int32)
    _, rest_NxB = jax.lax.scan(step, (first_B, caches), positions)
    return jnp.concatenate([first_B[:, None], rest_NxB.T], axis=1)


def make_greedy_decoder(graphdef: nnx.GraphDef, n_new: int) -> Callable[[nnx.State, jax.Array], jax.Array]:
    """A jitted (state, prompts (B, K) int32) -> (B, n_new) greedy continuation, compiled once per shape."""
    return jax.jit(lambda state, prompt_BxK: greedy(nnx.merge(graphdef, state), prompt_BxK, n_new))
