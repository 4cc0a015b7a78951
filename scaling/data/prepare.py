"""Preparation of a text corpus, done once: byte-level BPE trained on the training documents only,
then every document encoded into train.bin or val.bin, where each training document lies in train.bin
(scaling/data/mix.py), and meta.json describing the result. The cache key (`cache_key`) names everything
that determines the tokens written; a run's training mix (data.exclude) is not among them."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm

from scaling.config import DataConfig
from scaling.data.cache import INDEX_HASHES, file_digests
from scaling.data.corpus import token_dtype
from scaling.data.mix import DOCUMENTS_FILE, write_index
from scaling.data.sources import Source, documents, is_validation
from scaling.errors import ConfigError

FORMAT_VERSION = 1  # bump whenever preparation changes the tokens it writes: it is part of the cache key
EOT = "<|endoftext|>"  # appended to every document; the first special token, so id 0
MIN_TRAINED_VOCAB = 257  # 256 byte tokens + end-of-text
ENCODE_CHUNK_CHARS = 1 << 21  # text per encode_batch call: enough to keep every core busy


def cache_key(cfg: DataConfig, root: Path, sources: list[Source]) -> str:
    """Hash of everything that determines the tokens; file stats stand in for contents so a cache hit reads none."""
    what = {
        "format": FORMAT_VERSION,
        "pipeline": cfg.name,
        "vocab_size": cfg.vocab_size,
        "val_fraction": cfg.val_fraction,
        "jsonl_field": cfg.jsonl_field if cfg.name == "text" else None,
        "python": platform.python_version(),
        "tokenizers": tokenizers.__version__,
        "root": str(root),
        "files": [(source.relpath, source.size, source.mtime_ns) for source in sources],
    }
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:16]


def prepare(cfg: DataConfig, root: Path, sources: list[Source], folder: Path, progress: bool) -> None:
    """Train the tokenizer on the training documents, then tokenize every document into `folder`."""
    start = time.perf_counter()
    counts: Counter = Counter()
    tokenizer = _train_tokenizer(_training_texts(documents(sources, cfg), cfg.val_fraction, counts), cfg, progress)
    _check_documents(cfg, sources, counts)
    if not counts["train"] or not counts["val"]:
        raise ConfigError(
            "data.val_fraction",
            f"{cfg.val_fraction} splits {counts['train'] + counts['val']} documents into "
            f"{counts['train']} for training and {counts['val']} for validation",
            "both splits need whole documents: add files (.jsonl: one per line) or change data.val_fraction",
        )
    tokenizer.save(str(folder / "tokenizer.json"))
    bar = tqdm(
        total=sum(s.size for s in sources),
        unit="B",
        unit_scale=True,
        desc="tokenizing",
        disable=not progress,
        file=sys.stderr,
    )
    with bar:
        stats, index_sha256 = _write_tokens(tokenizer, documents(_tracked(sources, bar), cfg), cfg, folder)
    meta = {
        "pipeline": cfg.name,
        "format_version": FORMAT_VERSION,
        "source": str(root) if cfg.name == "pystdlib" else cfg.path,
        **stats,
        "tokenizer_hash": hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest(),
        "vocab_size": cfg.vocab_size,
        "tokenizer_vocab_size": tokenizer.get_vocab_size(),
        "eot_id": tokenizer.token_to_id(EOT),
        "dtype": token_dtype(cfg.vocab_size).name,
        "val_fraction": cfg.val_fraction,
        "n_files": len(sources),
        "python_version": platform.python_version(),
        "tokenizers_version": tokenizers.__version__,
        "prepare_seconds": round(time.perf_counter() - start, 1),
        "sampled_sha256": file_digests(folder),  # checked on every open (scaling/data/cache.py)
        INDEX_HASHES: {DOCUMENTS_FILE: index_sha256},  # checked when a run reads it
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


def _check_documents(cfg: DataConfig, sources: list[Source], counts: Counter) -> None:
    """Too few documents is the files' fault, not the split's: say so, naming what data.path matched."""
    found = counts["train"] + counts["val"]
    matched = f"{cfg.path!r} matches {len(sources)} file{'s' if len(sources) > 1 else ''}"
    if found == 0:
        raise ConfigError("data.path", f"{matched} but none holds any text", "point it at files with text")
    if found == 1:
        raise ConfigError(
            "data.path",
            f"{matched} holding one document, which cannot be both trained on and held out",
            "add files (.jsonl: one document per line)",
        )


def _training_texts(documents: Iterable[tuple[str, str]], fraction: float, counts: Counter) -> Iterator[str]:
    """Texts of the training documents only (the tokenizer must not see validation), counting both splits."""
    for key, text in documents:
        held_out = is_validation(key, fraction)
        counts["val" if held_out else "train"] += 1
        if not held_out:
            yield text


def _train_tokenizer(texts: Iterable[str], cfg: DataConfig, progress: bool) -> Tokenizer:
    """Byte-level BPE (GPT-2 style): any text encodes, and decoding returns it exactly."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def _tracked(sources: list[Source], bar: tqdm) -> Iterator[Source]:
    for source in sources:
        yield source
        bar.update(source.size)


def _write_tokens(
    tokenizer: Tokenizer, documents: Iterable[tuple[str, str]], cfg: DataConfig, folder: Path
) -> tuple[dict, str]:
    """Encode in parallel batches; append each document and an end-of-text token to train.bin or val.bin, and
    write where each training document ends (DOCUMENTS_FILE). Returns the counts and that file's sha256."""
    dtype = token_dtype(cfg.vocab_size)
    eot = np.array([tokenizer.token_to_id(EOT)], dtype)
    digest = hashlib.sha256()  # of the documents actually used, names included
    counts: Counter = Counter()
    train_keys, train_ends = [], []
    with open(folder / "train.bin", "wb") as train_file, open(folder / "val.bin", "wb") as val_file:
        for chunk in _chunks(documents, ENCODE_CHUNK_CHARS):
            encodings = tokenizer.encode_batch_fast([text for _, text in chunk])
            for (key, text), encoding in zip(chunk, encodings):
                digest.update(f"{key}\0{len(text)}\0{text}".encode())
                split = "val" if is_validation(key, cfg.val_fraction) else "train"
                ids = np.concatenate([np.asarray(encoding.ids, dtype), eot])
                (val_file if split == "val" else train_file).write(ids.tobytes())
                counts[f"n_{split}_docs"] += 1
                counts[f"n_{split}_tokens"] += len(ids)
                if split == "train":
                    train_keys.append(key)
                    train_ends.append(counts["n_train_tokens"])
    stats = {"corpus_hash": digest.hexdigest(), **{name: counts[name] for name in sorted(counts)}}
    return stats, write_index(folder, train_keys, train_ends)


def _chunks(documents: Iterable[tuple[str, str]], chars: int) -> Iterator[list[tuple[str, str]]]:
    chunk, size = [], 0
    for document in documents:
        chunk.append(document)
        size += len(document[1])
        if size >= chars:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
