"""Power laws y = k x^p fitted as straight lines in log-log space (approaches 1 and 2)."""

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from analysis.failures import FitError


@dataclass(frozen=True)
class PowerLaw:
    """y = exp(log_k) * x^exponent."""

    log_k: float
    exponent: float


def fit_lines(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares lines y ~ intercept + slope x, one per row of y and weight (R, B) over x (B,).

    A zero weight leaves a point out (its y may then be NaN); a row with fewer than 2 points left gives NaN.
    """
    weight = np.where(np.isfinite(y), weight, 0.0)
    y = np.where(weight > 0, y, 0.0)
    total = weight.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Centring x on its weighted mean makes intercept and slope nearly uncorrelated (log C is ~45).
        mean_x, mean_y = (weight * x).sum(axis=1) / total, (weight * y).sum(axis=1) / total
        dx = x - mean_x[:, None]
        slope = (weight * dx * (y - mean_y[:, None])).sum(axis=1) / (weight * dx * dx).sum(axis=1)
    enough = (weight > 0).sum(axis=1) >= 2
    return np.where(enough, mean_y - slope * mean_x, np.nan), np.where(enough, slope, np.nan)


def fit_power_law(x: ArrayLike, y: ArrayLike, sigma_log_y: ArrayLike | None = None) -> PowerLaw:
    """Least squares of log y on log x, weighted by 1/sigma^2 when the log-y uncertainties are known."""
    log_x, log_y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if np.unique(log_x).size < 2:
        raise FitError(f"a power law needs at least 2 distinct x values, got {np.unique(log_x).size}")
    weight = np.ones_like(log_x) if sigma_log_y is None else np.asarray(sigma_log_y, float) ** -2.0
    log_k, exponent = fit_lines(log_x, log_y[None], weight[None])
    return PowerLaw(log_k=float(log_k[0]), exponent=float(exponent[0]))


def evaluate_power_law(x: ArrayLike, log_k, exponent) -> np.ndarray:
    """k x^p, broadcasting over arrays of coefficients (bootstrap replicates)."""
    return np.exp(np.add(log_k, np.multiply(exponent, np.log(x))))
