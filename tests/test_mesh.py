"""Many devices: data parallel and FSDP on 8 fake CPU devices match one device; checkpoints move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from scaling.training.mesh import slurm_step_tasks
from tests.helpers import REPO

RUN = ["train.tokens=10240", "train.batch_size=16", "train.log_every=5"]
MUP = ["model.parametrization=mup", "model.base_width=16"]  # muP's per-parameter lrs and multipliers, sharded


def _run_on(devices: int, run_dir: Path, overrides: list[str], extra: list[str] = ()) -> dict:
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    cmd = [sys.executable, "-m", "scaling.train", f"run_dir={run_dir}", *overrides, *RUN, *extra]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["n_devices"] == devices
    return summary


# The quick suite runs muP, whose per-parameter learning rates must follow their parameters' shards;
# SP on the mesh is `slow`.
@pytest.fixture(scope="module", params=[pytest.param([], marks=pytest.mark.slow, id="sp"), pytest.param(MUP, id="mup")])
def single(tmp_path_factory, tiny_overrides, request):
    run_dir = tmp_path_factory.mktemp("one")
    return run_dir, _run_on(1, run_dir, [*tiny_overrides, *request.param]), request.param


def _losses(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "metrics.parquet")[["step", "train_loss", "eval_loss"]].set_index("step")


MESHES = {
    "data8": ["mesh.data=8"],
    "data2-fsdp4": ["mesh.data=2", "mesh.fsdp=4"],
    "data8-accum2": ["mesh.data=8", "train.grad_accum=2"],
}
# ... and shards data and parameters together; the pure data-parallel layouts are `slow`.
QUICK = {"data2-fsdp4"}


@pytest.mark.parametrize("mesh", [pytest.param(m, marks=() if m in QUICK else pytest.mark.slow) for m in MESHES])
def test_eight_devices_match_one(tmp_path, tiny_overrides, single, mesh):
    one_dir, _, parametrization = single
    if parametrization and mesh != "data2-fsdp4":
        pytest.skip("muP is checked on the mesh that shards its parameters (and so its per-parameter lrs)")
    _run_on(8, tmp_path, [*tiny_overrides, *parametrization], MESHES[mesh])
    pd.testing.assert_frame_equal(_losses(tmp_path), _losses(one_dir), rtol=2e-4, atol=2e-4)


@pytest.mark.slow
def test_checkpoint_saved_on_eight_devices_restores_on_one(tmp_path, tiny_overrides):
    """Saved from parameters sharded over 8 devices, loaded whole on one, for a muP run (load_model
    rebuilds it with its multipliers from config.yaml)."""
    summary = _run_on(8, tmp_path, [*tiny_overrides, *MUP], ["mesh.data=2", "mesh.fsdp=4"])
    code = (
        "import sys; from scaling.training.checkpoint import load_model, params_digest; from flax import nnx;"
        "m = load_model(sys.argv[1]); print(params_digest(nnx.to_pure_dict(nnx.state(m, nnx.Param))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == summary["params_digest"]


def test_batch_that_does_not_split_over_devices_is_refused(tmp_path, tiny_overrides):
    env_flags = "--xla_force_host_platform_device_count=8"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaling.train",
            f"run_dir={tmp_path}",
            *tiny_overrides,
            "train.tokens=20480",
            "train.batch_size=12",
        ],
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": env_flags},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "train.batch_size" in result.stderr


def test_only_a_slurm_job_step_of_several_tasks_is_multi_process():
    """srun -n 2 starts two processes of one step; an `sbatch -n 2` batch script is a single process."""
    assert slurm_step_tasks({}) == 1
    assert slurm_step_tasks({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_PROCID": "0"}) == 1
    assert slurm_step_tasks({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2"}) == 2
