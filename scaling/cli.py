"""The command line of `python -m scaling.train`: Hydra's entry point, one run or one sweep job each.

Bad overrides are refused in one line (exit 2) before Hydra composes anything; a full disk (74) or a
run another process is training (75) is one line too, and a run that diverged or failed exits 3, one
stopped by a signal 128 + the signal (scaling/errors.py has the table). A single run sets up
the process (`runtime.initialize`) and trains in place; a multirun job (a sweep) names its run from
its swept values, drops grid points that cannot train, and trains in the same process: a launcher's
worker trains its runs one after another (reusing imports, corpus and compiled steps), each run's
failure recorded without stopping the others.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig

from scaling.config import RunConfig, register_configs, to_dataclass
from scaling.errors import ConfigError, Interrupted, Stop, exit_with
from scaling.overrides import check_overrides, whole_numbers
from scaling.runtime import cache_min_compile_s, initialize, one_line_warning
from scaling.sweeping import jobs
from scaling.sweeping.naming import NOT_NAMING
from scaling.training.outcome import exit_code
from scaling.training.trainer import train


def sweep_job(cfg: RunConfig, hydra_cfg) -> dict:
    """A multirun job: name the run, drop a grid point that cannot train, else train it in this process
    (a launcher's worker trains its jobs one after another, reusing imports, corpus and compiled steps)."""
    runtime = initialize(cfg.compilation_cache, job=hydra_cfg.job.num)
    runs, drop_reason = jobs.plan_job(cfg, hydra_cfg.sweeper.get("params"), hydra_cfg.overrides.task)
    return jobs.run_job(runs, drop_reason, runtime)


@hydra.main(version_base="1.3", config_path="pkg://sweeps", config_name="config")
def main(node: DictConfig) -> dict | None:
    cfg = to_dataclass(node)
    try:
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN and cfg.sweep.name:
            return sweep_job(cfg, hydra_cfg)
        summary = train(cfg, initialize(cfg.compilation_cache))
    except (ConfigError, Stop) as err:
        exit_with(err, debug=cfg.debug)
        return None
    except KeyboardInterrupt:  # outside the training loop (which stops on Ctrl-C by itself), or a second Ctrl-C
        exit_with(Interrupted(cfg.run_dir or f"the {cfg.sweep.name} sweep"), debug=cfg.debug)
    if exit_code(summary):  # diverged, failed, or stopped by a signal: its line is printed already
        raise SystemExit(exit_code(summary))
    return summary


def is_multirun(argv: list[str], overrides: list[str]) -> bool:
    """--multirun, or a sweep definition (sweeps/sweep/*.yaml set Hydra's multirun mode themselves)."""
    named_sweep = any(o.startswith("sweep=") and o != "sweep=none" for o in overrides)
    return bool({"-m", "--multirun"} & set(argv)) or named_sweep or "hydra.mode=MULTIRUN" in overrides


def launch_overrides(overrides: list[str]) -> list[str]:
    """What a launching command adds for its jobs: the keys it sweeps on the command line (they name
    each run's folder) and an id for this launch (its outcomes are tallied at the end)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    swept = sorted({o.key_or_group for o in parsed if o.is_sweep_override()} - NOT_NAMING)
    launch = f"{time.time():.6f}-{os.getpid()}"
    return [f"sweep.vary=[{','.join(swept)}]", f"sweep.launch={launch}"]


def validated_entry(hydra_main: Callable[[], object], argv: list[str] | None = None) -> None:
    """A command's entry point: reject bad overrides in one line (exit 2), then hand over to Hydra
    (with the launch's own overrides added when it starts a sweep)."""
    argv = whole_numbers(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = one_line_warning  # (also before a sweep's jobs set up their process)
    register_configs()
    overrides = [a for a in argv if not a.startswith("-")]
    try:
        check_overrides(overrides)
        cache_min_compile_s()  # the environment is input too: refused here, before a sweep writes its folder
    except ConfigError as err:
        exit_with(err, debug="debug=true" in argv)
    extra = launch_overrides(overrides) if is_multirun(argv, overrides) else []
    sys.argv = [sys.argv[0], *argv, *extra]
    try:
        hydra_main()
    except KeyboardInterrupt:  # while Hydra composes, in a sweep's plan, or in the launcher while its runs stop
        where = "the sweep (its runs in flight, if any, checkpointed first)" if extra else "before training started"
        exit_with(Interrupted(where), debug="debug=true" in argv)


def train_cli() -> None:
    validated_entry(main)
