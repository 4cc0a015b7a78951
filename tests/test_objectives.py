"""The families' objectives: BERT's masking and T5's span corruption, their statistics on fixed seeds against
closed forms, sentinel bookkeeping, and purity in (tokens, seed, step)."""

from __future__ import annotations

import dataclasses
from math import comb

import numpy as np
import pytest

from scaling.config import ModelConfig
from scaling.model import objectives as ob

V = 1000
ENCODER = ModelConfig(seq_len=40, family="encoder")
T5 = ModelConfig(seq_len=64, family="encoder_decoder")


def _windows(rows: int, seq_len: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, (rows, seq_len + 1))


def test_counts_and_reserved_ids():
    assert ob.n_masked(ENCODER) == 6  # round(0.15 x 40)
    layout = ob.span_layout(T5)
    assert (layout.noise, layout.spans) == (10, 3)  # round(0.15 x 64) = 10 corrupted, round(10 / 3) = 3 spans
    assert (layout.inputs(64), layout.targets) == (57, 13)
    assert ob.model_vocab(ENCODER, V) == V + 1 and ob.mask_id(V) == V
    assert ob.model_vocab(T5, V) == V + 4 and ob.start_id(T5, V) == V + 3  # sentinels V..V+2, then the start
    assert ob.model_vocab(ModelConfig(), V) == V and ob.batch_width(ModelConfig(seq_len=40)) == 41
    assert ob.batch_width(ENCODER) == 40 + 2 * 6 and ob.batch_width(T5) == 57 + 2 * 13


def test_the_decoder_batch_is_the_windows_themselves():
    windows = _windows(4, 16)
    assert ob.make_batch(ModelConfig(seq_len=16), V, windows, 0, 5) is windows


def test_masking_bookkeeping_and_bert_shares():
    """Every row: m distinct sorted positions, targets the original tokens there, nothing else changed; over
    20,000 rows the replacements are 80% [MASK], 10% random, 10% kept (5 binomial standard errors), and every
    position is picked m/T of the time."""
    rows = 20_000
    windows = _windows(rows, 40, seed=1)
    tokens = windows[:, :40]
    inputs, positions, targets = ob.unpack(ENCODER, ob.make_batch(ENCODER, V, windows, seed=3, step=7))
    m = ob.n_masked(ENCODER)
    assert positions.shape == (rows, m) and (np.diff(positions, axis=1) > 0).all()
    np.testing.assert_array_equal(targets, np.take_along_axis(tokens, positions, axis=1))
    untouched = np.ones_like(tokens, bool)
    np.put_along_axis(untouched, positions, False, axis=1)
    np.testing.assert_array_equal(inputs[untouched], tokens[untouched])
    replaced = np.take_along_axis(inputs, positions, axis=1)
    masked, kept = replaced == V, replaced == targets
    n = rows * m
    shares = {"mask": masked.mean(), "kept": kept.mean(), "random": (~masked & ~kept).mean()}
    expected = {"mask": 0.8, "kept": 0.1 + 0.1 / V, "random": 0.1 * (1 - 1 / V)}
    for name, p in expected.items():
        assert abs(shares[name] - p) < 5 * np.sqrt(p * (1 - p) / n), (name, shares[name])
    assert (replaced[~masked & ~kept] < V).all()  # random tokens come from the corpus vocabulary
    picked = np.bincount(positions.ravel(), minlength=40) / rows
    p = m / 40
    assert np.abs(picked - p).max() < 5 * np.sqrt(p * (1 - p) / rows)


def _restore(inputs: np.ndarray, targets: np.ndarray) -> list[int]:
    """The uncorrupted sequence from one row's encoder inputs and targets: each sentinel k of the inputs
    replaced by the tokens that follow sentinel k in the targets."""
    spans, current = {}, None
    for token in targets:
        if token >= V:
            current = int(token)
            spans[current] = []
        else:
            spans[current].append(int(token))
    out = []
    for token in inputs:
        out += spans[int(token)] if token >= V else [int(token)]
    return out


def test_span_corruption_sentinel_bookkeeping():
    """Sentinels in order 0..S-1 in both streams, clean first and a span last, the decoder fed the targets shifted
    right from the start token, and inputs + targets giving back the original tokens exactly."""
    windows = _windows(500, 64, seed=2)
    inputs, decoder_inputs, targets = ob.unpack(T5, ob.make_batch(T5, V, windows, seed=0, step=3))
    sentinels = [V, V + 1, V + 2]
    for row in range(len(windows)):
        assert [t for t in inputs[row] if t >= V] == sentinels
        assert [t for t in targets[row] if t >= V] == sentinels
        assert targets[row][0] == V and inputs[row][0] < V and inputs[row][-1] == V + 2
        assert decoder_inputs[row][0] == ob.start_id(T5, V)
        np.testing.assert_array_equal(decoder_inputs[row][1:], targets[row][:-1])
        assert _restore(inputs[row], targets[row]) == windows[row, :64].tolist()


def test_span_lengths_follow_the_uniform_composition():
    """T5's segmentation draws n corrupted tokens into S positive spans uniformly over compositions, so the
    first span has length k with probability C(n-k-1, S-2) / C(n-1, S-1): checked by chi-square over 40,000 rows."""
    layout = ob.span_layout(T5)
    n, s, rows = layout.noise, layout.spans, 40_000
    noise = ob.noise_mask(layout, 64, rows, np.random.default_rng(5))
    assert (noise.sum(axis=1) == n).all()
    starts = noise & ~np.concatenate([np.zeros((rows, 1), bool), noise[:, :-1]], axis=1)
    assert (starts.sum(axis=1) == s).all()  # exactly S separate spans: clean stretches between them
    first_start = starts.argmax(axis=1)
    first_len = np.array([np.argmin(np.append(row[i:], False)) for row, i in zip(noise, first_start)])
    ks = np.arange(1, n - s + 2)
    expected = rows * np.array([comb(n - k - 1, s - 2) for k in ks]) / comb(n - 1, s - 1)
    observed = np.bincount(first_len, minlength=ks[-1] + 1)[1:]
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 30, chi2  # 7 degrees of freedom: the 99.99th percentile is 29.9


@pytest.mark.parametrize("cfg", [ENCODER, T5], ids=["encoder", "encoder_decoder"])
def test_objectives_are_pure_functions_of_tokens_seed_and_step(cfg):
    windows = _windows(8, cfg.seq_len, seed=4)
    batch = ob.make_batch(cfg, V, windows, seed=1, step=10)
    np.testing.assert_array_equal(batch, ob.make_batch(cfg, V, windows.copy(), seed=1, step=10))
    assert not np.array_equal(batch, ob.make_batch(cfg, V, windows, seed=1, step=11))
    assert not np.array_equal(batch, ob.make_batch(cfg, V, windows, seed=2, step=10))
    assert batch.dtype == np.int32 and batch.shape == (8, ob.batch_width(cfg))
    np.testing.assert_array_equal(ob.eval_batch(cfg, V, windows), ob.make_batch(cfg, V, windows, ob.EVAL_KEY, 0))


def test_settings_move_the_counts():
    cfg = dataclasses.replace(T5, noise_density=0.3, mean_span=8.0)
    assert ob.span_layout(cfg) == ob.SpanLayout(19, 2)  # round(0.3 x 64) = 19, round(19 / 8) = 2
    assert ob.n_masked(dataclasses.replace(ENCODER, mask_rate=0.5)) == 20
