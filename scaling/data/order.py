"""The data order as a pure function of (seed, step), and batch assembly from a token memmap.

Sequences are fixed, non-overlapping windows: sequence i is tokens[i*L : i*L + L + 1], whose first
L tokens are the inputs and last L the targets (neighbours share one token). Position p = step*B + j
of the endless stream lies in epoch p // n_seqs, and every epoch is a fresh permutation seeded by
(seed, epoch). Nothing is stateful, so a resumed run needs no replay and "which sequences did step s
see" has an exact answer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from scaling.errors import ConfigError


def n_sequences(n_tokens: int, seq_len: int) -> int:
    """How many whole windows of seq_len + 1 tokens a split of `n_tokens` holds."""
    count = (n_tokens - 1) // seq_len
    if count < 1:
        raise ConfigError(
            "model.seq_len",
            f"{seq_len} needs {seq_len + 1} tokens per sequence but a split holds only {n_tokens}",
            "use a shorter model.seq_len, a larger corpus or a larger data.val_fraction",
        )
    return count


@functools.lru_cache(maxsize=4)
def permutation(seed: int, epoch: int, n_seqs: int) -> np.ndarray:
    """The order of all sequences in one epoch; cached since consecutive steps share an epoch."""
    order = np.random.default_rng([seed, epoch]).permutation(n_seqs)
    order.setflags(write=False)  # shared by every caller through the cache
    return order


@dataclass(frozen=True)
class DataOrder:
    """Which sequences each optimiser step trains on, for one seed."""

    seed: int
    batch_size: int
    n_seqs: int

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError("train.data_seed", f"{self.seed} is negative", "use a seed >= 0")
        if self.batch_size < 1:
            raise ConfigError("train.batch_size", f"{self.batch_size} is not positive", "use at least 1")
        if self.n_seqs < 1:
            raise ValueError(f"n_seqs={self.n_seqs}: build it from n_sequences(), which explains the fix")

    def indices(self, step: int) -> np.ndarray:
        """(batch_size,) int64 sequence ids of `step` (a batch larger than an epoch may repeat ids)."""
        positions_B = step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        epoch_B, offset_B = np.divmod(positions_B, self.n_seqs)
        ids_B = np.empty_like(positions_B)
        for epoch in np.unique(epoch_B):  # one epoch, or two when the batch straddles a boundary
            here = epoch_B == epoch
            ids_B[here] = permutation(self.seed, int(epoch), self.n_seqs)[offset_B[here]]
        return ids_B

    def steps_seen(self, seq: int, n_steps: int) -> np.ndarray:
        """Steps before `n_steps` at which `seq` was trained on: one per epoch reached (a step that
        straddles two epochs can appear twice)."""
        if not 0 <= seq < self.n_seqs:
            raise ValueError(f"sequence {seq} is outside 0..{self.n_seqs - 1}")
        n_epochs = -(-n_steps * self.batch_size // self.n_seqs)
        positions = [
            epoch * self.n_seqs + int(np.flatnonzero(permutation(self.seed, epoch, self.n_seqs) == seq)[0])
            for epoch in range(n_epochs)
        ]
        steps = np.array(positions, dtype=np.int64) // self.batch_size
        return steps[steps < n_steps]

    def epochs(self, n_steps: int) -> float:
        """Passes over the training sequences that `n_steps` steps make."""
        return n_steps * self.batch_size / self.n_seqs


def warn_if_repeats(n_steps: int, order: DataOrder) -> str | None:
    """A warning when the run sees data more than once, which bends a scaling fit; else None."""
    epochs = order.epochs(n_steps)
    if epochs <= 1:
        return None
    return (
        f"warning: {n_steps} steps x {order.batch_size} sequences make {epochs:.2f} epochs of "
        f"{order.n_seqs} training sequences; repeated data lowers loss less than fresh data"
    )


def sequences(tokens: np.ndarray, seq_ids: np.ndarray, seq_len: int) -> np.ndarray:
    """(len(seq_ids), seq_len + 1) int32 windows, gathered from the memmap in one fancy-indexed read."""
    index_NL = np.asarray(seq_ids, dtype=np.int64)[:, None] * seq_len + np.arange(seq_len + 1)
    return np.asarray(tokens)[index_NL].astype(np.int32)


def eval_set(val_tokens: np.ndarray, seq_len: int, n_tokens: int) -> np.ndarray:
    """The fixed held-out windows (about `n_tokens` tokens), spread evenly over the validation split."""
    available = n_sequences(len(val_tokens), seq_len)
    count = min(available, max(1, n_tokens // seq_len))
    return sequences(val_tokens, np.arange(count) * available // count, seq_len)
