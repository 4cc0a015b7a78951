"""Many hosts: two processes (CPU collectives over Gloo) give the result of one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pandas as pd
import pytest

from tests.helpers import REPO, run_cli

RUN = ["train.tokens=2560", "train.batch_size=8", "train.log_every=2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, tiny_overrides):
    single = run_cli([f"run_dir={tmp_path / 'one'}", *tiny_overrides, *RUN])
    assert single.returncode == 0, single.stderr[-2000:]
    port, env = _free_port(), {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scaling.train",
                f"run_dir={tmp_path / 'two'}",
                *tiny_overrides,
                *RUN,
                f"mesh.coordinator=localhost:{port}",
                "mesh.num_processes=2",
                f"mesh.process_id={i}",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    one, two = (json.loads((tmp_path / name / "summary.json").read_text()) for name in ("one", "two"))
    assert two["n_devices"] == 2 and one["n_devices"] == 1
    columns = ["step", "train_loss", "eval_loss"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "two" / "metrics.parquet")[columns],
        pd.read_parquet(tmp_path / "one" / "metrics.parquet")[columns],
        rtol=2e-4,
        atol=2e-4,
    )
    assert "completed" in outputs[0][1] and "completed" not in outputs[1][1]  # only process 0 reports
