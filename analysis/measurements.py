"""Measure every saved checkpoint into one tidy table: what `analysis.probe` and `analysis.tasks` share.

Both commands walk the runs under a path, load each checkpoint the table does not hold yet, measure it,
append its rows and write the table back atomically after every checkpoint (so a kill loses little),
then redraw their figures and their section of report.md from the whole table. The settings that
produced the rows travel in the parquet metadata, so a re-run with other settings is refused instead of
silently mixing two kinds of measurement in one table.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from flax import nnx

from analysis.failures import InputError
from analysis.reporting.document import write_section
from analysis.reporting.page import write_page
from analysis.trained_runs import RunInfo
from scaling import contract
from scaling.files import atomic_write
from scaling.training.checkpoint import DamagedCheckpoint, load_model

# measure(step, tokens, graphdef, state) -> the rows of one checkpoint
Measure = Callable[[int, int, nnx.GraphDef, nnx.State], pd.DataFrame]


@dataclass(frozen=True)
class TableSpec:
    """A measurement table's file, columns (with their dtypes), sort order and the metadata key of its settings."""

    path: Path
    columns: tuple[str, ...]
    types: tuple[str, ...]
    sort_by: tuple[str, ...]
    settings_attr: str
    # How a setting is named in the refusal: a probe setting is a flag (--eval-tokens), a task setting a key.
    flag: Callable[[str], str] = str

    def empty(self) -> pd.DataFrame:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in zip(self.columns, self.types)})

    def typed(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[list(self.columns)].astype(dict(zip(self.columns, self.types)))

    def read(self, settings: dict) -> pd.DataFrame:
        """The rows already measured (an empty table if none), after checking they used the same settings."""
        if not self.path.exists():
            return self.empty()
        try:
            table = pd.read_parquet(self.path)
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(
                f"{self.path}: unreadable ({str(err).splitlines()[0][:100]}); move it aside and run again to "
                "measure from scratch"
            ) from None
        stored = table.attrs.get(self.settings_attr) or {}
        changed = sorted(k for k in stored.keys() | settings.keys() if stored.get(k) != settings.get(k))
        if changed:
            names = ", ".join(self.flag(name) for name in changed)
            raise InputError(
                f"{names}: differs from what {self.path} was measured with "
                f"({ {k: stored.get(k) for k in changed} }); pass the same settings, or move {self.path} aside "
                "to measure again from scratch"
            )
        return self.typed(table)

    def write(self, table: pd.DataFrame, settings: dict) -> None:
        """Atomic: a reader (or a killed command) never sees half a table."""
        table = table.sort_values(list(self.sort_by), kind="stable").reset_index(drop=True)
        table.attrs[self.settings_attr] = settings
        atomic_write(self.path, lambda tmp: table.to_parquet(tmp, index=False))


def measure_run(
    run: RunInfo,
    steps: Container[int],
    measure: Measure,
    table: pd.DataFrame,
    spec: TableSpec,
    settings: dict,
    verb: str,
    compute_dtype: str | None = None,
) -> pd.DataFrame:
    """Measure `run`'s checkpoints at `steps`, writing the table after each. A damaged checkpoint (verified as
    training verifies it) is left as it is, skipped and named; the count printed is of those measured."""
    start, done, damaged = time.perf_counter(), 0, []
    for step, tokens in run.checkpoints:
        if step not in steps:
            continue
        try:
            graphdef, state = nnx.split(load_model(run.run_dir, step, compute_dtype=compute_dtype))
        except DamagedCheckpoint as err:
            warnings.warn(f"{run.name}: {err}; not {verb}")
            damaged.append(step)
            continue
        table = pd.concat([table, spec.typed(measure(step, tokens, graphdef, state))], ignore_index=True)
        spec.write(table, settings)
        done += 1
    skipped = f"; {len(damaged)} damaged, skipped (steps {', '.join(map(str, damaged))})" if damaged else ""
    elapsed = time.perf_counter() - start
    print(f"{run.name}: {verb} {done} checkpoints in {elapsed:.1f}s{skipped}", file=sys.stderr)
    return table


def measured_runs(path: Path, runs: list[RunInfo], table: pd.DataFrame) -> list[RunInfo]:
    """The runs the table holds rows of; InputError when none has any (nothing was ever saved)."""
    found = [run for run in runs if (table.run == run.name).any()]
    if not found:
        raise InputError(
            f"PATH: no run under {path} has a readable saved checkpoint; train with checkpoint.enabled=true"
        )
    return found


def publish(path: Path, section: str, body: str) -> None:
    """Replace one section of PATH/report.md and rebuild PATH/report.html from it."""
    write_section(path / contract.REPORT_FILE, section, body)
    write_page(path / contract.REPORT_FILE)
