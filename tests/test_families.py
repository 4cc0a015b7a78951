"""The encoder and encoder-decoder models: attention masks (by gradients), padding, losses against a float64
reference, and analytic parameter counts against the counted parameters."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.config import ModelConfig
from scaling.model import objectives as ob
from scaling.model.families import build
from scaling.model.sizing import param_count
from scaling.model.transformer import count_params
from scaling.planning.ladder import shape_for_params

V = 40
BASE = ModelConfig(d_model=16, n_layers=2, n_heads=4, seq_len=24, init_std=0.2)
ENCODER = dataclasses.replace(BASE, family="encoder")
T5 = dataclasses.replace(BASE, family="encoder_decoder")
VARIANTS = {
    "pre-rmsnorm-rope-tied": {},
    "post-layernorm-learned-untied-bias": dict(
        norm_position="post", norm="layernorm", position="learned", tie_embeddings=False, use_bias=True
    ),
    "swiglu-mup": dict(mlp="swiglu", parametrization="mup", base_width=8, d_ff=32),
}


def _tokens(shape, seed=0, high=V):
    return jnp.asarray(np.random.default_rng(seed).integers(0, high, shape), jnp.int32)


@pytest.mark.parametrize("family", ["encoder", "encoder_decoder"])
@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_analytic_parameter_count_equals_counted(family, variant):
    cfg = dataclasses.replace(BASE, family=family, **variant)
    assert count_params(build(cfg, V, seed=0)) == param_count(cfg, V).total


def _dependence(f, x, axis_len):
    """(out positions, in positions) booleans: does output position i depend on input position j (by Jacobian)?"""
    # Jitted: one compiled program instead of hundreds of operations dispatched one by one.
    jac = jax.jit(jax.jacobian(lambda x: f(x).sum(axis=-1)[0]))(x)  # (T_out, B, T_in, D)
    return np.asarray(jnp.abs(jac[:, 0]).sum(axis=-1) > 0)


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_encoder_attends_both_ways_and_the_decoder_causally(variant):
    """Each encoder position's logits depend on every input position; the decoder's only on those up to it."""
    x = jax.random.normal(jax.random.key(0), (1, 8, BASE.d_model))
    encoder = build(dataclasses.replace(ENCODER, **variant), V, seed=0)
    assert _dependence(encoder.from_embeddings, x, 8).all()
    decoder = build(dataclasses.replace(BASE, **variant), V, seed=0)
    np.testing.assert_array_equal(_dependence(decoder.from_embeddings, x, 8), np.tril(np.ones((8, 8), bool)))


T5_VARIANTS = {**VARIANTS, "relative-positions-swiglu": dict(position="relative", mlp="swiglu")}


def test_relative_positions_are_counted():
    cfg = dataclasses.replace(T5, position="relative", mlp="swiglu")
    assert count_params(build(cfg, V, seed=0)) == param_count(cfg, V).total


@pytest.mark.parametrize("variant", T5_VARIANTS.values(), ids=T5_VARIANTS.keys())
def test_encoder_decoder_masks(variant):
    """The decoder is causal in its own inputs, sees every encoder position through cross-attention, and the
    encoder's output does not depend on the decoder's inputs at all."""
    model = build(dataclasses.replace(T5, **variant), V, seed=0)
    inputs, targets = _tokens((1, 7), 1), _tokens((1, 5), 2)
    memory = model.encode(inputs)
    from_decoder_embeddings = lambda x: model.logits(model.decode_embedded(x, memory))  # noqa: E731
    decoder_embedded = model.embed(targets)
    causal = _dependence(from_decoder_embeddings, decoder_embedded, 5)
    np.testing.assert_array_equal(causal, np.tril(np.ones((5, 5), bool)))
    cross = _dependence(lambda m: model.logits(model.decode(targets, m)), memory, 7)
    assert cross.all()


def test_padding_is_invisible_to_real_positions():
    """With lengths, an encoder's real positions and a decoder's cross-attention read the same values whatever
    the padding holds, and equal the unpadded sequence's."""
    encoder = build(ENCODER, V, seed=1)
    short, padded = _tokens((2, 6), 3), _tokens((2, 9), 4)
    padded = padded.at[:, :6].set(short)
    lengths = jnp.array([6, 6])
    np.testing.assert_allclose(encoder.encode(padded, lengths)[:, :6], encoder.encode(short), rtol=1e-5, atol=1e-5)
    model = build(T5, V, seed=1)
    targets = _tokens((2, 4), 5)
    np.testing.assert_allclose(
        model.decode(targets, model.encode(padded, lengths), lengths),
        model.decode(targets, model.encode(short)),
        rtol=1e-5,
        atol=1e-5,
    )


