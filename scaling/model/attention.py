"""Causal self-attention with rotary positions, and the key/value cache that decoding extends.

One module computes attention for training, evaluation and decoding. Without a cache it attends a
whole sequence causally: cuDNN flash attention on GPU (`jax.nn.dot_product_attention`), elsewhere
`causal_attention`, which takes queries in blocks against only the keys each block can see. With a
cache (`LayerCache`, keys and values of every position so far) it attends S new tokens at positions
start..start+S-1 to the cached ones and returns the cache with their keys and values written in.
With `causal=False` it is an encoder's bidirectional attention (`full_attention`, which cross-attention uses too).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.config import ModelConfig
from scaling.model.layers import Linear, resolve_compute_dtype
from scaling.model.mup import attention_scale, hidden_std

# Query block of the XLA attention path: small enough to skip most of the masked triangle, large
# enough that each block's matmuls stay efficient (64 was fastest at context 256 on CPU).
ATTENTION_QUERY_BLOCK = 64
# Keys and values of one layer for every position of a decode, (B, T_max, H, Dh) each.
LayerCache = tuple[jax.Array, jax.Array]
RopeTables = tuple[np.ndarray, np.ndarray]


def resolve_attention_impl(cfg: ModelConfig) -> str:
    """`auto` asks for cuDNN flash attention on GPU (when the dtype allows it), XLA elsewhere."""
    if cfg.attention_impl != "auto":
        return cfg.attention_impl
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and resolve_compute_dtype(cfg.compute_dtype) != jnp.float32 else "xla"


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables (T, Dh/2) for rotary position embedding: float32, computed on the host in
    float64. As constants of the program they are read, not recomputed: built with jnp inside the
    step, XLA fused their cos and sin into every fusion that rotates q or k (and its backward),
    evaluating them per element of (B, T, H, Dh), about 4% of a whole training step."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles_TxF = np.arange(seq_len, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles_TxF).astype(np.float32), np.sin(angles_TxF).astype(np.float32)


def apply_rope(x_BxTxHxD: jax.Array, cos_TxF: jax.Array, sin_TxF: jax.Array) -> jax.Array:
    """Rotate channel pairs (first half, second half) by the angles of the tables' first T positions."""
    t = x_BxTxHxD.shape[1]
    cos, sin = cos_TxF[:t, None, :], sin_TxF[:t, None, :]
    x1, x2 = jnp.split(x_BxTxHxD.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return rotated.astype(x_BxTxHxD.dtype)


def rope_at(tables: RopeTables, start, length: int) -> tuple[jax.Array, jax.Array]:
    """The tables' rows for positions start..start+length-1 (`start` may be traced, as in decoding)."""
    if isinstance(start, int):
        return tables[0][start : start + length], tables[1][start : start + length]
    return tuple(jax.lax.dynamic_slice_in_dim(jnp.asarray(table), start, length) for table in tables)


def causal_attention(
    q_BxTxHxK: jax.Array,
    k_BxSxHxK: jax.Array,
    v_BxSxHxK: jax.Array,
    block: int = ATTENTION_QUERY_BLOCK,
    scale: float | None = None,
) -> jax.Array:
    """softmax(scale q k^T) v (scale 1/sqrt(K) by default) with query t seeing keys up to its own
    position; softmax in f32.

    Queries go in blocks of `block`, each against only the keys it can see, so most of the masked
    upper triangle is never computed (4 blocks do 62.5% of the full score work). Heads are moved
    ahead of positions once, not per block. Queries are the last T of the S positions, so it also
    serves a KV cache (T < S).

    The softmax is normalised after the weighted sum, as flash attention does: exp(scores - max)
    times v, then divided by the row sums, so the division (and its gradient) touches T x K outputs
    instead of T x S probabilities. With narrow heads (K = 4 against S = 64 keys) the (B, H, T, S)
    score arrays are most of attention's work, and this took ~10% off a whole train step of the
    CPU ladder's 78k-parameter rung (benchmarks/RESULTS.md).
    """
    t, s, k = q_BxTxHxK.shape[1], k_BxSxHxK.shape[1], q_BxTxHxK.shape[-1]
    scale = 1.0 / math.sqrt(k) if scale is None else scale
    q_BxHxTxK = jnp.swapaxes(q_BxTxHxK * jnp.asarray(scale, q_BxTxHxK.dtype), 1, 2)
    k_BxHxSxK, v_BxHxSxK = jnp.swapaxes(k_BxSxHxK, 1, 2), jnp.swapaxes(v_BxSxHxK, 1, 2)
    outs = []
    for start in range(0, t, block):
        stop = min(start + block, t)
        keys = stop + (s - t)  # the last query of this block sees keys [0, keys)
        scores_BxHxTxS = jnp.einsum(
            "bhtk,bhsk->bhts", q_BxHxTxK[:, :, start:stop], k_BxHxSxK[:, :, :keys], preferred_element_type=jnp.float32
        )
        visible_TxS = jnp.arange(start, stop)[:, None] + (s - t) >= jnp.arange(keys)[None, :]
        scores_BxHxTxS = jnp.where(visible_TxS, scores_BxHxTxS, jnp.finfo(jnp.float32).min)
        # Softmax is unchanged by the shift, so its gradient needs none through the max (as in jax.nn.softmax).
        top_BxHxTx1 = jax.lax.stop_gradient(jnp.max(scores_BxHxTxS, axis=-1, keepdims=True))
        weights_BxHxTxS = jnp.exp(scores_BxHxTxS - top_BxHxTx1)
        total_BxHxTx1 = jnp.sum(weights_BxHxTxS, axis=-1, keepdims=True)
        out_BxHxTxK = jnp.einsum(
            "bhts,bhsk->bhtk",
            weights_BxHxTxS.astype(v_BxSxHxK.dtype),
            v_BxHxSxK[:, :, :keys],
            preferred_element_type=jnp.float32,
        )
        outs.append((out_BxHxTxK / total_BxHxTx1).astype(v_BxSxHxK.dtype))
    return jnp.swapaxes(outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=2), 1, 2)


