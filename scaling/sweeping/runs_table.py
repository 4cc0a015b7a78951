"""A sweep's tables: runs.parquet (one row per run, its summary plus its swept values) and launches.jsonl
(what each launch did with each run).

runs.parquet is derived data: when it is missing or unreadable it is rebuilt from the run directories'
summary.json and config.yaml. A file lock serialises the jobs that write it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock
from omegaconf import OmegaConf

from scaling import contract
from scaling.config import RunConfig, to_dataclass
from scaling.files import atomic_write, finite_or_none
from scaling.sweeping.naming import override_text
from scaling.sweeping.wsd import MAIN_RUN, branch_fields
from scaling.training import rundir

OUTCOMES = ("trained", "skipped", "busy", "failed", "diverged", "preempted", "dropped")


def table_row(summary: dict, cfg: RunConfig, swept: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Flat row: nested values (package versions) become JSON text so parquet keeps one schema."""
    row = {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in summary.items()}
    run_path = Path(cfg.run_dir)
    row.update(
        {
            contract.RUN_NAME: run_path.name,
            contract.RUN_DIR: str(run_path.relative_to(folder)),
            contract.SWEEP: cfg.sweep.name,
        }
    )
    if cfg.train.flops is not None and cfg.sweep.stretch == 1:  # a stretched run trains off its budget
        row[contract.BUDGET] = float(cfg.train.flops)
    row[contract.HOLDOUT] = False
    row.update({f"{contract.SWEPT_PREFIX}{k}": v for k, v in swept.items()})
    return row


def record(folder: Path, row: dict[str, Any]) -> int:
    """Insert or replace this run's row; a file lock serialises concurrent jobs. Returns the row count."""
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{contract.RUNS_TABLE}.lock")):
        path = folder / contract.RUNS_TABLE
        table = _read_or_rebuild(folder)
        if len(table):
            table = table[table[contract.RUN_NAME] != row[contract.RUN_NAME]]
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True).sort_values(contract.RUN_NAME)
        atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))
        return len(table)


def _read_or_rebuild(folder: Path) -> pd.DataFrame:
    """The runs table; rebuilt from the run directories when missing or unreadable (a truncated file
    after a crash or a full disk): it is derived data, and the caller writes it back at once."""
    path = folder / contract.RUNS_TABLE
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        return pd.DataFrame(rebuilt_rows(folder))
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        rows = rebuilt_rows(folder)
        print(
            f"warning: {path} is unreadable ({str(err).splitlines()[0][:120]}); rebuilt it from the summary.json "
            f"of {len(rows)} run directories",
            file=sys.stderr,
        )
        return pd.DataFrame(rows)


def rebuilt_rows(folder: Path) -> list[dict[str, Any]]:
    """Every run's table row from its own files (summary.json, config.yaml), as `run_one` records it."""
    runs = {}
    for run_dir in sorted((folder / contract.RUNS_SUBDIR).glob("*")):
        cfg, summary = _read_run(run_dir)
        if cfg is not None and summary is not None and contract.PARAMS_TOTAL in summary:
            runs[run_dir.name] = (cfg, summary)
    mains = {Path(cfg.train.init_from).name for cfg, _ in runs.values() if cfg.train.init_from}  # of WSD ladders
    rows = []
    for name, (cfg, summary) in runs.items():
        swept = swept_of(cfg)
        if cfg.train.init_from and Path(cfg.train.init_from).name in runs:
            extra = branch_fields(cfg, runs[Path(cfg.train.init_from).name][0])
        else:
            extra = MAIN_RUN if name in mains else {}
        rows.append({**table_row(summary, cfg, swept, folder), **extra})
    return rows


def swept_of(cfg: RunConfig) -> dict[str, Any]:
    """A run's swept values, read back from its config (named_run stored every naming key in sweep.vary),
    as its job recorded them: a list-valued key (`data.exclude=[json_*]`) as the override's text, never as
    OmegaConf's ListConfig, which parquet cannot store beside the text of the other runs' rows."""
    node = OmegaConf.structured(cfg)
    values = {key: OmegaConf.select(node, key) for key in cfg.sweep.vary}
    return {k: override_text(OmegaConf.to_container(v)) if OmegaConf.is_config(v) else v for k, v in values.items()}


def _read_run(run_dir: Path) -> tuple[RunConfig | None, dict | None]:
    """A run directory's config (its run_dir where it is now) and summary; (None, None) when unreadable."""
    try:
        stored, summary = rundir.read_config(run_dir), rundir.read_summary(run_dir)
        cfg = to_dataclass(stored[contract.CONFIG_SECTION]) if stored else None
    except Exception as err:  # noqa: BLE001 - a damaged run directory must not stop the rebuild of the others
        print(f"warning: {run_dir} left out of the rebuilt table: {str(err).splitlines()[0][:120]}", file=sys.stderr)
        return None, None
    return (dataclasses.replace(cfg, run_dir=str(run_dir)) if cfg else None), summary


def log_outcome(folder: Path, launch: str | None, run_name: str, outcome: str, summary: dict | None) -> None:
    """Append what this launch did with one run to launches.jsonl."""
    entry = {"launch": launch or "", "run_name": run_name, "outcome": outcome, "time": time.time()}
    if summary:
        keys = ("status", "params_total", "tokens", "final_eval_loss", "wall_s", contract.STOP_SIGNAL)
        entry.update({k: summary.get(k) for k in keys if k in summary})
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{contract.LAUNCH_LOG}.lock")):
        with open(folder / contract.LAUNCH_LOG, "a") as f:
            f.write(json.dumps(finite_or_none(entry)) + "\n")


def launch_entries(folder: Path, launch: str | None) -> list[dict[str, Any]]:
    """What one launch did with each run (launches.jsonl); a line cut short by a crash is skipped, with a warning."""
    path = folder / contract.LAUNCH_LOG
    entries, damaged = [], 0
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            damaged += 1
            continue
        if isinstance(entry, dict) and entry.get("launch") == (launch or ""):
            entries.append(entry)
    if damaged:
        print(f"warning: {path}: {damaged} unreadable lines skipped", file=sys.stderr)
    return entries


def completed_summary(cfg: RunConfig) -> dict | None:
    """The stored summary when this exact configuration already finished (completed or diverged)."""
    run_dir = Path(cfg.run_dir)
    summary = rundir.read_summary(run_dir)
    stored = rundir.read_config(run_dir)
    if not summary or summary.get("status") not in contract.FINISHED or stored is None:
        return None
    same = not rundir.config_differences(stored, {contract.CONFIG_SECTION: dataclasses.asdict(cfg)})
    return summary if same else None
