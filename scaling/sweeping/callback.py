"""Hydra's hooks around a sweep: the plan (grid, runs, FLOPs, estimated time) before its jobs start, then the
held-out run and a tally of this launch's outcomes after them (SweepCallback, for the shipped sweeps), and
for any named sweep the launch's exit status (LaunchStatus): 3 when any of its runs diverged or failed
(found so, or made so), 128 + the signal when a job's run was stopped by one.

Hydra turns an exception raised in a callback into a warning and goes on, so a refusal here exits itself.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from scaling import contract
from scaling.config import run_config
from scaling.errors import EXIT_RUN_FAILED, ConfigError, exit_with, signal_exit_code
from scaling.files import unwritable_reason
from scaling.planning.grids import check_sweep_trains, describe_sweep_grid
from scaling.runtime import can_pin, usable_cores
from scaling.sweeping import progress
from scaling.sweeping.holdout import run_holdout
from scaling.sweeping.jobs import plan_job, plan_run
from scaling.sweeping.launcher import threads_for
from scaling.sweeping.naming import naming_keys, sweep_dir
from scaling.sweeping.reach import planned_reach, run_reach
from scaling.sweeping.runs_table import OUTCOMES, completed_summary, launch_entries
from scaling.training.steptime import time_steps
from scaling.training.validate import check_fields


def runs_at_once(run: progress.PlannedRun) -> int:
    """How many runs like this one hydra/launcher=local trains side by side on this machine's cores."""
    cores = len(usable_cores())
    return cores // threads_for(run.cfg, run.plan, cores) if can_pin() else 1


def is_local(config: DictConfig) -> bool:
    """Whether the sweep's launcher is ours (hydra/launcher=local), which trains runs side by side."""
    return "LocalLauncher" in str(config.hydra.launcher.get("_target_", ""))


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
                check_sweep_trains(config)
        except ConfigError as err:
            exit_with(err, debug=cfg.debug)
        if "sweep.point" in keys:
            print(describe_sweep_grid(config), file=sys.stderr)
        progress.announce(
            sweep_dir(cfg),
            cfg.sweep.launch,
            lambda: (
                [run for run in progress.planned_runs(config, plan_job, plan_run) if completed_summary(run.cfg) is None]
                + planned_reach(config)
            ),
            lambda c, p: statistics.median(time_steps(c, p, progress.TIMED_STEPS, warmup=1)),
            runs_at_once if is_local(config) else lambda run: 1,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.sweep.reach > 1:  # before the held-out run: the fits that place it use these runs
            run_reach(config, side_by_side=is_local(config))
        if config.sweep.holdout_factor > 1:
            run_holdout(config)
        folder = Path(config.results_root) / str(config.sweep.name)
        mine = launch_entries(folder, config.sweep.launch)
        counts = {k: sum(e["outcome"] == k for e in mine) for k in OUTCOMES}
        tally = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k in ("trained", "skipped", "failed"))
        print(f"sweep {config.sweep.name} finished: {tally}; table: {folder / contract.RUNS_TABLE}", file=sys.stderr)


class LaunchStatus(Callback):
    """For every multirun of a named sweep (sweeps/config.yaml registers it): a sweep folder that cannot be
    written is refused before any job starts (exit 2), and the launch exits with its status at the end.
    Hydra calls it first at the start and last at the end, after SweepCallback's tally and held-out run."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.results_root) / str(config.sweep.name)
        reason = unwritable_reason(folder) if config.sweep.name else None
        if str(config.results_root).startswith("~"):
            reason = "~ is not expanded here: write the path out, e.g. results_root=$HOME/..."
        if reason is not None:
            problem = f"cannot write the sweep folder {folder} ({reason})"
            exit_with(
                ConfigError("results_root", problem, "pass a writable results_root=DIR"), bool(config.get("debug"))
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.sweep.name:
            return
        folder = Path(config.results_root) / str(config.sweep.name)
        code = launch_exit_code(launch_entries(folder, config.sweep.launch))
        if code:
            raise SystemExit(code)


def launch_exit_code(entries: list[dict[str, Any]]) -> int:
    """3 when a run of the launch diverged or failed (say which), else 128 + the signal that stopped one, else 0."""
    bad = [e for e in entries if {e.get("status"), e["outcome"]} & {contract.FAILED, contract.DIVERGED}]
    if bad:
        named = ", ".join(f"{e['run_name']} ({e.get('status') or e['outcome']})" for e in bad[:6])
        print(
            f"error: {len(bad)} runs did not complete: {named}{', ...' if len(bad) > 6 else ''}; "
            f"the lines above and {contract.LAUNCH_LOG} say why (exit 3)",
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED
    stopped = [e for e in entries if contract.PREEMPTED in (e.get("status"), e["outcome"])]
    return signal_exit_code(stopped[0].get(contract.STOP_SIGNAL)) if stopped else 0
