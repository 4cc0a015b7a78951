"""The encoder-decoder family: T5's architecture trained by span corruption (Raffel et al. 2020).

An encoder (the decoder's blocks attending both ways) reads the corrupted inputs; a decoder writes the
targets, each of its blocks attending causally to the targets so far (self-attention), then to the whole
encoder output (cross-attention), then an MLP. One embedding serves the encoder's inputs, the decoder's
inputs and, when tied, the output layer (as in T5). Positions: RoPE in both stacks' self-attention, or one
learned table both stacks index from 0, or T5's own (`model.position=relative`: a learned bias per head for
each of 32 buckets of relative distance, exact up to 8 and logarithmic to 128, one table per stack shared by
its layers; bidirectional in the encoder, causal in the decoder); cross-attention has none, as in T5. Under
post-norm each stack normalises its embeddings first (BART's layernorm_embedding).

The split between the stacks is T5's: the same width, heads and MLP, and `n_layers` blocks in EACH stack
(T5-Base is 12 + 12). A ladder rung of N parameters therefore gets a shape whose two stacks together hold
N (scaling/planning/ladder.py counts them with scaling/model/sizing.py), so at equal N an encoder-decoder
is narrower or shallower than a decoder; and since each token passes through one stack only, it spends
about half the FLOPs per token of a decoder of the same N (sizing.py counts them).

Parameter names: Transformer's `embed`, `pos_embed`, `blocks`, `final_norm` (pre-norm) and `embed_norm`
(post-norm) are the encoder's; `decoder_blocks`, `decoder_norm`, `decoder_embed_norm` the decoder's.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from flax import nnx

from scaling.config import ModelConfig
from scaling.model.attention import Attention, full_attention, rope_tables
from scaling.model.encoder import normed, refuse_cache
from scaling.model.layers import Linear, Norm
from scaling.model.mup import attention_scale, hidden_std
from scaling.model.objectives import model_vocab, unpack
from scaling.model.sizing import RELATIVE_BUCKETS
from scaling.model.transformer import Mlp, Transformer, token_losses

RELATIVE_MAX_DISTANCE = 128  # T5's relative_attention_max_distance (its buckets: sizing.RELATIVE_BUCKETS)


def relative_buckets(queries: int, keys: int, bidirectional: bool) -> np.ndarray:
    """(queries, keys) bucket of each key's distance from each query, as T5's `_relative_position_bucket`
    computes it (in float32, as T5 does in torch, so that every boundary falls where T5's does)."""
    distance = np.arange(keys)[None, :] - np.arange(queries)[:, None]
    buckets, n = np.zeros_like(distance), RELATIVE_BUCKETS
    if bidirectional:
        n //= 2
        buckets += (distance > 0) * n
        distance = np.abs(distance)
    else:
        distance = -np.minimum(distance, 0)
    exact = n // 2
    far = np.maximum(distance, exact).astype(np.float32)  # the log is read only where distance >= exact
    log_ratio = np.log(far / np.float32(exact)) / np.float32(math.log(RELATIVE_MAX_DISTANCE / exact))
    large = exact + (log_ratio * np.float32(n - exact)).astype(np.int64)
    return buckets + np.where(distance < exact, distance, np.minimum(large, n - 1))


class RelativeBias(nnx.Module):
    """T5's relative position bias of one stack: a learned scalar per head and bucket, N(0, init_std)."""

    def __init__(self, cfg: ModelConfig, bidirectional: bool, rngs: nnx.Rngs):
        self.bidirectional = bidirectional
        init = nnx.initializers.normal(stddev=cfg.init_std)
        self.table = nnx.Param(init(rngs.params(), (RELATIVE_BUCKETS, cfg.n_heads), np.float32))

    def __call__(self, queries: int, keys: int) -> jax.Array:
        """(1, H, queries, keys) float32 bias on the attention scores."""
        return self.table[...][relative_buckets(queries, keys, self.bidirectional)].transpose(2, 0, 1)[None]


class CrossAttention(nnx.Module):
    """Queries from the decoder, keys and values from the encoder's output; every query sees every real
    encoder position (`lengths_B`: how many a padded row has)."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        d, resid_std = cfg.d_model, cfg.init_std / math.sqrt(2 * cfg.n_layers)
        self.n_heads, self.scale = cfg.n_heads, attention_scale(cfg)
        self.q = Linear(d, d, hidden_std(cfg, cfg.init_std), cfg.use_bias, dtype, rngs)
        self.kv = Linear(d, 2 * d, hidden_std(cfg, cfg.init_std), cfg.use_bias, dtype, rngs)
        self.out = Linear(d, d, hidden_std(cfg, resid_std), cfg.use_bias, dtype, rngs)

    def __call__(self, x_BxTxD: jax.Array, memory_BxSxD: jax.Array, lengths_B: jax.Array | None = None) -> jax.Array:
        (b, t, d), s = x_BxTxD.shape, memory_BxSxD.shape[1]
        q_BxTxHxK = self.q(x_BxTxD).reshape(b, t, self.n_heads, d // self.n_heads)
        kv_BxSx2xHxK = self.kv(memory_BxSxD).reshape(b, s, 2, self.n_heads, d // self.n_heads)
        y_BxTxHxK = full_attention(q_BxTxHxK, kv_BxSx2xHxK[:, :, 0], kv_BxSx2xHxK[:, :, 1], self.scale, lengths_B)
        return self.out(y_BxTxHxK.reshape(b, t, d))


class DecoderBlock(nnx.Module):
    """Causal self-attention, cross-attention to the encoder, MLP; each a residual branch with its own norm."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs):
        self.pre_ln = cfg.norm_position == "pre"
        self.norm1, self.norm2, self.norm3 = Norm(cfg, rngs), Norm(cfg, rngs), Norm(cfg, rngs)
        self.attn, self.cross = Attention(cfg, dtype, rngs), CrossAttention(cfg, dtype, rngs)
        self.mlp = Mlp(cfg, dtype, rngs)

    def __call__(self, x_BxTxD: jax.Array, rope, memory_BxSxD: jax.Array, lengths_B=None, bias=None) -> jax.Array:
        if self.pre_ln:
            x_BxTxD = x_BxTxD + self.attn(self.norm1(x_BxTxD), rope, bias_1xHxSxS=bias)[0]
            x_BxTxD = x_BxTxD + self.cross(self.norm2(x_BxTxD), memory_BxSxD, lengths_B)
            return x_BxTxD + self.mlp(self.norm3(x_BxTxD))
        x_BxTxD = self.norm1(x_BxTxD + self.attn(x_BxTxD, rope, bias_1xHxSxS=bias)[0])
        x_BxTxD = self.norm2(x_BxTxD + self.cross(x_BxTxD, memory_BxSxD, lengths_B))
        return self.norm3(x_BxTxD + self.mlp(x_BxTxD))


class EncoderDecoder(Transformer):
    """(encoder inputs (B, S), decoder inputs (B, T)) -> float32 logits (B, T, V + S + 1) of the targets."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, rngs: nnx.Rngs):
        super().__init__(cfg, model_vocab(cfg, vocab_size), rngs, causal=False)
        post = cfg.norm_position == "post"
        self.embed_norm = Norm(cfg, rngs) if post else None
        self.decoder_embed_norm = Norm(cfg, rngs) if post else None
        self.decoder_blocks = nnx.List([DecoderBlock(cfg, self.dtype, rngs) for _ in range(cfg.n_layers)])
        self.decoder_norm = None if post else Norm(cfg, rngs)
        relative = cfg.position == "relative"
        self.encoder_bias = RelativeBias(cfg, True, rngs) if relative else None
        self.decoder_bias = RelativeBias(cfg, False, rngs) if relative else None

    def embed_positions(self, x_BxSxD: jax.Array, start) -> jax.Array:
        return normed(super().embed_positions(x_BxSxD, start), self.embed_norm, self.dtype)

    def encode(self, inputs_BxS: jax.Array, lengths_B: jax.Array | None = None) -> jax.Array:
        """The encoder's output (B, S, D); positions past `lengths_B` are padding."""
        s = inputs_BxS.shape[1]
        bias = None if self.encoder_bias is None else self.encoder_bias(s, s)
        return self.hidden(self.embed(inputs_BxS), None, 0, lengths_B, bias)[0]

    def decode(self, tokens_BxT: jax.Array, memory_BxSxD: jax.Array, lengths_B: jax.Array | None = None) -> jax.Array:
        """The decoder's final hidden states (B, T, D) for its inputs, attending to the encoder's output."""
        return self.decode_embedded(self.embed(tokens_BxT), memory_BxSxD, lengths_B)

    def decode_embedded(self, x_BxTxD: jax.Array, memory_BxSxD: jax.Array, lengths_B=None) -> jax.Array:
        """`decode` after the token lookup; tests differentiate through it for causality."""
        x_BxTxD = normed(super().embed_positions(x_BxTxD, 0), self.decoder_embed_norm, self.dtype)
        t, head_dim = x_BxTxD.shape[1], self.cfg.d_model // self.cfg.n_heads
        rope = rope_tables(t, head_dim, self.cfg.rope_theta) if self.cfg.position == "rope" else None
        bias = None if self.decoder_bias is None else self.decoder_bias(t, t)
        for block in self.decoder_blocks:
            x_BxTxD = block(x_BxTxD, rope, memory_BxSxD, lengths_B, bias)
        return x_BxTxD if self.decoder_norm is None else self.decoder_norm(x_BxTxD)

    def __call__(self, inputs_BxS: jax.Array, decoder_inputs_BxT: jax.Array) -> jax.Array:
        return self.logits(self.decode(decoder_inputs_BxT, self.encode(inputs_BxS)))

    def loss(self, batch_BxW: jax.Array) -> jax.Array:
        """Mean cross-entropy of the targets (sentinels and the corrupted spans' tokens), teacher forced."""
        return self.window_losses(batch_BxW).mean()  # every row has the same n + S targets

    def window_losses(self, batch_BxW: jax.Array) -> jax.Array:
        """(B,) mean cross-entropy of each row's targets."""
        inputs_BxS, decoder_inputs_BxT, targets_BxT = unpack(self.cfg, batch_BxW)
        return token_losses(self(inputs_BxS, decoder_inputs_BxT), targets_BxT).mean(axis=-1)

    def init_cache(self, batch: int, length: int):
        refuse_cache(self.cfg.family)

    def extend(self, tokens_BxS, caches, start):
        refuse_cache(self.cfg.family)
