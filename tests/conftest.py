"""Shared fixtures: a tiny text corpus in a private cache. The tests keep everything else they cache (the
embedded corpus, compiled programs, W&B's logs) in a folder of their own, so they never touch the user's."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest

from scaling.runtime import CACHE_MIN_COMPILE_ENV, cache_root, initialize

# The tests' own cache, beside the user's (~/.cache/scaling/tests, or under $SCALING_CACHE): it persists
# between test runs, which is what makes a second run fast, and deleting it loses nothing of the user's.
TESTS_CACHE = "tests"
WANDB_FOLDERS = ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR")


def pytest_configure(config):
    """The test process is an entry point like any command: set it up as the commands do, before JAX
    starts its backend, so that runs trained in-process match runs trained by the CLI bit for bit."""
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    # Every command the tests launch inherits this, so they too cache in the tests' folder; so do the xdist
    # workers, which run this again and must not nest a second folder.
    if cache_root().name != TESTS_CACHE:
        os.environ["SCALING_CACHE"] = str(cache_root() / TESTS_CACHE)
    # W&B's offline runs would write debug logs and settings into the user's ~/.cache/wandb and ~/.config/wandb.
    for name in WANDB_FOLDERS:
        os.environ[name] = str(cache_root() / "wandb" / name.lower())
    # Cache every compiled program, however quick to compile, for this process and the commands the tests
    # launch: compiling the many small programs again was about 40% of a test file's time (benchmarks/RESULTS.md).
    os.environ.setdefault(CACHE_MIN_COMPILE_ENV, "0")
    initialize()


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory) -> Path:
    """About 40 real Python files (five stdlib packages) as a `data=text` corpus."""
    root = tmp_path_factory.mktemp("corpus")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for package in ("email", "json", "http", "logging", "urllib", "asyncio", "concurrent/futures", "importlib"):
        for path in sorted((stdlib / package).glob("*.py")):
            (root / f"{package.replace('/', '_')}_{path.name}.txt").write_text(path.read_text())
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_overrides(tiny_corpus_dir, cache_dir) -> list[str]:
    """Overrides for a run that trains in seconds on the tiny corpus."""
    return [
        "data=text",
        f"data.path={tiny_corpus_dir}/*.txt",
        "data.vocab_size=300",
        "data.val_fraction=0.3",
        "data.eval_tokens=2048",
        # The tiny corpus holds out about 25 documents: at the sweeps' context of 64, 2,048 tokens need 32
        # windows, more than 25 documents give under the default cap of 5% each.
        "data.eval_max_doc_share=0.1",
        f"data.cache_dir={cache_dir}",
        "model.d_model=32",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.seq_len=32",
        "train.batch_size=8",
        "train.lr=3e-3",
        "progress=false",
    ]
