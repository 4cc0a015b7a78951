"""The tidy probe table: one row per (run, step, probe, key) measurement, written atomically.

Columns: run (run folder name), step (checkpoint step), tokens (tokens seen at that step), probe,
key (what within the probe: a position, a bin, a sequence's training position, ...), value (float).
The settings that produced the rows travel in the parquet metadata, so a re-run with other settings
is refused instead of silently mixing two kinds of measurement in one table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.errors import InputError
from scaling import contract
from scaling.files import atomic_write

TABLE_FILE = contract.PROBES_TABLE
COLUMNS = ["run", "step", "tokens", "probe", "key", "value"]
TYPES = ["string", "int64", "int64", "string", "string", "float64"]
SETTINGS_ATTR = "probe_settings"


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in zip(COLUMNS, TYPES)})


def read_table(path: Path, settings: dict) -> pd.DataFrame:
    """The rows already measured (an empty table if none), after checking they used the same settings."""
    if not path.exists():
        return empty_table()
    table = pd.read_parquet(path)
    stored = table.attrs.get(SETTINGS_ATTR)
    if stored != settings:
        changed = sorted(k for k in settings.keys() | (stored or {}).keys() if (stored or {}).get(k) != settings.get(k))
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in changed)
        raise InputError(
            f"{flags}: differs from the settings {path} was measured with ({stored}); "
            f"pass the same settings, or delete {path} to probe again from scratch"
        )
    return table[COLUMNS].astype(dict(zip(COLUMNS, TYPES)))


def write_table(path: Path, table: pd.DataFrame, settings: dict) -> None:
    """Atomic: a reader (or a killed probe) never leaves half a table behind."""
    table = table.sort_values(["run", "step", "probe", "key"], kind="stable").reset_index(drop=True)
    table.attrs[SETTINGS_ATTR] = settings
    atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))


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
    return frame.astype(dict(zip(COLUMNS, TYPES)))


def probe_values(table: pd.DataFrame, probe: str) -> pd.DataFrame:
    """The rows of one probe, in (run, step) order."""
    return table[table.probe == probe].sort_values(["run", "step"], kind="stable")
