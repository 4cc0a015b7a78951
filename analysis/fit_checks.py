"""The values of a table of runs, checked before anything is fitted: text where a number belongs, and values
no run has (outside 1e-100 to 1e100 in any units, or many decades from the rest of their column: a unit typed wrong,
a corrupted cell), are refused naming the file, row, column and value. (Exact repeats of a row are dropped
by the loader, analysis/fit_input.py, which names them.)"""

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.failures import InputError


def numbers(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """A column as floats; text that is no number (a repeated header, a unit typed in) is refused, named."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        row = bad.idxmax()
        raise InputError(
            f"{path}: column {column!r} holds {table[column][row]!r} in row {row}, which is not a number"
            f"{f' (and {int(bad.sum()) - 1} more rows)' if bad.sum() > 1 else ''}; fix the table, or leave such "
            "rows out with --where"
        )
    return values.to_numpy(float)


# How far (in decades) a value may lie from its column's median before it is taken for a slip (a unit typed
# wrong, a corrupted cell) rather than a run: sizes and token counts of one study span a few decades at most,
# losses of one study less than one.
PLAUSIBLE_DECADES = {"N": 8.0, "D": 8.0, "loss": 3.0}
ABSURD_DECADES = 100.0


def check_plausible(runs: pd.DataFrame, names: dict[str, str], path: Path, label) -> None:
    """Refuse a value no run has: outside 1e-100 to 1e100 in any units (the fits' powers of it would overflow), or many
    decades from the median of the rest of its column (given three values or more to take it from)."""
    for column, decades in PLAUSIBLE_DECADES.items():
        x = runs[column].to_numpy(float)
        usable = np.flatnonzero(np.isfinite(x) & (x > 0))
        logs = np.log10(x[usable])
        absurd = np.abs(logs) > ABSURD_DECADES
        median = float(np.median(logs[~absurd])) if (~absurd).sum() >= 3 else None
        distance = np.abs(logs - (median or 0.0))
        far = absurd | ((distance > decades) if median is not None else False)
        if far.any():
            worst = int(np.argmax(np.where(far, distance, -1.0)))
            where = (
                f"is outside 1e-{ABSURD_DECADES:.0f} to 1e{ABSURD_DECADES:.0f}, in any units"
                if absurd[worst]
                else f"lies {distance[worst]:.0f} decades from the column's median {10**median:.4g}"
            )
            raise InputError(
                f"{path}: {names[column]} = {x[usable[worst]]:.4g} in {label(runs.run[usable[worst]])} {where}: no "
                "run has such a value; fix the table (the units?), or leave the row out with --where"
            )
