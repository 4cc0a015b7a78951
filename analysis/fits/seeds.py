"""Seeds: runs of one grid point (the same N and D) at different seeds, their mean and spread, and whether a
fitted curve misses the seed means by more than seed noise explains.

A grid point's seeds differ in initialisation and data order only, so their spread is the noise of one run
at that point. Pooled over points (each point's squared deviations about its own mean, over the points'
summed degrees of freedom) it gives sigma^2, with which a curve's residuals on the seed means are tested:
sum over points of k_p r_p^2 / sigma^2 (k_p seeds at point p, r_p the mean's residual) is chi-square with
(points - fitted parameters) degrees of freedom when the curve is right and the noise is seed noise. As
sigma^2 is itself estimated, the ratio (chi2 / dof) is F-distributed with (dof, seed dof) degrees of freedom.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

POINT_KEYS = ["N", "D"]


def point_ids(runs: pd.DataFrame) -> np.ndarray:
    """An integer per distinct (N, D): the runs of one grid point share it, whatever their seed."""
    return runs.groupby(POINT_KEYS, sort=True).ngroup().to_numpy()


def seed_means(runs: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per grid point (and `by` column): the mean loss of its seeds, their sd and count; the other
    columns from its first run. A table of one seed per point comes back as it was, with sd NaN, seeds 1."""
    keys = [*by, *POINT_KEYS]
    grouped = runs.groupby(keys, sort=False)
    first = grouped.first().reset_index()
    first["loss"] = grouped["loss"].mean().to_numpy()
    first["loss_sd"] = grouped["loss"].std(ddof=1).to_numpy()
    first["seeds"] = grouped["loss"].size().to_numpy()
    return first


@dataclass(frozen=True)
class SeedNoise:
    """Seed noise: the pooled variance of one run's loss about its point's mean, and its degrees of freedom."""

    variance: float
    dof: int

    @property
    def sd(self) -> float:
        return float(np.sqrt(self.variance)) if self.dof else np.nan


def seed_noise(runs: pd.DataFrame) -> SeedNoise:
    """sigma^2 pooled over every point with two or more seeds (NaN, 0 dof when none has)."""
    grouped = runs.groupby(POINT_KEYS)["loss"]
    squares = grouped.apply(lambda x: float(np.sum((x - x.mean()) ** 2))).sum()
    dof = int((grouped.size() - 1).sum())
    return SeedNoise(float(squares / dof) if dof else np.nan, dof)


def seed_sd_by_size(runs: pd.DataFrame) -> pd.DataFrame:
    """Per model size N: points with two or more seeds, seeds per point, and the seed sd pooled over them."""
    rows = []
    for n, at_n in runs.groupby("N"):
        noise = seed_noise(at_n)
        points = at_n.groupby(POINT_KEYS).size()
        rows.append({"N": n, "points": int((points >= 2).sum()), "seeds": int(points.max()), "sd": noise.sd,
                     "dof": noise.dof})  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class MisfitTest:
    """A curve's residuals on seed means against seed noise."""

    chi2: float
    dof: int
    noise_dof: int
    p_value: float  # of the F test: small means more misfit than seed noise explains
    rms: float  # root mean square residual of the seed means

    @property
    def ratio(self) -> float:
        """chi2 / dof: about 1 when the misfit is seed noise."""
        return self.chi2 / self.dof if self.dof > 0 else np.nan


def misfit_test(residual_P: np.ndarray, seeds_P: np.ndarray, noise: SeedNoise, n_fitted: int) -> MisfitTest:
    """Residuals of P seed means (k_p seeds each) from a curve with `n_fitted` parameters, against seed noise."""
    residual_P, seeds_P = np.asarray(residual_P, float), np.asarray(seeds_P, float)
    dof = residual_P.size - n_fitted
    rms = float(np.sqrt(np.mean(residual_P**2)))
    if dof < 1 or noise.dof < 1 or not noise.variance > 0:
        return MisfitTest(np.nan, dof, noise.dof, np.nan, rms)
    chi2 = float(np.sum(seeds_P * residual_P**2) / noise.variance)
    return MisfitTest(chi2, dof, noise.dof, float(stats.f.sf(chi2 / dof, dof, noise.dof)), rms)


def parabola_residuals(log_n: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Residuals of a least-squares parabola in log N through one budget's seed means."""
    coef = np.polyfit(log_n, loss, 2)
    return loss - np.polyval(coef, log_n)
