"""`load_corpus`: the corpus a DataConfig names, from any of the three pipelines.

  pystdlib  the .py files of the running Python's standard library: built in, nothing to download;
  text      a glob of the user's text files (.jsonl: one document per line, `data.jsonl_field`);
  tokens    a user's pre-tokenised .bin/.npy, memory-mapped in place, never copied (nanoGPT style).
pystdlib and text are prepared once into the cache (scaling/data/prepare.py), verified on every open
and memory-mapped; a damaged cache is rebuilt (scaling/data/cache.py). `data.exclude` then leaves
documents out of the training split alone (scaling/data/mix.py).
"""

from __future__ import annotations

import sys
import warnings

from tokenizers import Tokenizer

from scaling import diskspace
from scaling.config import DataConfig
from scaling.data.cache import (
    DamagedCache,
    OutdatedCache,
    build_once,
    cache_root,
    open_prepared,
    rebuild,
)
from scaling.data.corpus import (
    PIPELINES,
    Corpus,
    check_fraction,
    check_vocab,
    token_dtype,
)
from scaling.data.mix import DOCUMENTS_FILE, keep_documents
from scaling.data.prepare import MIN_TRAINED_VOCAB, cache_key, prepare
from scaling.data.sources import stdlib_sources, text_sources
from scaling.data.tokens import load_tokens
from scaling.errors import ConfigError


def load_corpus(cfg: DataConfig, progress: bool = True) -> Corpus:
    """The corpus `cfg` names, preparing and caching it on first use."""
    if cfg.name not in PIPELINES:
        raise ConfigError("data.name", f"unknown pipeline {cfg.name!r}", f"use one of {', '.join(PIPELINES)}")
    if cfg.name == "tokens":
        if cfg.exclude:
            raise ConfigError(
                "data.exclude",
                f"{list(cfg.exclude)} but data=tokens has no documents to exclude",
                "leave data.exclude empty, or prepare the text with data=text and exclude its files",
            )
        return load_tokens(cfg)
    check_vocab(cfg, MIN_TRAINED_VOCAB)
    check_fraction(cfg)
    root, sources = stdlib_sources() if cfg.name == "pystdlib" else text_sources(cfg.path)
    folder = cache_root(cfg) / f"{cfg.name}-v{cfg.vocab_size}-{cache_key(cfg, root, sources)}"
    if progress and not folder.exists():
        print(f"preparing the {cfg.name} corpus in {folder} (once; later runs reuse it)", file=sys.stderr)
    build = lambda tmp: prepare(cfg, root, sources, tmp, progress)  # noqa: E731
    # At most one token per byte of text (byte-level BPE), so this bounds the token files.
    needed = token_dtype(cfg.vocab_size).itemsize * sum(source.size for source in sources)
    required = (DOCUMENTS_FILE,) if cfg.exclude else ()
    with diskspace.reported(folder, needed):
        build_once(folder, build)
        try:
            corpus = open_prepared(folder, required)
        except DamagedCache as err:
            state = "was prepared by an older version" if isinstance(err, OutdatedCache) else "is damaged"
            warnings.warn(f"the corpus cache {folder} {state} ({err}); rebuilding it")
            rebuild(folder, build, str(err), required)
            corpus = open_prepared(folder, required)
    return keep_documents(corpus, cfg.exclude, folder) if cfg.exclude else corpus


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer a prepared corpus was encoded with (`Corpus.tokenizer_path`)."""
    return Tokenizer.from_file(path)
