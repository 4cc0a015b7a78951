"""How a sweep names its runs: by the values that make each run distinct.

A run is named by the keys of the sweep's `hydra.sweeper.params` and any key swept on the command line
(`train.lr=1e-3,3e-3`, which the entry point records in `sweep.vary`), e.g. `flops=2.4e11,point=-1`, so
relaunching a sweep finds every run it trained before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scaling import contract
from scaling.config import RunConfig
from scaling.config import replace as cfg_replace
from scaling.errors import ConfigError

# Keys that never make runs distinct: where results go and how the launch behaves.
NOT_NAMING = {"sweep", "results_root", "progress", "debug", "overwrite", "hydra/launcher", "sweep.vary", "sweep.launch"}


def sweep_dir(cfg: RunConfig) -> Path:
    return Path(cfg.results_root) / str(cfg.sweep.name)


def naming_keys(vary: Iterable[str], sweeper_params: Iterable[str]) -> list[str]:
    """The keys whose values name a run: those swept on the command line and in the sweep's YAML."""
    return sorted((set(vary) | set(sweeper_params)) - NOT_NAMING)


def swept_values(keys: Iterable[str], task_overrides: Iterable[str]) -> dict[str, Any]:
    """key -> this job's value for each naming key, read from the job's own overrides ('key=value')."""
    wanted, out = set(keys), {}
    for item in task_overrides:
        key, _, value = item.partition("=")
        if key in wanted:
            out[key] = _number_or_text(value)
    return out


def run_name(swept: dict[str, Any]) -> str:
    """Readable, stable name from the swept values: 'flops=6e10,point=-1' (full keys if leaves clash)."""
    short = [k.rsplit(".", 1)[-1] for k in swept]
    keys = short if len(set(short)) == len(short) else list(swept)
    return ",".join(f"{name}={_compact(v)}" for name, v in sorted(zip(keys, swept.values()))) or "default"


def named_run(cfg: RunConfig, swept: dict[str, Any]) -> RunConfig:
    """`cfg` with its run directory set (RESULTS/NAME/runs/<run name>) and `sweep.vary` holding every
    naming key, so that config.yaml alone says which values are the run's swept ones."""
    if cfg.run_dir is not None:
        raise ConfigError(
            "run_dir",
            "a sweep names each run's folder itself (RESULTS/NAME/runs/<swept values>)",
            "leave run_dir unset and choose results_root=DIR",
        )
    run_dir = str(sweep_dir(cfg) / contract.RUNS_SUBDIR / run_name(swept))
    return cfg_replace(dataclasses.replace(cfg, run_dir=run_dir), sweep={"vary": sorted(swept)})


def _compact(value: Any) -> str:
    if value is None:
        return "null"  # as Hydra writes it
    if isinstance(value, float):
        text = f"{value:.4g}"
        return text.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return str(value).replace("/", "_")


def _number_or_text(value: str) -> Any:
    """The swept value as its type: a number, None for Hydra's null (so that a column of the runs table
    swept over null and numbers keeps one type), else the text."""
    if value == "null":
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value
