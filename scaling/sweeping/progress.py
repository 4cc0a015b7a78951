"""Sweep progress: the plan before a sweep starts, and one line for the whole sweep after each run.

Before any job starts, the launching command expands the sweep as Hydra's basic sweeper does (the
sweeper's params and the command line's comma lists), plans every run (its size, tokens and steps,
without training), and prints the runs, the total training FLOPs (6ND) and an estimated time. The
estimate comes from a short measurement: a few train steps of the cheapest and the dearest shape,
joined by a straight line in FLOPs per step (a tiny model's step is mostly fixed overhead, a large
one's mostly arithmetic), summed over every run's steps.

The plan is stored in the sweep folder (progress.json), so every job, in this process or in another
one a launcher started, can say after each run where the whole sweep stands: runs done of the total,
FLOPs done of the total, failures so far, elapsed time and the time left, from the measured pace of
the FLOPs this launch has trained. Plain lines: readable in a terminal and in a log file alike.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from scaling import contract
from scaling.config import RunConfig, to_dataclass
from scaling.errors import ConfigError
from scaling.files import write_json
from scaling.planning.plan import Plan

PROGRESS_FILE = "progress.json"
TIMED_STEPS = 3  # per shape, after one untimed step that compiles


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    name: str
    flops: float  # 6 N D
    steps: int
    flops_per_step: float
    cfg: RunConfig
    plan: Plan


def job_overrides(config: DictConfig) -> list[list[tuple[str, Any]]]:
    """Every job's swept (key, value) pairs, in Hydra's basic sweeper's order. A sweeper param with one
    value is a key of every job (Hydra passes it to each job, so it names the run) with that value."""
    params = config.hydra.sweeper.get("params") or {}
    texts = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    lists: dict[str, list[tuple[str, Any]]] = {}
    for override in OverridesParser.create().parse_overrides(texts):
        key = override.get_key_element()
        if override.is_sweep_override() and override.is_discrete_sweep() and not key.startswith("hydra"):
            lists[key] = [(key, value) for value in override.sweep_iterator()]
        elif key in lists or key in params:  # one value (on the command line, it replaces the sweep's list)
            lists[key] = [(key, override.value())]
    return [list(combo) for combo in itertools.product(*lists.values())]


def planned_runs(config: DictConfig, plan_job, make_plan) -> list[PlannedRun]:
    """Every run the sweep will train (dropped grid points left out). `plan_job` and `make_plan` name
    and plan a job as the jobs themselves do (passed in, so this module stays below the CLI)."""
    base = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    runs = []
    for combo in job_overrides(config):
        node = base.copy()
        for key, value in combo:
            OmegaConf.update(node, key, value, merge=False)
        task = [f"{key}={'null' if value is None else value}" for key, value in combo]  # as Hydra writes it
        seeded, dropped = plan_job(to_dataclass(node), config.hydra.sweeper.get("params"), task)
        if dropped:
            continue
        for cfg, _ in seeded:
            plan = make_plan(cfg)
            per_step = plan.tokens_per_step * 6 * plan.params.total
            runs.append(PlannedRun(Path(cfg.run_dir).name, per_step * plan.steps, plan.steps, per_step, cfg, plan))
    return runs


def estimate_seconds(runs: list[PlannedRun], time_step, at_once=lambda run: 1) -> float | None:
    """Seconds to train `runs`: steps x (a + b x FLOPs per step), a and b from `time_step(cfg, plan)`
    (median seconds of a short measured step) at the cheapest and the dearest shape, each run's time
    divided by `at_once(run)`, how many runs like it train side by side."""
    if not runs:
        return None
    cheap, dear = min(runs, key=lambda r: r.flops_per_step), max(runs, key=lambda r: r.flops_per_step)
    t_cheap = time_step(cheap.cfg, cheap.plan)
    t_dear = time_step(dear.cfg, dear.plan) if dear.flops_per_step > cheap.flops_per_step else t_cheap
    slope = max(0.0, (t_dear - t_cheap) / (dear.flops_per_step - cheap.flops_per_step)) if dear is not cheap else 0.0
    return sum(r.steps * (t_cheap + slope * (r.flops_per_step - cheap.flops_per_step)) / at_once(r) for r in runs)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def start(folder: Path, launch: str | None, runs: list[PlannedRun], estimate: float | None) -> str:
    """Store the plan for the jobs, and the line that announces it."""
    total = sum(r.flops for r in runs)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / PROGRESS_FILE,
        {"launch": launch or "", "start": time.time(), "estimate_s": estimate, "runs": {r.name: r.flops for r in runs}},
    )
    when = f", about {duration(estimate)} of training by a short measured step" if estimate else ""
    return f"plan: {len(runs)} runs to train, {total:.3g} FLOPs (6ND){when}"


def line(folder: Path, launch: str | None) -> str | None:
    """Where the whole sweep stands, from the stored plan and this launch's outcomes (launches.jsonl)."""
    try:
        stored = json.loads((folder / PROGRESS_FILE).read_text())
        entries = [json.loads(text) for text in (folder / contract.LAUNCH_LOG).read_text().splitlines()]
    except (OSError, ValueError):
        return None
    planned = stored["runs"]
    if stored["launch"] != (launch or "") or not planned:  # another launch's plan, or nothing left to train
        return None
    outcomes = {
        e["run_name"]: e["outcome"] for e in entries if e["launch"] == stored["launch"] and e["run_name"] in planned
    }
    total, done = sum(planned.values()), sum(planned[name] for name in outcomes)
    trained = sum(planned[name] for name, outcome in outcomes.items() if outcome != "skipped")
    failed = sum(outcome == contract.FAILED for outcome in outcomes.values())
    elapsed = time.time() - stored["start"]
    if trained > 0:
        left = elapsed / trained * (total - done)
    else:
        left = stored["estimate_s"] or 0.0
    return (
        f"progress: {len(outcomes)}/{len(planned)} runs, {done:.3g} of {total:.3g} FLOPs ({done / total:.0%}), "
        f"{failed} failed, elapsed {duration(elapsed)}, about {duration(left)} left"
    )


def announce(folder: Path, launch: str | None, plan_runs, time_step, at_once=lambda run: 1) -> None:
    """Plan the sweep and print it; a sweep that cannot be planned is still launched (its jobs report why)."""
    try:
        runs = plan_runs()
    except (ConfigError, ValueError, KeyError) as err:
        print(f"plan: not estimated ({str(err).splitlines()[0][:160]}); each run reports for itself", file=sys.stderr)
        return
    print(start(folder, launch, runs, estimate_seconds(runs, time_step, at_once)), file=sys.stderr)
