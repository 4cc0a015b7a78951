"""Packed runs (one vmapped program for runs of one shape): each run directory as if trained alone, to
float tolerance (a batched matmul sums in another order than the one-run program, so not bit for bit)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from scaling import contract
from scaling.training.checkpoint import saved_steps
from scaling.training.packed import auto_pack, train_pack
from scaling.training.trainer import train
from tests.helpers import compose_config, run_cli

# Same shape and optimiser constants; different seeds, data seeds, learning rates and lengths.
RUNS = {
    "a": ["train.seed=1", "train.lr=3e-3", "train.tokens=12800"],
    "b": ["train.seed=2", "train.data_seed=7", "train.lr=1e-2", "train.tokens=7680"],
}
COMPARED = ["step", "tokens", "lr", "train_loss", "eval_loss"]


@pytest.fixture(scope="module")
def packed_and_solo(tmp_path_factory, tiny_overrides):
    root = tmp_path_factory.mktemp("packed")
    cfgs = {
        kind: {
            name: compose_config([f"run_dir={root / kind / name}", *tiny_overrides, "train.log_every=5", *extra])
            for name, extra in RUNS.items()
        }
        for kind in ("packed", "solo")
    }
    packed = dict(zip(RUNS, train_pack(list(cfgs["packed"].values()), {}, [{"name": n} for n in RUNS])))
    solo = {name: train(cfg) for name, cfg in cfgs["solo"].items()}
    return root, packed, solo


def test_each_packed_run_is_its_solo_run_to_float_tolerance(packed_and_solo):
    root, packed, solo = packed_and_solo
    for name in RUNS:
        assert packed[name]["status"] == solo[name]["status"] == contract.COMPLETED
        assert packed[name]["steps_done"] == solo[name]["steps_done"]
        a = pd.read_parquet(root / "packed" / name / contract.METRICS_FILE)[COMPARED]
        b = pd.read_parquet(root / "solo" / name / contract.METRICS_FILE)[COMPARED]
        pd.testing.assert_frame_equal(a, b, rtol=2e-4, atol=2e-4)
        assert saved_steps(root / "packed" / name) == saved_steps(root / "solo" / name)


def test_the_shorter_run_left_the_pack_at_its_own_end(packed_and_solo):
    root, packed, _ = packed_and_solo
    assert packed["b"]["steps_done"] < packed["a"]["steps_done"]  # b's 30 steps, then a alone to 50
    summary = json.loads((root / "packed" / "b" / contract.SUMMARY_FILE).read_text())
    assert summary["runtime"]["packed"] == 2 and summary["final_eval_loss"] == packed["b"]["final_eval_loss"]


def test_packing_is_automatic_only_off_the_cpu():
    assert auto_pack(4) == 4 and auto_pack(0) == 1  # this machine is a CPU, where packing measured slower


@pytest.mark.slow
def test_the_packed_launcher_trains_same_shape_jobs_in_one_program(tmp_path, tiny_overrides):
    """A real multirun: two learning rates of one shape through hydra/launcher=packed, packed by two."""
    args = [
        "--multirun",
        "sweep=tiny",
        f"results_root={tmp_path}",
        "hydra/launcher=packed",
        "sweep.pack=2",
        *tiny_overrides,
        "train.flops=4e10",
        "sweep.point=0",
        "train.lr=3e-3,1e-2",
    ]
    result = run_cli(args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "tiny" / contract.RUNS_TABLE)
    assert len(table) == 2 and (table.status == contract.COMPLETED).all()
    assert "2 trained, 0 skipped, 0 failed" in result.stderr
    for run_dir in table.run_dir:
        summary = json.loads((tmp_path / "tiny" / run_dir / contract.SUMMARY_FILE).read_text())
        assert summary["runtime"]["packed"] == 2
    again = run_cli(args, timeout=600)
    assert again.returncode == 0 and "0 trained, 2 skipped" in again.stderr, again.stderr[-3000:]
