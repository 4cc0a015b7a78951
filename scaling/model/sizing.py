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
from scaling.model.objectives import DECODER, ENCODER, model_vocab, n_masked, span_layout

# T5's relative position buckets (model.position=relative; scaling/model/encoder_decoder.py): a learned bias per
# head and bucket in each stack, counted with the position tables.
RELATIVE_BUCKETS = 32


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
    if cfg.family != DECODER:
        return family_groups(cfg, vocab_size).count()
    d = cfg.d_model
    embedding = vocab_size * d + (cfg.seq_len * d if cfg.position == "learned" else 0)
    head = 0 if cfg.tie_embeddings else vocab_size * d + (vocab_size if cfg.use_bias else 0)
    final_norm = _norm_params(cfg) if cfg.norm_position == "pre" else 0
    nonembedding = cfg.n_layers * block_params(cfg) + final_norm + head
    return ParamCount(total=embedding + nonembedding, embedding=embedding, nonembedding=nonembedding)


def attention_flops(cfg: ModelConfig, keys: int) -> int:
    """Forward FLOPs of one query attending `keys` positions: scores, softmax, weighted sum (Hoffmann et al.)."""
    d, h = cfg.d_model, cfg.n_heads
    scores = 2 * keys * d
    softmax = 3 * h * keys
    weighted_sum = 2 * keys * d
    return scores + softmax + weighted_sum


def layer_flops(cfg: ModelConfig, keys: int) -> int:
    """Forward FLOPs per token of one block whose self-attention sees `keys` positions."""
    d, f = cfg.d_model, ffn_dim(cfg)
    qkv = 2 * 3 * d * d
    out_proj = 2 * d * d
    mlp = 2 * (3 if cfg.mlp == "swiglu" else 2) * d * f
    return qkv + attention_flops(cfg, keys) + out_proj + mlp


def chinchilla_forward_flops(cfg: ModelConfig, vocab_size: int) -> float:
    """Forward FLOPs per token, Hoffmann et al. (2022) Table 4 / Appendix F, no causal halving."""
    if cfg.family != DECODER:
        return family_forward_flops(cfg, vocab_size)
    d = cfg.d_model
    embeddings = 2 * vocab_size * d
    logits = 2 * d * vocab_size
    return float(embeddings + cfg.n_layers * layer_flops(cfg, cfg.seq_len) + logits)


def flops_per_token(cfg: ModelConfig, vocab_size: int) -> dict[str, float]:
    """Training FLOPs per token under the named conventions (forward + backward)."""
    if cfg.family != DECODER:
        return family_flops_per_token(cfg, vocab_size)
    n = param_count(cfg, vocab_size)
    return {
        "6n": 6.0 * n.total,
        "6n_nonembedding": 6.0 * n.nonembedding,
        "chinchilla": 3.0 * chinchilla_forward_flops(cfg, vocab_size),
    }


# The other families (scaling/model/encoder.py, encoder_decoder.py). Their FLOPs are per CORPUS token (what
# D counts for every family: the window tokens the data order hands out), and follow where each token goes:
# - encoder: every position runs through the embedding and the blocks; only the m = round(0.15 T)
#   predicted ones through the prediction head (dense + norm) and the output layer.
# - encoder_decoder: the encoder runs on the T - n + S corrupted inputs, the decoder on the n + S targets
#   (scaling/model/objectives.py); cross-attention's keys and values are projected once per encoder position.
# `6n` generalises 6 N D: 6 x the parameters each position multiplies by, summed over a sequence's positions
# and divided by its T corpus tokens. A table used at a position counts once there, as the decoder's tied
# embedding counts once (for lookup and output): so the encoder's tied output layer adds nothing beyond its
# lookup, and an untied head or the prediction head counts at the predicted positions only.


