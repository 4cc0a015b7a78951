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


# The other families on the same tiny shape, by hand. Encoder: T = 8 predicts m = round(0.15 x 8) = 1 position;
# its vocabulary is V + 1 = 11 ([MASK]).
ENCODER = dataclasses.replace(SMALL, family="encoder")
# Encoder-decoder: T = 20 corrupts n = round(0.15 x 20) = 3 tokens in S = 1 span: 18 inputs (17 clean + a
# sentinel), 4 targets (the sentinel + 3 tokens); vocabulary V + S + 1 = 12 (a sentinel, the decoder start).
T5 = dataclasses.replace(SMALL, family="encoder_decoder", seq_len=20)


def test_encoder_counts_by_hand():
    n = param_count(ENCODER, 10)
    block = 4 * 16 + 2 * 4 * 16 + 2 * 4  # 200: attention, MLP, two RMSNorms
    head = 4 * 4 + 4  # the prediction head's dense layer and norm
    assert (n.embedding, n.nonembedding) == (11 * 4, block + 4 + head)  # + final norm
    # 6n: the prediction head runs at 1 of the 8 positions, everything else at all of them.
    assert flops_per_token(ENCODER, 10)["6n"] == pytest.approx(6 * (n.total - (1 - 1 / 8) * head))
    assert flops_per_token(ENCODER, 10)["6n_nonembedding"] == pytest.approx(6 * (n.nonembedding - 7 / 8 * head))
    embeddings = 2 * 11 * 4  # 88
    layer = 96 + 64 + 48 + 64 + 32 + 256  # 560: the decoder's per-layer terms above, T = 8
    predicted = (2 * 4 * 4 + 2 * 4 * 11) / 8  # dense layer and logits at 1 of 8 positions: 15
    assert chinchilla_forward_flops(ENCODER, 10) == pytest.approx(embeddings + layer + predicted)  # 663
    assert flops_per_token(ENCODER, 10)["chinchilla"] == pytest.approx(3 * 663)


def test_encoder_decoder_counts_by_hand():
    n = param_count(T5, 10)
    encoder = 200 + 4  # a block and the encoder's final norm
    cross_kv = 2 * 4 * 4  # 32
    decoder = 200 + (4 * 4 + 4 * 4 + 4) + 4  # a block, cross-attention's query, output and norm, the final norm
    assert (n.embedding, n.nonembedding) == (12 * 4, encoder + cross_kv + decoder)  # 48, 476
    # 6n per corpus token: the table at 18 + 4 positions, the encoder (and cross keys/values) at 18, the decoder at 4.
    six_n = 6 * (48 * 22 + (encoder + cross_kv) * 18 + decoder * 4) / 20
    assert flops_per_token(T5, 10)["6n"] == pytest.approx(six_n)  # 1879.2
    assert flops_per_token(T5, 10)["6n_nonembedding"] == pytest.approx(six_n - 6 * 48 * 22 / 20)
    embeddings = 2 * 12 * 4  # 96, per position of either stack
    encoder_layer = 96 + 2 * 18 * 4 + 3 * 2 * 18 + 2 * 18 * 4 + 32 + 256  # 780: self-attention over 18 inputs
    per_input = embeddings + encoder_layer + 2 * 2 * 4 * 4  # + keys and values for the decoder's layer: 940
    decoder_layer = 96 + 2 * 4 * 4 + 3 * 2 * 4 + 2 * 4 * 4 + 32 + 256  # 472: self-attention over 4 targets
    cross_query = 2 * 4 * 4 + (2 * 18 * 4 + 3 * 2 * 18 + 2 * 18 * 4) + 2 * 4 * 4  # 460
    per_target = embeddings + decoder_layer + cross_query + 2 * 4 * 12  # 1124
    assert chinchilla_forward_flops(T5, 10) == pytest.approx((18 * per_input + 4 * per_target) / 20)  # 1070.8


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
