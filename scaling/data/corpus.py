"""What training receives from any data pipeline: the token ids of both splits and their provenance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scaling.config import DataConfig
from scaling.errors import ConfigError

PIPELINES = ("pystdlib", "text", "tokens")
MAX_VOCAB = 1 << 20


@dataclass(frozen=True, eq=False)
class Corpus:
    """Token ids of both splits (memory-mapped) and where they came from."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    meta: dict
    tokenizer_path: str | None  # None for data.name=tokens


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding every id below `vocab_size`."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def check_vocab(cfg: DataConfig, low: int) -> None:
    if not low <= cfg.vocab_size <= MAX_VOCAB:
        raise ConfigError("data.vocab_size", f"{cfg.vocab_size} is out of range", f"use {low}..{MAX_VOCAB}")


def check_fraction(cfg: DataConfig) -> None:
    if not 0 < cfg.val_fraction < 1:
        raise ConfigError("data.val_fraction", f"{cfg.val_fraction} is not between 0 and 1", "e.g. 0.01")
