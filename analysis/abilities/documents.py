"""The held-out documents a run never trained on, tokenized as training tokenized them.

Tasks are cut from these documents in their own tokenization (the ids training would have seen
had they not been held out), so an answer's tokens are exactly the ones the model learned to
predict in text like it; nothing is re-tokenized at a seam where the prompt meets the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from analysis.failures import InputError
from scaling.config import DataConfig
from scaling.data.sources import documents, is_validation, stdlib_sources, text_sources

TEXT_PIPELINES = ("pystdlib", "text")


@dataclass(frozen=True, eq=False)
class Document:
    """A held-out document: its text, token ids, and which token starts or ends at each character."""

    key: str
    text: str
    ids: np.ndarray
    offsets: tuple[tuple[int, int], ...]
    starts: dict[int, int]  # character offset -> index of the token that starts there
    ends: dict[int, int]  # character offset -> index of the token that ends there

    def span(self, a: int, b: int) -> tuple[int, int] | None:
        """Token indices [i, k) covering exactly characters [a, b), or None if a token crosses a or b."""
        i, last = self.starts.get(a), self.ends.get(b)
        return None if i is None or last is None or last < i else (i, last + 1)


def heldout_texts(cfg: DataConfig) -> list[tuple[str, str]]:
    """(key, text) of the documents `is_validation` holds out of the corpus a DataConfig names."""
    if cfg.name not in TEXT_PIPELINES:
        raise InputError(
            f"data.name: the runs were trained on data={cfg.name}, which has no text; the task suite is "
            f"cut from held-out text, so it needs runs trained on data=pystdlib or data=text"
        )
    _, sources = stdlib_sources() if cfg.name == "pystdlib" else text_sources(cfg.path)
    # A file's name decides its split, except .jsonl, whose lines are documents split one by one.
    wanted = [s for s in sources if s.relpath.endswith(".jsonl") or is_validation(s.relpath, cfg.val_fraction)]
    return [(key, text) for key, text in documents(wanted, cfg) if is_validation(key, cfg.val_fraction)]


def tokenize(texts: list[tuple[str, str]], tokenizer: Tokenizer) -> list[Document]:
    """Encode every document once, keeping character offsets so tasks can cut at token boundaries."""
    encodings = tokenizer.encode_batch([text for _, text in texts])
    docs = []
    for (key, text), encoding in zip(texts, encodings):
        offsets = tuple(encoding.offsets)
        starts, ends = {}, {}
        for index, (a, b) in enumerate(offsets):
            starts.setdefault(a, index)  # a multi-byte character split over tokens: its first token
            ends[b] = index
        docs.append(Document(key, text, np.asarray(encoding.ids, np.int32), offsets, starts, ends))
    return docs
