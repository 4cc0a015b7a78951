"""Hydra's hooks around a sweep: the plan (grid, runs, FLOPs, estimated time) before its jobs start, then the
held-out run and a tally of this launch's outcomes after them."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from scaling import contract
from scaling.config import run_config
from scaling.errors import ConfigError, exit_with
from scaling.planning.grids import check_every_budget_trains, describe_sweep_grid, sweep_grid
from scaling.runtime import can_pin, usable_cores
from scaling.sweeping import progress
from scaling.sweeping.holdout import run_holdout
from scaling.sweeping.jobs import plan_job, plan_run
from scaling.sweeping.launcher import threads_for
from scaling.sweeping.naming import naming_keys, sweep_dir
from scaling.sweeping.runs_table import OUTCOMES, completed_summary
from scaling.training.steptime import time_steps
from scaling.training.validate import check_fields


def runs_at_once(run: progress.PlannedRun) -> int:
    """How many runs like this one hydra/launcher=local trains side by side on this machine's cores."""
    cores = len(usable_cores())
    return cores // threads_for(run.cfg, run.plan, cores) if can_pin() else 1


class SweepCallback(Callback):
    """Prints the plan before a sweep and a tally of this launch's outcomes after it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        print(
            f"sweep {config.sweep.name}: results in {Path(config.results_root) / str(config.sweep.name)}",
            file=sys.stderr,
        )
        keys = naming_keys(config.sweep.vary, (config.hydra.sweeper.get("params") or {}).keys())
        cfg = run_config(config)
        try:  # bad input stops the sweep before any job starts: one line, exit 2 (Hydra would print a traceback)
            check_fields(cfg)
            if "sweep.point" in keys:
                check_every_budget_trains(sweep_grid(config), cfg.sweep.tokens_per_param)
        except ConfigError as err:
            exit_with(err, debug=cfg.debug)
        if "sweep.point" in keys:
            print(describe_sweep_grid(config), file=sys.stderr)
        progress.announce(
            sweep_dir(cfg),
            cfg.sweep.launch,
            lambda: [
                run for run in progress.planned_runs(config, plan_job, plan_run) if completed_summary(run.cfg) is None
            ],
            lambda c, p: statistics.median(time_steps(c, p, progress.TIMED_STEPS, warmup=1)),
            runs_at_once if "LocalLauncher" in str(config.hydra.launcher.get("_target_", "")) else lambda run: 1,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.sweep.holdout_factor > 1:
            run_holdout(config)
        path = Path(config.results_root) / str(config.sweep.name) / contract.LAUNCH_LOG
        entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        mine = [e for e in entries if e["launch"] == (config.sweep.launch or "")]
        counts = {k: sum(e["outcome"] == k for e in mine) for k in OUTCOMES}
        tally = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k in ("trained", "skipped", "failed"))
        print(
            f"sweep {config.sweep.name} finished: {tally}; table: {path.parent / contract.RUNS_TABLE}", file=sys.stderr
        )
