"""A user's pre-tokenised ids (nanoGPT .bin or .npy), memory-mapped in place and never copied.

The file is scanned once (smallest and largest id, content hash) and the scan cached by path, size,
modification time and a sampled hash (scaling/data/cache.py), so a multi-gigabyte file is read in full
only on first use, and a file replaced in place with the same size and time is scanned again. What the
sample misses, the windows read do not: every batch's ids are checked against the vocabulary
(scaling/training/runbook.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

from scaling.config import DataConfig
from scaling.data.cache import cache_root, sampled_sha256
from scaling.data.corpus import Corpus, check_fraction, check_vocab
from scaling.errors import ConfigError

SCAN_CHUNK = 1 << 24  # tokens per read when scanning a user's token file, so memory stays flat


def load_tokens(cfg: DataConfig) -> Corpus:
    """Memory-map the user's token file(s); validation is `data.val_path` or the tail of the file."""
    check_vocab(cfg, 2)
    tokens = _open_token_file(cfg.path, cfg.token_dtype, "data.path")
    scans = [_scan_cached(cfg, cfg.path, tokens)]
    if cfg.val_path:
        train, val = tokens, _open_token_file(cfg.val_path, cfg.token_dtype, "data.val_path")
        scans.append(_scan_cached(cfg, cfg.val_path, val))
    else:
        check_fraction(cfg)
        n_val = max(1, round(len(tokens) * cfg.val_fraction))
        train, val = tokens[:-n_val], tokens[-n_val:]  # views: still the user's file, no copy
    for path, scan in zip((cfg.path, cfg.val_path), scans):
        _check_ids(path, scan, cfg.vocab_size)
    return Corpus(
        train=train,
        val=val,
        vocab_size=cfg.vocab_size,
        meta={
            "pipeline": "tokens",
            "source": os.path.abspath(os.path.expanduser(cfg.path)),
            "val_source": cfg.val_path and os.path.abspath(os.path.expanduser(cfg.val_path)),
            "corpus_hash": hashlib.sha256("".join(scan["sha256"] for scan in scans).encode()).hexdigest(),
            "tokenizer_hash": None,
            "n_train_tokens": len(train),
            "n_val_tokens": len(val),
            "vocab_size": cfg.vocab_size,
            "max_token_id": max(scan["max_id"] for scan in scans),
            "dtype": tokens.dtype.name,
            "val_fraction": None if cfg.val_path else cfg.val_fraction,
            "python_version": platform.python_version(),
        },
        tokenizer_path=None,
    )


def _open_token_file(path: str | None, dtype_name: str, field: str) -> np.ndarray:
    """A 1-D integer memmap of a .npy file, or of a raw .bin file of `data.token_dtype`."""
    if not path:
        raise ConfigError(field, "is not set", "data.name=tokens needs a .bin or .npy file of token ids")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(field, f"{path} does not exist", "give the path of a .bin or .npy token file")
    if file.stat().st_size == 0:
        raise ConfigError(field, f"{path} is empty", "give a file holding token ids")
    if file.suffix == ".npy":
        tokens = np.load(file, mmap_mode="r")
    else:
        tokens = np.memmap(file, _raw_dtype(dtype_name, file), mode="r")
    if tokens.ndim != 1 or tokens.dtype.kind not in "iu" or tokens.size < 2:
        raise ConfigError(
            field, f"{path} holds {tokens.dtype} of shape {tokens.shape}", "give a 1-D array of integer token ids"
        )
    return tokens


def _raw_dtype(name: str, file: Path) -> np.dtype:
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = np.dtype(object)  # not a dtype at all: reported below like any non-integer one
    if dtype.kind not in "iu":
        raise ConfigError("data.token_dtype", f"{name!r} is not an integer dtype", "e.g. uint16 or uint32")
    if file.stat().st_size % dtype.itemsize:
        raise ConfigError(
            "data.token_dtype", f"{file} is not a whole number of {name} values", "give the dtype it was written with"
        )
    return dtype


def _check_ids(path: str, scan: dict, vocab_size: int) -> None:
    if scan["max_id"] >= vocab_size:
        raise ConfigError(
            "data.vocab_size",
            f"{vocab_size} but {path} holds token id {scan['max_id']}",
            f"set data.vocab_size to at least {scan['max_id'] + 1}",
        )
    if scan["min_id"] < 0:
        raise ConfigError("data.path", f"{path} holds negative token id {scan['min_id']}", "token ids start at 0")


def _scan_cached(cfg: DataConfig, path: str, tokens: np.ndarray) -> dict:
    """`_scan` once per (path, size, mtime): reading a multi-GB file on every run would cost minutes."""
    file = Path(path).expanduser().resolve()
    stat = file.stat()
    what = [str(file), stat.st_size, stat.st_mtime_ns, sampled_sha256(file)]
    key = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]
    record = cache_root(cfg) / "token-scans" / f"{key}.json"
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):  # not scanned yet, or a damaged record: scan again
        pass
    scan = _scan(tokens)
    record.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=record.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(scan, tmp)
    os.replace(tmp.name, record)  # atomic: a concurrent reader sees the whole record or none
    return scan


def _scan(tokens: np.ndarray) -> dict:
    """Smallest and largest id and a content hash, read in chunks so a large file never sits in memory."""
    digest, low, high = hashlib.sha256(), None, None
    for start in range(0, len(tokens), SCAN_CHUNK):
        chunk = np.ascontiguousarray(tokens[start : start + SCAN_CHUNK])
        digest.update(chunk)
        low = int(chunk.min()) if low is None else min(low, int(chunk.min()))
        high = int(chunk.max()) if high is None else max(high, int(chunk.max()))
    return {"min_id": low, "max_id": high, "n_tokens": len(tokens), "sha256": digest.hexdigest()}
