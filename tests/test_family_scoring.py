"""The common yardstick: the encoder's and encoder-decoder's candidate scores against a float64 reference from
their full forward passes, padding invisible, and exact match equal to what the family would emit."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analysis.abilities.family_scoring import masked_candidate_logprobs, span_candidate_logprobs
from analysis.abilities.score import SuiteScorer
from analysis.abilities.suite import GENERATE, Item, Task
from scaling.config import ModelConfig
from scaling.model import objectives as ob
from scaling.model.families import build

V, P = 53, 10
BASE = ModelConfig(d_model=32, n_layers=2, n_heads=4, seq_len=32, compute_dtype="float32", init_std=0.5)
VARIANTS = {"pre-rope": {}, "post-learned": dict(norm_position="post", norm="layernorm", position="learned")}
# The quick suite scores the default layout; the post-norm, learned-position layout repeats it (pytest -m slow).
LAYOUTS = [pytest.param(v, id=k, marks=[pytest.mark.slow] if k != "pre-rope" else []) for k, v in VARIANTS.items()]


def _log_softmax64(logits) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    return logits - (np.log(np.exp(logits - top).sum(-1, keepdims=True)) + top)


def _problem(seed: int):
    """5 prompts, 3 candidates each of lengths 1-4 (zero-padded to 4)."""
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, V, (5, P)).astype(np.int32)
    cands = rng.integers(0, V, (5, 3, 4)).astype(np.int32)
    lengths = rng.integers(1, 5, (5, 3)).astype(np.int32)
    cands[np.arange(4)[None, None, :] >= lengths[..., None]] = 0
    return prompts, cands, lengths


@pytest.mark.parametrize("variant", LAYOUTS)
def test_encoder_scores_each_candidate_masked_whole(variant):
    """log p(c_t | prompt, [MASK] x len(c)) from the unpadded sequence, in float64, for every candidate."""
    model = build(dataclasses.replace(BASE, family="encoder", **variant), V, seed=0)
    prompts, cands, lengths = _problem(0)
    logp, is_argmax = masked_candidate_logprobs(model, *(jnp.asarray(x) for x in (prompts, cands, lengths)))
    for k in range(1, 5):  # one unpadded forward pass per candidate length
        rows, cols = np.nonzero(lengths == k)
        tokens = np.concatenate([prompts[rows], np.full((len(rows), k), ob.mask_id(V))], axis=1)
        reference = _log_softmax64(model(jnp.asarray(tokens))[:, P:])
        picked = np.take_along_axis(reference, cands[rows, cols, :k, None], -1)[..., 0]
        np.testing.assert_allclose(np.asarray(logp)[rows, cols, :k], picked, atol=1e-4, rtol=1e-4)
        expected_argmax = reference.argmax(-1) == cands[rows, cols, :k]
        np.testing.assert_array_equal(np.asarray(is_argmax)[rows, cols, :k], expected_argmax)


@pytest.mark.parametrize("variant", LAYOUTS)
def test_encoder_decoder_scores_each_candidate_as_the_span_after_the_prompt(variant):
    cfg = dataclasses.replace(BASE, family="encoder_decoder", **variant)
    model = build(cfg, V, seed=0)
    prompts, cands, lengths = _problem(1)
    logp, _ = span_candidate_logprobs(model, *(jnp.asarray(x) for x in (prompts, cands, lengths)))
    sentinel, start = ob.sentinel_id(V, 0), ob.start_id(cfg, V)
    for k in range(1, 5):  # one unpadded forward pass per candidate length
        rows, cols = np.nonzero(lengths == k)
        inputs = np.concatenate([prompts[rows], np.full((len(rows), 1), sentinel)], axis=1)
        fed = np.concatenate([np.tile([start, sentinel], (len(rows), 1)), cands[rows, cols, : k - 1]], axis=1)
        reference = _log_softmax64(model(jnp.asarray(inputs), jnp.asarray(fed))[:, 1:])
        picked = np.take_along_axis(reference, cands[rows, cols, :k, None], -1)[..., 0]
        np.testing.assert_allclose(np.asarray(logp)[rows, cols, :k], picked, atol=1e-4, rtol=1e-4)


def _greedy_spans(model, cfg, prompts: np.ndarray, n: int) -> np.ndarray:
    """Greedy decoding of the span after each prompt, by the full forward pass one token at a time."""
    inputs = jnp.asarray(np.concatenate([prompts, np.full((len(prompts), 1), ob.sentinel_id(V, 0))], axis=1))
    fed = np.tile([ob.start_id(cfg, V), ob.sentinel_id(V, 0)], (len(prompts), 1))
    for _ in range(n):
        fed = np.concatenate([fed, np.argmax(model(inputs, jnp.asarray(fed))[:, -1], axis=-1)[:, None]], axis=1)
    return fed[:, 2:]


def test_encoder_decoder_exact_match_equals_greedy_decoding():
    """Half the answers are the model's own greedy span (exact match 1), half have one token changed (0)."""
    cfg = dataclasses.replace(BASE, family="encoder_decoder")
    model = build(cfg, V, seed=3)
    prompts = np.random.default_rng(2).integers(0, V, (6, P)).astype(np.int32)
    greedy = _greedy_spans(model, cfg, prompts, 4)
    answers = greedy.copy()
    answers[1::2, 1] = (answers[1::2, 1] + 1) % V
    items = tuple(Item(tuple(p.tolist()), (tuple(a.tolist()),), 0, "") for p, a in zip(prompts, answers))
    graphdef, state = nnx.split(model)
    scores = SuiteScorer(graphdef, [Task("t", GENERATE, "", 0.0, items)], V, "encoder_decoder").score(state)
    assert scores["t"]["exact_match"] == 0.5
