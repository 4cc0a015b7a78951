"""The compute frontier with a floor: L*(C) = E + k C^-g, fitted to the IsoFLOP minima (approach 2's).

Approach 2's own loss law is a pure power law through the minima, L* = k_L C^c, which keeps falling
towards zero; the best loss of a real model levels off at the irreducible loss E, so far beyond the fitted
budgets the pure power law is optimistic. The floor law is the same frontier with Hoffmann et al.'s
irreducible term (their eq. 2 restricted to the compute-optimal path, where both reducible terms are
power laws in C), fitted to the minima themselves rather than to every run. It predicts only the best
loss at a budget, not the loss of any (N, D).

Fit: least squares in log L over the budgets' minima; for each g on a fine grid, E and k solve a
non-negative linear least-squares problem (variable projection), and the best g is refined by a
golden-section search between its grid neighbours. Intervals: the same fit on each of approach 2's bootstrap replicates of the
minima, so they carry the profiles' noise and misfit.
"""

from dataclasses import dataclass

import numpy as np

from analysis.failures import FitError
from analysis.fits.bootstrap import percentile_interval

MIN_BUDGETS = 4  # three parameters: a fourth budget leaves one to check the fit by
G_GRID = np.geomspace(1e-3, 2.0, 200)
GOLDEN, GOLDEN_STEPS = (np.sqrt(5.0) - 1.0) / 2.0, 40


@dataclass(frozen=True)
class FrontierLaw:
    """L*(C) = E + k C^-g fitted to the minima, with bootstrap replicates of each parameter."""

    estimate: dict[str, float]  # E, k, g
    samples: dict[str, np.ndarray]

    def predict(self, C) -> np.ndarray:
        """The best loss at budgets C."""
        return law_loss(self.estimate, np.asarray(C, float))

    def replicas(self, C) -> np.ndarray:
        """(n_boot, M) best losses of every replicate at budgets C."""
        return law_loss({key: value[:, None] for key, value in self.samples.items()}, np.asarray(C, float))

    def interval(self, key: str, level: float) -> tuple[float, float]:
        low, high = percentile_interval(self.samples[key], level)
        return float(low), float(high)


def law_loss(params: dict, C: np.ndarray) -> np.ndarray:
    """E + k C^-g (C scaled by 1e18 inside k, so k stays a readable number)."""
    return params["E"] + params["k"] * np.power(C / 1e18, -params["g"])


def fit_rows(log_c: np.ndarray, loss: np.ndarray) -> dict[str, np.ndarray]:
    """E, k, g for every row of minima losses (R, B) at log budgets log_c (B,); NaN minima are left out,
    and a row with fewer than MIN_BUDGETS minima gives NaN."""
    score = np.stack([_score(log_c, loss, np.full(len(loss), g)) for g in G_GRID], axis=1)
    j = np.argmin(score, axis=1)
    low, high = G_GRID[np.maximum(j - 1, 0)], G_GRID[np.minimum(j + 1, G_GRID.size - 1)]
    for _ in range(GOLDEN_STEPS):  # golden-section search between the best grid point's neighbours
        left, right = high - GOLDEN * (high - low), low + GOLDEN * (high - low)
        lower = _score(log_c, loss, left) < _score(log_c, loss, right)
        low, high = np.where(lower, low, left), np.where(lower, right, high)
    g = 0.5 * (low + high)
    coef, _ = _linear(log_c, loss, g)
    enough = np.isfinite(loss).sum(axis=1) >= MIN_BUDGETS
    return {key: np.where(enough, value, np.nan) for key, value in (("E", coef[:, 0]), ("k", coef[:, 1]), ("g", g))}


def _score(log_c: np.ndarray, loss: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Sum of squared log residuals of each row's best E, k at its g."""
    ok = np.isfinite(loss)
    coef, power = _linear(log_c, loss, g)
    fitted = np.maximum(coef[:, :1] + coef[:, 1:] * power, 1e-300)
    return np.sum(ok * (np.log(np.where(ok, loss, 1.0)) - np.log(fitted)) ** 2, axis=1)


def _linear(log_c: np.ndarray, loss: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row's g: E, k >= 0 (R, 2) minimising the squared relative residuals (E + k x - L) / L, with
    x = (C / 1e18)^-g (R, B); and x."""
    ok = np.isfinite(loss)
    weight = np.where(ok, 1.0 / np.where(ok, loss, 1.0), 0.0)
    power = np.exp(-(log_c[None, :] - np.log(1e18)) * g[:, None])
    a, b = weight, weight * power  # columns of the weighted design; the target is `ok` (L / L = 1)
    saa, sab, sbb = (a * a).sum(1), (a * b).sum(1), (b * b).sum(1)
    sat, sbt = (a * ok).sum(1), (b * ok).sum(1)
    det = saa * sbb - sab**2
    with np.errstate(divide="ignore", invalid="ignore"):
        e, k = (sbb * sat - sab * sbt) / det, (saa * sbt - sab * sat) / det
        # On the boundary of E, k >= 0 the other coefficient is refitted alone.
        e, k = np.where(e < 0, 0.0, e), np.where(e < 0, sbt / sbb, k)
        e, k = np.where(k < 0, sat / saa, e), np.where(k < 0, 0.0, k)
    return np.column_stack([e, k]), power


def fit_frontier_law(budgets: np.ndarray, loss_opt: np.ndarray, replicate_loss: np.ndarray) -> FrontierLaw:
    """The floor law through the minima (B,) at budgets (B,), and through each replicate's minima (R, B)."""
    budgets, loss_opt = np.asarray(budgets, float), np.asarray(loss_opt, float)
    if np.isfinite(loss_opt).sum() < MIN_BUDGETS:
        raise FitError(
            f"the frontier law E + k C^-g needs the minima of at least {MIN_BUDGETS} budgets, found "
            f"{int(np.isfinite(loss_opt).sum())}: add budgets"
        )
    log_c = np.log(budgets)
    estimate = {key: float(value[0]) for key, value in fit_rows(log_c, loss_opt[None]).items()}
    return FrontierLaw(estimate, fit_rows(log_c, replicate_loss))
