"""Parameter and FLOP accounting (the shape rule that turns a parameter target into a model is in ladder.py).

Conventions (they move every scaling fit, so they are stated once here and in the README):
- `embedding` parameters are the token embedding and, when learned, the position embedding.
  An untied output head is a matmul that costs compute on every token, so it counts as
  non-embedding; a tied head is the embedding itself.
- `flops_per_token(cfg)["6n"]` is 6 * N_total (forward + backward, Kaplan/Chinchilla shorthand).
- `flops_per_token(cfg)["chinchilla"]` is Hoffmann et al. (2022) Appendix F: embedding and logit
  matmuls, QKV/output projections, attention scores and the attention-weighted sum, softmax, and
  the MLP, with backward = 2 x forward. As in Hoffmann et al., the causal mask does NOT halve the
  attention FLOPs (the full T x T score matrix is counted), which is also what the XLA kernel computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scaling.config import ModelConfig


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int
    nonembedding: int


def ffn_dim(cfg: ModelConfig) -> int:
    """Hidden width of the MLP: 4d for GELU; for SwiGLU, whose three matrices would hold 12 d^2 at 4d,
    8/3 d (Shazeer 2020), so both MLPs have 8 d^2 weights and cost the same FLOPs. It is rounded to
    the nearest multiple of `head_dim`, the family's unit of width (4 channels on the CPU ladder, 64 on
    GPU ones, where matmul tiles want it): within 5% of GELU's weights at any width of four heads or more."""
    if cfg.d_ff is not None:
        return cfg.d_ff
    if cfg.mlp == "swiglu":
        return cfg.head_dim * max(1, round(8 * cfg.d_model / 3 / cfg.head_dim))
    return 4 * cfg.d_model


def legacy_ffn_dim(cfg: ModelConfig) -> int:
    """The MLP width of runs whose config.yaml does not record `d_ff` (written before it did): SwiGLU
    was 8/3 d rounded up to a multiple of 64, which at the CPU ladder's widths held up to 50% more weights
    than GELU's MLP."""
    if cfg.d_ff is None and cfg.mlp == "swiglu":
        return 64 * math.ceil(8 * cfg.d_model / 3 / 64)
    return ffn_dim(cfg)


def _norm_params(cfg: ModelConfig) -> int:
    scale_and_bias = 2 if (cfg.norm == "layernorm" and cfg.use_bias) else 1
    return scale_and_bias * cfg.d_model


def block_params(cfg: ModelConfig) -> int:
    """Parameters of one transformer block (attention, MLP, two norms)."""
    d, f = cfg.d_model, ffn_dim(cfg)
    attention = 4 * d * d + (4 * d if cfg.use_bias else 0)
    n_mlp_in = 2 if cfg.mlp == "swiglu" else 1
    mlp = (n_mlp_in + 1) * d * f + ((n_mlp_in * f + d) if cfg.use_bias else 0)
    return attention + mlp + 2 * _norm_params(cfg)


def param_count(cfg: ModelConfig, vocab_size: int) -> ParamCount:
    """Analytic parameter count; tests check it equals the counted NNX parameters."""
    d = cfg.d_model
    embedding = vocab_size * d + (cfg.seq_len * d if cfg.position == "learned" else 0)
    head = 0 if cfg.tie_embeddings else vocab_size * d + (vocab_size if cfg.use_bias else 0)
    final_norm = _norm_params(cfg) if cfg.norm_position == "pre" else 0
    nonembedding = cfg.n_layers * block_params(cfg) + final_norm + head
    return ParamCount(total=embedding + nonembedding, embedding=embedding, nonembedding=nonembedding)


def chinchilla_forward_flops(cfg: ModelConfig, vocab_size: int) -> float:
    """Forward FLOPs per token, Hoffmann et al. (2022) Table 4 / Appendix F, no causal halving."""
    d, t, h, f = cfg.d_model, cfg.seq_len, cfg.n_heads, ffn_dim(cfg)
    embeddings = 2 * vocab_size * d
    qkv = 2 * 3 * d * d
    scores = 2 * t * d
    softmax = 3 * h * t
    weighted_sum = 2 * t * d
    out_proj = 2 * d * d
    mlp = 2 * (3 if cfg.mlp == "swiglu" else 2) * d * f
    logits = 2 * d * vocab_size
    per_layer = qkv + scores + softmax + weighted_sum + out_proj + mlp
    return float(embeddings + cfg.n_layers * per_layer + logits)


def flops_per_token(cfg: ModelConfig, vocab_size: int) -> dict[str, float]:
    """Training FLOPs per token under the named conventions (forward + backward)."""
    n = param_count(cfg, vocab_size)
    return {
        "6n": 6.0 * n.total,
        "6n_nonembedding": 6.0 * n.nonembedding,
        "chinchilla": 3.0 * chinchilla_forward_flops(cfg, vocab_size),
    }
