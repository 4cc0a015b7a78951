"""How each pre-training family answers a task item, by its own objective: the common yardstick.

Every family scores a candidate continuation of a prompt by the log-likelihood its training objective gives
the candidate's tokens, and calls a token "the argmax" when it is the family's own top prediction there:

  decoder          the candidate continues the prompt: log p(c_t | prompt, c_<t), through the KV cache
                   (analysis/abilities/score.py). Exact match = greedy decoding emits the answer.
  encoder          the candidate's k positions follow the prompt as k [MASK] tokens, all masked at once, and
                   each is predicted from the prompt alone: sum_t log p(c_t | prompt, [MASK] x k). Exact match
                   = filling the blanks in one pass emits the answer. Every token is masked together rather than
                   one at a time (the pseudo-log-likelihood of Salazar et al. 2020), because one at a time each
                   token would see the others, which for a copying task (induction) hands over the answer.
  encoder_decoder  the candidate is the corrupted span at the end of the prompt: the encoder reads
                   prompt + <sentinel 0>, the decoder writes <sentinel 0> c_1 .. c_k teacher forced:
                   log p(c_t | prompt, c_<t), as T5 is trained (a span at the end, as its last span always is).
                   Exact match = greedy decoding of the span emits the answer.

The metrics built from these (accuracy, probability of the right choice, answer log-likelihood per token,
exact match; analysis/abilities/suite.py) then mean the same thing for every family, so one table and one
figure hold them all. The families' own validation losses do not compare (each predicts other tokens from
other evidence); these scores do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from scaling.model import objectives
from scaling.model.families import Model
from scaling.model.transformer import token_losses


def corpus_vocab(model: Model) -> int:
    """The corpus vocabulary V under the model's reserved ids (scaling/model/objectives.py)."""
    return model.vocab_size - objectives.extra_tokens(model.cfg)


def _scored(logits_BxCxMxV: jax.Array, cands_BxCxM: jax.Array) -> tuple[jax.Array, jax.Array]:
    is_argmax_BxCxM = jnp.argmax(logits_BxCxMxV, axis=-1) == cands_BxCxM
    return -token_losses(logits_BxCxMxV, cands_BxCxM), is_argmax_BxCxM


def masked_candidate_logprobs(
    model: Model, prompt_BxP: jax.Array, cands_BxCxM: jax.Array, lengths_BxC: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The encoder's (log-likelihood, is argmax) of each candidate token, all of a candidate's tokens masked."""
    (b, p), (c, m) = prompt_BxP.shape, cands_BxCxM.shape[1:]
    mask_NxM = jnp.full((b * c, m), objectives.mask_id(corpus_vocab(model)), jnp.int32)
    tokens_NxPM = jnp.concatenate([jnp.repeat(prompt_BxP, c, axis=0), mask_NxM], axis=1)
    hidden_NxPMxD = model.encode(tokens_NxPM, p + lengths_BxC.reshape(b * c))  # masks past a candidate: padding
    logits_BxCxMxV = model.predict(hidden_NxPMxD[:, p:]).reshape(b, c, m, -1)
    return _scored(logits_BxCxMxV, cands_BxCxM)


def span_candidate_logprobs(
    model: Model, prompt_BxP: jax.Array, cands_BxCxM: jax.Array, lengths_BxC: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The encoder-decoder's (log-likelihood, is argmax) of each candidate token as the span after the prompt.
    The prompt is encoded once per item; candidates past their length are padding the causal decoder never reads
    before the real tokens."""
    b, (c, m) = prompt_BxP.shape[0], cands_BxCxM.shape[1:]
    vocab = corpus_vocab(model)
    sentinel_Bx1 = jnp.full((b, 1), objectives.sentinel_id(vocab, 0), jnp.int32)
    memory_BxSxD = model.encode(jnp.concatenate([prompt_BxP, sentinel_Bx1], axis=1))
    start_Nx2 = jnp.tile(
        jnp.array([[objectives.start_id(model.cfg, vocab), objectives.sentinel_id(vocab, 0)]]), (b * c, 1)
    )
    fed_NxM1 = jnp.concatenate([start_Nx2, cands_BxCxM.reshape(b * c, m)[:, :-1]], axis=1)
    hidden_NxM1xD = model.decode(fed_NxM1, jnp.repeat(memory_BxSxD, c, axis=0))
    logits_BxCxMxV = model.logits(hidden_NxM1xD[:, 1:]).reshape(b, c, m, -1)  # position 0 predicts the sentinel
    return _scored(logits_BxCxMxV, cands_BxCxM)


SCORERS = {objectives.ENCODER: masked_candidate_logprobs, objectives.ENCODER_DECODER: span_candidate_logprobs}
