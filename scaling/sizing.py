"""Parameter and FLOP accounting, and the shape rule that turns a parameter target into a model.

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

import dataclasses
import math
from dataclasses import dataclass

from scaling.config import ModelConfig

ASPECT_RATIO = 64  # d_model / n_layers preferred by the sizing rule (GPT-2 small: 768 / 12)
SIZE_TOLERANCE = 0.10  # accept shapes within 10% of the target, then prefer the aspect ratio


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int
    nonembedding: int


def ffn_dim(cfg: ModelConfig) -> int:
    """Hidden width of the MLP: 4d for GELU, 8/3 d rounded up to a multiple of 64 for SwiGLU."""
    if cfg.d_ff is not None:
        return cfg.d_ff
    if cfg.mlp == "swiglu":
        return 64 * math.ceil(8 * cfg.d_model / 3 / 64)
    return 4 * cfg.d_model


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


def heads_for(d_model: int) -> int:
    """Head count of the sizing rule: heads of 32 channels below d_model 256, of 64 above."""
    return max(1, d_model // 32) if d_model < 256 else d_model // 64


def _candidate_shapes(max_layers: int = 64, max_d: int = 8192):
    widths = [*range(16, 64, 8), *range(64, 256, 32), *range(256, max_d + 1, 64)]
    for n_layers in range(1, max_layers + 1):
        for d in widths:
            if d % heads_for(d) == 0 and (d // heads_for(d)) % 2 == 0:
                yield n_layers, d


def shape_for_params(cfg: ModelConfig, vocab_size: int, target: int) -> ModelConfig:
    """Pick (d_model, n_layers, n_heads) whose TOTAL parameter count is near `target`.

    Rule: among shapes (widths in steps of 8 below 64, of 32 below 256, then of 64; heads of 32
    channels below d_model 256, else 64) within 10% of the target, take the one whose
    d_model / n_layers is closest to 64 in log space; if none is that close, take the closest
    count. Embeddings are included, so the vocabulary size matters.
    """
    best, best_key = None, None
    for n_layers, d in _candidate_shapes():
        shaped = dataclasses.replace(cfg, d_model=d, n_layers=n_layers, n_heads=heads_for(d))
        err = abs(param_count(shaped, vocab_size).total / target - 1.0)
        aspect = abs(math.log(d / n_layers / ASPECT_RATIO))
        key = (0, aspect) if err <= SIZE_TOLERANCE else (1, err)
        if best_key is None or key < best_key:
            best, best_key = shaped, key
    assert best is not None
    return dataclasses.replace(best, n_params=None)
