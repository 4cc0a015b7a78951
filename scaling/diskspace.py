"""A full disk said in one line: free space checked before a large write, and "No space left on
device" recognised in whatever form a library raises it (an OSError, or TensorStore's error text
inside Orbax's), so the user reads the path and the bytes needed instead of hundreds of lines."""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scaling.errors import DiskFull

NO_SPACE = "No space left on device"
# TensorStore names the file it failed to write as `local file "PATH"` or `Failed writing: "PATH"`.
TENSORSTORE_PATH = re.compile(r'(?:Failed writing: |local file )"([^"]+)"')


def free_bytes(path: Path) -> int:
    """Bytes free on the filesystem that holds `path` (or would hold it, once created)."""
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    return shutil.disk_usage(existing).free


def require_free(path: Path, needed: int) -> None:
    """Stop before writing `needed` bytes under `path` when they cannot fit: a save that fails half way
    costs nothing (it is atomic) but buries the reason under the library's own errors."""
    free = free_bytes(path)
    if free < needed:
        raise DiskFull(str(path), needed, free)


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__


def is_disk_full(err: BaseException) -> bool:
    """Whether `err`, or anything that caused it, is ENOSPC."""
    return any((isinstance(e, OSError) and e.errno == errno.ENOSPC) or NO_SPACE in str(e) for e in _chain(err))


def failed_path(err: BaseException) -> str | None:
    """The file a disk-full error names, when it names one."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.filename:
            return str(e.filename)
        found = TENSORSTORE_PATH.search(str(e))
        if found:
            return found.group(1)
    return None


@contextmanager
def reported(folder: Path, needed: int) -> Iterator[None]:
    """Turn a full disk met inside the block into one DiskFull line (other errors pass unchanged)."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise DiskFull(failed_path(err) or str(folder), needed, free_bytes(folder)) from None
