"""Reach runs: the largest budget's largest grid point again on `sweep.reach` times its tokens, at every
seed; which runs they are is a pure function of the sweep's config, they sit off every IsoFLOP budget in the
table, and a real sweep trains them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import open_dict

from scaling import contract
from scaling.config import replace as cfg_replace
from scaling.sweeping import progress
from scaling.sweeping.callback import SweepCallback
from scaling.sweeping.jobs import plan_job, plan_run
from scaling.sweeping.reach import _settle, reach_runs, reached_jobs
from scaling.sweeping.runs_table import table_row
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


def test_the_sweeps_end_trains_its_reach_runs_off_the_budget(tmp_path, tiny_overrides, capsys):
    """The hook Hydra calls after a sweep's jobs (SweepCallback.on_multirun_end), in this process: a
    one-point IsoFLOP grid at two seeds gets two reach runs, trained side by side by the local launcher's
    workers, recorded without a budget, and skipped when the sweep ends again."""
    config = _config(
        [
            "sweep=tiny",
            *tiny_overrides,
            "sweep.tokens_per_param=1",  # a 11k-parameter model on 36k tokens: seconds
            "train.flops=2.4e9",
            "sweep.seeds=2",
            "sweep.reach=2",
            f"results_root={tmp_path}",
        ]
    )
    with open_dict(config):
        config.hydra.sweeper.params["sweep.point"] = "-1,0"
        config.sweep.launch = "first"
    SweepCallback().on_multirun_end(config)
    err = capsys.readouterr().err
    assert "reach: 2 runs of C = 2.4e+09, point 0 on 2x their tokens" in err and "2 trained" in err, err
    table = pd.read_parquet(tmp_path / "tiny" / contract.RUNS_TABLE).set_index(contract.RUN_NAME)
    assert sorted(table.index) == ["flops-2.4e9_point-0_seed-1_stretch-2", "flops-2.4e9_point-0_stretch-2"]
    assert (table["status"] == contract.COMPLETED).all() and contract.BUDGET not in table  # no row has one
    grid = plan_run(cfg_replace(reach_runs(config)[0][0], sweep={"stretch": 1.0}))  # the grid point itself
    assert (table["params_total"] == grid.params.total).all()
    assert (table["tokens"] - 2 * grid.tokens).abs().max() <= grid.tokens_per_step
    assert sorted(table["seed"]) == [0, 1]
    with open_dict(config):
        config.sweep.launch = "again"
    SweepCallback().on_multirun_end(config)
    assert "0 trained, 2 skipped" in capsys.readouterr().err


def test_a_reach_run_whose_worker_died_is_recorded_as_failed(tmp_path, capsys):
    """The pool's outcome for a worker that died mid-run: the run is named in one line and logged as failed
    (so the launch exits 3); a worker that asked to exit stops the sweep with its status."""
    config = _config(["sweep=demo_full", f"results_root={tmp_path}"])
    runs, stop = reach_runs(config), []
    _settle(runs, stop, 1, ("lost", -9))
    assert (
        "flops-8e11_point-2_seed-1_stretch-2: failed: its worker process died (exit code -9)" in capsys.readouterr().err
    )
    logged = [json.loads(line) for line in (tmp_path / "demo_full" / contract.LAUNCH_LOG).read_text().splitlines()]
    assert [(e["run_name"], e["outcome"]) for e in logged] == [("flops-8e11_point-2_seed-1_stretch-2", "failed")]
    _settle(runs, stop, 2, ("exit", 137))
    assert stop == [137]