def full_attention(
    q_BxTxHxK: jax.Array,
    k_BxSxHxK: jax.Array,
    v_BxSxHxK: jax.Array,
    scale: float,
    lengths_B: jax.Array | None = None,
    bias_1xHxTxS: jax.Array | None = None,
    causal: bool = False,
) -> jax.Array:
    """softmax(scale q k^T + bias) v with every query seeing every key (an encoder's self-attention, and
    cross-attention), except keys at or past each row's length when `lengths_B` is given (right padding), and
    later keys when `causal`; softmax in f32. `bias`: T5's relative position bias (scaling/model/encoder_decoder.py)."""
    q_BxTxHxK = q_BxTxHxK * jnp.asarray(scale, q_BxTxHxK.dtype)
    scores_BxHxTxS = jnp.einsum("bthk,bshk->bhts", q_BxTxHxK, k_BxSxHxK, preferred_element_type=jnp.float32)
    if bias_1xHxTxS is not None:
        scores_BxHxTxS = scores_BxHxTxS + bias_1xHxTxS
    if causal:
        t, s = q_BxTxHxK.shape[1], k_BxSxHxK.shape[1]
        visible_TxS = jnp.arange(t)[:, None] + (s - t) >= jnp.arange(s)[None, :]
        scores_BxHxTxS = jnp.where(visible_TxS, scores_BxHxTxS, jnp.finfo(jnp.float32).min)
    if lengths_B is not None:
        visible_Bx1x1xS = (jnp.arange(k_BxSxHxK.shape[1])[None, :] < lengths_B[:, None])[:, None, None, :]
        scores_BxHxTxS = jnp.where(visible_Bx1x1xS, scores_BxHxTxS, jnp.finfo(jnp.float32).min)
    probs_BxHxTxS = jax.nn.softmax(scores_BxHxTxS, axis=-1).astype(v_BxSxHxK.dtype)
    return jnp.einsum("bhts,bshk->bthk", probs_BxHxTxS, v_BxSxHxK)