@dataclass(frozen=True)
class FamilyGroups:
    """Parameters of a non-decoder model by where they are used, and the positions of a sequence using them."""

    embedding: int  # token table (+ position tables): used at every position of each stack
    always: int  # used at every encoder (or, encoder-decoder: every input) position
    decoder: int  # encoder_decoder: used at every target position (0 for the encoder)
    cross_kv: int  # encoder_decoder: cross-attention's key/value projections, applied to every input position
    predicted: int  # encoder: the prediction head and an untied output layer; encoder_decoder: an untied head
    inputs: int  # positions the encoder runs on
    targets: int  # positions the decoder runs on (encoder: those predicted)
    seq_len: int  # corpus tokens per sequence

    def count(self) -> ParamCount:
        nonembedding = self.always + self.decoder + self.cross_kv + self.predicted
        return ParamCount(self.embedding + nonembedding, self.embedding, nonembedding)

    def six_n(self, with_embedding: bool) -> float:
        """6 x parameters used per corpus token (the module comment above)."""
        encoder_decoder = self.decoder > 0
        table_uses = self.inputs + self.targets if encoder_decoder else self.inputs
        used = (
            (self.embedding * table_uses if with_embedding else 0)
            + (self.always + self.cross_kv) * self.inputs
            + self.decoder * self.targets
            + self.predicted * self.targets
        )
        return 6.0 * used / self.seq_len


def family_groups(cfg: ModelConfig, vocab_size: int) -> FamilyGroups:
    d, v, t, bias = cfg.d_model, model_vocab(cfg, vocab_size), cfg.seq_len, cfg.use_bias
    positions = {"learned": t * d, "relative": 2 * RELATIVE_BUCKETS * cfg.n_heads}.get(cfg.position, 0)
    embedding = v * d + positions  # position tables count as embedding, as the decoder's learned ones do
    head = 0 if cfg.tie_embeddings else v * d + (v if bias else 0)
    stack_norm = _norm_params(cfg)  # pre-norm: the final norm; post-norm: the embedding norm (BERT, BART)
    always = cfg.n_layers * block_params(cfg) + stack_norm
    if cfg.family == ENCODER:
        prediction_head = d * d + (d if bias else 0) + _norm_params(cfg)
        return FamilyGroups(embedding, always, 0, 0, prediction_head + head, t, n_masked(cfg), t)
    cross_kv = cfg.n_layers * (2 * d * d + (2 * d if bias else 0))
    cross_rest = cfg.n_layers * (2 * d * d + (2 * d if bias else 0) + _norm_params(cfg))  # q, out, third norm
    decoder = cfg.n_layers * block_params(cfg) + cross_rest + stack_norm
    layout = span_layout(cfg)
    return FamilyGroups(embedding, always, decoder, cross_kv, head, layout.inputs(t), layout.targets, t)


def family_forward_flops(cfg: ModelConfig, vocab_size: int) -> float:
    """Hoffmann et al.'s forward count per corpus token for the encoder and encoder-decoder (module comment)."""
    d, v, t, n_layers = cfg.d_model, model_vocab(cfg, vocab_size), cfg.seq_len, cfg.n_layers
    embeddings, logits = 2 * v * d, 2 * d * v
    if cfg.family == ENCODER:
        head = 2 * d * d + logits  # dense layer, then the output layer, at the m predicted positions
        return embeddings + n_layers * layer_flops(cfg, t) + n_masked(cfg) * head / t
    layout = span_layout(cfg)
    s, u = layout.inputs(t), layout.targets
    cross_kv = 2 * 2 * d * d  # keys and values of one encoder position, per decoder layer
    cross_query = 2 * d * d + attention_flops(cfg, s) + 2 * d * d  # query, attention over s inputs, output
    encoder = s * (embeddings + n_layers * (layer_flops(cfg, s) + cross_kv))
    decoder = u * (embeddings + n_layers * (layer_flops(cfg, u) + cross_query) + logits)
    return (encoder + decoder) / t


def family_flops_per_token(cfg: ModelConfig, vocab_size: int) -> dict[str, float]:
    groups = family_groups(cfg, vocab_size)
    return {
        "6n": groups.six_n(with_embedding=True),
        "6n_nonembedding": groups.six_n(with_embedding=False),
        "chinchilla": 3.0 * family_forward_flops(cfg, vocab_size),
    }
