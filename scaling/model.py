"""Decoder-only transformer in Flax NNX.

Initialisation (documented because it shapes early training): every matrix and embedding is
N(0, init_std) with init_std = 0.02 (GPT-2), except the two residual output projections of each
block (attention output and MLP output), which use init_std / sqrt(2 * n_layers) so the residual
stream's variance does not grow with depth. Norm scales start at 1, biases (off by default) at 0.
Parameters are float32; matmuls run in `compute_dtype`; attention softmax, the logits and the loss
are float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.config import ModelConfig
from scaling.sizing import ffn_dim

ATTENTION_IMPLS = ("auto", "xla", "cudnn")


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


def rope_tables(seq_len: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables (T, Dh/2) for rotary position embedding, in float32."""
    inv_freq = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles_TxF = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    return jnp.cos(angles_TxF), jnp.sin(angles_TxF)


def apply_rope(x_BxTxHxD: jax.Array, cos_TxF: jax.Array, sin_TxF: jax.Array) -> jax.Array:
    """Rotate channel pairs (first half, second half) by position-dependent angles."""
    t = x_BxTxHxD.shape[1]
    cos, sin = cos_TxF[:t, None, :], sin_TxF[:t, None, :]
    x1, x2 = jnp.split(x_BxTxHxD.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return rotated.astype(x_BxTxHxD.dtype)


def _norm(cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    if cfg.norm == "layernorm":
        return nnx.LayerNorm(cfg.d_model, epsilon=1e-5, use_bias=cfg.use_bias, rngs=rngs)
    return nnx.RMSNorm(cfg.d_model, epsilon=1e-6, rngs=rngs)


def _linear(d_in: int, d_out: int, std: float, cfg: ModelConfig, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    init = nnx.initializers.normal(stddev=std)
    return nnx.Linear(d_in, d_out, use_bias=cfg.use_bias, dtype=dtype, kernel_init=init, rngs=rngs)


class Attention(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, resid_std = cfg.d_model, cfg.init_std / math.sqrt(2 * cfg.n_layers)
        self.n_heads, self.impl = cfg.n_heads, resolve_attention_impl(cfg)
        self.use_rope = cfg.position == "rope"
        self.qkv = _linear(d, 3 * d, cfg.init_std, cfg, dtype, rngs)
        self.out = _linear(d, d, resid_std, cfg, dtype, rngs)

    def __call__(self, x_BxTxD: jax.Array, rope: tuple[jax.Array, jax.Array] | None) -> jax.Array:
        b, t, d = x_BxTxD.shape
        qkv_BxTx3xHxK = self.qkv(x_BxTxD).reshape(b, t, 3, self.n_heads, d // self.n_heads)
        q_BxTxHxK, k_BxTxHxK, v_BxTxHxK = (qkv_BxTx3xHxK[:, :, i] for i in range(3))
        if rope is not None:
            q_BxTxHxK, k_BxTxHxK = apply_rope(q_BxTxHxK, *rope), apply_rope(k_BxTxHxK, *rope)
        y_BxTxHxK = jax.nn.dot_product_attention(
            q_BxTxHxK, k_BxTxHxK, v_BxTxHxK, is_causal=True, implementation=self.impl
        )
        return self.out(y_BxTxHxK.reshape(b, t, d))


class Mlp(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, f = cfg.d_model, ffn_dim(cfg)
        self.swiglu = cfg.mlp == "swiglu"
        self.up = _linear(d, f, cfg.init_std, cfg, dtype, rngs)
        self.gate = _linear(d, f, cfg.init_std, cfg, dtype, rngs) if self.swiglu else None
        self.down = _linear(f, d, cfg.init_std / math.sqrt(2 * cfg.n_layers), cfg, dtype, rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        h_BxTxF = self.up(x_BxTxD)
        h_BxTxF = jax.nn.silu(self.gate(x_BxTxD)) * h_BxTxF if self.swiglu else jax.nn.gelu(h_BxTxF)
        return self.down(h_BxTxF)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        self.pre_ln = cfg.norm_position == "pre"
        self.norm1, self.norm2 = _norm(cfg, rngs), _norm(cfg, rngs)
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
        self.final_norm = _norm(cfg, rngs) if cfg.norm_position == "pre" else None
        self.head = (
            None
            if cfg.tie_embeddings
            else nnx.Linear(cfg.d_model, vocab_size, use_bias=cfg.use_bias, kernel_init=embed_init, rngs=rngs)
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
        x = x_BxTxD.astype(jnp.float32)
        if self.head is None:
            return x @ self.embed.embedding[...].T
        return x @ self.head.kernel[...] + (self.head.bias[...] if self.head.bias is not None else 0.0)


def build_model(cfg: ModelConfig, vocab_size: int, seed: int) -> Transformer:
    return Transformer(cfg, vocab_size, nnx.Rngs(params=seed))


def count_params(model: nnx.Module) -> int:
    """Counted (not analytic) number of parameters."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def token_losses(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Per-token cross-entropy in nats, float32."""
    logz_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
    picked_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
    return logz_BxT - picked_BxT
