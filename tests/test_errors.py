"""Exit statuses are an interface (scaling/errors.py): 0 only when the command did what it was asked, 2 bad
input, 3 a run (or a sweep's run, or every run an analysis reads) diverged or failed, 128 + the signal when
one stopped it, so that `train ... && python -m analysis.report ...` stops where it must (issue 25)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from analysis import fit, report
from analysis.fits.reference import HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs, training_curves
from scaling import contract
from scaling.errors import EXIT_RUN_FAILED
from scaling.sweeping.callback import launch_exit_code
from scaling.training import checkpoint
from scaling.training.trainer import Trainer, train
from tests.helpers import compose_config, run_cli, run_in_process, write_sweep

RUN = ["train.tokens=6000", "train.log_every=5"]  # 23 steps
LR10 = ["train.tokens=40000", "train.lr=10", "train.log_every=1"]  # diverges within 20 steps


@pytest.fixture(autouse=True)
def ctrl_c_not_ignored():
    """Ctrl-C as a terminal delivers it. A process started in the background by a shell inherits SIGINT
    ignored (so may this test process, e.g. under `nohup ... &`), and a run respects an ignored SIGINT, as
    Python does; the tests below that send SIGINT to this process need it to be handled."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_overrides) -> dict:
    """The uninterrupted run every stopped-and-resumed run below must end bitwise equal to."""
    return train(compose_config([f"run_dir={tmp_path_factory.mktemp('reference')}", *tiny_overrides, *RUN]))


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def _signal_at(monkeypatch, step: int, *signals: int) -> None:
    """Deliver `signals` to this process just before training step `step` (as a shell or SLURM would)."""
    original_init = Trainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        compiled = self.step_fn

        def step_fn(*step_args):
            if self.book.step == step:
                for number in signals:
                    os.kill(os.getpid(), number)
            return compiled(*step_args)

        self.step_fn = step_fn

    monkeypatch.setattr(Trainer, "__init__", init)


def test_diverged_run_exits_3_and_so_does_its_relaunch(tiny_overrides, tmp_path, monkeypatch, capsys):
    args = [f"run_dir={tmp_path}", *tiny_overrides, *LR10]
    code, stderr = run_in_process(args, monkeypatch, capsys)
    assert code == EXIT_RUN_FAILED and _lines(stderr)[-1].startswith("diverged at step"), stderr
    code, stderr = run_in_process(args, monkeypatch, capsys)
    assert code == EXIT_RUN_FAILED and _lines(stderr) == [_lines(stderr)[-1]] and "already diverged" in stderr


@pytest.mark.parametrize("number, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_run_stopped_by_a_signal_checkpoints_exits_128_plus_it_and_resumes(
    tiny_overrides, tmp_path, monkeypatch, capsys, reference, number, code
):
    args = [f"run_dir={tmp_path / 'run'}", *tiny_overrides, *RUN]
    _signal_at(monkeypatch, 10, number)
    exit_code, stderr = run_in_process(args, monkeypatch, capsys)
    name = signal.Signals(number).name
    assert exit_code == code and "Traceback" not in stderr, stderr
    assert f"preempted: stopped by {name} at step 11 and checkpointed" in stderr
    summary = json.loads((tmp_path / "run" / contract.SUMMARY_FILE).read_text())
    assert (summary["status"], summary[contract.STOP_SIGNAL]) == ("preempted", name)
    monkeypatch.undo()
    exit_code, stderr = run_in_process(args, monkeypatch, capsys)
    assert exit_code == 0 and "resuming" in stderr
    resumed = json.loads((tmp_path / "run" / contract.SUMMARY_FILE).read_text())
    assert resumed["params_digest"] == reference["params_digest"]


def test_a_second_ctrl_c_stops_at_once_in_one_line(tiny_overrides, tmp_path, monkeypatch, capsys):
    _signal_at(monkeypatch, 10, signal.SIGINT, signal.SIGINT)
    code, stderr = run_in_process([f"run_dir={tmp_path}", *tiny_overrides, *RUN], monkeypatch, capsys)
    assert code == 130 and "Traceback" not in stderr, stderr
    assert [line.split(" ")[0] for line in _lines(stderr)] == ["stopping", "interrupted"]


def test_ctrl_c_twice_while_a_checkpoint_is_written_is_one_line_and_the_run_resumes(
    tiny_overrides, tmp_path, monkeypatch, capsys, reference
):
    """The second Ctrl-C lands while the checkpoint of step 8 is being written (Orbax finishes it in the
    background): the save completes, the command says so in one line, and the relaunch resumes from it."""
    original = checkpoint.save

    def save(mngr, step, *args, **kwargs):
        original(mngr, step, *args, **kwargs)
        if step == 8:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(checkpoint, "save", save)
    args = [f"run_dir={tmp_path / 'run'}", *tiny_overrides, *RUN]
    code, stderr = run_in_process(args, monkeypatch, capsys)
    assert code == 130 and "Traceback" not in stderr and len(_lines(stderr)) == 2, stderr
    assert checkpoint.saved_steps(tmp_path / "run")[-1] == 8
    monkeypatch.undo()
    code, stderr = run_in_process(args, monkeypatch, capsys)
    assert code == 0 and "from step 8" in stderr
    resumed = json.loads((tmp_path / "run" / contract.SUMMARY_FILE).read_text())
    assert resumed["params_digest"] == reference["params_digest"]


