"""Corpus preparation and loading: documents -> byte-level BPE -> one flat token array per split.

Three pipelines, picked by `data.name`:
  pystdlib  the .py files of the running Python's standard library: built in, nothing to download;
  text      a glob of the user's text files (.jsonl: one document per line, `data.jsonl_field`);
  tokens    a user's pre-tokenised .bin/.npy, memory-mapped in place, never copied (nanoGPT style).
pystdlib and text hold out whole documents by a hash of their name, train the tokenizer on the
training documents only, and write the tokens once into a cache folder keyed by everything that
determines them; later runs memory-map two files and read nothing else.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tokenizers
from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tqdm import tqdm

from scaling import provenance
from scaling.config import DataConfig
from scaling.errors import ConfigError

FORMAT_VERSION = 1  # bump whenever preparation changes the tokens it writes: it is part of the cache key
EOT = "<|endoftext|>"  # appended to every document; the first special token, so id 0
PIPELINES = ("pystdlib", "text", "tokens")
MIN_TRAINED_VOCAB = 257  # 256 byte tokens + end-of-text
MAX_VOCAB = 1 << 20
ENCODE_CHUNK_CHARS = 1 << 21  # text per encode_batch call: enough to keep every core busy
SCAN_CHUNK = 1 << 24  # tokens per read when scanning a user's token file, so memory stays flat
# site-packages is not the standard library; config-*/ and _sysconfigdata_* hold build-machine paths
# and flags, which would make two installs of the same Python version disagree.
STDLIB_SKIP = ("site-packages", "__pycache__", "config-", "_sysconfigdata_")


@dataclass(frozen=True, eq=False)
class Corpus:
    """Token ids of both splits (memory-mapped) and where they came from."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    meta: dict
    tokenizer_path: str | None  # None for data.name=tokens


@dataclass(frozen=True, order=True)
class Source:
    """One input file: its name inside the corpus (which decides the split) and its stat."""

    relpath: str
    path: str
    size: int
    mtime_ns: int


def load_corpus(cfg: DataConfig, progress: bool = True) -> Corpus:
    """The corpus `cfg` names, preparing and caching it on first use."""
    if cfg.name not in PIPELINES:
        raise ConfigError("data.name", f"unknown pipeline {cfg.name!r}", f"use one of {', '.join(PIPELINES)}")
    if cfg.name == "tokens":
        return _load_tokens(cfg)
    _check_vocab(cfg, MIN_TRAINED_VOCAB)
    _check_fraction(cfg)
    root, sources = stdlib_sources() if cfg.name == "pystdlib" else text_sources(cfg.path)
    folder = cache_root(cfg) / f"{cfg.name}-v{cfg.vocab_size}-{_cache_key(cfg, root, sources)}"
    if progress and not folder.exists():
        print(f"preparing the {cfg.name} corpus in {folder} (once; later runs reuse it)", file=sys.stderr)
    _build_once(folder, lambda tmp: _prepare(cfg, root, sources, tmp, progress))
    return _open_prepared(folder)


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer a prepared corpus was encoded with (`Corpus.tokenizer_path`)."""
    return Tokenizer.from_file(path)


def cache_root(cfg: DataConfig) -> Path:
    """`data.cache_dir`, else $SCALING_CACHE, else ~/.cache/scaling."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else provenance.cache_root()


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding every id below `vocab_size`."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def is_validation(key: str, fraction: float) -> bool:
    """Whether a document is held out: a stable hash of its name alone, so renaming one moves no other."""
    draw = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return draw < fraction * 2**64


def _check_vocab(cfg: DataConfig, low: int) -> None:
    if not low <= cfg.vocab_size <= MAX_VOCAB:
        raise ConfigError("data.vocab_size", f"{cfg.vocab_size} is out of range", f"use {low}..{MAX_VOCAB}")


def _check_fraction(cfg: DataConfig) -> None:
    if not 0 < cfg.val_fraction < 1:
        raise ConfigError("data.val_fraction", f"{cfg.val_fraction} is not between 0 and 1", "e.g. 0.01")


