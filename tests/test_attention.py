"""Attention: the blocked causal kernel against a float64 reference, its gradients, RoPE, and the key/value cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.model.attention import apply_rope, causal_attention, rope_tables


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


def test_rope_keeps_norms_and_makes_scores_depend_on_relative_position_only():
    """q.k after rotation depends on positions only through their difference: a wrong table
    (angle, frequency or pairing) breaks this."""
    cos, sin = rope_tables(64, 8, 10000.0)
    np.testing.assert_allclose(
        [cos[5, 1], sin[5, 1]], [np.cos(5 * 10000 ** (-2 / 8)), np.sin(5 * 10000 ** (-2 / 8))], rtol=1e-6
    )
    rng = np.random.default_rng(10)
    q, k = (np.broadcast_to(rng.normal(size=(1, 1, 1, 8)), (1, 64, 1, 8)).astype(np.float32) for _ in range(2))
    q_rot, k_rot = (np.asarray(apply_rope(jnp.asarray(x), cos, sin), np.float64) for x in (q, k))
    np.testing.assert_allclose(np.linalg.norm(q_rot, axis=-1), np.linalg.norm(q, axis=-1), rtol=1e-5)
    scores = np.einsum("btk,bsk->ts", q_rot[:, :, 0], k_rot[:, :, 0])
    for offset in (0, 1, 5, 40):
        diagonal = np.diagonal(scores, offset=-offset)  # query t, key t - offset
        np.testing.assert_allclose(diagonal, diagonal[0], rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.diagonal(scores, -1)[0], np.diagonal(scores, -5)[0], atol=1e-3)
