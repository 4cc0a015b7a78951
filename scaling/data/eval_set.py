"""The held-out evaluation set: which windows of the validation split every evaluation scores, and how
far its loss can be trusted.

Two kinds exist, and a run keeps the one it started with (`data.eval_set` in its config.yaml), as it
keeps its data order:

  documents  (new runs) windows drawn from every validation document, no document giving more than
             `data.eval_max_doc_share` of them. A document is the text between two end-of-text
             tokens (pystdlib and text pipelines); a pre-tokenised file has no boundaries, so its
             validation tail is cut into TOKEN_FILE_BLOCKS equal blocks standing in for documents.
             Each document gives at most as many windows as the cap allows (water-filling: short ones
             give all they hold, long ones the same share), spread evenly through it, so the loss is
             an average over the corpus's held-out documents, not over its longest file.
  windows    (runs made before `data.eval_set`) `data.eval_tokens` of windows spread evenly over the
             split's tokens: on the 1% split of the standard library, 48% of them came from one file.

A window is seq_len + 1 tokens inside one document (inputs and targets, as in training); documents
shorter than a window give none. Every evaluation returns one loss per window, so the loss comes with
its standard error over documents (`contract.loss_and_se`): how much the mean would move had other documents
been held out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from scaling.config import DataConfig
from scaling.data.order import n_sequences, sequences
from scaling.errors import ConfigError

DOCUMENTS, WINDOWS = "documents", "windows"
EVAL_SETS = (DOCUMENTS, WINDOWS)
NEWEST_EVAL_SET = DOCUMENTS  # what a new run evaluates on
UNRECORDED_EVAL_SET = WINDOWS  # what a run whose config.yaml names no data.eval_set evaluated on
TOKEN_FILE_BLOCKS = 100  # pseudo-documents of a pre-tokenised file's validation split


@dataclass(frozen=True)
class EvalSet:
    """The windows every evaluation scores, and the document each comes from."""

    kind: str
    windows_NxT1: np.ndarray  # (N, seq_len + 1) int32
    document_N: np.ndarray  # (N,) index of each window's document in the validation split
    n_documents: int  # documents in the validation split (including those that gave no window)

    @property
    def documents_used(self) -> int:
        return int(np.unique(self.document_N).size)

    @property
    def largest_share(self) -> float:
        """The share of the windows that the most represented document gives."""
        return float(np.bincount(self.document_N).max() / len(self.document_N))

    def digest(self) -> str:
        """sha256 of the windows' tokens: two runs with the same digest were evaluated on the same set."""
        return hashlib.sha256(np.ascontiguousarray(self.windows_NxT1)).hexdigest()[:16]

    def describe(self) -> dict:
        """What summary.json records about the set."""
        return {
            "eval_set": self.kind,
            "eval_windows": len(self.windows_NxT1),
            "eval_documents": self.documents_used,
            "eval_largest_document_share": round(self.largest_share, 4),
            "eval_digest": self.digest(),
        }


def run_eval_set(requested: str | None, started_with: str | None) -> str:
    """The kind a run evaluates on: the one asked for, else the one it started with, else the newest."""
    if requested is not None and requested not in EVAL_SETS:
        raise ConfigError(
            "data.eval_set", f"unknown kind {requested!r}", f"use one of {', '.join(EVAL_SETS)} (or leave it unset)"
        )
    return requested or started_with or NEWEST_EVAL_SET


def document_bounds(val: np.ndarray, eot_id: int | None) -> np.ndarray:
    """(K + 1,) offsets of the validation split's K documents: each ends after its end-of-text token; a
    split without one (a token file) is cut into TOKEN_FILE_BLOCKS equal blocks."""
    n = len(val)
    if eot_id is None:
        blocks = min(TOKEN_FILE_BLOCKS, n)
        return np.arange(blocks + 1, dtype=np.int64) * n // blocks
    ends = np.flatnonzero(np.asarray(val) == eot_id) + 1
    if not ends.size or ends[-1] != n:  # text after the last end-of-text token is a document too
        ends = np.append(ends, n)
    return np.concatenate([[0], ends]).astype(np.int64)


