"""Runs side by side on a CPU (hydra/launcher=local): the split of the cores, a run's numbers beside other
runs, failures and preemption in the worker pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from scaling import contract
from scaling.config import replace
from scaling.errors import EXIT_RUN_FAILED
from scaling.planning.cores import FLOPS_PER_THREAD, Split, split, threads_per_run
from scaling.planning.plan import make_plan
from scaling.sweeping.launcher import threads_for
from scaling.sweeping.workers import Pool, core_groups
from tests.helpers import REPO, compose_config, run_cli

TINY_STEP = 1e8  # FLOPs per step of a demo-sized rung (about 0.1-0.7 GFLOP)


# ---- the split: a pure function of the core count and the step ----


@pytest.mark.parametrize(
    ("cores", "flops_per_step", "expected"),
    [
        (1, TINY_STEP, Split(1, 1)),
        (2, TINY_STEP, Split(2, 1)),
        (64, TINY_STEP, Split(64, 1)),  # a tiny model on 64 cores: 64 runs at once
        (2, 2.5 * FLOPS_PER_THREAD, Split(1, 2)),  # large enough for two threads: one run with both
        (64, 4.5 * FLOPS_PER_THREAD, Split(16, 4)),
        (6, 4.5 * FLOPS_PER_THREAD, Split(2, 3)),  # 4 threads do not divide 6 cores: 3, and no core idle
        (8, 100 * FLOPS_PER_THREAD, Split(1, 8)),  # a model that fills every core
    ],
)
def test_split_by_core_count_and_step_size(cores, flops_per_step, expected):
    assert split(cores, flops_per_step) == expected
    assert split(cores, flops_per_step) == split(cores, flops_per_step)  # pure


def test_every_split_uses_every_core_and_more_work_never_means_fewer_threads():
    for cores in range(1, 33):
        previous = 0
        for flops in [10.0**e for e in range(6, 14)]:
            s = split(cores, flops)
            assert s.runs * s.threads == cores and s.runs >= 1
            assert s.threads >= previous
            previous = s.threads
    with pytest.raises(ValueError):
        threads_per_run(0, TINY_STEP)


def test_the_launcher_takes_the_split_or_the_asked_jobs(tiny_overrides):
    cfg = compose_config(tiny_overrides + ["train.tokens=10000"])
    plan = make_plan(cfg, 300)
    assert threads_for(cfg, plan, cores=2) == 1 and threads_for(cfg, plan, cores=48) == 1  # sweep.jobs=0: tiny
    assert threads_for(replace(cfg, sweep={"jobs": 2}), plan, cores=8) == 4
    assert threads_for(replace(cfg, sweep={"jobs": 16}), plan, cores=8) == 1  # more jobs than cores: one each
    assert core_groups([4, 5, 6, 7], 2, 2) == [(4, 5), (6, 7)]
    with pytest.raises(ValueError):
        core_groups([0, 1], 3, 1)


# ---- the worker pool: a dead worker is replaced and its task reported; the rest finish ----


def double_or_die(payload):
    if payload == "die":
        os._exit(3)
    if payload == "raise":
        raise RuntimeError("this task fails")
    return payload * 2, len(os.sched_getaffinity(0))


def test_pool_reports_a_dead_worker_and_finishes_the_other_tasks():
    outcomes = {}
    with Pool([(0,), (0,)], double_or_die) as pool:
        pool.run([(i, p) for i, p in enumerate([1, "die", 2, "raise", 3, 4])], outcomes.__setitem__)
    assert outcomes[1] == ("lost", 3)
    assert outcomes[3][0] == "error" and "this task fails" in outcomes[3][1]
    assert {i: outcomes[i] for i in (0, 2, 4, 5)} == {
        i: ("done", (p * 2, 1)) for i, p in zip((0, 2, 4, 5), (1, 2, 3, 4))
    }


# ---- real sweeps through hydra/launcher=local ----

RUN = ["train.tokens=20000", "progress=false"]  # 78 steps of the tiny model


def _sweep_args(root: Path, tiny_overrides: list[str], *extra: str) -> list[str]:
    """A plain multirun (no IsoFLOP grid): one run per learning rate, named by it."""
    return ["--multirun", "sweep.name=sbs", "run_dir=null", f"results_root={root}", *tiny_overrides, *RUN, *extra]


def _summaries(folder: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (folder / "runs").glob(f"*/{contract.SUMMARY_FILE}")}


def test_a_run_beside_others_equals_the_run_alone_at_its_thread_count(tmp_path, tiny_overrides):
    """Three runs, two at a time, one core each; then one of them alone in a process on one core: the same
    parameters bit for bit, and each summary records its thread count."""
    beside = run_cli(_sweep_args(tmp_path, tiny_overrides, "sweep.jobs=2", "train.lr=3e-3,1e-2,2e-2"))
    assert beside.returncode == 0, beside.stderr[-3000:]
    core = str(min(os.sched_getaffinity(0)))
    alone = subprocess.run(
        ["taskset", "-c", core, sys.executable, "-m", "scaling.train", f"run_dir={tmp_path / 'alone'}"]
        + [*tiny_overrides, *RUN, "train.lr=1e-2"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    together = _summaries(tmp_path / "sbs")
    summary, twin = json.loads((tmp_path / "alone" / contract.SUMMARY_FILE).read_text()), together["lr-0.01"]
    assert summary["runtime"]["cpu_threads"] == twin["runtime"]["cpu_threads"] == 1
    assert summary[contract.PARAMS_DIGEST] == twin[contract.PARAMS_DIGEST]
    assert len({s[contract.PARAMS_DIGEST] for s in together.values()}) == 3  # (three different runs)


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, tiny_overrides):
    """One run cannot start (a file stands where its folder should be): it is recorded as failed, and the
    other two, trained beside it, complete."""
    folder = tmp_path / "sbs" / "runs"
    folder.mkdir(parents=True)
    (folder / "lr-0.01").write_text("a file where the run's folder should be")
    result = run_cli(_sweep_args(tmp_path, tiny_overrides, "sweep.jobs=2", "train.lr=3e-3,1e-2,2e-2"))
    assert result.returncode == EXIT_RUN_FAILED, result.stderr[-3000:]  # a run failed: the launch says so (3)
    log = [json.loads(line) for line in (tmp_path / "sbs" / contract.LAUNCH_LOG).read_text().splitlines()]
    assert sorted((e["run_name"], e["outcome"]) for e in log) == [
        ("lr-0.003", "trained"),
        ("lr-0.01", "failed"),
        ("lr-0.02", "trained"),
    ]
    table = pd.read_parquet(tmp_path / "sbs" / contract.RUNS_TABLE)
    assert sorted(table.run_name) == ["lr-0.003", "lr-0.02"] and (table.status == contract.COMPLETED).all()


@pytest.mark.slow
def test_sigterm_reaches_every_run_in_the_pool_and_the_relaunch_resumes_them(tmp_path, tiny_overrides):
    """SIGTERM to the launching process: both runs in flight checkpoint and stop, the sweep exits 143, and
    the relaunch resumes them to the parameters of the same sweep never interrupted."""
    long_runs = ("sweep.jobs=2", "train.lr=3e-3,1e-2", "train.tokens=200000")
    args = _sweep_args(tmp_path / "stopped", tiny_overrides, *long_runs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "scaling.train", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = tmp_path / "stopped" / "sbs" / "runs"
    deadline = time.monotonic() + 300
    while len(list(runs.glob("*/checkpoints/16"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]  # 128 + SIGTERM (scaling/errors.py)
    statuses = [s["status"] for s in _summaries(tmp_path / "stopped" / "sbs").values()]
    # (a run may have finished before the signal landed, on a busy machine)
    assert contract.PREEMPTED in statuses and set(statuses) <= {contract.PREEMPTED, contract.COMPLETED}, stderr
    resumed = run_cli(args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert {s["status"] for s in _summaries(tmp_path / "stopped" / "sbs").values()} == {contract.COMPLETED}
    reference = run_cli(_sweep_args(tmp_path / "whole", tiny_overrides, *long_runs), timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    digests = {name: s[contract.PARAMS_DIGEST] for name, s in _summaries(tmp_path / "stopped" / "sbs").items()}
    assert digests == {name: s[contract.PARAMS_DIGEST] for name, s in _summaries(tmp_path / "whole" / "sbs").items()}
