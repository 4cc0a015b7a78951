"""A user's token files: memory-mapped in place, scanned once, npy with a separate validation file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from scaling.data import tokens
from scaling.data.load import load_corpus
from scaling.data.order import check_ids
from scaling.errors import ConfigError
from tests.test_data_load import tokens_config


def test_tokens_bin_is_used_in_place(tmp_path, monkeypatch):
    ids = np.random.default_rng(0).integers(0, 1000, 10_000).astype(np.uint16)
    ids.tofile(tmp_path / "train.bin")
    prepared = load_corpus(tokens_config(tmp_path, path=str(tmp_path / "train.bin"), val_fraction=0.1))
    assert Path(prepared.train.filename) == tmp_path / "train.bin" and prepared.tokenizer_path is None
    np.testing.assert_array_equal(prepared.train, ids[:9000])  # the tail is held out
    np.testing.assert_array_equal(prepared.val, ids[9000:])
    assert prepared.meta["max_token_id"] == ids.max() and prepared.meta["n_val_tokens"] == 1000
    monkeypatch.setattr(tokens, "_scan", lambda tokens: pytest.fail("rescanned an unchanged file"))
    assert (
        load_corpus(tokens_config(tmp_path, path=str(tmp_path / "train.bin"), val_fraction=0.1)).meta == prepared.meta
    )


def test_tokens_npy_with_val_path(tmp_path):
    np.save(tmp_path / "train.npy", np.arange(5000, dtype=np.uint32) % 70_000)
    np.save(tmp_path / "val.npy", np.arange(300, dtype=np.int32))
    cfg = tokens_config(
        tmp_path, path=str(tmp_path / "train.npy"), val_path=str(tmp_path / "val.npy"), vocab_size=70_000
    )
    prepared = load_corpus(cfg)
    assert isinstance(prepared.train, np.memmap) and len(prepared.train) == 5000 and len(prepared.val) == 300
    assert prepared.train.dtype == np.uint32 and prepared.meta["max_token_id"] == 4999


def test_a_file_replaced_in_place_with_the_same_size_and_time_is_scanned_again(tmp_path):
    path = tmp_path / "train.bin"
    np.random.default_rng(0).integers(0, 1000, 10_000).astype(np.uint16).tofile(path)
    cfg = tokens_config(tmp_path, path=str(path), val_fraction=0.1, vocab_size=1000)
    first = load_corpus(cfg)
    stat = path.stat()
    np.random.default_rng(1).integers(1000, 60_000, 10_000).astype(np.uint16).tofile(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # what `cp -p` or a restore from backup leaves
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    with pytest.raises(ConfigError, match=f"data.vocab_size: 1000 but {path} holds token id"):
        load_corpus(cfg)
    assert first.meta["max_token_id"] < 1000


def test_ids_outside_the_vocabulary_in_a_window_read_stop_the_run_naming_the_file():
    """What the sampled hash misses (a change between its blocks) the windows read catch, step by step."""
    windows = np.array([[1, 2, 3], [4, 5, 70_000]])
    with pytest.raises(ConfigError, match="data.path: /data/train.bin holds token id 70000 in the batch of step 7"):
        check_ids(windows, 1000, "/data/train.bin", "the batch of step 7")
    check_ids(windows[:1], 1000, "/data/train.bin", "the batch of step 7")
