"""IsoFLOP profile estimators: where one budget's loss is lowest along log N, for many loss vectors at once.

- `parabola`: least squares of loss on (1, x, x^2), x = log N, over all of the budget's sizes (Hoffmann
  et al. 2022, section 3.2). On a wide or asymmetric profile (the Chinchilla form's is asymmetric in
  log N) its minimum moves with the window: with noise-free profiles over +-1 decade whose window drifts
  from -0.5 to +0.5 decades off the optimum across budgets (11 sizes), a is off by +0.0045 (Hoffmann's
  law) and +0.0076 (alpha 0.45, beta 0.30); over +-1.5 decades (13 sizes) by 0.0000 and +0.0032.
- `local`: the same parabola through the LOCAL_SIZES sizes nearest the lowest observed loss, so the
  window follows the minimum: on the same profiles a is off by at most 0.0002. Its spread is larger
  (on 100 noisy sweeps per design with more than LOCAL_SIZES sizes, sd 0.020-0.039 against 0.012-0.027),
  which the bootstrap carries into the intervals. With LOCAL_SIZES or fewer sizes it is the all-size
  parabola. But real profiles are not parabolas near their minimum either: on sweeps drawn from the
  Farseer law fitted to Marin's dclm runs its a is biased by -0.027, and on Porian et al.'s 15
  configurations it is 0.01-0.03 below their published exponent in 11 (12 within 0.03, 6 intervals
  holding the published value).
- `akima` (default): Akima interpolation of log loss against log N, minimised on a grid 25x finer than
  the sizes (Porian et al. 2024); runs at one size are averaged first. It assumes no shape, so it is the
  least biased where the profile is not a parabola (Porian: 15 of 15 within 0.03, 15 intervals holding
  the published value), at the price of a 2-3x larger spread on parabola-like synthetic profiles
  (sd 0.055-0.069), which its intervals carry (80% coverage 0.78-0.83 on the four synthetic designs).
  With 5 sizes a budget it is poor (3 x 5 design: bias -0.033, sd 0.12): use `local` there.

The default is the estimator with the least bias on profiles whose shape we do not know
(benchmarks/RESULTS.md, "Predictions that hold"). Every estimator reports a minimum outside the sampled
sizes with the direction to extend the grid.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import Akima1DInterpolator

from analysis.failures import FitError

PROFILES = ("local", "parabola", "akima")
DEFAULT_PROFILE = "akima"
LOCAL_SIZES = 7
MIN_SIZES = 4  # a parabola has 3 coefficients; a fourth size leaves a residual to gauge the noise by
AKIMA_REFINE = 25
# Failure codes per loss vector: where the minimum lies, or why there is none.
OK, BELOW, ABOVE, FLAT = 0, -1, 1, 2


@dataclass(frozen=True)
class Minima:
    """Per loss vector: the minimum's log N and loss, and OK or the failure code."""

    log_n_opt: np.ndarray
    loss_opt: np.ndarray
    code: np.ndarray


@dataclass(frozen=True)
class Profile:
    """One budget's runs, the estimator's curve through them, and its minimum."""

    budget: float
    log_n: np.ndarray
    loss: np.ndarray
    used: np.ndarray  # runs the estimator's curve was fitted to
    log_n_opt: float
    loss_opt: float
    curve: Callable[[np.ndarray], np.ndarray]
    se_log_n_opt: float = np.nan  # from the bootstrap: set by approach 2

    def at(self, log_n: np.ndarray) -> np.ndarray:
        """The fitted curve at log sizes log_n (NaN outside the sizes it was fitted to)."""
        log_n = np.asarray(log_n, float)
        inside = (log_n >= self.log_n[self.used].min()) & (log_n <= self.log_n[self.used].max())
        return np.where(inside, self.curve(log_n), np.nan)


def _design(x: np.ndarray, degree: int = 2) -> np.ndarray:
    return np.vander(x, degree + 1, increasing=True)


def polynomial(log_n: np.ndarray, loss: np.ndarray, degree: int) -> tuple[np.ndarray, float]:
    """Least-squares polynomial coefficients (R, degree+1) in x - centre, for loss vectors (R, n); and the centre."""
    centre = float(log_n.mean())
    return loss @ np.linalg.pinv(_design(log_n - centre, degree)).T, centre


def _parabola_minima(log_n: np.ndarray, loss: np.ndarray) -> Minima:
    coef, centre = polynomial(log_n, loss, 2)
    c0, c1, c2 = coef.T
    with np.errstate(divide="ignore", invalid="ignore"):
        x_opt = np.where(c2 > 0, -c1 / (2 * c2), np.nan)
    low, high = log_n.min() - centre, log_n.max() - centre
    flat, lowest = c2 <= 0, np.argmin(loss, axis=1)
    # A profile that opens downward but falls towards one end still says which way to extend.
    code = np.select(
        [flat & (lowest == 0), flat & (lowest == log_n.size - 1), flat, x_opt < low, x_opt > high],
        [BELOW, ABOVE, FLAT, BELOW, ABOVE],
        OK,
    )
    loss_opt = np.where(code == OK, c0 - c1**2 / (4 * np.where(c2 > 0, c2, 1.0)), np.nan)
    return Minima(np.where(code == OK, centre + x_opt, np.nan), loss_opt, code)


