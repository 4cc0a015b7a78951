"""Which files make up a corpus, what documents each contributes, and which are held out.

A document is held out by a stable hash of its name alone (`is_validation`), so adding or renaming
one file moves no other document between the splits.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scaling.config import DataConfig
from scaling.errors import ConfigError

# site-packages is not the standard library; config-*/ and _sysconfigdata_* hold build-machine paths
# and flags, which would make two installs of the same Python version disagree.
STDLIB_SKIP = ("site-packages", "__pycache__", "config-", "_sysconfigdata_")


@dataclass(frozen=True, order=True)
class Source:
    """One input file: its name inside the corpus (which decides the split) and its stat."""

    relpath: str
    path: str
    size: int
    mtime_ns: int


def is_validation(key: str, fraction: float) -> bool:
    """Whether a document is held out: a stable hash of its name alone, so renaming one moves no other."""
    draw = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return draw < fraction * 2**64


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


def documents(sources: Iterable[Source], cfg: DataConfig) -> Iterator[tuple[str, str]]:
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
        raise ConfigError(
            "data.path", f"{source.path} is not UTF-8 text", "re-encode it or leave it out of the glob"
        ) from None


def _jsonl_documents(source: Source, text: str, field: str) -> Iterator[tuple[str, str]]:
    # split on "\n" only: str.splitlines would also cut at U+2028, which JSON allows inside strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{source.path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(
                "data.path", f"{where} is not valid JSON ({err.msg})", "fix or remove that line"
            ) from None
        value = record.get(field) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise ConfigError(
                "data.jsonl_field", f"{where} has no string field {field!r}", "name the key holding the text"
            )
        if value:
            yield f"{source.relpath}:{number}", value
