"""Power laws y = k x^p fitted as straight lines in log-log space (approaches 1 and 2)."""

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from analysis.errors import FitError


@dataclass(frozen=True)
class PowerLaw:
    """y = exp(log_k) * x^exponent."""

    log_k: float
    exponent: float


def fit_power_law(x: ArrayLike, y: ArrayLike, sigma_log_y: ArrayLike | None = None) -> PowerLaw:
    """Least squares of log y on log x, weighted by 1/sigma^2 when the log-y uncertainties are known."""
    log_x, log_y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    if np.unique(log_x).size < 2:
        raise FitError(f"a power law needs at least 2 distinct x values, got {np.unique(log_x).size}")
    weights = np.ones_like(log_x) if sigma_log_y is None else 1.0 / np.asarray(sigma_log_y, float)
    # Centre log x so the intercept and slope are nearly uncorrelated (log C is ~45 for real budgets).
    centre = np.average(log_x, weights=weights**2)
    design = np.column_stack([np.ones_like(log_x), log_x - centre]) * weights[:, None]
    (intercept, slope), *_ = np.linalg.lstsq(design, log_y * weights, rcond=None)
    return PowerLaw(log_k=float(intercept - slope * centre), exponent=float(slope))


def evaluate_power_law(x: ArrayLike, log_k, exponent) -> np.ndarray:
    """k x^p, broadcasting over arrays of coefficients (bootstrap replicates)."""
    return np.exp(np.add(log_k, np.multiply(exponent, np.log(x))))
