"""Scoring a task at one checkpoint: one jitted pass per batch of items, through the model's KV cache.

Each batch's prompts are prefilled once (`Transformer.extend`); the cache is then copied for every
candidate and the candidates run against it, so a four-way multiple choice costs one prompt and four
short continuations, not four full sequences. From the logits at the candidates' positions come
their log-likelihoods and whether each token is the argmax. Exact match needs no decoding loop:
greedy decoding emits the answer exactly when every answer token is the argmax given the prompt and
the answer tokens before it (what `is_argmax` reads), which the tests check against the greedy
decoder of scaling/model/decode.py. That is the decoder's way; the other families score the same items by
their own objectives (analysis/abilities/family_scoring.py), through the same batching and metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis.abilities.family_scoring import SCORERS
from analysis.abilities.suite import (
    ACCURACY,
    ANSWER_LOGPROB,
    CHOICE_PROB,
    EXACT_MATCH,
    Task,
)
from scaling.model.objectives import DECODER
from scaling.model.transformer import Transformer, token_losses

LOGIT_BUDGET = 1 << 24  # floats of candidate logits per call (64 MB): sets the batch size


def candidate_logprobs(
    model: Transformer, prompt_BxP: jax.Array, cands_BxCxM: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(log-likelihood of each candidate token (B, C, M), whether it is the argmax (B, C, M)) after the prompt."""
    b, p = prompt_BxP.shape
    c, m = cands_BxCxM.shape[1:]
    caches = model.init_cache(b, p + m - 1)  # the last candidate token is never fed back
    hidden_BxPxD, caches = model.extend(prompt_BxP, caches, 0)
    first_BxCx1xV = jnp.repeat(model.logits(hidden_BxPxD[:, -1])[:, None, None], c, axis=1)
    if m == 1:
        logits_BxCxMxV = first_BxCx1xV
    else:
        caches = [(jnp.repeat(keys, c, axis=0), jnp.repeat(values, c, axis=0)) for keys, values in caches]
        fed_NxM1 = cands_BxCxM[:, :, :-1].reshape(b * c, m - 1)
        hidden_NxM1xD, _ = model.extend(fed_NxM1, caches, p)
        rest_BxCxM1xV = model.logits(hidden_NxM1xD).reshape(b, c, m - 1, -1)
        logits_BxCxMxV = jnp.concatenate([first_BxCx1xV, rest_BxCxM1xV], axis=2)
    is_argmax_BxCxM = jnp.argmax(logits_BxCxMxV, axis=-1) == cands_BxCxM
    return -token_losses(logits_BxCxMxV, cands_BxCxM), is_argmax_BxCxM


