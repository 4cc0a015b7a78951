"""The quick suite's schedule: its slowest files are handed out first, so its two workers finish together."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import SLOWEST_FIRST, pytest_collection_modifyitems


def test_the_slowest_files_are_collected_first_and_the_rest_keep_their_order():
    names = ["test_a.py", SLOWEST_FIRST[1], "test_b.py", SLOWEST_FIRST[0], "test_c.py"]
    items = [SimpleNamespace(path=Path("tests") / name) for name in names]
    pytest_collection_modifyitems(None, items)
    assert [item.path.name for item in items] == [*SLOWEST_FIRST[:2], "test_a.py", "test_b.py", "test_c.py"]


def test_pytest_xdist_hands_out_files_in_that_order(pytestconfig):
    """pytest-xdist 3.7+ reorders files by their number of tests unless told not to; the slowest files have
    few tests, so that sent them out last, where one of them ran alone while the other worker idled."""
    if not pytestconfig.pluginmanager.hasplugin("xdist"):
        pytest.skip("pytest-xdist is not loaded (-p no:xdist)")
    assert "--dist loadfile" in " ".join(pytestconfig.getini("addopts"))  # whole files, in collection order
    assert pytestconfig.getoption("loadscopereorder") is False
