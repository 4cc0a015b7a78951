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
from scaling.model import (
    Linear,
    Norm,
    apply_rope,
    build_model,
    causal_attention,
    count_params,
    rope_tables,
    token_losses,
    token_sum,
)
from scaling.sizing import param_count

VOCAB = 97
BASE = ModelConfig(d_model=32, n_layers=2, n_heads=4, seq_len=16, compute_dtype="float32")
VARIANTS = [
    dict(zip(("norm_position", "norm", "position", "mlp", "tie_embeddings", "use_bias"), combo))
    for combo in itertools.product(("pre", "post"), ("rmsnorm", "layernorm"), ("rope", "learned"), ("gelu", "swiglu"), (True, False), (False, True))
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


def _attention_reference(q, k, v):
    """Float64 NumPy causal attention; queries are the last T of S positions."""
    t, s, dh = q.shape[1], k.shape[1], q.shape[-1]
    scores = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(dh)
    visible = np.arange(t)[:, None] + (s - t) >= np.arange(s)[None, :]
    scores = np.where(visible, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhts,bshk->bthk", probs, v)


@pytest.mark.parametrize(("t", "s", "block"), [(16, 16, 4), (16, 16, 5), (16, 16, 64), (3, 16, 2), (1, 9, 4)])
def test_blocked_causal_attention_matches_float64_reference(t, s, block):
    """Query blocks (even, ragged, one block, KV-cache suffix, single query) give full attention."""
    rng = np.random.default_rng(t * 100 + s + block)
    q, k, v = rng.normal(size=(2, t, 3, 8)), rng.normal(size=(2, s, 3, 8)), rng.normal(size=(2, s, 3, 8))
    got = causal_attention(*(jnp.asarray(x, jnp.float32) for x in (q, k, v)), block=block)
    np.testing.assert_allclose(np.asarray(got), _attention_reference(q, k, v), rtol=2e-5, atol=2e-5)


def test_blocked_causal_attention_gradients_match_unblocked():
    rng = np.random.default_rng(1)
    qkv = [jnp.asarray(rng.normal(size=(2, 12, 2, 4)), jnp.float32) for _ in range(3)]
    weights = jnp.asarray(rng.normal(size=(2, 12, 2, 4)), jnp.float32)
    grads = [
        jax.grad(lambda q, k, v, b=b: jnp.sum(causal_attention(q, k, v, block=b) * weights), argnums=(0, 1, 2))(*qkv)
        for b in (12, 5)
    ]
    for full, blocked in zip(*grads):
        np.testing.assert_allclose(np.asarray(blocked), np.asarray(full), rtol=1e-5, atol=1e-6)


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


def test_rope_keeps_norms_and_makes_scores_depend_on_relative_position_only():
    """q.k after rotation depends on positions only through their difference: a wrong table
    (angle, frequency or pairing) breaks this."""
    cos, sin = rope_tables(64, 8, 10000.0)
    np.testing.assert_allclose([cos[5, 1], sin[5, 1]], [np.cos(5 * 10000 ** (-2 / 8)), np.sin(5 * 10000 ** (-2 / 8))], rtol=1e-6)
    rng = np.random.default_rng(10)
    q, k = (np.broadcast_to(rng.normal(size=(1, 1, 1, 8)), (1, 64, 1, 8)).astype(np.float32) for _ in range(2))
    q_rot, k_rot = (np.asarray(apply_rope(jnp.asarray(x), cos, sin), np.float64) for x in (q, k))
    np.testing.assert_allclose(np.linalg.norm(q_rot, axis=-1), np.linalg.norm(q, axis=-1), rtol=1e-5)
    scores = np.einsum("btk,bsk->ts", q_rot[:, :, 0], k_rot[:, :, 0])
    for offset in (0, 1, 5, 40):
        diagonal = np.diagonal(scores, offset=-offset)  # query t, key t - offset
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.diagonal(scores, -1)[0], np.diagonal(scores, -5)[0], atol=1e-3)
