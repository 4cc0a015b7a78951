"""Reach runs: after an IsoFLOP grid, its largest budget's largest model trained again on `sweep.reach`
times its tokens, at every seed of the design.

Why: the held-out run (scaling/sweeping/holdout.py) sits at a budget beyond the grid, at the size the fits
call optimal there, which is larger than every grid model. The grid's models of nearly its size are the
largest budget's largest, and an IsoFLOP grid gives its largest models the fewest tokens per parameter (in
the demo 11.5, against the held-out run's 20). Without more tokens at that size the prediction extrapolates
in D/N as well as in N. A reach run adds that D at a size the grid already has; it plays the part of the
long run of a warmup-stable-decay ladder (Hagele et al. 2024), trained on its own: continuing a grid run
would save only the steps before its last saved checkpoint in the constant phase (512 of 1,207 steps in the
demo), and a run of its own needs no checkpoint of another run.

A reach run is the grid point's configuration with `sweep.stretch` = reach, named by it
(flops-8e11_point-2_stretch-2). It lies off every IsoFLOP budget: its row in runs.parquet has no budget, so
the IsoFLOP profiles and the rollout (which steps through the budgets) leave it out, and the parametric fit
of L(N, D), which the held-out run is placed and predicted by, uses it. It trains before the held-out run is
placed, with the grid's launcher's side-by-side workers when the launcher is the local one.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from scaling.config import RunConfig, to_dataclass
from scaling.errors import Stop
from scaling.runtime import can_pin, initialize, usable_cores
from scaling.sweeping import progress
from scaling.sweeping.jobs import plan_run, record_failed, run_one, seeded_runs, worker_failure
from scaling.sweeping.launcher import threads_for
from scaling.sweeping.naming import named_run
from scaling.sweeping.runs_table import completed_summary
from scaling.sweeping.workers import Pool, core_groups

FLOPS, POINT, STRETCH = "train.flops", "sweep.point", "sweep.stretch"


def reached_jobs(config: DictConfig) -> list[list[tuple[str, Any]]]:
    """The grid jobs a reach run stretches: the largest budget's largest point, one per variant (a swept
    key besides the grid's); [] when the sweep has no IsoFLOP grid."""
    combos = [combo for combo in progress.job_overrides(config) if {FLOPS, POINT} <= {k for k, _ in combo}]
    if not combos:
        return []
    top_flops = max(float(dict(c)[FLOPS]) for c in combos)
    at_top = [c for c in combos if float(dict(c)[FLOPS]) == top_flops]
    top_point = max(int(dict(c)[POINT]) for c in at_top)
    return [c for c in at_top if int(dict(c)[POINT]) == top_point]


def reach_runs(config: DictConfig) -> list[tuple[RunConfig, dict[str, Any]]]:
    """Every reach run, named, as (config, swept values): a pure function of the sweep's config."""
    factor = float(config.sweep.reach)
    if factor <= 1:
        return []
    base = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    runs = []
    for combo in reached_jobs(config):
        node = base.copy()
        for key, value in [*combo, (STRETCH, factor)]:
            OmegaConf.update(node, key, value, merge=False)
        swept = {**dict(combo), STRETCH: factor}
        runs += [(named_run(cfg, s), s) for cfg, s in seeded_runs(to_dataclass(node), swept)]
    return runs


def planned_reach(config: DictConfig) -> list[progress.PlannedRun]:
    """The reach runs still to train, as the sweep's plan counts them (their FLOPs and steps)."""
    planned = []
    for cfg, _ in reach_runs(config):
        if completed_summary(cfg) is None:
            plan = plan_run(cfg)
            per_step = plan.tokens_per_step * 6 * plan.params.total
            planned.append(
                progress.PlannedRun(Path(cfg.run_dir).name, per_step * plan.steps, plan.steps, per_step, cfg, plan)
            )
    return planned


def _train(payload: tuple[RunConfig, dict[str, Any]]) -> dict:
    """One reach run; a run that must stop the sweep (preempted, disk full) exits with its status, in a
    worker as in this process (Hydra would turn an exception in its callback into a warning)."""
    cfg, swept = payload
    try:
        return run_one(cfg, swept, {}, initialize(cfg.compilation_cache))
    except Stop as err:
        print(err.line(), file=sys.stderr)
        raise SystemExit(err.exit_code) from err


def run_reach(config: DictConfig, side_by_side: bool) -> None:
    """Train the reach runs (a finished one is skipped): side by side on the cores when `side_by_side` (the
    local launcher) and more than one fits, else one after another in this process. A run that stopped
    the sweep (preempted, disk full) stops it here too: SystemExit with the run's status."""
    runs = reach_runs(config)
    if not runs:
        return
    cfg = runs[0][0]
    print(
        f"[{cfg.sweep.name}] reach: {len(runs)} runs of {', '.join(sorted({run_label(s) for _, s in runs}))} "
        f"on {config.sweep.reach:g}x their tokens",
        file=sys.stderr,
    )
    cores = usable_cores()
    threads = threads_for(cfg, plan_run(cfg), len(cores))
    if not (side_by_side and can_pin() and len(runs) > 1 and 2 * threads <= len(cores)):
        for run in runs:
            _train(run)
        return
    stop: list[int] = []
    groups = core_groups(cores, min(len(cores) // threads, len(runs)), threads)
    with Pool(groups, _train, forward=True) as pool:
        pool.run(list(enumerate(runs)), functools.partial(_settle, runs, stop))
    if stop or pool.signal is not None:
        raise SystemExit(stop[0] if stop else 128 + pool.signal)


def run_label(swept: dict[str, Any]) -> str:
    return f"C = {float(swept[FLOPS]):.3g}, point {swept[POINT]}"


def _settle(runs: list, stop: list[int], i: int, outcome: tuple) -> None:
    """Record a reach run whose worker raised or died as failed (run_one records every other outcome)."""
    kind, value = outcome
    if kind == "exit":
        stop.append(value)
    elif kind in ("error", "lost"):
        record_failed(runs[i][0], worker_failure(kind, value))
