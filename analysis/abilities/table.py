"""tasks.parquet, the tidy table of task scores, and task_set.json, the items that were scored.

tasks.parquet has one row per (run, step, task, metric): run (run folder name), step, tokens and
flops seen at that checkpoint, params (the run's total parameters), task, metric, value, and n (the
items it averages). The settings and every task's hash travel in the parquet metadata, so a re-run
that would score other items is refused instead of mixing two task sets in one table.
task_set.json holds the settings, the corpus the tasks were cut from, and every item in token ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.abilities.suite import Task, task_from_dict
from analysis.errors import InputError
from scaling import contract
from scaling.files import atomic_write, write_text

TABLE_FILE = contract.TASKS_TABLE
TASK_SET_FILE = "task_set.json"
COLUMNS = ["run", "step", "tokens", "flops", "params", "task", "metric", "value", "n"]
TYPES = ["string", "int64", "int64", "float64", "int64", "string", "string", "float64", "int64"]
SETTINGS_ATTR = "task_settings"


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in zip(COLUMNS, TYPES)})


def _differences(stored: dict, wanted: dict) -> list[str]:
    return sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))


def read_table(path: Path, settings: dict) -> pd.DataFrame:
    """The rows already scored (an empty table if none), after checking they scored the same task set."""
    if not path.exists():
        return empty_table()
    table = pd.read_parquet(path)
    stored = table.attrs.get(SETTINGS_ATTR) or {}
    changed = _differences(stored, settings)
    if changed:
        raise InputError(
            f"{', '.join(changed)}: differs from what {path} was scored with ({ {k: stored.get(k) for k in changed} }); "
            f"pass the same settings, or delete {path} to score again from scratch"
        )
    return table[COLUMNS].astype(dict(zip(COLUMNS, TYPES)))


def write_table(path: Path, table: pd.DataFrame, settings: dict) -> None:
    """Atomic: a reader (or a killed command) never leaves half a table behind."""
    table = table.sort_values(["run", "step", "task", "metric"], kind="stable").reset_index(drop=True)
    table.attrs[SETTINGS_ATTR] = settings
    atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))


def scored_steps(table: pd.DataFrame, run: str) -> set[int]:
    return set(table.step[table.run == run].astype(int))


def rows(
    run: str,
    step: int,
    tokens: int,
    flops: float,
    params: int,
    scores: dict[str, dict[str, float]],
    sizes: dict[str, int],
) -> pd.DataFrame:
    """One checkpoint's {task: {metric: value}} as table rows."""
    records = [
        (run, step, tokens, flops, params, task, metric, value, sizes[task])
        for task, values in scores.items()
        for metric, value in values.items()
    ]
    return pd.DataFrame(records, columns=COLUMNS).astype(dict(zip(COLUMNS, TYPES)))


def write_task_set(path: Path, header: dict, tasks: list[Task]) -> None:
    write_text(path, json.dumps({**header, "tasks": [task.as_dict() for task in tasks]}) + "\n")


def read_task_set(path: Path) -> tuple[dict, list[Task]] | None:
    """(header, tasks) of a stored task set, or None if there is none."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    return {k: v for k, v in record.items() if k != "tasks"}, [task_from_dict(t) for t in record["tasks"]]
