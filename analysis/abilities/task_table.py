"""tasks.parquet, the tidy table of task scores (the items that were scored: task_set.py).

tasks.parquet has one row per (run, step, task, metric): run (run folder name), step, tokens and
flops seen at that checkpoint, params (the run's total parameters), task, metric, value, and n (the
items it averages). The settings and every task's hash travel in the parquet metadata, so a re-run
that would score other items is refused (analysis/measurements.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.measurements import TableSpec
from scaling import contract

COLUMNS = ("run", "step", "tokens", "flops", "params", "task", "metric", "value", "n")
TYPES = ("string", "int64", "int64", "float64", "int64", "string", "string", "float64", "int64")


def task_table(folder: Path) -> TableSpec:
    """FOLDER/tasks.parquet; its settings are those of the task set and every task's hash."""
    return TableSpec(folder / contract.TASKS_TABLE, COLUMNS, TYPES, ("run", "step", "task", "metric"), "task_settings")


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
    return pd.DataFrame(records, columns=list(COLUMNS))