def cached_attention(
    q_BxSxHxK: jax.Array, keys_BxTxHxK: jax.Array, values_BxTxHxK: jax.Array, start, scale: float
) -> jax.Array:
    """S queries at positions start..start+S-1 against a cache of T positions; a query at position p
    sees positions <= p, so the cache's unfilled tail is never read. Softmax in float32."""
    s, t = q_BxSxHxK.shape[1], keys_BxTxHxK.shape[1]
    q_BxSxHxK = q_BxSxHxK * jnp.asarray(scale, q_BxSxHxK.dtype)
    scores_BxHxSxT = jnp.einsum("bshk,bthk->bhst", q_BxSxHxK, keys_BxTxHxK, preferred_element_type=jnp.float32)
    visible_SxT = jnp.arange(t)[None, :] <= (start + jnp.arange(s))[:, None]
    scores_BxHxSxT = jnp.where(visible_SxT, scores_BxHxSxT, jnp.finfo(jnp.float32).min)
    probs_BxHxSxT = jax.nn.softmax(scores_BxHxSxT, axis=-1).astype(values_BxTxHxK.dtype)
    return jnp.einsum("bhst,bthk->bshk", probs_BxHxSxT, values_BxTxHxK)


class Attention(nnx.Module):
    """Self-attention: causal (a decoder's), or bidirectional with `causal=False` (an encoder's)."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs, causal: bool = True):
        d, resid_std = cfg.d_model, cfg.init_std / math.sqrt(2 * cfg.n_layers)
        self.n_heads, self.impl, self.causal = cfg.n_heads, resolve_attention_impl(cfg), causal
        self.scale = attention_scale(cfg)
        self.qkv = Linear(d, 3 * d, hidden_std(cfg, cfg.init_std), cfg.use_bias, dtype, rngs)
        self.out = Linear(d, d, hidden_std(cfg, resid_std), cfg.use_bias, dtype, rngs)

    def __call__(
        self,
        x_BxSxD: jax.Array,
        rope: RopeTables | None,
        cache: LayerCache | None = None,
        start=0,
        lengths_B=None,
        bias_1xHxSxS=None,
    ) -> tuple[jax.Array, LayerCache | None]:
        """Attention output for tokens at positions start..start+S-1, and the extended cache (None without one).
        `lengths_B` (bidirectional only): each row's real length, the keys after it being padding. `bias_1xHxSxS`:
        added to the scores (T5's relative positions; computed by `full_attention`, without a cache)."""
        b, s, d = x_BxSxD.shape
        qkv_BxSx3xHxK = self.qkv(x_BxSxD).reshape(b, s, 3, self.n_heads, d // self.n_heads)
        q_BxSxHxK, k_BxSxHxK, v_BxSxHxK = (qkv_BxSx3xHxK[:, :, i] for i in range(3))
        if rope is not None:
            tables = rope_at(rope, start, s)
            q_BxSxHxK, k_BxSxHxK = apply_rope(q_BxSxHxK, *tables), apply_rope(k_BxSxHxK, *tables)
        if cache is not None:
            keys_BxTxHxK = jax.lax.dynamic_update_slice_in_dim(
                cache[0], k_BxSxHxK.astype(cache[0].dtype), start, axis=1
            )
            values_BxTxHxK = jax.lax.dynamic_update_slice_in_dim(
                cache[1], v_BxSxHxK.astype(cache[1].dtype), start, axis=1
            )
            cache = (keys_BxTxHxK, values_BxTxHxK)
            y_BxSxHxK = cached_attention(q_BxSxHxK, keys_BxTxHxK, values_BxTxHxK, start, self.scale)
        elif bias_1xHxSxS is not None or (self.impl == "xla" and not self.causal):
            y_BxSxHxK = full_attention(
                q_BxSxHxK, k_BxSxHxK, v_BxSxHxK, self.scale, lengths_B, bias_1xHxSxS, self.causal
            )
        elif self.impl == "xla":
            y_BxSxHxK = causal_attention(q_BxSxHxK, k_BxSxHxK, v_BxSxHxK, scale=self.scale)
        else:
            y_BxSxHxK = jax.nn.dot_product_attention(
                q_BxSxHxK,
                k_BxSxHxK,
                v_BxSxHxK,
                scale=self.scale,
                is_causal=self.causal,
                key_value_seq_lengths=lengths_B,
                implementation=self.impl,
            )
        return self.out(y_BxSxHxK.reshape(b, s, d)), cache
