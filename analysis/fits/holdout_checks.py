"""Two checks on the prediction for a held-out run, each a pure function of the runs (no bootstrap, no seed):

- placement: where the held-out run sits in the (N, D/N) plane against the fitted runs. A law fitted on runs
  at 5-100 tokens per parameter and asked for one at 160 extrapolates in D/N, however close its compute;
- leave one point out: the law fitted again without each grid point in turn (all its seeds), and the held-out
  run predicted by each fit. The spread of those predictions says how much one point steers the
  prediction (a single run that moves it by 0.07 nats makes the prediction a property of that run).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.fits.approach3 import fit_law, law_by_name, prepare, run_columns
from analysis.fits.huber import DEFAULT_OBJECTIVE, Objective
from analysis.fits.seeds import POINT_KEYS, point_ids

NEAR_FACTOR = 2.0  # fitted runs within this factor of the held-out N are its neighbours in size


@dataclass(frozen=True)
class Placement:
    """The held-out run's N and D/N, and the D/N the fitted runs span, all of them and those near its N."""

    n: float
    tokens_per_param: float
    fitted_range: tuple[float, float]  # D/N of every fitted run
    near_range: tuple[float, float] | None  # D/N of the fitted runs within NEAR_FACTOR of n (None: no such run)
    nearest: str  # the fitted run nearest in (log N, log D/N)

    @property
    def inside(self) -> bool:
        """Whether the held-out D/N lies within what the fitted runs of its size (or, if none, all) reached."""
        low, high = self.near_range or self.fitted_range
        return low <= self.tokens_per_param <= high


def placement(runs: pd.DataFrame, n: float, d: float) -> Placement:
    """Where a run of N = n on D = d tokens sits against the fitted `runs` in the (N, D/N) plane."""
    ratio = runs["D"].to_numpy(float) / runs["N"].to_numpy(float)
    log_n = np.log(runs["N"].to_numpy(float))
    near = np.abs(log_n - np.log(n)) <= np.log(NEAR_FACTOR)
    distance = np.hypot(log_n - np.log(n), np.log(ratio) - np.log(d / n))
    return Placement(
        n,
        d / n,
        (float(ratio.min()), float(ratio.max())),
        (float(ratio[near].min()), float(ratio[near].max())) if near.any() else None,
        str(runs["run"].iloc[int(np.argmin(distance))]),
    )


def leave_one_point_out(
    runs: pd.DataFrame, n: float, d: float, law_name: str, objective: Objective = DEFAULT_OBJECTIVE
) -> pd.DataFrame:
    """Per grid point (N, D): its seeds, and the law's prediction at (n, d) fitted without it; the first row
    (N, D NaN) is the fit on every run. Each is the fit approach 3 makes of those runs under `objective`, from
    its own starts: the scaled Huber delta follows the residuals of the runs fitted, so reusing the full fit's
    delta would not be the fit the analysis makes without the point."""
    law = law_by_name(law_name)
    N, D, loss, epochs = run_columns(runs)
    full = fit_law(law, prepare(law, N, D, loss, epochs), "varpro", objective)
    points = point_ids(runs)
    predicted, converged = [], []
    for label in np.unique(points):
        keep = points != label
        fit = fit_law(law, prepare(law, N[keep], D[keep], loss[keep], epochs[keep]), "varpro", objective)
        predicted.append(float(fit.predict(n, d)))
        converged.append(fit.converged)
    first = runs.groupby(points)[POINT_KEYS].first()
    table = pd.DataFrame(
        {
            "N": first["N"].to_numpy(),
            "D": first["D"].to_numpy(),
            "seeds": np.bincount(points),
            "predicted": predicted,
            "converged": converged,
        }
    )
    whole = pd.DataFrame({"N": [np.nan], "D": [np.nan], "seeds": [len(runs)], "predicted": [float(full.predict(n, d))],
                          "converged": [full.converged]})  # fmt: skip
    return pd.concat([whole, table], ignore_index=True)


def spread(table: pd.DataFrame) -> float:
    """Largest minus smallest prediction over the leave-one-point-out refits (the full fit's row left out)."""
    left_out = table["predicted"].iloc[1:]
    return float(left_out.max() - left_out.min())
