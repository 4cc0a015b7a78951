"""Sweep progress: the plan expands the sweep as Hydra does, the estimate follows its cost model, and the
progress line counts runs, FLOPs and failures of this launch only."""

from __future__ import annotations

import json
import time

import pytest
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from scaling import contract
from scaling.config import register_configs
from scaling.files import write_json
from scaling.sweeping import progress
from scaling.sweeping.jobs import plan_job, plan_run
from tests.helpers import run_cli


def _config(overrides):
    register_configs()
    with initialize_config_module(config_module="sweeps", version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_the_plan_expands_the_sweeper_params_and_the_command_line(tmp_path):
    config = _config(["sweep=tiny", f"results_root={tmp_path}"])
    with open_dict(config):  # what `--multirun ... train.lr=1e-3,3e-3` leaves in Hydra's node
        config.hydra.overrides.task.append("train.lr=1e-3,3e-3")
    combos = progress.job_overrides(config)
    assert len(combos) == 2 * 3 * 2  # budgets x points x the command line's lrs
    with open_dict(config):  # one value on the command line replaces the sweep definition's list
        config.hydra.overrides.task.append("train.flops=4e10")
    assert len(progress.job_overrides(config)) == 3 * 2
    assert {key for combo in combos for key, _ in combo} == {"train.flops", "sweep.point", "train.lr"}
    assert {value for combo in combos for key, value in combo if key == "train.flops"} == {4e10, 8e10}


def test_planned_runs_are_the_runs_the_jobs_train(tmp_path):
    config = _config(["sweep=tiny", f"results_root={tmp_path}"])
    runs = progress.planned_runs(config, plan_job, plan_run)
    assert len(runs) == 6 and len({r.name for r in runs}) == 6
    assert all(r.name.startswith("flops-") and "_point-" in r.name for r in runs)
    for r in runs:  # 6 N D of the run's own plan, whole steps
        assert r.flops == pytest.approx(6 * r.plan.params.total * r.plan.tokens_per_step * r.plan.steps)
        assert r.flops == pytest.approx(r.steps * r.flops_per_step)


def test_a_sweeper_param_with_one_value_names_every_planned_run(tmp_path):
    """As Hydra passes it to every job (sweep=mlp_choice's `sweep.point: "0"`), so the plan's names are the runs' names."""
    config = _config(["sweep=tiny", f"results_root={tmp_path}"])
    with open_dict(config):
        config.hydra.sweeper.params["sweep.point"] = "0"
    runs = progress.planned_runs(config, plan_job, plan_run)
    assert sorted(r.name for r in runs) == ["flops-4e10_point-0", "flops-8e10_point-0"]


def test_the_estimate_joins_the_cheapest_and_dearest_step_by_a_line(tmp_path):
    config = _config(["sweep=tiny", f"results_root={tmp_path}"])
    runs = progress.planned_runs(config, plan_job, plan_run)
    measured = []

    def step_seconds(cfg, plan):  # a known cost model: 2 ms fixed + 1 ns per FLOP
        measured.append(plan.params.total)
        return 0.002 + 1e-9 * plan.tokens_per_step * 6 * plan.params.total

    estimate = progress.estimate_seconds(runs, step_seconds)
    assert estimate == pytest.approx(sum(r.steps * (0.002 + 1e-9 * r.flops_per_step) for r in runs))
    assert len(measured) == 2  # only two shapes are timed
    assert progress.estimate_seconds([], step_seconds) is None
    # runs trained two at a time (hydra/launcher=local on two cores) take half the time; one run alone its own
    alone = runs[0].name
    halved = progress.estimate_seconds(runs, step_seconds, lambda r: 1 if r.name == alone else 2)
    first = runs[0].steps * (0.002 + 1e-9 * runs[0].flops_per_step)
    assert halved == pytest.approx(first + (estimate - first) / 2)


def test_the_progress_line_counts_this_launch_only(tmp_path):
    runs = {"a": 1e10, "b": 2e10, "c": 3e10, "d": 4e10}
    write_json(
        tmp_path / progress.PROGRESS_FILE,
        {"launch": "L1", "start": time.time() - 60, "estimate_s": 300.0, "runs": runs},
    )
    entries = [
        ("L1", "a", "skipped"),
        ("L1", "b", "trained"),
        ("L1", "c", contract.FAILED),
        ("L0", "d", "trained"),
        ("L1", "held,out", "trained"),
    ]
    (tmp_path / contract.LAUNCH_LOG).write_text(
        "".join(
            json.dumps({"launch": launch, "run_name": name, "outcome": outcome, "time": 0.0}) + "\n"
            for launch, name, outcome in entries
        )
    )
    line = progress.line(tmp_path, "L1")
    assert line.startswith("progress: 3/4 runs, 6e+10 of 1e+11 FLOPs (60%), 1 failed, elapsed 1m00s")
    # 5e10 FLOPs trained (b, c) in 60 s; 4e10 left: about 48 s
    assert line.endswith("about 0m48s left")
    assert progress.line(tmp_path, "another launch") is None
    assert progress.line(tmp_path / "missing", "L1") is None
    # A relaunch of a finished sweep plans nothing; its skipped runs print no progress line.
    write_json(
        tmp_path / progress.PROGRESS_FILE, {"launch": "L1", "start": time.time(), "estimate_s": None, "runs": {}}
    )
    assert progress.line(tmp_path, "L1") is None


@pytest.mark.slow
def test_a_sweep_prints_its_plan_and_progress(tmp_path):
    result = run_cli(
        ["--multirun", "sweep=tiny", f"results_root={tmp_path}", "sweep.point=0", "train.flops=4e10"], timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "plan: 1 runs to train" in result.stderr, (
        result.stderr[-3000:] and "of training by a short measured step" in result.stderr
    )
    assert "[tiny] progress: 1/1 runs" in result.stderr and "0 failed" in result.stderr
