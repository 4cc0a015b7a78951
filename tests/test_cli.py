"""Bad input: one line naming the field, exit status 2, no traceback, the run directory untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from scaling.runtime import cache_min_compile_s, cache_root
from tests.conftest import TESTS_CACHE, WANDB_FOLDERS
from tests.helpers import run_cli, run_in_process, tree_digest


@pytest.fixture(scope="module")
def existing_run(tmp_path_factory, tiny_overrides) -> Path:
    """A completed run whose folder every bad launch below must leave byte-for-byte unchanged."""
    run_dir = tmp_path_factory.mktemp("existing")
    result = run_cli([f"run_dir={run_dir}", *tiny_overrides, "train.tokens=3000"])
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="module")
def bad_token_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "ids.npy"
    np.save(path, np.arange(5000, dtype=np.uint16) % 700)  # ids up to 699
    return path


CASES = {
    "unknown key": (["model.widht=64"], "model.widht"),
    "unknown section": (["trian.tokens=5"], "trian.tokens"),
    "ill-typed value": (["model.d_model=wide"], "model.d_model"),
    "non-positive budget": (["train.tokens=0"], "train.tokens"),
    "negative flops": (["train.tokens=null", "train.flops=-1e12"], "train.flops"),
    "non-positive size": (["model.d_model=-32"], "model.d_model"),
    "zero layers": (["model.n_layers=0"], "model.n_layers"),
    "budget below one step": (["train.tokens=100"], "train.tokens"),
    "heads do not divide d_model": (["model.n_heads=3"], "model.d_model"),
    "both budgets": (["train.flops=1e12"], "train.tokens"),
    "unknown choice": (["model.norm=batchnorm"], "model.norm"),
    "missing data path": (["data=tokens", "data.path=/nonexistent/train.bin"], "data.path"),
    "missing text glob": (["data.path=/nonexistent/*.txt"], "data.path"),
    "sweep name typo": (["sweep=dmeo"], "sweep: 'dmeo' is not one of"),
    "data group typo": (["data=txt"], "did you mean data=text?"),
    "tracker typo": (["tracker=[tensorboard,wandbb]"], "did you mean tracker=wandb?"),
    "launcher typo": (["hydra/launcher=slrum"], "did you mean hydra/launcher=slurm?"),
    "batch too large to fit": (["train.tokens=1e12", "train.batch_size=10000000"], "train.batch_size"),
    "empty run_dir": (["run_dir=''"], "run_dir"),
}


@pytest.mark.parametrize("overrides, field", CASES.values(), ids=CASES.keys())
def test_bad_input_one_line_exit_2_nothing_changed(overrides, field, existing_run, tiny_overrides, monkeypatch, capsys):
    """In-process through the real entry point (`cli`), so the whole table runs in seconds."""
    before = tree_digest(existing_run)
    code, stderr = run_in_process(
        [f"run_dir={existing_run}", *tiny_overrides, "train.tokens=3000", *overrides], monkeypatch, capsys
    )
    assert code == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and field in error_lines[0], stderr
    assert tree_digest(existing_run) == before


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_compile_cache_threshold_is_one_line_exit_2(value, existing_run, tiny_overrides, monkeypatch, capsys):
    """The environment is input too: $SCALING_COMPILE_CACHE_MIN_S that is not a number of seconds >= 0."""
    before = tree_digest(existing_run)
    monkeypatch.setenv("SCALING_COMPILE_CACHE_MIN_S", value)
    code, stderr = run_in_process(
        [f"run_dir={existing_run}", *tiny_overrides, "train.tokens=3000"], monkeypatch, capsys
    )
    assert code == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert [line for line in stderr.splitlines() if line.strip()] == [
        f"error: $SCALING_COMPILE_CACHE_MIN_S: {value!r} is not a number of seconds >= 0; unset it or give e.g. 0.5"
    ]
    assert tree_digest(existing_run) == before


def test_bad_input_from_the_command_line(existing_run, tiny_overrides):
    """The same contract end to end in a fresh process: one line on stderr, exit status 2."""
    result = run_cli([f"run_dir={existing_run}", *tiny_overrides, "train.tokens=3000", "model.widht=64"], timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        line for line in result.stderr.splitlines() if line.startswith("error:")
    ]


def test_token_ids_beyond_vocabulary(bad_token_file, existing_run, tiny_overrides):
    before = tree_digest(existing_run)
    args = [*tiny_overrides, "train.tokens=3000", "data=tokens", f"data.path={bad_token_file}", "data.vocab_size=300"]
    result = run_cli([f"run_dir={existing_run}", *args], timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data.vocab_size" in result.stderr
    assert tree_digest(existing_run) == before


def test_unwritable_run_dir(tiny_overrides, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli([f"run_dir={blocker}/run", *tiny_overrides, "train.tokens=3000"], timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "run_dir" in result.stderr
    assert blocker.read_text() == "not a folder"


def test_debug_flag_shows_the_traceback(existing_run, tiny_overrides):
    result = run_cli([f"run_dir={existing_run}", *tiny_overrides, "train.tokens=0", "debug=true"], timeout=120)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_the_compile_cache_threshold_is_half_a_second_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv("SCALING_COMPILE_CACHE_MIN_S", raising=False)
    assert cache_min_compile_s() == 0.5
    monkeypatch.setenv("SCALING_COMPILE_CACHE_MIN_S", "0")
    assert cache_min_compile_s() == 0.0
    monkeypatch.setenv("SCALING_COMPILE_CACHE_MIN_S", " ")
    assert cache_min_compile_s() == 0.5


def test_the_tests_and_the_commands_they_launch_cache_in_the_tests_folder_not_the_users():
    """The suite's corpus and compiled programs go under <cache root>/tests (tests/conftest.py), in this process
    and in every command it starts, so running the tests leaves the user's own cache as it was."""
    assert cache_root().name == TESTS_CACHE
    assert Path(jax.config.jax_compilation_cache_dir) == cache_root() / "jax"
    for name in WANDB_FOLDERS:  # the tracking tests' offline W&B runs log and configure under it too
        assert Path(os.environ[name]).is_relative_to(cache_root()), name
    child = subprocess.run(
        [sys.executable, "-c", "from scaling.runtime import cache_root; print(cache_root())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(child.stdout.strip()) == cache_root()


BAD_THRESHOLD_LINE = (
    "error: $SCALING_COMPILE_CACHE_MIN_S: 'abc' is not a number of seconds >= 0; unset it or give e.g. 0.5"
)


@pytest.mark.parametrize("command", ["sweep", "bench"])
def test_a_bad_compile_cache_threshold_stops_a_sweep_and_the_benchmark_before_they_write(
    command, tmp_path, monkeypatch
):
    """Checked at the entry point, before Hydra: a sweep does not create its folder, the benchmark measures nothing."""
    monkeypatch.setenv("SCALING_COMPILE_CACHE_MIN_S", "abc")
    if command == "sweep":
        result = run_cli(["--multirun", "sweep=tiny", f"results_root={tmp_path / 'results'}"], timeout=120)
    else:
        result = run_cli(["bench.steps=1"], module="scaling.bench", timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if line.strip()] == [BAD_THRESHOLD_LINE]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("module", ["analysis.probe", "analysis.tasks"])
def test_a_bad_compile_cache_threshold_is_one_line_in_the_analysis_commands_that_compile(
    module, tmp_path, monkeypatch, capsys
):
    import importlib

    monkeypatch.setenv("SCALING_COMPILE_CACHE_MIN_S", "abc")
    assert importlib.import_module(module).main([str(tmp_path)]) == 2
    assert [line for line in capsys.readouterr().err.splitlines() if line.strip()] == [BAD_THRESHOLD_LINE]
