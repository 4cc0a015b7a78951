"""Greedy decoding with a key/value cache, reusing a trained Transformer's own modules.

Only the attention over a cache is written here; every parameter is applied through the model's
own submodules (embeddings, norms, qkv and out projections, MLP, output head), so the cached path
follows the model's switches (pre/post-LN, RoPE or learned positions, GELU or SwiGLU, tied or
untied head) by construction. tests/test_probe.py checks that it emits exactly the tokens of
naive greedy decoding through the full forward pass.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.model import Attention, Block, Transformer, apply_rope, rope_tables

# Cache of one layer: keys and values (B, T_max, H, Dh).
LayerCache = tuple[jax.Array, jax.Array]


def _cached_attention(
    attn: Attention, x_BxSxD: jax.Array, cache: LayerCache, start: jax.Array, rope: tuple[jax.Array, jax.Array] | None
) -> tuple[jax.Array, LayerCache]:
    """Attend S new tokens at positions start..start+S-1 to everything cached so far, caching their keys/values."""
    b, s, d = x_BxSxD.shape
    qkv_BxSx3xHxK = attn.qkv(x_BxSxD).reshape(b, s, 3, attn.n_heads, d // attn.n_heads)
    q_BxSxHxK, k_BxSxHxK, v_BxSxHxK = (qkv_BxSx3xHxK[:, :, i] for i in range(3))
    if rope is not None:
        tables = tuple(jax.lax.dynamic_slice_in_dim(table, start, s) for table in rope)
        q_BxSxHxK, k_BxSxHxK = apply_rope(q_BxSxHxK, *tables), apply_rope(k_BxSxHxK, *tables)
    keys_BxTxHxK = jax.lax.dynamic_update_slice_in_dim(cache[0], k_BxSxHxK.astype(cache[0].dtype), start, axis=1)
    values_BxTxHxK = jax.lax.dynamic_update_slice_in_dim(cache[1], v_BxSxHxK.astype(cache[1].dtype), start, axis=1)
    # A query at position p sees cached positions <= p; the unfilled tail of the cache is masked out.
    query_pos_S = start + jnp.arange(s)
    mask_1x1xSxT = (jnp.arange(keys_BxTxHxK.shape[1])[None, :] <= query_pos_S[:, None])[None, None]
    y_BxSxHxK = jax.nn.dot_product_attention(
        q_BxSxHxK, keys_BxTxHxK, values_BxTxHxK, mask=mask_1x1xSxT, implementation="xla"
    )
    return attn.out(y_BxSxHxK.reshape(b, s, d)), (keys_BxTxHxK, values_BxTxHxK)


def _cached_block(block: Block, x_BxSxD: jax.Array, cache: LayerCache, start: jax.Array, rope) -> tuple[jax.Array, LayerCache]:
    """Block.__call__ with the cached attention in place of the full one (same residual layout)."""
    if block.pre_ln:
        attended, cache = _cached_attention(block.attn, block.norm1(x_BxSxD), cache, start, rope)
        x_BxSxD = x_BxSxD + attended
        return x_BxSxD + block.mlp(block.norm2(x_BxSxD)), cache
    attended, cache = _cached_attention(block.attn, x_BxSxD, cache, start, rope)
    x_BxSxD = block.norm1(x_BxSxD + attended)
    return block.norm2(x_BxSxD + block.mlp(x_BxSxD)), cache


def _forward_cached(
    model: Transformer, tokens_BxS: jax.Array, caches: list[LayerCache], start: jax.Array
) -> tuple[jax.Array, list[LayerCache]]:
    """Logits (B, V) after S new tokens placed at positions start.., and the updated caches.

    Only the last position's logits are computed: greedy decoding needs no others, and a prefill's
    (B, S, V) logits would be the largest tensor of the whole decode."""
    s = tokens_BxS.shape[1]
    x_BxSxD = model.embed(tokens_BxS)
    if model.pos_embed is not None:
        x_BxSxD = x_BxSxD + model.pos_embed(start + jnp.arange(s))[None]
    x_BxSxD = x_BxSxD.astype(model.dtype)
    t_max = caches[0][0].shape[1]
    head_dim = model.cfg.d_model // model.cfg.n_heads
    rope = rope_tables(t_max, head_dim, model.cfg.rope_theta) if model.pos_embed is None else None
    updated = []
    for block, cache in zip(model.blocks, caches):
        x_BxSxD, cache = _cached_block(block, x_BxSxD, cache, start, rope)
        updated.append(cache)
    x_BxD = x_BxSxD[:, -1]
    if model.final_norm is not None:
        x_BxD = model.final_norm(x_BxD)
    return model.logits(x_BxD), updated


def _greedy(model: Transformer, prompt_BxK: jax.Array, n_new: int) -> jax.Array:
    """Prefill the prompt in one pass, then one cached step per new token; returns (B, n_new) ids."""
    b, k = prompt_BxK.shape
    t_max = k + n_new - 1  # the last generated token is never fed back
    head_dim = model.cfg.d_model // model.cfg.n_heads
    empty = jnp.zeros((b, t_max, model.cfg.n_heads, head_dim), model.dtype)
    caches = [(empty, empty) for _ in model.blocks]
    logits_BxV, caches = _forward_cached(model, prompt_BxK, caches, jnp.int32(0))
    first_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)

    def step(carry, position):
        token_B, caches = carry
        logits_BxV, caches = _forward_cached(model, token_B[:, None], caches, position)
        next_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
        return (next_B, caches), next_B

    positions = k + jnp.arange(n_new - 1, dtype=jnp.int32)
    _, rest_NxB = jax.lax.scan(step, (first_B, caches), positions)
    return jnp.concatenate([first_B[:, None], rest_NxB.T], axis=1)


def make_greedy_decoder(graphdef: nnx.GraphDef, n_new: int) -> Callable[[nnx.State, jax.Array], jax.Array]:
    """A jitted (state, prompts (B, K) int32) -> (B, n_new) greedy continuation, compiled once per shape."""
    return jax.jit(lambda state, prompt_BxK: _greedy(nnx.merge(graphdef, state), prompt_BxK, n_new))