def local_window(log_n: np.ndarray, lowest: int, k: int = LOCAL_SIZES) -> np.ndarray:
    """Indices of the k sizes nearest (in log N) to the size with the lowest loss, in size order."""
    return np.sort(np.argsort(np.abs(log_n - log_n[lowest]), kind="stable")[:k])


def _local_minima(log_n: np.ndarray, loss: np.ndarray) -> Minima:
    out = Minima(np.full(len(loss), np.nan), np.full(len(loss), np.nan), np.full(len(loss), FLAT))
    lowest = np.argmin(loss, axis=1)
    for index in np.unique(lowest):
        rows, window = lowest == index, local_window(log_n, index)
        m = _parabola_minima(log_n[window], loss[rows][:, window])
        out.log_n_opt[rows], out.loss_opt[rows], out.code[rows] = m.log_n_opt, m.loss_opt, m.code
    return out


def _akima_grid(log_n: np.ndarray) -> np.ndarray:
    return np.linspace(log_n.min(), log_n.max(), AKIMA_REFINE * (log_n.size - 1) + 1)


def _distinct(log_n: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sizes made distinct for an interpolant: runs at one size become one, at their geometric mean loss."""
    sizes, inverse = np.unique(log_n, return_inverse=True)
    if sizes.size == log_n.size:
        return log_n, loss
    share = np.zeros((log_n.size, sizes.size))
    share[np.arange(log_n.size), inverse] = 1.0
    return sizes, np.exp(np.log(loss) @ (share / share.sum(axis=0)))


def _akima_minima(log_n: np.ndarray, loss: np.ndarray) -> Minima:
    log_n, loss = _distinct(log_n, loss)
    grid = _akima_grid(log_n)
    values = Akima1DInterpolator(log_n, np.log(loss).T, axis=0)(grid)  # (G, R)
    best = np.argmin(values, axis=0)
    code = np.select([best == 0, best == grid.size - 1], [BELOW, ABOVE], OK)
    ok = code == OK
    return Minima(
        np.where(ok, grid[best], np.nan), np.where(ok, np.exp(values[best, np.arange(len(best))]), np.nan), code
    )


ESTIMATORS = {"parabola": _parabola_minima, "local": _local_minima, "akima": _akima_minima}


def minima(kind: str, log_n: np.ndarray, loss: np.ndarray) -> Minima:
    """The estimator's minimum for every row of loss (R, n) over sizes log_n (n,), sorted by size."""
    if np.unique(log_n).size < MIN_SIZES:
        code = np.full(len(loss), FLAT)
        return Minima(np.full(len(loss), np.nan), np.full(len(loss), np.nan), code)
    return ESTIMATORS[kind](log_n, loss)


def failure_message(code: int, budget: float, log_n: np.ndarray) -> str:
    """One line for a budget whose minimum could not be placed, with the direction to extend the grid."""
    sizes = np.unique(log_n).size
    if sizes < MIN_SIZES:
        return f"budget {budget:.3g} FLOPs: runs at {sizes} distinct model sizes, need {MIN_SIZES}: add sizes"
    if code == BELOW:
        return (
            f"budget {budget:.3g} FLOPs: the IsoFLOP minimum lies outside the sampled sizes, below N = "
            f"{np.exp(log_n.min()):.3g}: extend the grid to smaller models"
        )
    if code == ABOVE:
        return (
            f"budget {budget:.3g} FLOPs: the IsoFLOP minimum lies outside the sampled sizes, above N = "
            f"{np.exp(log_n.max()):.3g}: extend the grid to larger models"
        )
    return (
        f"budget {budget:.3g} FLOPs: the IsoFLOP profile opens downward or is flat; add runs on both sides "
        "of the optimum"
    )


def _curve(kind: str, log_n: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, Callable]:
    """The runs the estimator's curve uses, and the curve itself, for plotting one budget."""
    if kind == "akima":
        sizes, mean_loss = _distinct(log_n, loss[None])
        interpolator = Akima1DInterpolator(sizes, np.log(mean_loss[0]))
        return np.ones(log_n.size, dtype=bool), lambda x: np.exp(interpolator(x))
    used = np.zeros(log_n.size, dtype=bool)
    used[local_window(log_n, int(np.argmin(loss))) if kind == "local" else np.arange(log_n.size)] = True
    coef, centre = polynomial(log_n[used], loss[used][None], 2)
    return used, lambda x: np.polynomial.polynomial.polyval(np.asarray(x) - centre, coef[0])


def fit_profile(kind: str, budget: float, log_n: np.ndarray, loss: np.ndarray) -> Profile:
    """One budget's profile and minimum; FitError, naming the budget and the way to extend it, if it has none."""
    order = np.argsort(log_n)
    log_n, loss = log_n[order], loss[order]
    found = minima(kind, log_n, loss[None])
    if found.code[0] != OK:
        raise FitError(failure_message(int(found.code[0]), budget, log_n))
    used, curve = _curve(kind, log_n, loss)
    return Profile(float(budget), log_n, loss, used, float(found.log_n_opt[0]), float(found.loss_opt[0]), curve)