def capped_counts(available_K: np.ndarray, total: int, cap: int) -> np.ndarray | None:
    """Windows to take from each document: `total` in all, none over `cap` or over what it holds,
    as even as that allows (water-filling); None when the documents cannot give `total` that way."""
    room_K = np.minimum(available_K, cap)
    if room_K.sum() < total:
        return None
    low, high = 0, cap  # the largest per-document count whose water-filled sum stays within the total
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if np.minimum(room_K, middle).sum() <= total else (low, middle - 1)
    level = low
    counts_K = np.minimum(room_K, level)
    short = total - int(counts_K.sum())
    more = np.flatnonzero(room_K > level)  # documents that can give one more window (level < cap there)
    counts_K[more[np.arange(short) * more.size // max(short, 1)]] += 1
    return counts_K


def document_windows(
    val: np.ndarray, bounds: np.ndarray, seq_len: int, n_tokens: int, max_share: float, multiple: int = 1
) -> EvalSet:
    """The `documents` eval set: about `n_tokens` of windows (a multiple of `multiple` of them), no
    document over `max_share` of them; ConfigError naming data.eval_tokens when the split cannot give that."""
    starts_K, lengths_K = bounds[:-1], np.diff(bounds)
    available_K = np.maximum(lengths_K - 1, 0) // seq_len
    total = n_tokens // seq_len // multiple * multiple
    cap = int(max_share * total)
    counts_K = capped_counts(available_K, total, cap) if total >= 1 else None
    if counts_K is None:
        most = _most_tokens(available_K, seq_len, max_share, multiple)
        lower = f"lower data.eval_tokens to {most:,} or less, " if most else ""
        raise ConfigError(
            "data.eval_tokens",
            f"{n_tokens:,} tokens with no document over {max_share:.0%} of them (data.eval_max_doc_share) need more "
            f"than the validation split's {int((available_K > 0).sum())} documents of a {seq_len + 1}-token window "
            f"or more hold ({most:,} tokens at most)",
            f"{lower}raise data.val_fraction, or raise data.eval_max_doc_share",
        )
    pieces, owners = [], []
    for k in np.flatnonzero(counts_K):
        picked = np.arange(counts_K[k]) * available_K[k] // counts_K[k]  # spread evenly through the document
        pieces.append(starts_K[k] + picked * seq_len)
        owners.append(np.full(counts_K[k], k))
    starts_N = np.concatenate(pieces)
    index_NL = starts_N[:, None] + np.arange(seq_len + 1)
    windows = np.asarray(val)[index_NL].astype(np.int32)
    return EvalSet(DOCUMENTS, windows, np.concatenate(owners), len(available_K))


def _most_tokens(available_K: np.ndarray, seq_len: int, max_share: float, multiple: int) -> int:
    """The largest eval set (in tokens) the documents give under the cap, for the error message.

    A total T fits when the documents hold T windows at cap c = floor(share T) each. For each cap c, the
    totals with that cap run from c / share up to just below (c + 1) / share, and at most the documents'
    sum of min(windows, c) of them fit: the largest fitting total is the best over c (a search over T alone
    would miss it: whether T fits is not monotone in T)."""
    best = 0
    for cap in range(1, min(int(available_K.max(initial=0)), int(max_share * available_K.sum())) + 1):
        first = int(np.ceil(cap / max_share - 1e-9))
        last = min(int(np.ceil((cap + 1) / max_share - 1e-9)) - 1, int(np.minimum(available_K, cap).sum()))
        last = last // multiple * multiple
        if last >= first:
            best = max(best, last)
    return best * seq_len


def spread_windows(val: np.ndarray, bounds: np.ndarray, seq_len: int, n_tokens: int) -> EvalSet:
    """The `windows` eval set of runs made before documents: windows spread evenly over the split's
    tokens (about `n_tokens`), each owned by the document it starts in."""
    available = n_sequences(len(val), seq_len)
    count = min(available, max(1, n_tokens // seq_len))
    starts_N = np.arange(count) * available // count * seq_len
    document_N = np.searchsorted(bounds, starts_N, side="right") - 1
    return EvalSet(WINDOWS, sequences(val, starts_N // seq_len, seq_len), document_N, len(bounds) - 1)


def build_eval_set(
    kind: str, val: np.ndarray, eot_id: int | None, seq_len: int, n_tokens: int, max_share: float, multiple: int = 1
) -> EvalSet:
    """The eval set of `kind` (see the module docstring)."""
    bounds = document_bounds(val, eot_id)
    if kind == WINDOWS:
        return spread_windows(val, bounds, seq_len, n_tokens)
    return document_windows(val, bounds, seq_len, n_tokens, max_share, multiple)


def run_eval_windows(data: DataConfig, val: np.ndarray, eot_id: int | None, seq_len: int, batch_size: int) -> EvalSet:
    """A run's eval set: `data.eval_set` (unset: the newest kind), as many windows as whole evaluation
    batches of `batch_size` hold, so that none is dropped when the set is split into batches."""
    kind = run_eval_set(data.eval_set, None)
    multiple = min(batch_size, max(1, data.eval_tokens // seq_len))
    return build_eval_set(kind, val, eot_id, seq_len, data.eval_tokens, data.eval_max_doc_share, multiple)