def make_scorer(
    graphdef: nnx.GraphDef, family: str = DECODER
) -> Callable[[nnx.State, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """A jitted (state, prompts (B, P), candidates (B, C, M), their lengths (B, C)) -> (log-likelihoods, is argmax)
    of each candidate token by the family's objective, compiled once per shape (the decoder needs no lengths)."""
    if family == DECODER:
        return jax.jit(lambda state, prompt, cands, _: candidate_logprobs(nnx.merge(graphdef, state), prompt, cands))
    score = SCORERS[family]
    return jax.jit(lambda state, prompt, cands, lengths: score(nnx.merge(graphdef, state), prompt, cands, lengths))


def padded_arrays(task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """prompts (N, P), candidates (N, C, M) zero-padded to the longest, their lengths (N, C), answers (N,)."""
    n, c = len(task.items), len(task.items[0].choices)
    m = max(len(choice) for item in task.items for choice in item.choices)
    cands_NxCxM = np.zeros((n, c, m), np.int32)
    lengths_NxC = np.zeros((n, c), np.int32)
    for i, item in enumerate(task.items):
        for j, choice in enumerate(item.choices):
            cands_NxCxM[i, j, : len(choice)] = choice
            lengths_NxC[i, j] = len(choice)
    prompts_NxP = np.array([item.prompt for item in task.items], np.int32)
    return prompts_NxP, cands_NxCxM, lengths_NxC, np.array([item.answer for item in task.items])


def summarise(
    task: Task, logp_NxCxM: np.ndarray, is_argmax_NxCxM: np.ndarray, lengths_NxC: np.ndarray, answers_N: np.ndarray
) -> dict[str, float]:
    """The task's metrics, each a mean over its items (see analysis/abilities/suite.py)."""
    valid_NxCxM = np.arange(logp_NxCxM.shape[-1]) < lengths_NxC[..., None]
    total_NxC = np.where(valid_NxCxM, logp_NxCxM, 0.0).sum(axis=-1, dtype=np.float64)
    rows = np.arange(len(answers_N))
    out = {ANSWER_LOGPROB: float((total_NxC[rows, answers_N] / lengths_NxC[rows, answers_N]).mean())}
    if task.discrete == EXACT_MATCH:
        out[EXACT_MATCH] = float((is_argmax_NxCxM | ~valid_NxCxM).all(axis=-1)[rows, answers_N].mean())
        return out
    shifted_NxC = total_NxC - total_NxC.max(axis=1, keepdims=True)
    probs_NxC = np.exp(shifted_NxC) / np.exp(shifted_NxC).sum(axis=1, keepdims=True)
    out[ACCURACY] = float((total_NxC.argmax(axis=1) == answers_N).mean())
    out[CHOICE_PROB] = float(probs_NxC[rows, answers_N].mean())
    return out


class SuiteScorer:
    """Everything fixed for one model shape and task set (arrays, jitted scorer); `score` takes a checkpoint."""

    def __init__(self, graphdef: nnx.GraphDef, tasks: list[Task], vocab_size: int, family: str = DECODER):
        self.scorer = make_scorer(graphdef, family)
        self.tasks = [task for task in tasks if task.items]
        self.arrays = {task.name: padded_arrays(task) for task in self.tasks}
        self.vocab_size = vocab_size

    def _rows(self, cands_NxCxM: np.ndarray) -> int:
        """Items per call: the candidates' logits stay within LOGIT_BUDGET floats."""
        per_item = cands_NxCxM.shape[1] * cands_NxCxM.shape[2] * self.vocab_size
        return int(max(1, min(len(cands_NxCxM), LOGIT_BUDGET // per_item)))

    def score(self, state: nnx.State) -> dict[str, dict[str, float]]:
        """{task: {metric: value}} at the checkpoint whose parameters are `state`."""
        out = {}
        for task in self.tasks:
            prompts_NxP, cands_NxCxM, lengths_NxC, answers_N = self.arrays[task.name]
            logp, is_argmax = self._candidates(state, prompts_NxP, cands_NxCxM, lengths_NxC)
            out[task.name] = summarise(task, logp, is_argmax, lengths_NxC, answers_N)
        return out

    def _candidates(
        self, state: nnx.State, prompts_NxP: np.ndarray, cands_NxCxM: np.ndarray, lengths_NxC: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The scorer over fixed-size batches (the last zero-padded) so it compiles once per task."""
        rows, n = self._rows(cands_NxCxM), len(prompts_NxP)
        if lengths_NxC is None:  # every candidate as long as the widest
            lengths_NxC = np.full(cands_NxCxM.shape[:2], cands_NxCxM.shape[2], np.int32)
        logps, argmaxes = [], []
        for start in range(0, n, rows):
            take = min(rows, n - start)
            prompt = np.zeros((rows, prompts_NxP.shape[1]), np.int32)
            cands = np.zeros((rows, *cands_NxCxM.shape[1:]), np.int32)
            lengths = np.ones((rows, cands_NxCxM.shape[1]), np.int32)
            prompt[:take], cands[:take] = prompts_NxP[start : start + take], cands_NxCxM[start : start + take]
            lengths[:take] = lengths_NxC[start : start + take]
            logp, is_argmax = self.scorer(state, jnp.asarray(prompt), jnp.asarray(cands), jnp.asarray(lengths))
            logps.append(np.asarray(logp)[:take])
            argmaxes.append(np.asarray(is_argmax)[:take])
        return np.concatenate(logps), np.concatenate(argmaxes)
