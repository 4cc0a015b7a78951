"""The tidy probe table: one row per (run, step, probe, key) measurement, written atomically.

Columns: run (run folder name), step (checkpoint step), tokens (tokens seen at that step), probe,
key (what within the probe: a position, a bin, a sequence's training position, ...), value (float).
Reading, writing and refusing other settings: analysis/measurements.py.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.measurements import TableSpec
from scaling import contract

COLUMNS = ("run", "step", "tokens", "probe", "key", "value")
TYPES = ("string", "int64", "int64", "string", "string", "float64")


def probe_table(folder: Path) -> TableSpec:
    """FOLDER/probes.parquet; its settings are the command's flags (--eval-tokens, ...)."""
    return TableSpec(
        folder / contract.PROBES_TABLE,
        COLUMNS,
        TYPES,
        ("run", "step", "probe", "key"),
        "probe_settings",
        flag=lambda name: "--" + name.replace("_", "-"),
    )


def measured(table: pd.DataFrame, run: str) -> set[tuple[int, str]]:
    """(step, probe) pairs of `run` that already have rows: a re-run skips them."""
    rows = table[table.run == run]
    return set(zip(rows.step.astype(int), rows.probe))


def rows(run: str, step: int, tokens: int, probe: str, values: dict[str, float]) -> pd.DataFrame:
    """One probe's measurements at one checkpoint as table rows."""
    frame = pd.DataFrame(
        {
            "run": run,
            "step": step,
            "tokens": tokens,
            "probe": probe,
            "key": list(values),
            "value": list(values.values()),
        }
    )
    return frame


def probe_values(table: pd.DataFrame, probe: str) -> pd.DataFrame:
    """The rows of one probe, in (run, step) order."""
    return table[table.probe == probe].sort_values(["run", "step"], kind="stable")
