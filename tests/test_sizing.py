"""Accounting: parameters and FLOPs against hand counts."""

from __future__ import annotations

import dataclasses

from scaling.config import ModelConfig
from scaling.model.sizing import chinchilla_forward_flops, flops_per_token, param_count

SMALL = ModelConfig(d_model=4, n_layers=1, n_heads=2, seq_len=8, d_ff=16)


def test_chinchilla_flops_equal_hand_count():
    # V=10, d=4, T=8, H=2, ff=16, one layer; Hoffmann et al. (2022) Appendix F term by term:
    embeddings = 2 * 10 * 4  # 80
    qkv = 2 * 3 * 4 * 4  # 96
    scores = 2 * 8 * 4  # 64
    softmax = 3 * 2 * 8  # 48
    weighted = 2 * 8 * 4  # 64
    out_proj = 2 * 4 * 4  # 32
    mlp = 2 * 2 * 4 * 16  # 256
    logits = 2 * 4 * 10  # 80
    forward = embeddings + qkv + scores + softmax + weighted + out_proj + mlp + logits
    assert forward == 720
    assert chinchilla_forward_flops(SMALL, 10) == forward
    assert flops_per_token(SMALL, 10)["chinchilla"] == 3 * forward


def test_six_n_conventions():
    n = param_count(SMALL, 10)
    per_token = flops_per_token(SMALL, 10)
    assert per_token["6n"] == 6 * n.total
    assert per_token["6n_nonembedding"] == 6 * n.nonembedding


def test_param_count_by_hand():
    # Tied embeddings, RMSNorm, GELU, no bias: V*d + L*(4d^2 + 2*d*ff + 2d) + d
    n = param_count(SMALL, 10)
    assert n.embedding == 40
    assert n.nonembedding == 4 * 16 + 2 * 4 * 16 + 2 * 4 + 4
    assert n.total == n.embedding + n.nonembedding


def test_untied_head_counts_as_nonembedding_and_learned_positions_as_embedding():
    cfg = dataclasses.replace(SMALL, tie_embeddings=False, position="learned")
    n, base = param_count(cfg, 10), param_count(SMALL, 10)
    assert n.embedding == base.embedding + 8 * 4
    assert n.nonembedding == base.nonembedding + 10 * 4


def test_swiglu_default_width_is_rounded_eight_thirds():
    cfg = dataclasses.replace(SMALL, d_model=96, d_ff=None, mlp="swiglu")
    from scaling.model.sizing import ffn_dim

    assert ffn_dim(cfg) == 256  # 8/3 * 96 = 256
