"""The training mix: which of a prepared corpus's training documents a run trains on (`data.exclude`).

A data change is a study only when the runs it compares are scored on the same text with the same tokenizer.
So the filter acts after preparation, on the training split alone: the corpus is prepared once, whatever
the filter (the cache key, the tokenizer's training and val.bin never see it), with an index of where each
training document lies in train.bin (DOCUMENTS_FILE). A run that excludes documents trains on the others'
tokens, in the order preparation wrote them: exactly the train.bin that preparing the kept documents with
the same tokenizer would write. The validation split, and so the evaluation set, are untouched.

The kept tokens are gathered into memory (one copy of them per process); the token files stay memory-mapped.
A run's corpus_hash names its training mix: that of the prepared corpus when nothing is excluded, else a hash
of it and of the excluded documents' names (the prepared corpus's stays in meta as prepared_corpus_hash).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from pathlib import Path

import numpy as np

from scaling.data.corpus import Corpus
from scaling.errors import ConfigError

DOCUMENTS_FILE = "train_documents.json"  # {"keys": [name, ...], "ends": [token offset in train.bin, ...]}


def write_index(folder: Path, keys: list[str], ends: list[int]) -> str:
    """Write the training documents' names and end offsets (in train.bin order); returns the file's sha256."""
    text = json.dumps({"keys": keys, "ends": ends})
    (folder / DOCUMENTS_FILE).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def read_index(folder: Path) -> tuple[list[str], np.ndarray]:
    """(names, (K,) end offsets) of the training documents (the cache has checked the file's sha256)."""
    index = json.loads((folder / DOCUMENTS_FILE).read_text())
    return index["keys"], np.asarray(index["ends"], dtype=np.int64)


def excluded(keys: list[str], patterns: list[str]) -> np.ndarray:
    """(K,) bool: which documents some pattern matches (fnmatch on the whole name; '*' crosses '/')."""
    return np.array([any(fnmatch.fnmatchcase(key, p) for p in patterns) for key in keys], dtype=bool)


def check_patterns(keys: list[str], patterns: list[str]) -> None:
    """A pattern that matches no training document (a typo, or only held-out ones), or patterns that leave
    none, is refused: naming data.exclude, the value and what names look like."""
    example = f"names look like {keys[0]!r}" if keys else "the corpus has no training documents"
    for pattern in patterns:
        if not excluded(keys, [pattern]).any():
            raise ConfigError(
                "data.exclude",
                f"{pattern!r} matches none of the {len(keys)} training documents",
                f"give fnmatch patterns over a document's name inside the corpus ({example}); "
                "validation documents are never excluded",
            )
    if excluded(keys, patterns).all():
        raise ConfigError(
            "data.exclude",
            f"{list(patterns)} leaves none of the {len(keys)} training documents",
            "exclude fewer documents: training needs some",
        )


def keep_documents(corpus: Corpus, patterns: list[str], folder: Path) -> Corpus:
    """The corpus with the training documents `patterns` match left out of its training split."""
    keys, ends_K = read_index(folder)
    patterns = list(patterns)
    check_patterns(keys, patterns)
    dropped_K = excluded(keys, patterns)
    lengths_K = np.diff(ends_K, prepend=0)
    train = np.asarray(corpus.train)[np.repeat(~dropped_K, lengths_K)]
    names = [key for key, drop in zip(keys, dropped_K) if drop]
    prepared = corpus.meta["corpus_hash"]
    meta = {
        **corpus.meta,
        "corpus_hash": hashlib.sha256(json.dumps([prepared, names]).encode()).hexdigest(),
        "prepared_corpus_hash": prepared,
        "exclude": patterns,
        "n_excluded_docs": len(names),
        "n_excluded_tokens": int(lengths_K[dropped_K].sum()),
        "n_train_docs": int((~dropped_K).sum()),
        "n_train_tokens": len(train),
    }
    return dataclasses.replace(corpus, train=train, meta=meta)
