"""Decoder-only transformer in Flax NNX.

Initialisation (documented because it shapes early training): every matrix and embedding is
N(0, init_std) with init_std = 0.02 (GPT-2), except the two residual output projections of each
block (attention output and MLP output), which use init_std / sqrt(2 * n_layers) so the residual
stream's variance does not grow with depth. Norm scales start at 1, biases (off by default) at 0.
Parameters are float32; matmuls run in `compute_dtype`; attention softmax, the logits and the loss
are float32.

CPU speed (measured in benchmarks/RESULTS.md): linear layers see tokens flattened to (B*T, width),
weight gradients avoid XLA:CPU's slow transposed-operand matmul (`matmul`), bias and norm-scale
gradients are matrix-vector products (`token_sum`), the loss picks target logits without
gather/scatter, and XLA:CPU hands each dot to YNNPACK alone (`CPU_XLA_FLAG`).
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scaling.config import ModelConfig
from scaling.sizing import ffn_dim

ATTENTION_IMPLS = ("auto", "xla", "cudnn")
# Query block of the XLA attention path: small enough to skip most of the masked triangle, large
# enough that each block's matmuls stay efficient (64 was fastest at context 256 on CPU).
ATTENTION_QUERY_BLOCK = 64
# XLA:CPU by default fuses elementwise work into its YNNPACK matmul calls, materialising broadcasts
# (norm scales, softmax sums) to feed them; calling YNNPACK for dots only took ~15% off forward +
# backward on one CPU core. Read when the backend starts, so it is set at import (a user's flag wins).
CPU_XLA_FLAG = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
if "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {CPU_XLA_FLAG}".strip()


def resolve_compute_dtype(name: str) -> jnp.dtype:
    """`auto` means bf16 on accelerators and fp32 on CPU (bf16 matmuls are slow on most CPUs)."""
    if name == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return jnp.dtype(name)


def resolve_attention_impl(cfg: ModelConfig) -> str | None:
    """`auto` asks for cuDNN flash attention on GPU (when the dtype allows it), XLA elsewhere."""
    if cfg.attention_impl != "auto":
        return cfg.attention_impl
    on_gpu = jax.default_backend() == "gpu"
    return "cudnn" if on_gpu and resolve_compute_dtype(cfg.compute_dtype) != jnp.float32 else "xla"


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables (T, Dh/2) for rotary position embedding: float32, computed on the host in
    float64. As constants of the program they are read, not recomputed: built with jnp inside the
    step, XLA fused their cos and sin into every fusion that rotates q or k (and its backward),
    evaluating them per element of (B, T, H, Dh), ~4% of the default model's step at shape A."""
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles_TxF = np.arange(seq_len, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(angles_TxF).astype(np.float32), np.sin(angles_TxF).astype(np.float32)


def apply_rope(x_BxTxHxD: jax.Array, cos_TxF: jax.Array, sin_TxF: jax.Array) -> jax.Array:
    """Rotate channel pairs (first half, second half) by position-dependent angles."""
    t = x_BxTxHxD.shape[1]
    cos, sin = cos_TxF[:t, None, :], sin_TxF[:t, None, :]
    x1, x2 = jnp.split(x_BxTxHxD.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return rotated.astype(x_BxTxHxD.dtype)


def token_sum(x_NxC: jax.Array) -> jax.Array:
    """Sum over the token axis: a parameter gradient of a bias or a norm scale.

    On CPU it is a ones-vector matmul: XLA:CPU splits a reduction over B*T rows into a
    reduce-window and a reduce that ran well below memory speed inside the step, while YNNPACK's
    matrix-vector product reads the rows once (the whole step at shape A: -4%, RESULTS.md #8).
    Accumulated in float32 whatever the compute dtype; returned in x's dtype, as autodiff expects.
    """
    if jax.default_backend() != "cpu":
        return jnp.sum(x_NxC, axis=0, dtype=jnp.float32).astype(x_NxC.dtype)
    ones_1xN = jnp.ones((1, x_NxC.shape[0]), x_NxC.dtype)
    return jnp.matmul(ones_1xN, x_NxC, preferred_element_type=jnp.float32)[0].astype(x_NxC.dtype)


@jax.custom_vjp
def add_bias(y_NxO: jax.Array, b_O: jax.Array) -> jax.Array:
    """y + b, whose bias gradient is a `token_sum`."""
    return y_NxO + b_O


add_bias.defvjp(lambda y_NxO, b_O: (y_NxO + b_O, None), lambda _, dy_NxO: (dy_NxO, token_sum(dy_NxO)))


def _affine(xhat_NxC: jax.Array, scale_C: jax.Array, bias_C: jax.Array | None) -> jax.Array:
    y_NxC = xhat_NxC * scale_C
    return y_NxC if bias_C is None else y_NxC + bias_C


@jax.custom_vjp
def scale_shift(xhat_NxC: jax.Array, scale_C: jax.Array, bias_C: jax.Array | None) -> jax.Array:
    """A norm's affine output xhat * scale (+ bias), whose parameter gradients are `token_sum`s."""
    return _affine(xhat_NxC, scale_C, bias_C)


def _scale_shift_fwd(xhat_NxC, scale_C, bias_C):
    return _affine(xhat_NxC, scale_C, bias_C), (xhat_NxC, scale_C, bias_C is None)


def _scale_shift_bwd(residuals, dy_NxC):
    xhat_NxC, scale_C, no_bias = residuals
    dbias_C = None if no_bias else token_sum(dy_NxC)
    return dy_NxC * scale_C, token_sum(dy_NxC * xhat_NxC), dbias_C


scale_shift.defvjp(_scale_shift_fwd, _scale_shift_bwd)


class Norm(nnx.Module):
    """LayerNorm or RMSNorm over the last axis, in float32, as nnx.LayerNorm / nnx.RMSNorm compute
    them (same parameter names and init keys, so checkpoints and seeds carry over); written out so
    their parameter gradients go through `scale_shift`."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.d_model
        self.layernorm = cfg.norm == "layernorm"
        self.epsilon = 1e-5 if self.layernorm else 1e-6
        self.scale = nnx.Param(nnx.initializers.ones(rngs.params(), (d,), jnp.float32))
        has_bias = self.layernorm and cfg.use_bias
        self.bias = nnx.Param(nnx.initializers.zeros(rngs.params(), (d,), jnp.float32)) if has_bias else None

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        *lead, d = x_BxTxD.shape
        x_NxD = x_BxTxD.astype(jnp.float32).reshape(-1, d)
        mean_sq_Nx1 = jnp.mean(jnp.square(x_NxD), axis=-1, keepdims=True)
        if self.layernorm:
            mean_Nx1 = jnp.mean(x_NxD, axis=-1, keepdims=True)
            var_Nx1 = jnp.maximum(0.0, mean_sq_Nx1 - jnp.square(mean_Nx1))  # nnx's fast variance
            xhat_NxD = (x_NxD - mean_Nx1) * jax.lax.rsqrt(var_Nx1 + self.epsilon)
        else:
            xhat_NxD = x_NxD * jax.lax.rsqrt(mean_sq_Nx1 + self.epsilon)
        bias = None if self.bias is None else self.bias[...]
        return scale_shift(xhat_NxD, self.scale[...], bias).reshape(*lead, d)


def _transposed(x_MxN: jax.Array) -> jax.Array:
    """x.T as a real copy: the barrier stops XLA from folding the transpose back into a dot."""
    return jax.lax.optimization_barrier(x_MxN.T)


@jax.custom_vjp
def matmul(x_NxI: jax.Array, w_IxO: jax.Array) -> jax.Array:
    """x @ w for 2-D operands; only its backward differs from `@` (see `_matmul_bwd`)."""
    return x_NxI @ w_IxO


def _matmul_fwd(x_NxI: jax.Array, w_IxO: jax.Array):
    return x_NxI @ w_IxO, (x_NxI, w_IxO)


def _matmul_bwd(residuals, dy_NxO: jax.Array):
    """dw = x.T @ dy contracts the token axis of both operands, a form XLA:CPU runs at about half
    its matmul speed. On CPU the narrower of x and dy is copied transposed first (B*T x min(I, O)
    floats), so the dot itself is a plain one; other backends' libraries take transposes natively.
    """
    x_NxI, w_IxO = residuals
    dx_NxI = dy_NxO @ w_IxO.T
    if jax.default_backend() != "cpu":
        return dx_NxI, x_NxI.T @ dy_NxO
    if x_NxI.shape[1] <= dy_NxO.shape[1]:
        return dx_NxI, jax.lax.optimization_barrier(_transposed(x_NxI) @ dy_NxO)
    return dx_NxI, _transposed(jax.lax.optimization_barrier(_transposed(dy_NxO) @ x_NxI))


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Linear(nnx.Module):
    """x @ kernel (+ bias) in `dtype`, with nnx.Linear's parameter names and init keys.

    Tokens are flattened to (B*T, I) for the matmul: the weight gradient then contracts one axis,
    where on (B, T, I) activations XLA:CPU first copied them into (I, B*T) order, fusing the
    elementwise backward (GELU's, say) into a strided copy that took longer than the matmul.
    """

    def __init__(self, d_in: int, d_out: int, std: float, use_bias: bool, dtype, rngs: nnx.Rngs):
        self.kernel = nnx.Param(nnx.initializers.normal(stddev=std)(rngs.params(), (d_in, d_out), jnp.float32))
        self.bias = nnx.Param(nnx.initializers.zeros(rngs.params(), (d_out,), jnp.float32)) if use_bias else None
        self.dtype = dtype

    def __call__(self, x_BxTxI: jax.Array) -> jax.Array:
        *lead, width = x_BxTxI.shape
        y_NxO = matmul(x_BxTxI.reshape(-1, width).astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y_NxO = add_bias(y_NxO, self.bias[...].astype(self.dtype))
        return y_NxO.reshape(*lead, -1)


def causal_attention(
    q_BxTxHxK: jax.Array, k_BxSxHxK: jax.Array, v_BxSxHxK: jax.Array, block: int = ATTENTION_QUERY_BLOCK
) -> jax.Array:
    """softmax(q k^T / sqrt(K)) v with query t seeing keys up to its own position; softmax in f32.

    Queries go in blocks of `block`, each against only the keys it can see, so most of the masked
    upper triangle is never computed (4 blocks do 62.5% of the full score work). Heads are moved
    ahead of positions once, not per block. Queries are the last T of the S positions, so it also
    serves a KV cache (T < S).
    """
    t, s, k = q_BxTxHxK.shape[1], k_BxSxHxK.shape[1], q_BxTxHxK.shape[-1]
    q_BxHxTxK = jnp.swapaxes(q_BxTxHxK * jnp.asarray(1.0 / math.sqrt(k), q_BxTxHxK.dtype), 1, 2)
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
        probs_BxHxTxS = jax.nn.softmax(scores_BxHxTxS, axis=-1).astype(v_BxSxHxK.dtype)
        outs.append(jnp.einsum("bhts,bhsk->bhtk", probs_BxHxTxS, v_BxHxSxK[:, :, :keys]))
    return jnp.swapaxes(outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=2), 1, 2)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, resid_std = cfg.d_model, cfg.init_std / math.sqrt(2 * cfg.n_layers)
        self.n_heads, self.impl = cfg.n_heads, resolve_attention_impl(cfg)
        self.use_rope = cfg.position == "rope"
        self.qkv = Linear(d, 3 * d, cfg.init_std, cfg.use_bias, dtype, rngs)
        self.out = Linear(d, d, resid_std, cfg.use_bias, dtype, rngs)

    def __call__(self, x_BxTxD: jax.Array, rope: tuple[jax.Array, jax.Array] | None) -> jax.Array:
        b, t, d = x_BxTxD.shape
        qkv_BxTx3xHxK = self.qkv(x_BxTxD).reshape(b, t, 3, self.n_heads, d // self.n_heads)
        q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = (qkv_BxTx3xHxK[:, :, i] for i in range(3))
        if rope is not None:
            q_BxTxHxK, k_BxTxHxK = apply_rope(q_BxTxHxK, *rope), apply_rope(k_BxTxHxK, *rope)
        if self.impl == "xla":
            y_BxTxHxK = causal_attention(q_BxTxHxK, k_BxTxHxK, v_BxTxHxK)
        else:
            y_BxTxHxK = jax.nn.dot_product_attention(
                q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, is_causal=True, implementation=self.impl
            )
        return self.out(y_BxTxHxK.reshape(b, t, d))


class Mlp(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, f = cfg.d_model, ffn_dim(cfg)
        self.swiglu = cfg.mlp == "swiglu"
        self.up = Linear(d, f, cfg.init_std, cfg.use_bias, dtype, rngs)
        self.gate = Linear(d, f, cfg.init_std, cfg.use_bias, dtype, rngs) if self.swiglu else None
        self.down = Linear(f, d, cfg.init_std / math.sqrt(2 * cfg.n_layers), cfg.use_bias, dtype, rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        h_BxTxF = self.up(x_BxTxD)
        h_BxTxF = jax.nn.silu(self.gate(x_BxTxD)) * h_BxTxF if self.swiglu else jax.nn.gelu(h_BxTxF)
        return self.down(h_BxTxF)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        self.pre_ln = cfg.norm_position == "pre"
        self.norm1, self.norm2 = Norm(cfg, rngs), Norm(cfg, rngs)
        self.attn, self.mlp = Attention(cfg, dtype, rngs), Mlp(cfg, dtype, rngs)

    def __call__(self, x_BxTxD: jax.Array, rope) -> jax.Array:
        if self.pre_ln:
            x_BxTxD = x_BxTxD + self.attn(self.norm1(x_BxTxD), rope)
            return x_BxTxD + self.mlp(self.norm2(x_BxTxD))
        # Post-LN (the original Transformer): normalise after each residual addition.
        x_BxTxD = self.norm1(x_BxTxD + self.attn(x_BxTxD, rope))
        return self.norm2(x_BxTxD + self.mlp(x_BxTxD))


class Transformer(nnx.Module):
    """Token ids (B, T) -> float32 logits (B, T, V)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, rngs: nnx.Rngs):
        self.cfg, self.vocab_size = cfg, vocab_size
        self.dtype = resolve_compute_dtype(cfg.compute_dtype)
        embed_init = nnx.initializers.normal(stddev=cfg.init_std)
        self.embed = nnx.Embed(vocab_size, cfg.d_model, embedding_init=embed_init, rngs=rngs)
        self.pos_embed = (
            nnx.Embed(cfg.seq_len, cfg.d_model, embedding_init=embed_init, rngs=rngs)
            if cfg.position == "learned"
            else None
        )
        self.blocks = nnx.List([Block(cfg, self.dtype, rngs) for _ in range(cfg.n_layers)])
        self.final_norm = Norm(cfg, rngs) if cfg.norm_position == "pre" else None
        self.head = (
            None
            if cfg.tie_embeddings
            else Linear(cfg.d_model, vocab_size, cfg.init_std, cfg.use_bias, jnp.float32, rngs)
        )

    def __call__(self, tokens_BxT: jax.Array) -> jax.Array:
        return self.from_embeddings(self.embed(tokens_BxT))

    def from_embeddings(self, x_BxTxD: jax.Array) -> jax.Array:
        """Everything after the token lookup; tests differentiate through it for causality."""
        t = x_BxTxD.shape[1]
        if self.pos_embed is not None:
            x_BxTxD = x_BxTxD + self.pos_embed(jnp.arange(t))[None]
        x_BxTxD = x_BxTxD.astype(self.dtype)
        head_dim = self.cfg.d_model // self.cfg.n_heads
        rope = rope_tables(t, head_dim, self.cfg.rope_theta) if self.pos_embed is None else None
        for block in self.blocks:
            x_BxTxD = block(x_BxTxD, rope)
        if self.final_norm is not None:
            x_BxTxD = self.final_norm(x_BxTxD)
        return self.logits(x_BxTxD)

    def logits(self, x_BxTxD: jax.Array) -> jax.Array:
        """Output projection in float32 so the softmax over the vocabulary is accurate."""
        *lead, d = x_BxTxD.shape
        x_NxD = x_BxTxD.astype(jnp.float32).reshape(-1, d)  # flat tokens, as in `Linear`
        if self.head is None:
            return matmul(x_NxD, self.embed.embedding[...].T).reshape(*lead, -1)
        return self.head(x_NxD).reshape(*lead, -1)


def build_model(cfg: ModelConfig, vocab_size: int, seed: int) -> Transformer:
    return Transformer(cfg, vocab_size, nnx.Rngs(params=seed))


def count_params(model: nnx.Module) -> int:
    """Counted (not analytic) number of parameters."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def token_losses(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Per-token cross-entropy in nats, float32.

    The target's logit is picked by compare-and-sum over the vocabulary, not a gather: it fuses
    into the same pass as the logsumexp, and its gradient is a select rather than a scatter.
    """
    logz_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
    vocab_BxTxV = jax.lax.broadcasted_iota(jnp.int32, logits_BxTxV.shape, logits_BxTxV.ndim - 1)
    is_target_BxTxV = vocab_BxTxV == targets_BxT[..., None]
    return logz_BxT - jnp.sum(jnp.where(is_target_BxTxV, logits_BxTxV, 0.0), axis=-1)