def _cross_entropy64(logits: np.ndarray, targets: np.ndarray) -> float:
    logits = np.asarray(logits, np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return float((logz - np.take_along_axis(logits, targets[..., None], -1)[..., 0]).mean())


def test_losses_equal_a_float64_reference_from_the_full_logits():
    """The encoder's loss reads only the predicted positions; the encoder-decoder's is the targets' cross-entropy."""
    windows = np.random.default_rng(6).integers(0, V, (3, 25))
    encoder = build(ENCODER, V, seed=2)
    batch = ob.make_batch(ENCODER, V, windows, 0, 1)
    inputs, positions, targets = ob.unpack(ENCODER, batch)
    logits = np.asarray(encoder(jnp.asarray(inputs)))
    expected = _cross_entropy64(np.take_along_axis(logits, positions[..., None], 1), targets)
    assert float(encoder.loss(jnp.asarray(batch))) == pytest.approx(expected, rel=1e-5)
    model = build(T5, V, seed=2)
    batch = ob.make_batch(T5, V, windows, 0, 1)
    inputs, decoder_inputs, targets = ob.unpack(T5, batch)
    logits = np.asarray(model(jnp.asarray(inputs), jnp.asarray(decoder_inputs)))
    assert float(model.loss(jnp.asarray(batch))) == pytest.approx(_cross_entropy64(logits, targets), rel=1e-5)


@pytest.mark.parametrize("cfg", [BASE, ENCODER, T5], ids=["decoder", "encoder", "encoder_decoder"])
def test_each_windows_held_out_loss_is_its_own_rows_loss(cfg):
    """The held-out evaluation scores every window alone (its standard error is over documents): row i's loss
    equals the loss of a batch of row i alone, and the rows' mean the batch's loss (each row predicts as many)."""
    model = build(cfg, V, seed=2)
    batch = jnp.asarray(ob.make_batch(cfg, V, np.random.default_rng(7).integers(0, V, (4, 25)), 0, 1))
    rows = np.asarray(model.window_losses(batch))
    assert rows.shape == (4,) and len(set(rows.round(4))) == 4
    alone = [float(model.loss(batch[i : i + 1])) for i in range(4)]
    np.testing.assert_allclose(rows, alone, rtol=1e-5)
    assert float(model.loss(batch)) == pytest.approx(rows.mean(), rel=1e-5)


@pytest.mark.parametrize("cfg", [ENCODER, T5], ids=["encoder", "encoder_decoder"])
def test_key_value_cache_decoding_is_refused(cfg):
    with pytest.raises(TypeError, match="key/value-cache decoding is for decoders"):
        build(cfg, V, seed=0).init_cache(1, 4)


def test_a_parameter_target_picks_each_familys_own_shape():
    """model.n_params: every family gets a member of the ladder within 10% by its own count; at equal N the
    encoder-decoder (two stacks and cross-attention, n_layers each) is narrower than the decoder."""
    shapes = {}
    for family in ("decoder", "encoder", "encoder_decoder"):
        cfg = ModelConfig(head_dim=4, aspect_ratio=16, seq_len=64, family=family)
        shapes[family] = shape_for_params(cfg, 512, 60_000)
        assert abs(param_count(shapes[family], 512).total / 60_000 - 1) <= 0.10
        assert shapes[family].family == family
    assert shapes["encoder_decoder"].d_model < shapes["decoder"].d_model
