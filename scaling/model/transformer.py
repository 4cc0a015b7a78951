"""Decoder-only transformer in Flax NNX: token ids (B, T) -> float32 logits (B, T, V).

Initialisation (documented because it shapes early training): every matrix and embedding is
N(0, init_std) with init_std = 0.02 (GPT-2), except the two residual output projections of each
block (attention output and MLP output), which use init_std / sqrt(2 * n_layers) so the residual
stream's variance does not grow with depth. Norm scales start at 1, biases (off by default) at 0.
Parameters are float32; matmuls run in `compute_dtype`; attention softmax, the logits and the loss
are float32. Under `parametrization=mup` the hidden matrices' std, the logits and the attention scale
follow scaling/model/mup.py. Layers are in scaling/model/layers.py, attention and its key/value cache in scaling/model/attention.py.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.config import ModelConfig
from scaling.model.attention import Attention, LayerCache, rope_tables
from scaling.model.layers import Linear, Norm, matmul, resolve_compute_dtype
from scaling.model.mup import hidden_std, output_multiplier
from scaling.model.sizing import ffn_dim


class Mlp(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, f = cfg.d_model, ffn_dim(cfg)
        self.swiglu = cfg.mlp == "swiglu"
        std, resid_std = hidden_std(cfg, cfg.init_std), hidden_std(cfg, cfg.init_std / math.sqrt(2 * cfg.n_layers))
        self.up = Linear(d, f, std, cfg.use_bias, dtype, rngs)
        self.gate = Linear(d, f, std, cfg.use_bias, dtype, rngs) if self.swiglu else None
        self.down = Linear(f, d, resid_std, cfg.use_bias, dtype, rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        h_BxTxF = self.up(x_BxTxD)
        h_BxTxF = jax.nn.silu(self.gate(x_BxTxD)) * h_BxTxF if self.swiglu else jax.nn.gelu(h_BxTxF)
        return self.down(h_BxTxF)


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs, causal: bool = True):
        self.pre_ln = cfg.norm_position == "pre"
        self.norm1, self.norm2 = Norm(cfg, rngs), Norm(cfg, rngs)
        self.attn, self.mlp = Attention(cfg, dtype, rngs, causal), Mlp(cfg, dtype, rngs)

    def __call__(self, x_BxTxD: jax.Array, rope, cache: LayerCache | None = None, start=0, lengths_B=None, bias=None):
        if self.pre_ln:
            attended_BxTxD, cache = self.attn(self.norm1(x_BxTxD), rope, cache, start, lengths_B, bias)
            x_BxTxD = x_BxTxD + attended_BxTxD
            return x_BxTxD + self.mlp(self.norm2(x_BxTxD)), cache
        # Post-LN (the original Transformer): normalise after each residual addition.
        attended_BxTxD, cache = self.attn(x_BxTxD, rope, cache, start, lengths_B, bias)
        x_BxTxD = self.norm1(x_BxTxD + attended_BxTxD)
        return self.norm2(x_BxTxD + self.mlp(x_BxTxD)), cache


class Transformer(nnx.Module):
    """Token ids (B, T) -> float32 logits (B, T, V); `extend` runs new tokens against a key/value cache.
    With `causal=False` its blocks attend both ways: the masked-LM encoder (scaling/model/encoder.py) builds on it."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, rngs: nnx.Rngs, causal: bool = True):
        self.cfg, self.vocab_size = cfg, vocab_size
        self.dtype = resolve_compute_dtype(cfg.compute_dtype)
        self.output_mult = output_multiplier(cfg)
        embed_init = nnx.initializers.normal(stddev=cfg.init_std)
        self.embed = nnx.Embed(vocab_size, cfg.d_model, embedding_init=embed_init, rngs=rngs)
        self.pos_embed = (
            nnx.Embed(cfg.seq_len, cfg.d_model, embedding_init=embed_init, rngs=rngs)
            if cfg.position == "learned"
            else None
        )
        self.blocks = nnx.List([Block(cfg, self.dtype, rngs, causal) for _ in range(cfg.n_layers)])
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
        hidden_BxTxD, _ = self.hidden(x_BxTxD, None, 0)
        return self.logits(hidden_BxTxD)

    def init_cache(self, batch: int, length: int) -> list[LayerCache]:
        """An empty key/value cache for `batch` sequences of up to `length` positions."""
        head_dim = self.cfg.d_model // self.cfg.n_heads
        empty_BxTxHxK = jnp.zeros((batch, length, self.cfg.n_heads, head_dim), self.dtype)
        return [(empty_BxTxHxK, empty_BxTxHxK) for _ in self.blocks]

    def extend(self, tokens_BxS: jax.Array, caches: list[LayerCache], start) -> tuple[jax.Array, list[LayerCache]]:
        """Final hidden states (B, S, D) of S new tokens at positions start..start+S-1, attending to
        the cache, and the cache with their keys and values added. `self.logits` turns hidden
        states into logits: decoding needs only the last position's."""
        return self.hidden(self.embed(tokens_BxS), caches, start)

    def hidden(
        self, x_BxSxD: jax.Array, caches: list[LayerCache] | None, start, lengths_B=None, bias=None
    ) -> tuple[jax.Array, list | None]:
        """Embedded tokens at positions start.. through every block and the final norm (`lengths_B`, `bias`: see
        Attention)."""
        s = x_BxSxD.shape[1]
        x_BxSxD = self.embed_positions(x_BxSxD, start)
        head_dim = self.cfg.d_model // self.cfg.n_heads
        positions = s if caches is None else caches[0][0].shape[1]
        rope = rope_tables(positions, head_dim, self.cfg.rope_theta) if self.cfg.position == "rope" else None
        updated = []
        for i, block in enumerate(self.blocks):
            x_BxSxD, cache = block(x_BxSxD, rope, None if caches is None else caches[i], start, lengths_B, bias)
            updated.append(cache)
        if self.final_norm is not None:
            x_BxSxD = self.final_norm(x_BxSxD)
        return x_BxSxD, None if caches is None else updated

    def embed_positions(self, x_BxSxD: jax.Array, start) -> jax.Array:
        """Token embeddings plus learned positions (when used), in the compute dtype."""
        if self.pos_embed is not None:
            x_BxSxD = x_BxSxD + self.pos_embed(start + jnp.arange(x_BxSxD.shape[1]))[None]
        return x_BxSxD.astype(self.dtype)

    def loss(self, seqs_BxT1: jax.Array) -> jax.Array:
        """Mean next-token cross-entropy of a batch of windows (the train step's loss; each family has its own)."""
        return token_losses(self(seqs_BxT1[:, :-1]), seqs_BxT1[:, 1:]).mean()

    def window_losses(self, seqs_BxT1: jax.Array) -> jax.Array:
        """(B,) mean next-token cross-entropy of each window (the held-out evaluation's; each family has its own)."""
        return token_losses(self(seqs_BxT1[:, :-1]), seqs_BxT1[:, 1:]).mean(axis=-1)

    def logits(self, x_BxTxD: jax.Array) -> jax.Array:
        """Output projection in float32 so the softmax over the vocabulary is accurate (times muP's
        output multiplier, which is 1 under SP and then left out of the program)."""
        *lead, d = x_BxTxD.shape
        x_NxD = x_BxTxD.astype(jnp.float32).reshape(-1, d)  # flat tokens, as in `Linear`
        if self.head is None:
            logits_NxV = matmul(x_NxD, self.embed.embedding[...].T)
        else:
            logits_NxV = self.head(x_NxD)
        if self.output_mult != 1.0:
            logits_NxV = logits_NxV * self.output_mult
        return logits_NxV.reshape(*lead, -1)


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
