"""The data order is a pure function of (seed, step); batches are the windows it names."""

import time

import numpy as np
import pytest

from scaling.data.order import (
    DataOrder,
    eval_set,
    n_sequences,
    permutation,
    sequences,
    warn_if_repeats,
)
from scaling.errors import ConfigError


def stream(order: DataOrder, n_epochs: int) -> np.ndarray:
    """The endless order written out the slow, obvious way: epoch permutations one after another."""
    return np.concatenate([np.random.default_rng([order.seed, e]).permutation(order.n_seqs) for e in range(n_epochs)])


def test_indices_are_a_pure_function_of_seed_and_step():
    order = DataOrder(seed=3, batch_size=8, n_seqs=1000)
    first = [order.indices(step) for step in (0, 7, 500)]
    permutation.cache_clear()
    again = [DataOrder(seed=3, batch_size=8, n_seqs=1000).indices(step) for step in (500, 0, 7)]
    for a, b in zip(first, [again[1], again[2], again[0]]):
        np.testing.assert_array_equal(a, b)
    other_seed = DataOrder(seed=4, batch_size=8, n_seqs=1000).indices(0)
    assert not np.array_equal(first[0], other_seed)
    assert first[0].dtype == np.int64 and first[0].shape == (8,)


def test_one_epoch_covers_every_sequence_exactly_once():
    order = DataOrder(seed=0, batch_size=8, n_seqs=120)
    seen = np.concatenate([order.indices(step) for step in range(120 // 8)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(120))
    assert order.epochs(120 // 8) == 1.0


def test_positions_continue_across_epoch_boundaries():
    order = DataOrder(seed=1, batch_size=7, n_seqs=10)  # 10 % 7 != 0: batches straddle epochs
    expected = stream(order, 8)
    for step in range(10):
        np.testing.assert_array_equal(order.indices(step), expected[step * 7 : step * 7 + 7])
    assert not np.array_equal(permutation(1, 0, 10), permutation(1, 1, 10))


def test_batch_larger_than_an_epoch():
    order = DataOrder(seed=2, batch_size=25, n_seqs=10)
    np.testing.assert_array_equal(order.indices(1), stream(order, 5)[25:50])


def test_steps_seen_agrees_with_indices():
    order = DataOrder(seed=5, batch_size=4, n_seqs=18)
    n_steps = 23  # 92 positions: five whole epochs and part of a sixth
    for seq in range(order.n_seqs):
        # one entry per occurrence: a step straddling two epochs can hold a sequence twice
        brute = [step for step in range(n_steps) for seq_id in order.indices(step) if seq_id == seq]
        np.testing.assert_array_equal(order.steps_seen(seq, n_steps), brute)
    with pytest.raises(ValueError):
        order.steps_seen(18, n_steps)


def test_indices_fast_for_a_million_sequences():
    order = DataOrder(seed=0, batch_size=512, n_seqs=1_000_000)
    order.indices(0)  # builds the epoch's permutation once
    start = time.perf_counter()
    for step in range(1, 201):
        order.indices(step)
    assert time.perf_counter() - start < 0.5


def test_sequences_are_the_fixed_windows():
    tokens = np.arange(101, dtype=np.uint16)
    batch = sequences(tokens, np.array([3, 0]), seq_len=10)
    assert batch.dtype == np.int32 and batch.shape == (2, 11)
    np.testing.assert_array_equal(batch[0], np.arange(30, 41))
    np.testing.assert_array_equal(batch[1], np.arange(0, 11))
    assert n_sequences(len(tokens), 10) == 10  # the last window ends exactly on the last token
    np.testing.assert_array_equal(sequences(tokens, np.array([9]), 10)[0], np.arange(90, 101))
    with pytest.raises(IndexError):
        sequences(tokens, np.array([10]), 10)


def test_sequences_from_a_memmap(tmp_path):
    path = tmp_path / "tokens.bin"
    np.arange(5000, dtype=np.uint16).tofile(path)
    tokens = np.memmap(path, np.uint16, mode="r")
    order = DataOrder(seed=0, batch_size=4, n_seqs=n_sequences(len(tokens), 64))
    batch = sequences(tokens, order.indices(3), 64)
    np.testing.assert_array_equal(batch[:, 0], order.indices(3) * 64)
    np.testing.assert_array_equal(np.diff(batch, axis=1), 1)


def test_too_short_for_one_sequence_names_the_field():
    with pytest.raises(ConfigError, match="model.seq_len"):
        n_sequences(64, seq_len=64)


def test_eval_set_is_fixed_spread_and_capped():
    val = np.arange(1001, dtype=np.uint16)
    small = eval_set(val, seq_len=10, n_tokens=50)
    assert small.shape == (5, 11)
    np.testing.assert_array_equal(small[:, 0], [0, 200, 400, 600, 800])
    np.testing.assert_array_equal(eval_set(val, 10, 50), small)
    assert eval_set(val, 10, n_tokens=10**9).shape == (100, 11)
    assert eval_set(val, 10, n_tokens=1).shape == (1, 11)


def test_warn_if_repeats():
    order = DataOrder(seed=0, batch_size=10, n_seqs=100)
    assert warn_if_repeats(10, order) is None
    assert "1.50 epochs" in warn_if_repeats(15, order)


def test_bad_order_arguments_name_the_field():
    with pytest.raises(ConfigError, match="train.batch_size"):
        DataOrder(seed=0, batch_size=0, n_seqs=10)
    with pytest.raises(ConfigError, match="train.data_seed"):
        DataOrder(seed=-1, batch_size=1, n_seqs=10)
