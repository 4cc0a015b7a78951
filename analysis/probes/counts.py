"""How often each token, and each (previous token, token) pair, occurred in the training data seen so far.

Counted over exactly what the model was trained to predict: the (input, target) pairs of every
sequence of updates 0..step-1 (a sequence's L targets; the unigram count is of the target token).
Counting is incremental: checkpoints are visited in order and each `advance` reads only the updates
since the previous one.

Pair counts are exact and sparse: each pair is hashed to the int64 key prev * V + token (unique, so
no collisions) and kept as sorted unique keys with their counts, merged chunk by chunk with
np.unique. Memory grows with the number of distinct pairs seen (at most the tokens seen), never
with V^2, which a dense table would need (16.7M cells at V = 4096, 2.5G at V = 50k).
"""

from __future__ import annotations

import numpy as np

from analysis.trained_runs import RunStream

CHUNK_TOKENS = 1 << 21  # tokens gathered per read: bounds memory whatever the step size
MIN_BIN_TOKENS = 20  # bins with fewer evaluation tokens are too noisy to plot


class SeenCounts:
    """Unigram and pair counts over the updates before `self.step`."""

    def __init__(self, data: RunStream, vocab_size: int):
        self.data, self.vocab_size, self.step = data, vocab_size, 0
        self.unigram = np.zeros(vocab_size, np.int64)
        self.pair_keys = np.zeros(0, np.int64)  # sorted, unique
        self.pair_counts = np.zeros(0, np.int64)

    def advance(self, step: int) -> None:
        """Add the updates self.step..step-1, so the counts cover what checkpoint `step` has seen."""
        if step < self.step:
            raise ValueError(f"counts are at step {self.step}; they only move forward (asked for {step})")
        tokens_per_update = self.data.order.batch_size * (self.data.seq_len + 1)
        chunk = max(1, CHUNK_TOKENS // tokens_per_update)
        for start in range(self.step, step, chunk):
            seqs_NxL1 = np.concatenate([self.data.update_batch(u) for u in range(start, min(start + chunk, step))])
            self._add(seqs_NxL1[:, :-1].ravel(), seqs_NxL1[:, 1:].ravel())
        self.step = step

    def _add(self, prev: np.ndarray, token: np.ndarray) -> None:
        self.unigram += np.bincount(token, minlength=self.vocab_size)
        keys, counts = np.unique(self._key(prev, token), return_counts=True)
        merged, inverse = np.unique(np.concatenate([self.pair_keys, keys]), return_inverse=True)
        self.pair_counts = np.bincount(inverse, np.concatenate([self.pair_counts, counts]), len(merged)).astype(
            np.int64
        )
        self.pair_keys = merged

    def _key(self, prev: np.ndarray, token: np.ndarray) -> np.ndarray:
        return prev.astype(np.int64) * self.vocab_size + token.astype(np.int64)

    def pair(self, prev: np.ndarray, token: np.ndarray) -> np.ndarray:
        """Occurrences of each (prev, token) pair so far; 0 for pairs never seen."""
        keys = self._key(prev, token)
        if not len(self.pair_keys):
            return np.zeros(keys.shape, np.int64)
        at = np.minimum(np.searchsorted(self.pair_keys, keys), len(self.pair_keys) - 1)
        return np.where(self.pair_keys[at] == keys, self.pair_counts[at], 0)


def frequency_bin(counts: np.ndarray) -> np.ndarray:
    """0 for never seen, else half-decade bins: 1 = 1..3 occurrences, 2 = 4..9, 3 = 10..31, 4 = 32..99, ..."""
    counts = np.asarray(counts, np.float64)
    return np.where(counts > 0, 1 + np.floor(2 * np.log10(np.maximum(counts, 1))), 0).astype(np.int64)


def bin_range(index: int) -> tuple[int, int]:
    """The (lowest, highest) occurrence count of a frequency bin."""
    if index == 0:
        return 0, 0
    return int(np.ceil(10 ** ((index - 1) / 2))), int(np.ceil(10 ** (index / 2))) - 1


def binned_losses(losses: np.ndarray, counts: np.ndarray, kind: str) -> tuple[dict[str, float], dict[str, float]]:
    """(mean loss, number of tokens) per frequency bin, keyed "<kind>:<bin>"."""
    bins = frequency_bin(counts)
    n = np.bincount(bins)
    sums = np.bincount(bins, weights=losses)
    present = np.flatnonzero(n)
    keys = [f"{kind}:{b}" for b in present]
    return dict(zip(keys, (sums[present] / n[present]).tolist())), dict(zip(keys, n[present].astype(float).tolist()))
