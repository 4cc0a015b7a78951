"""The data order as a pure function of (seed, step), and batch assembly from a token memmap.

Sequences are fixed, non-overlapping windows: sequence i is tokens[i*L : i*L + L + 1], whose first
L tokens are the inputs and last L the targets (neighbours share one token). Position p = step*B + j
of the endless stream lies in epoch p // n_seqs, and every epoch is a fresh order of all sequences
keyed by (seed, epoch). Nothing is stateful, so a resumed run needs no replay and "which sequences
did step s see" has an exact answer.

Two orders exist, and a run keeps the one it started with (`data.order` in its config.yaml):

  feistel      (new runs) a keyed bijection of [0, n_seqs) computed per index, so a step costs
               memory and time in proportion to its batch at any corpus size. It is a balanced
               Feistel network over the smallest even number of bits covering n_seqs, whose rounds
               mix the right half with a SplitMix64-style hash keyed by (seed, epoch, round), made
               a bijection of exactly [0, n_seqs) by cycle-walking: re-encrypt until the value
               lands inside (Black & Rogaway, "Ciphers with Arbitrary Finite Domains", CT-RSA
               2002). Levanter's data loader orders its data the same way (levanter.data._prp,
               FeistelPermutation); this implementation is our own, with an exact inverse that
               answers `steps_seen` in O(epochs).
  permutation  (runs made before `data.order` existed) np.random.default_rng([seed, epoch])
               .permutation(n_seqs) per epoch: 8 bytes per sequence, 4 GB at 500M sequences.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from scaling.errors import ConfigError

FEISTEL, PERMUTATION = "feistel", "permutation"
ORDERS = (FEISTEL, PERMUTATION)
NEWEST_ORDER = FEISTEL  # what a new run trains with
UNRECORDED_ORDER = PERMUTATION  # what a run whose config.yaml names no data.order trained with

# Eight rounds. On tiny corpora (2-bit halves, n_seqs <= 16) a Feistel network mixes slowly: with six
# rounds the first two ids of a 5-sequence epoch were far from uniform over seeds (chi-square 257 on
# 19 degrees of freedom, 40000 seeds); with eight, 20 to 50. Each round is a few vector operations.
FEISTEL_ROUNDS = 8
_GAMMA = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, SplitMix64's increment: spreads consecutive inputs
_MASK64 = (1 << 64) - 1
EPOCH_CHUNK = 1 << 16  # steps_seen inverts this many epochs at a time, so its memory stays flat
_ROUND_OFFSETS = np.array([((r + 1) * _GAMMA) & _MASK64 for r in range(FEISTEL_ROUNDS)], np.uint64)[:, None]


def run_order(requested: str | None, started_with: str | None) -> str:
    """The order a run trains with: the one asked for, else the one it started with, else the newest.

    A request that differs from the order a run started with is refused later, by the stored-config check."""
    if requested is not None and requested not in ORDERS:
        raise ConfigError(
            "data.order", f"unknown order {requested!r}", f"use one of {', '.join(ORDERS)} (or leave it unset)"
        )
    return requested or started_with or NEWEST_ORDER


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
    """The `permutation` order of all sequences in one epoch; cached since consecutive steps share an epoch."""
    order = np.random.default_rng([seed, epoch]).permutation(n_seqs)
    order.setflags(write=False)  # shared by every caller through the cache
    return order


def _mix(z_N: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 (wrapping): each input bit flips about half the output bits."""
    z_N = (z_N ^ (z_N >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z_N = (z_N ^ (z_N >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z_N ^ (z_N >> np.uint64(31))


def feistel_keys(seed: int, epoch_N: np.ndarray) -> np.ndarray:
    """(FEISTEL_ROUNDS, N) uint64 round keys of each element's epoch: a hash of (seed, epoch, round)."""
    seed_key = _mix(np.array([seed & _MASK64], np.uint64) + np.uint64(_GAMMA))
    # Seed and epoch are hashed with different offsets: with the same one, (seed a, epoch b) and
    # (seed b, epoch a) would share an order.
    epoch_key_N = _mix(seed_key ^ _mix(np.asarray(epoch_N).astype(np.uint64) + np.uint64(2 * _GAMMA & _MASK64)))
    return _mix(epoch_key_N[None, :] + _ROUND_OFFSETS)


def half_bits(n_seqs: int) -> int:
    """Bits per Feistel half: the smallest h >= 1 with 4^h >= n_seqs, so the network's domain is < 4 n_seqs."""
    return max(1, ((n_seqs - 1).bit_length() + 1) // 2)


def _network(value_N: np.ndarray, keys_RN: np.ndarray, h: int, inverse: bool) -> np.ndarray:
    """One pass of the balanced Feistel network, a bijection of [0, 4^h) for any round function (or its inverse)."""
    shift, mask = np.uint64(h), np.uint64((1 << h) - 1)
    left_N, right_N = value_N >> shift, value_N & mask
    if inverse:  # the rounds backwards: each round's left half is the next round's right half
        for key_N in keys_RN[::-1]:
            left_N, right_N = right_N ^ (_mix(left_N ^ key_N) & mask), left_N
    else:
        for key_N in keys_RN:
            left_N, right_N = right_N, left_N ^ (_mix(right_N ^ key_N) & mask)
    return (left_N << shift) | right_N


def feistel(value_N: np.ndarray, keys_RN: np.ndarray, n_seqs: int, inverse: bool = False) -> np.ndarray:
    """The keyed bijection of [0, n_seqs) (or its inverse) at each value, as int64.

    Cycle-walking: a value the network sends outside [0, n_seqs) is sent through again until it lands
    inside. The walk retraces the network's cycle through the start, so it ends, and the inverse walk
    retraces it backwards to the same start. The domain is under 4 n_seqs, so a walk takes under 4
    passes on average; the loop runs until the batch's longest walk ends, on ever fewer values."""
    h = half_bits(n_seqs)
    out_N = np.asarray(value_N).astype(np.uint64)
    todo_T, walking_T, keys_RT = np.arange(out_N.size), out_N.copy(), keys_RN
    while todo_T.size:
        walking_T = _network(walking_T, keys_RT, h, inverse)
        inside_T = walking_T < np.uint64(n_seqs)
        out_N[todo_T[inside_T]] = walking_T[inside_T]
        outside_T = ~inside_T
        todo_T, walking_T, keys_RT = todo_T[outside_T], walking_T[outside_T], keys_RT[:, outside_T]
    return out_N.astype(np.int64)


@dataclass(frozen=True)
class DataOrder:
    """Which sequences each optimiser step trains on, for one seed and one kind of order."""

    seed: int
    batch_size: int
    n_seqs: int
    kind: str = NEWEST_ORDER  # FEISTEL or PERMUTATION: the run's data.order

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError("train.data_seed", f"{self.seed} is negative", "use a seed >= 0")
        if self.batch_size < 1:
            raise ConfigError("train.batch_size", f"{self.batch_size} is not positive", "use at least 1")
        if self.n_seqs < 1:
            raise ValueError(f"n_seqs={self.n_seqs}: build it from n_sequences(), which explains the fix")
        if self.kind not in ORDERS:
            raise ConfigError("data.order", f"unknown order {self.kind!r}", f"use one of {', '.join(ORDERS)}")

    def indices(self, step: int, steps: int = 1) -> np.ndarray:
        """(steps * batch_size,) int64 sequence ids of steps step..step + steps - 1, one batch after another (a
        batch larger than an epoch may repeat ids). Each id is computed alone, so a block of steps equals its
        steps asked one by one, at a fraction of the cost per step."""
        positions_B = step * self.batch_size + np.arange(steps * self.batch_size, dtype=np.int64)
        epoch_B, offset_B = np.divmod(positions_B, self.n_seqs)
        if self.kind == FEISTEL:
            return feistel(offset_B, feistel_keys(self.seed, epoch_B), self.n_seqs)
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
        steps = [
            self._steps_in(seq, np.arange(start, min(start + EPOCH_CHUNK, n_epochs), dtype=np.int64))
            for start in range(0, n_epochs, EPOCH_CHUNK)
        ]
        steps_E = np.concatenate(steps) if steps else np.zeros(0, np.int64)
        return steps_E[steps_E < n_steps]

    def _steps_in(self, seq: int, epoch_E: np.ndarray) -> np.ndarray:
        """The step at which `seq` comes in each of these epochs (its offset there: the order's inverse)."""
        if self.kind == FEISTEL:
            offset_E = feistel(np.full(epoch_E.size, seq), feistel_keys(self.seed, epoch_E), self.n_seqs, inverse=True)
        else:
            offset_E = np.array(
                [np.flatnonzero(permutation(self.seed, int(e), self.n_seqs) == seq)[0] for e in epoch_E], np.int64
            )
        return (epoch_E * self.n_seqs + offset_E) // self.batch_size

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


def check_ids(windows: np.ndarray, vocab_size: int, source: str, what: str) -> None:
    """Every id read must lie in the vocabulary: a token file replaced under a run otherwise trains on
    garbage and ends in a NaN loss. One pass over the windows, cheap beside a step."""
    high, low = int(windows.max()), int(windows.min())
    if high >= vocab_size or low < 0:
        raise ConfigError(
            "data.path",
            f"{source} holds token id {high if high >= vocab_size else low} in {what}, outside the vocabulary "
            f"0..{vocab_size - 1}: the file changed since the run opened it",
            "restore the file it trained on and relaunch (it is checked again), or start over with overwrite=true",
        )
