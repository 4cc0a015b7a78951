"""Model: causality, jit == eager, analytic == counted parameters, dtypes."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.config import ModelConfig
from scaling.model.sizing import param_count
from scaling.model.transformer import build_model, count_params, token_losses

VOCAB = 97
BASE = ModelConfig(d_model=32, n_layers=2, n_heads=4, seq_len=16, compute_dtype="float32")
VARIANTS = [
    dict(zip(("norm_position", "norm", "position", "mlp", "tie_embeddings", "use_bias"), combo))
    for combo in itertools.product(
        ("pre", "post"), ("rmsnorm", "layernorm"), ("rope", "learned"), ("gelu", "swiglu"), (True, False), (False, True)
    )
]


def _tokens(batch: int = 2, length: int = 16, seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (batch, length)), jnp.int32)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_analytic_param_count_equals_counted(variant):
    cfg = dataclasses.replace(BASE, **variant)
    model = build_model(cfg, VOCAB, seed=0)
    assert count_params(model) == param_count(cfg, VOCAB).total


@pytest.mark.parametrize("variant", [{}, {"norm_position": "post", "position": "learned", "mlp": "swiglu"}])
def test_causality_gradients_of_early_logits_ignore_later_tokens(variant):
    """d logits[t] / d embedding(x[s]) must be exactly zero for s > t."""
    cfg = dataclasses.replace(BASE, **variant)
    model = build_model(cfg, VOCAB, seed=1)
    tokens = _tokens(1)
    x_emb = model.embed(tokens)
    t = 5

    def early_logits_sum(emb_BxTxD):
        return model.from_embeddings(emb_BxTxD)[:, t].sum()

    grads = jax.grad(early_logits_sum)(x_emb)
    per_position = jnp.abs(grads).sum(axis=(0, 2))
    assert float(per_position[t + 1 :].max()) == 0.0
    assert float(per_position[: t + 1].min()) > 0.0


def test_jit_equals_eager():
    model = build_model(BASE, VOCAB, seed=2)
    tokens = _tokens(3)
    graphdef, params = nnx.split(model, nnx.Param)
    forward = lambda p, x: nnx.merge(graphdef, p)(x)  # noqa: E731
    eager = forward(params, tokens)
    jitted = jax.jit(forward)(params, tokens)
    np.testing.assert_allclose(np.asarray(eager), np.asarray(jitted), rtol=2e-5, atol=2e-5)


def test_logits_and_loss_are_float32_under_bf16_compute():
    cfg = dataclasses.replace(BASE, compute_dtype="bfloat16")
    logits = build_model(cfg, VOCAB, seed=3)(_tokens())
    assert logits.dtype == jnp.float32
    assert token_losses(logits, _tokens(seed=1)).dtype == jnp.float32


def test_initial_loss_is_near_uniform():
    """At init (std 0.02) the logits are near zero, so the loss is close to ln(V)."""
    model = build_model(BASE, VOCAB, seed=4)
    loss = token_losses(model(_tokens()), _tokens(seed=5)).mean()
    assert abs(float(loss) - np.log(VOCAB)) < 0.05


def test_token_losses_match_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 7))
    targets = rng.integers(0, 7, (2, 3))
    ref = np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
    got = token_losses(jnp.asarray(logits, jnp.float32), jnp.asarray(targets))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5)


def test_residual_projections_use_scaled_init():
    cfg = dataclasses.replace(BASE, d_model=256, n_heads=4, n_layers=8)
    model = build_model(cfg, VOCAB, seed=0)
    std_out = float(jnp.std(model.blocks[0].attn.out.kernel[...]))
    std_qkv = float(jnp.std(model.blocks[0].attn.qkv.kernel[...]))
    assert abs(std_qkv - 0.02) < 0.002
    assert abs(std_out - 0.02 / np.sqrt(16)) < 0.001
