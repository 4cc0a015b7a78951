"""A user's token files: memory-mapped in place, scanned once, npy with a separate validation file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scaling.data import tokens
from scaling.data.load import load_corpus
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
