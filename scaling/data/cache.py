"""The corpus cache: one folder per prepared corpus, created atomically and read by memory-mapping.

A folder only ever appears through a rename of a complete temporary folder, so its existence means
it is whole; concurrent processes preparing the same corpus wait on a file lock and reuse it.
"""

from __future__ import annotations

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
from scaling.runtime import cache_root as default_cache_root


def cache_root(cfg: DataConfig) -> Path:
    """`data.cache_dir`, else $SCALING_CACHE, else ~/.cache/scaling."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_root()


def build_once(folder: Path, build: Callable[[Path], None]) -> None:
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


def open_prepared(folder: Path) -> Corpus:
    meta = json.loads((folder / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    return Corpus(
        train=np.memmap(folder / "train.bin", dtype, mode="r"),
        val=np.memmap(folder / "val.bin", dtype, mode="r"),
        vocab_size=meta["vocab_size"],
        meta=meta,
        tokenizer_path=str(folder / "tokenizer.json"),
    )
