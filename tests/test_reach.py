"""Reach runs: the largest budget's largest grid point again on `sweep.reach` times its tokens, at every
seed; which runs they are is a pure function of the sweep's config, they sit off every IsoFLOP budget in the
table, and a real sweep trains them."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import open_dict

from scaling import contract
from scaling.config import replace as cfg_replace
from scaling.sweeping import progress
from scaling.sweeping.jobs import plan_job, plan_run
from scaling.sweeping.reach import reach_runs, reached_jobs
from scaling.sweeping.runs_table import table_row
from tests.helpers import run_cli
from tests.test_progress import _config


def test_the_reach_runs_stretch_the_largest_budgets_largest_point_at_every_seed(tmp_path):
    config = _config(["sweep=demo_full", f"results_root={tmp_path}"])
    assert config.sweep.reach == 2 and config.sweep.seeds == 4
    runs = reach_runs(config)
    assert [Path(c.run_dir).name for c, _ in runs] == [
        "flops-8e11_point-2_stretch-2",
        "flops-8e11_point-2_seed-1_stretch-2",
        "flops-8e11_point-2_seed-2_stretch-2",
        "flops-8e11_point-2_seed-3_stretch-2",
    ]
    assert [c.train.seed for c, _ in runs] == [0, 1, 2, 3]
    grid = {run.name for run in progress.planned_runs(config, plan_job, plan_run)}
    assert len(grid) == 19 * 4  # the trainable grid points (the smallest budget drops one) at four seeds
    for cfg, swept in runs:
        stretched, plain = plan_run(cfg), plan_run(cfg_replace(cfg, sweep={"stretch": 1.0}))
        assert stretched.params.total == plain.params.total  # the grid point's model ...
        assert stretched.steps == plain.steps * 2 or stretched.steps == plain.steps * 2 + 1  # ... on twice its tokens
        assert swept["sweep.stretch"] == 2.0 and sorted(cfg.sweep.vary) == sorted(swept)
        assert Path(cfg.run_dir).name not in grid  # never a grid run's folder
    assert reach_runs(config) == runs  # nothing else goes in


def test_the_largest_budget_and_point_follow_the_command_line(tmp_path):
    config = _config(["sweep=demo_full", f"results_root={tmp_path}"])
    with open_dict(config):  # `--multirun ... train.flops=1e11,2e11 train.lr=1e-3,3e-3`
        config.hydra.overrides.task.extend(["train.flops=1e11,2e11", "train.lr=1e-3,3e-3"])
    jobs = reached_jobs(config)
    assert sorted(dict(j)["train.lr"] for j in jobs) == [1e-3, 3e-3]  # one per variant
    assert {(dict(j)["train.flops"], dict(j)["sweep.point"]) for j in jobs} == {(2e11, 2)}
    with open_dict(config):
        config.sweep.reach = 0
    assert reach_runs(config) == []


def test_a_stretched_run_has_no_budget_in_the_table(tmp_path):
    config = _config(["sweep=demo_full", f"results_root={tmp_path}"])
    cfg, swept = reach_runs(config)[0]
    summary = {"status": contract.COMPLETED, "final_eval_loss": 3.0}
    folder = tmp_path / "demo_full"
    assert contract.BUDGET not in table_row(summary, cfg, swept, folder)
    plain = cfg_replace(cfg, sweep={"stretch": 1.0})
    assert table_row(summary, plain, swept, folder)[contract.BUDGET] == 8e11


def test_a_sweep_trains_its_reach_runs_off_the_budget(tmp_path, tiny_overrides):
    """A real IsoFLOP sweep of one point at two seeds: two grid runs, then two reach runs (side by side)."""
    args = [
        "--multirun",
        "sweep=tiny",
        *tiny_overrides,
        "sweep.tokens_per_param=1",  # a 11k-parameter model on 36k tokens: seconds
        "train.flops=2.4e9",
        "sweep.point=0",
        "sweep.seeds=2",
        "sweep.reach=2",
        f"results_root={tmp_path}",
    ]
    result = run_cli(args, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reach: 2 runs of C = 2.4e+09, point 0 on 2x their tokens" in result.stderr
    table = pd.read_parquet(tmp_path / "tiny" / contract.RUNS_TABLE).set_index(contract.RUN_NAME)
    assert len(table) == 4 and (table["status"] == contract.COMPLETED).all()
    for seed in ("", "_seed-1"):
        grid, reach = table.loc[f"flops-2.4e9_point-0{seed}"], table.loc[f"flops-2.4e9_point-0{seed}_stretch-2"]
        assert grid[contract.BUDGET] == 2.4e9 and math.isnan(reach[contract.BUDGET])
        assert reach["params_total"] == grid["params_total"]
        assert reach["tokens"] == pytest.approx(2 * grid["tokens"], abs=int(grid["tokens_per_step"]))
        assert reach["seed"] == grid["seed"]
    again = run_cli(args, timeout=600)  # a relaunch finds every run finished
    assert again.returncode == 0 and "0 trained, 4 skipped" in again.stderr, again.stderr[-3000:]
