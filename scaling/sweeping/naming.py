"""How a sweep names its runs: by the values that make each run distinct.

A run is named by the keys of the sweep's `hydra.sweeper.params` and any key swept on the command line
(`train.lr=1e-3,3e-3`, which the entry point records in `sweep.vary`), e.g. `flops-2.4e11_point--1`
(key-value pairs joined by `_`, each key and value by `-`), so relaunching a sweep finds every run it
trained before. Names use letters, digits and `.-_` only, so they pass unquoted through the tools a run is
handed to: lm-eval's `--model_args` (a comma-separated key=value list), Hydra overrides (where `,` makes a
sweep and `=` is refused in a value), shells, URLs, and W&B and TensorBoard run names.

Runs made before that were named `flops=2.4e11,point=-1` (`LEGACY_*`). Their folders keep their names: a
sweep that finds a run only under its old name uses that folder (`run_folder`), so relaunching an old
sweep trains nothing it had finished.
"""

from __future__ import annotations

import dataclasses
import re
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


PAIR_SEP, VALUE_SEP = "_", "-"
LEGACY_PAIR_SEP, LEGACY_VALUE_SEP = ",", "="
UNSAFE = re.compile(r"[^A-Za-z0-9.\-]")  # in a value: anything but letters, digits, '.' and '-'


def run_name(swept: dict[str, Any], legacy: bool = False) -> str:
    """Readable, stable name from the swept values: 'flops-6e10_point--1' (full keys if leaves clash);
    `legacy`: as runs were named before, 'flops=6e10,point=-1'."""
    short = [k.rsplit(".", 1)[-1] for k in swept]
    keys = short if len(set(short)) == len(short) else list(swept)
    pairs = [pair(name, value, legacy) for name, value in sorted(zip(keys, swept.values()))]
    return (LEGACY_PAIR_SEP if legacy else PAIR_SEP).join(pairs) or "default"


def pair(key: str, value: Any, legacy: bool = False) -> str:
    """'key-value', any character of the value outside UNSAFE's set as '_' ('key=value' when `legacy`)."""
    if legacy:
        return f"{key}{LEGACY_VALUE_SEP}{_compact(value)}"
    return f"{key}{VALUE_SEP}{UNSAFE.sub('_', _compact(value))}"


def is_legacy(name: str) -> bool:
    """Whether a run name is in the old style (new names never hold ',' or '=')."""
    return LEGACY_PAIR_SEP in name or LEGACY_VALUE_SEP in name


def extended(name: str, key: str, value: Any) -> str:
    """A derived run's name (a WSD branch of run `name`): one more pair, written in the style of `name`."""
    legacy = is_legacy(name)
    return f"{name}{LEGACY_PAIR_SEP if legacy else PAIR_SEP}{pair(key, value, legacy)}"


def run_folder(parent: Path, name: str, legacy_name: str) -> Path:
    """parent/name, or parent/legacy_name when only a run made before the renaming is there."""
    if not (parent / name).exists() and (parent / legacy_name).exists():
        return parent / legacy_name
    return parent / name


def named_run(cfg: RunConfig, swept: dict[str, Any]) -> RunConfig:
    """`cfg` with its run directory set (RESULTS/NAME/runs/<run name>) and `sweep.vary` holding every
    naming key, so that config.yaml alone says which values are the run's swept ones."""
    if cfg.run_dir is not None:
        raise ConfigError(
            "run_dir",
            "a sweep names each run's folder itself (RESULTS/NAME/runs/<swept values>)",
            "leave run_dir unset and choose results_root=DIR",
        )
    run_dir = str(run_folder(sweep_dir(cfg) / contract.RUNS_SUBDIR, run_name(swept), run_name(swept, legacy=True)))
    return cfg_replace(dataclasses.replace(cfg, run_dir=run_dir), sweep={"vary": sorted(swept)})


def _compact(value: Any) -> str:
    if value is None:
        return "null"  # as Hydra writes it
    if isinstance(value, float):
        text = f"{value:.4g}"
        return text.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return str(value).replace("/", "_")


def override_text(value: Any) -> str:
    """A list or dict value as an override writes it on the command line (`[json_*,test_*]`, `{encoder:120}`):
    the text a job records as its swept value (`swept_values`)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_text(v)}" for k, v in value.items()) + "}"
    return "null" if value is None else str(value)


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
