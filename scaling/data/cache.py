"""The corpus cache: one folder per prepared corpus, created atomically, verified on every open, and
read by memory-mapping.

A folder only ever appears through a rename of a complete temporary folder, so its existence means
it was whole; concurrent processes preparing the same corpus wait on a file lock and reuse it. Files
can still be damaged later (a disk error, a copy cut short, a stray `truncate`), and a damaged cache
would train on the wrong tokens while recording the corpus hash of the right ones, so every open
checks (`verify`): meta.json parses; train.bin and val.bin hold exactly the token counts meta.json
states (odd or empty files included); tokenizer.json has its recorded sha256; and each .bin's
`sampled_sha256` matches. The sampled hash reads SAMPLE_BLOCKS blocks of SAMPLE_BLOCK bytes spread
evenly over the file (the first and last included; files up to 4 MiB whole), so it costs at most
4 MiB of reading per file whatever the corpus size (milliseconds from the page cache). It catches a
truncated, replaced or zero-filled file; a flipped byte between the sampled blocks escapes it,
which a full hash would catch only by reading the whole corpus on every launch. Files only some runs
read (the training documents' index, scaling/data/mix.py) are checked in full, against the sha256
meta.json records, when a run asks for them (`required`). A damaged cache, or one prepared before such a
file existed (`OutdatedCache`), is rebuilt under the lock (`rebuild`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock

from scaling.config import DataConfig
from scaling.data.corpus import Corpus
from scaling.errors import ConfigError
from scaling.files import write_json
from scaling.runtime import cache_root as default_cache_root

SAMPLE_BLOCKS, SAMPLE_BLOCK = 64, 1 << 16
TOKEN_FILES = {"train.bin": "n_train_tokens", "val.bin": "n_val_tokens"}
INDEX_HASHES = "index_sha256"  # meta.json: {file name: sha256} of the files `required` may name


class DamagedCache(Exception):
    """A prepared corpus whose files do not match their metadata."""


class OutdatedCache(DamagedCache):
    """A prepared corpus that lacks a file a run needs: it was prepared before that file was written."""


def cache_root(cfg: DataConfig) -> Path:
    """`data.cache_dir`, else $SCALING_CACHE, else ~/.cache/scaling."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_root()


def sampled_sha256(path: Path) -> str:
    """sha256 of a file's size and SAMPLE_BLOCKS evenly spread blocks (the whole file when small)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    whole = size <= SAMPLE_BLOCKS * SAMPLE_BLOCK
    offsets = [0] if whole else [(size - SAMPLE_BLOCK) * i // (SAMPLE_BLOCKS - 1) for i in range(SAMPLE_BLOCKS)]
    with open(path, "rb") as f:
        for offset in offsets:
            f.seek(offset)
            digest.update(f.read(size if whole else SAMPLE_BLOCK))
    return digest.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """What preparation records in meta.json for `verify`: each token file's sampled hash."""
    return {name: sampled_sha256(folder / name) for name in TOKEN_FILES}


def verify(folder: Path, required: tuple[str, ...] = ()) -> dict:
    """meta.json of a prepared corpus, after checking its files (and the `required` ones) against it;
    DamagedCache otherwise."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        itemsize = np.dtype(meta["dtype"]).itemsize
        for name, count in TOKEN_FILES.items():
            size, expected = (folder / name).stat().st_size, meta[count] * itemsize
            if size != expected:
                raise DamagedCache(f"{name} holds {size:,} bytes, meta.json says {expected:,}")
        tokenizer = hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest()
    except (OSError, ValueError, KeyError, TypeError) as err:  # missing or unparsable files
        raise DamagedCache(f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}") from err
    if tokenizer != meta["tokenizer_hash"]:
        raise DamagedCache("tokenizer.json does not have the sha256 meta.json records")
    recorded = meta.get("sampled_sha256")
    if recorded is not None and recorded != file_digests(folder):
        raise DamagedCache("the sampled sha256 of its token files differs from the one recorded at preparation")
    _check_required(folder, meta, required)
    return meta


def _check_required(folder: Path, meta: dict, required: tuple[str, ...]) -> None:
    recorded = meta.get(INDEX_HASHES) or {}
    for name in required:
        if name not in recorded:
            raise OutdatedCache(f"it has no {name}, which preparation writes since data.exclude exists")
        try:
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        except OSError as err:
            raise DamagedCache(f"{name} cannot be read ({err.strerror})") from err
        if digest != recorded[name]:
            raise DamagedCache(f"{name} does not have the sha256 meta.json records")


def build_once(folder: Path, build: Callable[[Path], None]) -> None:
    """Create `folder` with `build` unless it exists; concurrent callers wait and then reuse it."""
    if folder.exists():  # complete by construction: it only ever appears through the rename below
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{folder}.lock"):
        if not folder.exists():
            _build(folder, build)


def rebuild(folder: Path, build: Callable[[Path], None], damage: str, required: tuple[str, ...] = ()) -> None:
    """Replace a damaged corpus folder under the lock (unless another process already did)."""
    try:
        with FileLock(f"{folder}.lock"):
            try:
                verify(folder, required)
                return  # rebuilt by another process while this one waited
            except DamagedCache:
                shutil.rmtree(folder)  # (a process that mapped the old files keeps reading them)
            _build(folder, build)
    except PermissionError as err:
        raise ConfigError(
            "data.cache_dir",
            f"the corpus cache {folder} is damaged ({damage}) and cannot be rebuilt here ({err.strerror})",
            "delete that folder, or point data.cache_dir at a writable one",
        ) from err


def _build(folder: Path, build: Callable[[Path], None]) -> None:
    """Build into a temporary folder and rename it into place (the caller holds the lock)."""
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


def record_digests(folder: Path, meta: dict) -> dict:
    """A cache prepared before sampled hashes existed: record them now (its sizes were just checked)."""
    with FileLock(f"{folder}.lock"):
        meta = {**meta, "sampled_sha256": file_digests(folder)}
        write_json(folder / "meta.json", meta)
    return meta


def open_prepared(folder: Path, required: tuple[str, ...] = ()) -> Corpus:
    """Memory-map a verified corpus folder (DamagedCache if it does not verify)."""
    meta = verify(folder, required)
    if "sampled_sha256" not in meta:
        meta = record_digests(folder, meta)
    dtype = np.dtype(meta["dtype"])
    return Corpus(
        train=np.memmap(folder / "train.bin", dtype, mode="r"),
        val=np.memmap(folder / "val.bin", dtype, mode="r"),
        vocab_size=meta["vocab_size"],
        meta=meta,
        tokenizer_path=str(folder / "tokenizer.json"),
    )
