"""SLURM for real: a single-node cluster (tests/slurm_cluster.py) runs the tiny sweep through the
submitit launcher, requeues a job that received its pre-timeout signal mid-run (it resumes from its
checkpoint to the uninterrupted digest), and runs `srun -n 2` training that joins jax.distributed
from SLURM's environment and matches one process.

The module skips, with the reason, where the machine cannot run the daemons (SLURM or MUNGE not
installed, not root, or the daemons do not start); with SCALING_REQUIRE_SLURM=1 (set by .ci/run,
which installs them) it fails instead, so CI never passes without running it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO, run_cli
from tests.slurm_cluster import ClusterUnavailable, SlurmCluster, start_cluster

# The tiny sweep's two budgets at its smallest model size (the shortest runs), one SLURM job each,
# through the shipped preset scaled down to this node: no GPU, one core and 1 GB per job.
SWEEP = [
    "--multirun",
    "sweep=tiny",
    "sweep.point=1",
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=20",
]
INTERRUPTED = "flops-8e10_point-1"  # the longer of the two runs
SIGNAL_AFTER_STEP = 8  # a checkpoint on the log-spaced schedule: training is under way


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster, with SLURM_CONF pointing at it and no SLURM job variables inherited from outside."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailable as why:
        if os.environ.get("SCALING_REQUIRE_SLURM"):
            pytest.fail(f"SCALING_REQUIRE_SLURM is set but no SLURM cluster could start: {why}")
        pytest.skip(f"no SLURM cluster on this machine: {why}")
    try:
        with pytest.MonkeyPatch.context() as env:
            for name in [n for n in os.environ if n.startswith("SLURM_")]:
                env.delenv(name)  # a pytest run inside a SLURM job must not submit into that job
            for name, value in cluster.env.items():
                env.setenv(name, value)
            yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def data_overrides(tiny_overrides) -> list[str]:
    """The tiny text corpus (the sweep picks the model sizes itself)."""
    return [o for o in tiny_overrides if o.startswith("data")]


@pytest.fixture(scope="module")
def slurm_sweep(cluster, data_overrides, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    result = run_cli([*SWEEP, f"results_root={root}", *data_overrides], timeout=600)
    return root / "tiny", result


def test_tiny_sweep_through_the_submitit_launcher(slurm_sweep):
    folder, result = slurm_sweep
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 trained, 0 skipped, 0 failed" in result.stderr
    table = pd.read_parquet(folder / "runs.parquet")
    assert sorted(table.run_name) == ["flops-4e10_point-1", INTERRUPTED]
    assert (table.status == "completed").all() and sorted(table.budget) == [4e10, 8e10]
    # One SLURM array task per run, each of whose logs reports its run trained.
    logs = sorted((folder / ".submitit").glob("*/*_0_log.err"))
    assert len(logs) == 2 and all(re.fullmatch(r"\d+_[01]", p.parent.name) for p in logs)
    reported = {m for p in logs for m in re.findall(r"\[tiny\] (\S+): trained", p.read_text())}
    assert reported == set(table.run_name)


# A fault in one more layout: resuming after SIGTERM is in the quick suite (test_checkpoint, test_side_by_side).
@pytest.mark.slow
def test_job_signalled_before_its_time_limit_resumes_to_the_uninterrupted_digest(
    cluster, slurm_sweep, data_overrides, tmp_path
):
    reference, _ = slurm_sweep
    log = tmp_path / "launcher.log"
    args = [*SWEEP, "train.flops=8e10", f"results_root={tmp_path}", *data_overrides]
    with open(log, "w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "scaling.train", *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        job = _wait_for_job(tmp_path / "tiny" / ".submitit", tmp_path / "tiny" / "runs" / INTERRUPTED, launcher)
        cluster.run("scancel", "--signal=USR2", job)  # what SLURM sends signal_delay_s before the time limit
        assert launcher.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert "1 trained, 0 skipped, 0 failed" in log.read_text()
    job_log = (tmp_path / "tiny" / ".submitit" / job / f"{job}_0_log.err").read_text()
    assert re.search(rf"preempted: .* -> \S+/{re.escape(INTERRUPTED)}\n", job_log), job_log[-3000:]
    assert f"Requeued job {job}" in job_log
    resumed = int(re.search(r"resuming \S+ from step (\d+)", job_log).group(1))
    steps = json.loads((reference / "runs" / INTERRUPTED / "summary.json").read_text())["steps"]
    assert SIGNAL_AFTER_STEP <= resumed < steps  # it resumed from the step the signal reached
    resumed_run, uninterrupted = (folder / "runs" / INTERRUPTED for folder in (tmp_path / "tiny", reference))
    summary = json.loads((resumed_run / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["params_digest"] == json.loads((uninterrupted / "summary.json").read_text())["params_digest"]
    pd.testing.assert_frame_equal(_losses(resumed_run), _losses(uninterrupted))  # the extra checkpoint adds no row
    assert _checkpoints(resumed_run) == _checkpoints(uninterrupted)  # the preemption checkpoint is gone


def _wait_for_job(submitit: Path, run_dir: Path, launcher: subprocess.Popen, timeout_s: float = 300) -> str:
    """The job's id once the run has saved its checkpoint at SIGNAL_AFTER_STEP."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert launcher.poll() is None, "the launcher exited before the run reached its first checkpoints"
        jobs = [p.name for p in submitit.glob("*") if p.is_dir()]
        if jobs and (run_dir / "checkpoints" / str(SIGNAL_AFTER_STEP)).is_dir():
            return jobs[0]
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint at step {SIGNAL_AFTER_STEP} in {run_dir} after {timeout_s}s")


def _losses(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "metrics.parquet")[["step", "train_loss", "eval_loss"]]


def _checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def test_two_tasks_join_jax_distributed_from_slurms_environment(cluster: SlurmCluster, tmp_path, tiny_overrides):
    run = [*tiny_overrides, "train.tokens=2560", "train.log_every=2"]
    single = run_cli([f"run_dir={tmp_path / 'one'}", *run])
    assert single.returncode == 0, single.stderr[-2000:]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    # No mesh.* settings: the coordinator, the process count and this process's id come from srun.
    srun = ["srun", "--ntasks=2", "--overcommit", "--label", "--kill-on-bad-exit=1", "--time=10"]
    two = subprocess.run(
        [*srun, sys.executable, "-m", "scaling.train", f"run_dir={tmp_path / 'two'}", *run],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one, both = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert both["n_devices"] == 2 and one["n_devices"] == 1
    pd.testing.assert_frame_equal(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=2e-4, atol=2e-4)
    reports = [line for line in two.stderr.splitlines() if "completed:" in line]
    assert len(reports) == 1 and reports[0].lstrip().startswith("0:")  # only process 0 writes
