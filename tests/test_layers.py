"""Our Linear and Norm equal Flax's in value, gradient and initialisation; token_sum against float64."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.config import ModelConfig
from scaling.model.layers import Linear, Norm, token_sum

BASE = ModelConfig(d_model=32, n_layers=2, n_heads=4, seq_len=16, compute_dtype="float32")


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm", "layernorm-nobias"])
def test_norm_equals_flax_norm_in_value_gradient_and_init(kind):
    """`Norm` is written out (its parameter gradients go through `token_sum`), but must be the flax
    norm it replaces: same parameters from the same seed, same output and gradients."""
    norm, _, nobias = kind.partition("-")
    cfg = dataclasses.replace(BASE, norm=norm, use_bias=not nobias)
    ours_rngs, flax_rngs = nnx.Rngs(params=3), nnx.Rngs(params=3)
    ours = Norm(cfg, ours_rngs)
    flax_norm = (
        nnx.LayerNorm(cfg.d_model, epsilon=1e-5, use_bias=cfg.use_bias, rngs=flax_rngs)
        if norm == "layernorm"
        else nnx.RMSNorm(cfg.d_model, epsilon=1e-6, rngs=flax_rngs)
    )
    # Same keys consumed, so every layer initialised after a norm is as before.
    assert jnp.array_equal(jax.random.key_data(ours_rngs.params()), jax.random.key_data(flax_rngs.params()))
    params = nnx.to_pure_dict(nnx.state(flax_norm, nnx.Param))
    assert jax.tree.map(np.shape, nnx.to_pure_dict(nnx.state(ours, nnx.Param))) == jax.tree.map(np.shape, params)
    rng = np.random.default_rng(4)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)  # not 1s and 0s
    x = jnp.asarray(rng.normal(2.0, 3.0, size=(3, 5, cfg.d_model)), jnp.float32)
    w = jnp.asarray(rng.normal(size=x.shape), jnp.float32)

    def loss(module, p, x):
        graphdef, _ = nnx.split(module, nnx.Param)
        return jnp.sum(nnx.merge(graphdef, p)(x) * w)

    got, want = (jax.value_and_grad(loss, argnums=(1, 2))(m, params, x) for m in (ours, flax_norm))
    for g, f in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, f, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("use_bias", [True, False])
def test_linear_equals_flax_linear_and_its_bias_gradient_is_a_token_sum(use_bias):
    ours = Linear(6, 5, 0.02, use_bias, jnp.float32, nnx.Rngs(params=7))
    theirs = nnx.Linear(6, 5, use_bias=use_bias, kernel_init=nnx.initializers.normal(0.02), rngs=nnx.Rngs(params=7))
    ours_p, theirs_p = (nnx.to_pure_dict(nnx.state(m, nnx.Param)) for m in (ours, theirs))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), ours_p, theirs_p))
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.normal(size=(4, 3, 6)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 3, 5)), jnp.float32)
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), theirs_p)

    def loss(module, p):
        graphdef, _ = nnx.split(module, nnx.Param)
        return jnp.sum(nnx.merge(graphdef, p)(x) * w)

    got, want = (jax.grad(loss, argnums=1)(m, params) for m in (ours, theirs))
    for g, f in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, f, rtol=1e-5, atol=1e-6)
    if use_bias:  # d/d bias of sum(y * w) is w summed over every token
        np.testing.assert_allclose(got["bias"], np.asarray(w, np.float64).sum(axis=(0, 1)), rtol=1e-5)


def test_token_sum_matches_float64_sum():
    x = np.random.default_rng(9).normal(1.0, 2.0, size=(4096, 24)).astype(np.float32)
    np.testing.assert_allclose(token_sum(jnp.asarray(x)), x.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-3)
