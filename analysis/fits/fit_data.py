"""The input every fit takes: canonical runs, their training curves if any, and what loading noted."""

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class FitData:
    """Runs ready to fit, their training curves if any, and notes on what loading dropped or assumed."""

    runs: pd.DataFrame
    curves: pd.DataFrame | None
    source: Path
    convention: str  # "total", "nonembedding", or "column 'NAME'" for an outside table
    notes: tuple[str, ...]
    ours: bool  # a sweep table, so the other parameter convention can be fitted too
    # Runs trained to test the fits' prediction (a sweep's held-out run): never fitted, same columns as runs.
    held_out: pd.DataFrame | None = None