# ---- sources: which files make up the corpus ----


def stdlib_sources() -> tuple[Path, list[Source]]:
    """The standard library's .py files, sorted by path relative to its root."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [name for name in subfolders if not name.startswith(STDLIB_SKIP)]
        found += [Path(folder, name) for name in names if name.endswith(".py") and not name.startswith(STDLIB_SKIP)]
    return root, sorted(_source(root, path) for path in found)


def text_sources(pattern: str | None) -> tuple[Path, list[Source]]:
    """The files `data.path` matches, named relative to the folder before its first wildcard."""
    if not pattern:
        raise ConfigError("data.path", "is not set", "data.name=text needs a glob of files, e.g. data/**/*.txt")
    pattern = os.path.expanduser(pattern)
    paths = [path for path in glob.glob(pattern, recursive=True) if os.path.isfile(path)]
    if not paths:
        raise ConfigError("data.path", f"{pattern!r} matches no files", "give a glob of files, e.g. data/**/*.txt")
    root = Path(os.path.abspath(_glob_root(pattern)))
    return root, sorted(_source(root, Path(os.path.abspath(path))) for path in paths)


def _glob_root(pattern: str) -> str:
    """The folder before the first wildcard: names relative to it survive moving the whole corpus."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if any(char in part for char in "*?["):
            break
        fixed.append(part)
    if len(fixed) == len(parts):  # no wildcard: a single file, named relative to its folder
        fixed = fixed[:-1]
    return os.path.join(*fixed) if fixed else "."


def _source(root: Path, path: Path) -> Source:
    stat = path.stat()
    return Source(path.relative_to(root).as_posix(), str(path), stat.st_size, stat.st_mtime_ns)


def _cache_key(cfg: DataConfig, root: Path, sources: list[Source]) -> str:
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


# ---- documents: what each file contributes ----


def _documents(sources: Iterable[Source], cfg: DataConfig) -> Iterator[tuple[str, str]]:
    """(key, text) of every non-empty document; the key alone decides train or validation."""
    for source in sources:
        text = _read_text(source, cfg)
        if text and source.relpath.endswith(".jsonl"):
            yield from _jsonl_documents(source, text, cfg.jsonl_field)
        elif text:
            yield source.relpath, text


def _read_text(source: Source, cfg: DataConfig) -> str | None:
    """The file's text, bytes decoded as-is (no newline translation) so decoding restores it exactly."""
    try:
        return Path(source.path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        if cfg.name == "pystdlib":  # a few test modules are deliberately in other encodings
            return None
        raise ConfigError("data.path", f"{source.path} is not UTF-8 text", "re-encode it or leave it out of the glob")


def _jsonl_documents(source: Source, text: str, field: str) -> Iterator[tuple[str, str]]:
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON allows inside strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{source.path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError("data.path", f"{where} is not valid JSON ({err.msg})", "fix or remove that line")
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise ConfigError("data.jsonl_field", f"{where} has no string field {field!r}", "name the key holding the text")
        if value:
            yield f"{source.relpath}:{number}", value


# ---- preparation: tokenizer, tokens, metadata, written once ----


def _build_once(folder: Path, build: Callable[[Path], None]) -> None:
    """Create `folder` with `build` unless it exists; concurrent callers wait and then reuse it."""
    if folder.exists():  # complete by construction: it only ever appears through the rename below
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if folder.exists():
            return
        for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by a killed process; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            build(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; a cache folder may be shared like any other
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _prepare(cfg: DataConfig, root: Path, sources: list[Source], folder: Path, progress: bool) -> None:
    """Train the tokenizer on the training documents, then tokenize every document into `folder`."""
    start = time.perf_counter()
    counts: Counter = Counter()
    tokenizer = _train_tokenizer(_training_texts(_documents(sources, cfg), cfg.val_fraction, counts), cfg, progress)
    if not counts["train"] or not counts["val"]:
        raise ConfigError(
            "data.val_fraction",
            f"{cfg.val_fraction} splits {counts['train'] + counts['val']} documents into "
            f"{counts['train']} for training and {counts['val']} for validation",
            "both splits need whole documents: add files (.jsonl: one per line) or change data.val_fraction",
        )
    tokenizer.save(str(folder / "tokenizer.json"))
    bar = tqdm(total=sum(s.size for s in sources), unit="B", unit_scale=True, desc="tokenizing",
               disable=not progress, file=sys.stderr)
    with bar:
        stats = _write_tokens(tokenizer, _documents(_tracked(sources, bar), cfg), cfg, folder)
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
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


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


def _write_tokens(tokenizer: Tokenizer, documents: Iterable[tuple[str, str]], cfg: DataConfig, folder: Path) -> dict:
    """Encode in parallel batches; append each document and an end-of-text token to train.bin or val.bin."""
    dtype = token_dtype(cfg.vocab_size)
    eot = np.array([tokenizer.token_to_id(EOT)], dtype)
    digest = hashlib.sha256()  # of the documents actually used, names included
    counts: Counter = Counter()
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
    return {"corpus_hash": digest.hexdigest(), **{name: counts[name] for name in sorted(counts)}}


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


def _open_prepared(folder: Path) -> Corpus:
    meta = json.loads((folder / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    return Corpus(
        train=np.memmap(folder / "train.bin", dtype, mode="r"),
        val=np.memmap(folder / "val.bin", dtype, mode="r"),
        vocab_size=meta["vocab_size"],
        meta=meta,
        tokenizer_path=str(folder / "tokenizer.json"),
    )


# ---- tokens: the user's own token file, used in place ----


def _load_tokens(cfg: DataConfig) -> Corpus:
    """Memory-map the user's token file(s); validation is `data.val_path` or the tail of the file."""
    _check_vocab(cfg, 2)
    tokens = _open_token_file(cfg.path, cfg.token_dtype, "data.path")
    scans = [_scan_cached(cfg, cfg.path, tokens)]
    if cfg.val_path:
        train, val = tokens, _open_token_file(cfg.val_path, cfg.token_dtype, "data.val_path")
        scans.append(_scan_cached(cfg, cfg.val_path, val))
    else:
        _check_fraction(cfg)
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
        raise ConfigError(field, f"{path} holds {tokens.dtype} of shape {tokens.shape}", "give a 1-D array of integer token ids")
    return tokens


def _raw_dtype(name: str, file: Path) -> np.dtype:
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = np.dtype(object)  # not a dtype at all: reported below like any non-integer one
    if dtype.kind not in "iu":
        raise ConfigError("data.token_dtype", f"{name!r} is not an integer dtype", "e.g. uint16 or uint32")
    if file.stat().st_size % dtype.itemsize:
        raise ConfigError("data.token_dtype", f"{file} is not a whole number of {name} values", "give the dtype it was written with")
    return dtype


def _check_ids(path: str, scan: dict, vocab_size: int) -> None:
    if scan["max_id"] >= vocab_size:
        raise ConfigError("data.vocab_size", f"{vocab_size} but {path} holds token id {scan['max_id']}",
                          f"set data.vocab_size to at least {scan['max_id'] + 1}")
    if scan["min_id"] < 0:
        raise ConfigError("data.path", f"{path} holds negative token id {scan['min_id']}", "token ids start at 0")


def _scan_cached(cfg: DataConfig, path: str, tokens: np.ndarray) -> dict:
    """`_scan` once per (path, size, mtime): reading a multi-GB file on every run would cost minutes."""
    file = Path(path).expanduser().resolve()
    stat = file.stat()
    key = hashlib.sha256(json.dumps([str(file), stat.st_size, stat.st_mtime_ns]).encode()).hexdigest()[:16]
    record = cache_root(cfg) / "token-scans" / f"{key}.json"
    if record.exists():
        return json.loads(record.read_text())
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
