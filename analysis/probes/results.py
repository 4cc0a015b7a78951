"""Numbers derived from the probe table for the figures and the report (nothing here runs a model)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.probes.measure import MEMORISATION_SCORE
from analysis.probes.probe_table import probe_values
from analysis.probes.stats import (
    Uniformity,
    default_bins,
    precision_recall,
    uniformity_test,
)
from analysis.trained_runs import RunInfo


def series(table: pd.DataFrame, probe: str, key: str, run: str) -> pd.DataFrame:
    """(step, tokens, value) of one probe key of one run, in step order."""
    rows = probe_values(table, probe)
    return rows[(rows.run == run) & (rows.key == key)][["step", "tokens", "value"]]


def memorised_sets(table: pd.DataFrame, run: str) -> dict[int, set[int]]:
    """Training positions memorised (score 1) at each checkpoint, sampled ones only."""
    rows = probe_values(table, MEMORISATION_SCORE)
    rows = rows[rows.run == run]
    return {int(step): set(group.key[group.value == 1].astype(int)) for step, group in rows.groupby("step")}


def final_scores(table: pd.DataFrame, run: str) -> pd.DataFrame:
    """(position, score) of the sampled sequences at the run's last probed checkpoint."""
    rows = probe_values(table, MEMORISATION_SCORE)
    rows = rows[rows.run == run]
    last = rows[rows.step == rows.step.max()]
    return pd.DataFrame({"position": last.key.astype(int).to_numpy(), "score": last.value.to_numpy()})


def uniformity(table: pd.DataFrame, run: str) -> Uniformity | None:
    """The uniformity test at the last checkpoint; None when nothing was scored there."""
    final = final_scores(table, run)
    if final.empty:
        return None
    memorised = final.score.to_numpy() == 1
    return uniformity_test(final.position.to_numpy(), memorised, default_bins(int(memorised.sum())))


def checkpoint_prediction(table: pd.DataFrame, run: str) -> pd.DataFrame:
    """Precision and recall of each checkpoint's memorised set as a predictor of the last checkpoint's."""
    sets = memorised_sets(table, run)
    if not sets:
        return pd.DataFrame(columns=["step", "precision", "recall"])
    final = sets[max(sets)]
    rows = [(step, *precision_recall(found, final)) for step, found in sorted(sets.items())]
    return pd.DataFrame(rows, columns=["step", "precision", "recall"])


@dataclass(frozen=True)
class SizePrediction:
    """A smaller model's final memorised set as a predictor of the largest model's (same data order)."""

    run: str
    target: str
    precision: float
    recall: float
    n_common: int


def size_prediction(table: pd.DataFrame, runs: list[RunInfo]) -> list[SizePrediction]:
    """Compared on the positions both final checkpoints scored; runs with another data order are left out."""
    largest = max(runs, key=lambda r: r.params)
    target = final_scores(table, largest.name)
    out = []
    for run in sorted(runs, key=lambda r: r.params):
        if run is largest or run.data_fingerprint != largest.data_fingerprint:
            continue
        mine = final_scores(table, run.name)
        common = np.intersect1d(mine.position, target.position)
        if not len(common):
            continue
        predicted = set(mine.position[mine.score == 1]) & set(common)
        actual = set(target.position[target.score == 1]) & set(common)
        out.append(SizePrediction(run.name, largest.name, *precision_recall(predicted, actual), len(common)))
    return out
