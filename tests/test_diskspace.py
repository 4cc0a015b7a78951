"""A full disk in any form becomes one DiskFull line naming the path and the bytes; other errors pass."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from scaling.diskspace import failed_path, is_disk_full, reported, require_free
from scaling.errors import DiskFull


def test_real_enospc_from_dev_full_becomes_one_line(tmp_path):
    """/dev/full answers every write with ENOSPC: a real one, no mount needed."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(DiskFull) as error:
        with reported(tmp_path, 12345), open("/dev/full", "w") as f:
            f.write("x")
            f.flush()
    line = error.value.line()  # (a failed flush names no file: the folder being written is named instead)
    assert line.startswith(f"error: disk full: writing {tmp_path} needs about 12,345 bytes and ") and "\n" not in line


def test_orbax_wording_is_recognised_and_names_the_file(tmp_path):
    """TensorStore's error, as Orbax raised it on a full tmpfs (the text of a real failure)."""
    text = (
        'RESOURCE_EXHAUSTED: Error writing local file "/runs/a/checkpoints/4.orbax-checkpoint-tmp/params/_sharding": '
        'Failed writing: "/runs/a/checkpoints/4.orbax-checkpoint-tmp/params/_sharding.__lock": Failed to write 3591 '
        "bytes to file 8: No space left on device [os_error_code='28']"
    )
    try:
        raise RuntimeError("save failed") from ValueError(text)
    except RuntimeError as err:
        assert is_disk_full(err)
        assert failed_path(err) == "/runs/a/checkpoints/4.orbax-checkpoint-tmp/params/_sharding"
        with pytest.raises(DiskFull, match="writing /runs/a/checkpoints/4.orbax-checkpoint-tmp/params/_sharding"):
            with reported(tmp_path, 1):
                raise err


def test_other_errors_pass_unchanged(tmp_path):
    with pytest.raises(PermissionError):
        with reported(tmp_path, 1):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))
    assert not is_disk_full(ValueError("RESOURCE_EXHAUSTED: out of memory"))


def test_free_space_is_checked_before_writing(tmp_path):
    require_free(tmp_path / "not" / "yet" / "made", 1)  # the folder need not exist
    with pytest.raises(DiskFull, match=f"writing {tmp_path} needs about"):
        require_free(tmp_path, 1 << 62)
