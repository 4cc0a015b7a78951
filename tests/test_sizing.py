"""Accounting: parameters and FLOPs against hand counts."""

from __future__ import annotations

import dataclasses

import pytest

from scaling.config import ModelConfig
from scaling.model.sizing import chinchilla_forward_flops, ffn_dim, flops_per_token, legacy_ffn_dim, param_count

SMALL = ModelConfig(d_model=4, n_layers=1, n_heads=2, seq_len=8, d_ff=16, mlp="gelu")


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


def test_swiglu_counts_three_matrices():
    cfg = dataclasses.replace(SMALL, mlp="swiglu", d_ff=12)
    assert param_count(cfg, 10).nonembedding == 4 * 16 + 3 * 4 * 12 + 2 * 4 + 4
    assert chinchilla_forward_flops(cfg, 10) == 720 - 2 * 2 * 4 * 16 + 2 * 3 * 4 * 12


def test_swiglu_default_width_is_rounded_eight_thirds():
    cfg = dataclasses.replace(SMALL, d_model=96, d_ff=None, mlp="swiglu", head_dim=8)
    assert ffn_dim(cfg) == 256  # 8/3 * 96 = 256


@pytest.mark.parametrize("head_dim", [4, 8, 64])
def test_swiglu_has_gelus_weights_and_flops_at_every_family_width(head_dim):
    """8/3 d to a multiple of head_dim: within 5% of GELU's 8 d^2 weights from four heads up."""
    for heads in range(4, 200):
        d = heads * head_dim
        swiglu = ModelConfig(d_model=d, n_heads=heads, head_dim=head_dim, mlp="swiglu")
        gelu = dataclasses.replace(swiglu, mlp="gelu")
        f = ffn_dim(swiglu)
        assert f % head_dim == 0 and abs(3 * d * f / (8 * d * d) - 1) <= 0.05
        flops = [chinchilla_forward_flops(c, 512) for c in (swiglu, gelu)]
        assert abs(flops[0] / flops[1] - 1) <= 0.05


def test_runs_written_before_d_ff_was_recorded_keep_their_swiglu_width():
    cfg = ModelConfig(d_model=32, mlp="swiglu")
    assert legacy_ffn_dim(cfg) == 128 and ffn_dim(cfg) == 88  # 64 * ceil(85.3 / 64); 8 * round(85.3 / 8)
    assert legacy_ffn_dim(dataclasses.replace(cfg, mlp="gelu")) == 128 == 4 * 32
    assert legacy_ffn_dim(dataclasses.replace(cfg, d_ff=100)) == 100
