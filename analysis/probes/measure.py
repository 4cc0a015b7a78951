"""What is measured at one checkpoint: the probes' raw numbers, as {probe: {key: value}}.

Probes come in units that share their work and are skipped together on a re-run: `loss` (one
forward pass over the held-out set gives the validation loss, the loss by position and the
in-context learning score), `term_frequency` (the same losses against training-data counts),
`memorisation` (greedy decoding of sampled training prompts, and of held-out prompts as the
chance baseline) and `forgetting` (loss on the exact batches of chosen updates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from analysis.failures import InputError
from analysis.probes.counts import SeenCounts, binned_losses
from analysis.trained_runs import RunInfo, RunStream
from scaling.data.eval_set import WINDOWS, build_eval_set
from scaling.model.decode import make_greedy_decoder
from scaling.model.transformer import token_losses

VAL_LOSS, LOSS_BY_POSITION, ICL_SCORE = "val_loss", "loss_by_position", "icl_score"
TERM_FREQUENCY, TERM_FREQUENCY_TOKENS = "term_frequency", "term_frequency_tokens"
MEMORISATION, MEMORISATION_SCORE, MEMORISATION_HELDOUT = "memorisation", "memorisation_score", "memorisation_heldout"
FORGETTING = "forgetting"
# Each unit's first probe always gets rows, so its presence marks the unit as done.
UNITS: dict[str, tuple[str, ...]] = {
    "loss": (VAL_LOSS, LOSS_BY_POSITION, ICL_SCORE),
    "term_frequency": (TERM_FREQUENCY, TERM_FREQUENCY_TOKENS),
    "memorisation": (MEMORISATION, MEMORISATION_SCORE, MEMORISATION_HELDOUT),
    "forgetting": (FORGETTING,),
}
TOKENS_PER_CALL = 4096  # tokens per jitted forward: (rows, T, V) float32 logits stay well under 100 MB
DECODE_ROWS = 128  # prompts decoded together: fewer sequential steps per prompt
MEMO_SEED = 0  # the memorisation sample is the same at every checkpoint (and for every equal-length run)
FORGET_FRACTIONS = (0.1, 0.3, 0.6)  # --forget-steps auto: saved steps nearest these shares of training
# Olsson et al. (2022) compare token 500 with token 50 of a 512-token context, averaged over many
# more sequences than a CPU probe can afford; we scale both to our context and average the loss over
# a band of context lengths around each (+-20% of the position, up to the end) so the score is not
# dominated by which tokens happen to sit at one position of a few hundred held-out windows.
ICL_LATE, ICL_EARLY, ICL_BAND = 500 / 512, 50 / 512, 0.2
HELDOUT_SHARE = 4  # held-out prompts per checkpoint = memo_samples / 4: a chance level needs fewer


@dataclass(frozen=True)
class ProbeSettings:
    """How much each probe measures; stored with the table so every row was measured alike."""

    eval_tokens: int = 16384
    memo_samples: int = 512
    k: int = 32
    continuation: int = 32
    forget_steps: tuple[int, ...] = ()  # checkpoint steps whose last batch is followed; () = auto

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "forget_steps": list(self.forget_steps)}

    def check(self, run: RunInfo) -> None:
        """Errors naming the flag, for settings a run cannot support."""
        if self.k + self.continuation > run.seq_len + 1:
            raise InputError(
                f"--k, --continuation: {self.k} + {self.continuation} tokens exceed the {run.seq_len + 1}-token "
                f"sequences of {run.name}; pass a smaller --k and --continuation summing to <= {run.seq_len + 1}"
            )
        outside = [s for s in self.forget_steps if not 1 <= s <= run.steps]
        if outside:
            raise InputError(
                f"--forget-steps: {outside} outside 1..{run.steps} of {run.name}; give steps the run trained"
            )


def icl_bands(seq_len: int) -> tuple[range, range]:
    """Context lengths (1..seq_len) whose mean losses the in-context learning score compares: (early, late)."""

    def band(centre: int) -> range:
        return range(max(1, round(centre * (1 - ICL_BAND))), min(seq_len, round(centre * (1 + ICL_BAND))) + 1)

    return band(max(1, round(seq_len * ICL_EARLY))), band(max(2, round(seq_len * ICL_LATE)))


def band_label(band: range) -> str:
    return f"{band[0]}-{band[-1]}" if len(band) > 1 else str(band[0])


def forget_steps(settings: ProbeSettings, run: RunInfo) -> list[int]:
    """The given steps, or the saved steps nearest FORGET_FRACTIONS of training (so "right after" is saved)."""
    if settings.forget_steps:
        return sorted(settings.forget_steps)
    saved = np.array([step for step, _ in run.checkpoints if step > 0])
    if not len(saved):
        return []
    return sorted({int(saved[np.abs(saved - f * run.steps).argmin()]) for f in FORGET_FRACTIONS})


def memo_positions(run: RunInfo, n: int) -> np.ndarray:
    """Training positions (update * B + slot) sampled uniformly over the whole planned training order."""
    total = run.steps * run.batch_size
    return np.sort(np.random.default_rng(MEMO_SEED).choice(total, size=min(n, total), replace=False))


def map_in_batches(fn: Callable[[jax.Array], jax.Array], array: np.ndarray, rows: int) -> np.ndarray:
    """fn over fixed-size row batches (the last one zero-padded) so a jitted fn compiles once."""
    out = []
    for start in range(0, len(array), rows):
        chunk = array[start : start + rows]
        padded = np.zeros((rows, *array.shape[1:]), array.dtype)
        padded[: len(chunk)] = chunk
        out.append(np.asarray(fn(jnp.asarray(padded)))[: len(chunk)])
    return np.concatenate(out)


def loss_probes(losses_NxT: np.ndarray) -> dict[str, dict[str, float]]:
    """Validation loss, loss by context length (1..T tokens seen) and the in-context learning score."""
    by_position_T = losses_NxT.mean(axis=0)
    early, late = (by_position_T[np.array(band) - 1].mean() for band in icl_bands(losses_NxT.shape[1]))
    return {
        VAL_LOSS: {"mean": float(losses_NxT.mean())},
        LOSS_BY_POSITION: {str(t + 1): float(v) for t, v in enumerate(by_position_T)},
        ICL_SCORE: {"late_minus_early": float(late - early)},
    }


def memorisation_summary(scores: np.ndarray) -> dict[str, float]:
    """Memorised = the whole continuation reproduced (score 1), as in Biderman et al. (2023)."""
    n = len(scores)
    return {
        "memorised_fraction": float((scores == 1).mean()) if n else np.nan,
        "mean_score": float(scores.mean()) if n else np.nan,
        "n": float(n),
    }


class CheckpointProbes:
    """Everything fixed for one run (jitted functions, samples, batches, counts); `measure` takes a checkpoint."""

    def __init__(self, run: RunInfo, data: RunStream, settings: ProbeSettings, graphdef: nnx.GraphDef):
        self.run, self.settings = run, settings
        self.rows = max(1, TOKENS_PER_CALL // run.seq_len)
        self.losses = jax.jit(lambda state, s: token_losses(nnx.merge(graphdef, state)(s[:, :-1]), s[:, 1:]))
        self.decode = make_greedy_decoder(graphdef, settings.continuation)
        # spread windows, as probes always took them (their held-out loss is a curve's shape, not a fit's input)
        eval_set = build_eval_set(WINDOWS, data.corpus.val, None, run.seq_len, settings.eval_tokens, 1.0)
        self.eval_NxT1 = eval_set.windows_NxT1
        self.positions = memo_positions(run, settings.memo_samples)
        self.memo_NxT1 = data.at_positions(self.positions)
        n_heldout = min(max(1, settings.memo_samples // HELDOUT_SHARE), len(self.eval_NxT1))
        self.heldout_NxT1 = self.eval_NxT1[np.linspace(0, len(self.eval_NxT1) - 1, n_heldout).astype(int)]
        self.forget_steps = forget_steps(settings, run)
        batches = [data.update_batch(step - 1) for step in self.forget_steps]
        self.forget_NxT1 = np.concatenate(batches) if batches else None  # one padded pass for all batches
        self.counts = SeenCounts(data, run.vocab_size)

    def token_losses(self, state: nnx.State, seqs_NxT1: np.ndarray) -> np.ndarray:
        """(N, T) per-token losses in nats."""
        return map_in_batches(lambda s: self.losses(state, s), seqs_NxT1, self.rows)

    def memorisation_scores(self, state: nnx.State, seqs_NxT1: np.ndarray) -> np.ndarray:
        """Share of the true continuation that greedy decoding from the first k tokens reproduces, per sequence."""
        k, n_new = self.settings.k, self.settings.continuation
        decoded = map_in_batches(lambda p: self.decode(state, p), seqs_NxT1[:, :k], DECODE_ROWS)
        return (decoded == seqs_NxT1[:, k : k + n_new]).mean(axis=1)

    def measure(self, state: nnx.State, step: int, units: set[str]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        if units & {"loss", "term_frequency"}:
            losses_NxT = self.token_losses(state, self.eval_NxT1)
        if "loss" in units:
            out |= loss_probes(losses_NxT)
        if "term_frequency" in units:
            out |= self._term_frequency(step, losses_NxT)
        if "memorisation" in units:
            out |= self._memorisation(state, step)
        if "forgetting" in units and self.forget_steps:
            per_batch = self.token_losses(state, self.forget_NxT1).reshape(len(self.forget_steps), -1).mean(axis=1)
            out[FORGETTING] = {str(step): float(loss) for step, loss in zip(self.forget_steps, per_batch)}
        return out

    def _term_frequency(self, step: int, losses_NxT: np.ndarray) -> dict[str, dict[str, float]]:
        self.counts.advance(step)
        prev, target = self.eval_NxT1[:, :-1].ravel(), self.eval_NxT1[:, 1:].ravel()
        uni_loss, uni_n = binned_losses(losses_NxT.ravel(), self.counts.unigram[target], "unigram")
        pair_loss, pair_n = binned_losses(losses_NxT.ravel(), self.counts.pair(prev, target), "bigram")
        return {TERM_FREQUENCY: uni_loss | pair_loss, TERM_FREQUENCY_TOKENS: uni_n | pair_n}

    def _memorisation(self, state: nnx.State, step: int) -> dict[str, dict[str, float]]:
        """Only sequences already trained on at `step` (positions before step * B) are scored."""
        seen = self.positions < step * self.run.batch_size
        scores = self.memorisation_scores(state, self.memo_NxT1[seen]) if seen.any() else np.zeros(0)
        return {
            MEMORISATION: memorisation_summary(scores),
            MEMORISATION_SCORE: {str(p): float(s) for p, s in zip(self.positions[seen], scores)},
            MEMORISATION_HELDOUT: memorisation_summary(self.memorisation_scores(state, self.heldout_NxT1)),
        }
