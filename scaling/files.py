"""Atomic file writes: a reader (or a process killed mid-write) never sees half a file.

Standard library only, so analysis can write its tables and reports the same way without importing
anything else of the training side.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Call `write(tmp)` on a temporary file in the same folder, then rename it over `path`.

    The temporary file is created private (0600); it gets the permissions an ordinary new file would
    (0666 less the umask) before the rename, so results stay readable by whoever may share them."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def finite_or_none(value: Any) -> Any:
    """NaN and infinity are not JSON: write them as null (in nested dicts and lists)."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON (NaN and infinity as null), which every reader accepts."""
    text = json.dumps(finite_or_none(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_text(path, text + "\n")


def unwritable_reason(folder: Path) -> str | None:
    """Why `folder` could not be created or written (None if it can), without creating anything:
    a bad value must leave the disk as it was."""
    folder = Path(folder).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None