def test_a_sweep_whose_runs_failed_exits_3_naming_them(tiny_overrides, tmp_path):
    """Every run fails (its folder cannot be made: `runs` is a file); the sweep goes through all, then exits 3."""
    (tmp_path / "pair").mkdir()
    (tmp_path / "pair" / contract.RUNS_SUBDIR).write_text("not a folder")
    sweep = ["sweep.name=pair", "run_dir=null", "train.lr=1e-3,2e-3", *RUN, f"results_root={tmp_path}"]
    result = run_cli(["--multirun", *tiny_overrides, *sweep], timeout=600)
    assert result.returncode == EXIT_RUN_FAILED and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.count(": failed error: run_dir: cannot write to") == 2
    tally = next(line for line in result.stderr.splitlines() if line.startswith("error: 2 runs did not complete"))
    assert tally.count("(failed)") == 2  # each run named (by its swept values: scaling/sweeping/naming.py)


@pytest.fixture
def read_only_folder(tmp_path):
    """A read-only filesystem (a permission bit would not stop root, who runs these tests in CI)."""
    mount = tmp_path / "read_only"
    mount.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("mounting a read-only tmpfs needs root (CAP_SYS_ADMIN)")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


def test_a_sweep_whose_results_root_is_a_file_is_refused_before_any_job(tiny_overrides, tmp_path):
    (tmp_path / "results").write_text("a file, not a folder")
    sweep = ["sweep.name=pair", "run_dir=null", "train.lr=1e-3,2e-3", *RUN, f"results_root={tmp_path / 'results'}"]
    result = run_cli(["--multirun", *tiny_overrides, *sweep], timeout=300)
    assert result.returncode == 2 and _lines(result.stderr) == [_lines(result.stderr)[0]], result.stderr[-3000:]
    assert result.stderr.startswith("error: results_root: cannot write the sweep folder")
    assert (tmp_path / "results").read_text() == "a file, not a folder"


def test_a_sweep_whose_results_root_is_read_only_is_refused_before_any_job(tiny_overrides, read_only_folder):
    sweep = ["sweep.name=pair", "run_dir=null", "train.lr=1e-3,2e-3", *RUN, f"results_root={read_only_folder}"]
    result = run_cli(["--multirun", *tiny_overrides, *sweep], timeout=300)
    assert result.returncode == 2 and _lines(result.stderr) == [_lines(result.stderr)[0]], result.stderr[-3000:]
    assert result.stderr.startswith("error: results_root: cannot write the sweep folder")
    assert f"{read_only_folder} is not writable" in result.stderr and not list(read_only_folder.iterdir())


@pytest.mark.parametrize(
    "bad, named",
    [
        (["data.path=/nonexistent/*.txt"], "error: data.path: '/nonexistent/*.txt' matches no files"),
        (["data.exclude=[no_such_document_*]"], "error: data.exclude: 'no_such_document_*' matches none"),
    ],
)
def test_a_sweep_whose_data_cannot_load_is_refused_in_one_line(bad, named, tiny_overrides, tmp_path):
    """Bad data found only when a job plans its grid point (the launcher loads the corpus): one line, exit 2,
    no run trained (this was a traceback and exit 1)."""
    sweep = ["sweep=tiny", f"results_root={tmp_path}", "sweep.jobs=1"]
    result = run_cli(["--multirun", *tiny_overrides, *sweep, *bad], timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(named), result.stderr[-3000:]
    assert not (tmp_path / "tiny" / contract.RUNS_SUBDIR).exists()


def test_launch_exit_code_counts_diverged_failed_and_stopped_runs():
    entry = lambda outcome, status, **more: {"run_name": "r", "outcome": outcome, "status": status, **more}  # noqa: E731
    assert launch_exit_code([entry("trained", "completed"), entry("dropped", None), entry("busy", "busy")]) == 0
    assert launch_exit_code([entry("trained", "completed"), entry("skipped", "diverged")]) == EXIT_RUN_FAILED
    assert launch_exit_code([entry("failed", "failed")]) == EXIT_RUN_FAILED
    stopped = entry("preempted", "preempted", stop_signal="SIGTERM")
    assert launch_exit_code([stopped]) == 143
    assert launch_exit_code([stopped, entry("diverged", "diverged")]) == EXIT_RUN_FAILED


def test_analysis_of_a_sweep_whose_runs_all_diverged_says_so_and_exits_3(tmp_path, capsys):
    runs = isoflop_runs(HOFFMANN_2022, np.logspace(18, 20, 3), sizes=5, noise=0.0, seed=0)
    curves = training_curves(HOFFMANN_2022, runs, noise=0.0, seed=1)
    folder = write_sweep(tmp_path / "sweep", runs, curves, failed=len(runs))
    for command in (fit.main, report.main):
        assert command([str(folder), "--n-boot", "10"]) == EXIT_RUN_FAILED
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "none of its 15 runs completed (15 diverged: run0000, " in err, err
        assert "check the columns and units" not in err
    assert not (folder / contract.REPORT_FILE).exists()


def test_exit_statuses_are_documented_where_users_read():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text[text.index("### Exit statuses") :]
    for code in ("| 0 |", "| 2 |", "| 3 |", "| 74 |", "| 75 |", "| 130 |", "| 143 |"):
        assert code in table[:3000], code
