"""The encoder-only family: a bidirectional transformer trained by masked language modelling (BERT).

It is the decoder's model (scaling/model/transformer.py) with its blocks attending both ways, and with
BERT's two additions (Devlin et al. 2019; RoBERTa keeps both):
- under post-norm, the embeddings are normalised before the first block (BERT's embedding LayerNorm);
- the prediction head: a dense layer d -> d (a hidden matrix, initialised as the blocks' are), GELU and a
  norm, then the output layer (the tied embedding, or an untied head), applied at the predicted positions only.
Its vocabulary is the corpus's plus [MASK] (scaling/model/objectives.py). It has no key/value cache: an
encoder sees the whole sequence at once, so decoding token by token is not something it does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from scaling.config import ModelConfig
from scaling.model.layers import Linear, Norm
from scaling.model.mup import hidden_std
from scaling.model.objectives import model_vocab, unpack
from scaling.model.transformer import Transformer, token_losses


def normed(x_BxSxD: jax.Array, norm: Norm | None, dtype) -> jax.Array:
    """x through `norm` (a post-norm stack's embedding norm), back in the compute dtype; x itself without one."""
    return x_BxSxD if norm is None else norm(x_BxSxD).astype(dtype)


def refuse_cache(family: str) -> None:
    raise TypeError(
        f"model.family={family}: key/value-cache decoding is for decoders (causal attention); "
        "score this family with its own objective (analysis/abilities/family_scoring.py)"
    )


class Encoder(Transformer):
    """Token ids (B, T) -> float32 logits (B, T, V + 1) at every position; `loss` predicts only the masked ones."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, rngs: nnx.Rngs):
        super().__init__(cfg, model_vocab(cfg, vocab_size), rngs, causal=False)
        self.embed_norm = Norm(cfg, rngs) if cfg.norm_position == "post" else None
        self.transform = Linear(cfg.d_model, cfg.d_model, hidden_std(cfg, cfg.init_std), cfg.use_bias, self.dtype, rngs)
        self.transform_norm = Norm(cfg, rngs)

    def embed_positions(self, x_BxSxD: jax.Array, start) -> jax.Array:
        return normed(super().embed_positions(x_BxSxD, start), self.embed_norm, self.dtype)

    def from_embeddings(self, x_BxTxD: jax.Array) -> jax.Array:
        """Logits at every position from embedded tokens; tests differentiate through it for bidirectionality."""
        return self.predict(self.hidden(x_BxTxD, None, 0)[0])

    def encode(self, tokens_BxT: jax.Array, lengths_B: jax.Array | None = None) -> jax.Array:
        """Final hidden states (B, T, D); with `lengths_B`, positions past each row's length are padding no
        real position attends to."""
        return self.hidden(self.embed(tokens_BxT), None, 0, lengths_B)[0]

    def predict(self, hidden_BxMxD: jax.Array) -> jax.Array:
        """The prediction head: float32 logits (B, M, V + 1) of the positions whose hidden states are given."""
        return self.logits(self.transform_norm(jax.nn.gelu(self.transform(hidden_BxMxD))))

    def loss(self, batch_BxW: jax.Array) -> jax.Array:
        """Mean cross-entropy of the original tokens at the predicted positions (the masked-LM objective)."""
        return self.window_losses(batch_BxW).mean()  # every row predicts the same m positions

    def window_losses(self, batch_BxW: jax.Array) -> jax.Array:
        """(B,) mean cross-entropy of each row's predicted positions."""
        inputs_BxT, positions_BxM, targets_BxM = unpack(self.cfg, batch_BxW)
        picked_BxMxD = jnp.take_along_axis(self.encode(inputs_BxT), positions_BxM[..., None], axis=1)
        return token_losses(self.predict(picked_BxMxD), targets_BxM).mean(axis=-1)

    def init_cache(self, batch: int, length: int):
        refuse_cache(self.cfg.family)

    def extend(self, tokens_BxS, caches, start):
        refuse_cache(self.cfg.family)
