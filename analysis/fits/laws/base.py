"""What every law shares: the data a law's objective reads, the linear solve of its starts, and the
abstract `Law` the laws in this package implement."""

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from analysis.fits.lossmodel import tokens_from_flops

# Exponent grid for the variable-projection starts: geometric, because exponents matter by ratio.
EXPONENT_GRID = np.geomspace(0.02, 3.0, 28)
EXPONENT_BOUNDS = (1e-4, 5.0)
# A log-scale term more than this many nats below the smallest loss is zero to every digit a loss has.
LOG_SCALE_FLOOR = 20.0
LOG_SCALE_HEADROOM = 5.0


@dataclass(frozen=True)
class LawData:
    """What a law's objective reads: centred log N and log D, log L, and each run's repetitions R = epochs - 1."""

    u: np.ndarray
    v: np.ndarray
    log_loss: np.ndarray
    repeats: np.ndarray
    centre_n: float
    centre_d: float


def law_data(N: np.ndarray, D: np.ndarray, loss: np.ndarray, epochs: np.ndarray | None = None) -> LawData:
    """Centre log N and log D; runs without a recorded epoch count saw each token once."""
    log_n, log_d = np.log(N), np.log(D)
    repeats = np.zeros_like(log_n) if epochs is None else np.maximum(np.asarray(epochs, float) - 1.0, 0.0)
    return LawData(log_n - log_n.mean(), log_d - log_d.mean(), np.log(loss), repeats, log_n.mean(), log_d.mean())


def softmax_shares(*z: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """log(sum exp z) and each term's share of the sum.

    No max-shift is needed: every law bounds its coordinates (see `bounds`) so that no term can overflow,
    and skipping the shift saves one exponential of the whole batch per step.
    """
    w = [np.exp(zi) for zi in z]
    total = np.maximum(sum(w), 1e-300)
    return np.log(total), [wi / total for wi in w]


def variable_projection(
    basis: np.ndarray, target: np.ndarray, weight: np.ndarray, count: np.ndarray, scale: np.ndarray | float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares target ~ basis @ coef at every grid point: (coef (G, m), score (G,)).

    basis (G, n, m), target and weight (G, n) or (n,), count (n,) how often each run enters. Scores
    rank grid points by their residual (times `scale`, to put laws fitted in other units on one footing);
    points whose coefficients come out negative rank last.
    """
    xw = basis * (weight * np.sqrt(count))[..., None]
    tw = np.broadcast_to(target * weight * np.sqrt(count), xw.shape[:2])
    gram = np.einsum("gnm,gnk->gmk", xw, xw)
    rhs = np.einsum("gnm,gn->gm", xw, tw)
    # A tiny ridge keeps near-collinear corners of the grid (an exponent near 0) solvable.
    gram += 1e-12 * np.trace(gram, axis1=1, axis2=2)[:, None, None] * np.eye(gram.shape[-1])
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]
    residual = np.einsum("gn,gn->g", tw, tw) - np.einsum("gm,gm->g", coef, rhs)
    score = residual * scale
    return coef, np.where((coef > 0).all(axis=1) & np.isfinite(score), score, np.inf)


class Law(ABC):
    """One functional form of the loss: its coordinates, prediction, starts, named parameters and frontier."""

    name: str
    formula: str
    citation: str
    theta_names: tuple[str, ...]
    theta_keys: tuple[str, ...]  # the named parameter each coordinate of theta chiefly sets
    scale_names: tuple[str, ...]  # named parameters that are positive scales, checked on a log axis
    checked_keys: tuple[str, ...] = ("a", "b")  # estimates whose intervals are checked for being too narrow
    # The compute-optimal exponents this law's form fixes whatever the data (its intervals for them are points).
    fixed_allocation: dict[str, float] = {}
    frontier_note: str = ""
    full_fit_starts: int = 3  # grid starts polished for the full fit

    @abstractmethod
    def bounds(self, data: LawData) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds on theta."""

    @abstractmethod
    def log_predict(self, theta: np.ndarray, data: LawData) -> tuple[np.ndarray, np.ndarray]:
        """log L (K, n) and d log L / d theta (K, n, P) for K rows of theta."""

    @abstractmethod
    def grid_starts(self, data: LawData, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Starts on the law's grid, solved linearly where the law allows: (theta (G, P), score (G,))."""

    @abstractmethod
    def named(self, theta: np.ndarray, data: LawData) -> dict[str, np.ndarray]:
        """The law's named parameters from theta (..., P), broadcasting over leading axes."""

    @abstractmethod
    def loss(self, params: Mapping, N, D, epochs=1.0) -> np.ndarray:
        """Predicted loss from named parameters (floats, or replicate arrays shaped (R, 1))."""

    @abstractmethod
    def terms(self, params: Mapping, N, D, epochs=1.0) -> dict[str, np.ndarray]:
        """The loss split into its parts, each named, to find parts that do not vary over the runs."""

    @abstractmethod
    def allocation(self, params: Mapping) -> dict[str, np.ndarray]:
        """a, b and G of the compute-optimal allocation N_opt = G (C/6)^a, D_opt = C/(6 N_opt) ~ C^b."""

    def frontier(self, params: Mapping, C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N_opt, D_opt, L_opt) at budgets C from the allocation (every law here has a power-law one)."""
        alloc = self.allocation(params)
        n_opt = alloc["G"] * np.power(np.asarray(C, float) / 6.0, alloc["a"])
        d_opt = tokens_from_flops(C, n_opt)
        return n_opt, d_opt, self.loss(params, n_opt, d_opt)

    def check_data(self, data: LawData) -> None:
        """FitError when the runs cannot identify this law at all (one line, naming what is missing).
        Most laws need nothing beyond the checks every fit makes, so the default checks nothing."""
        return None

    def _log_scale_bounds(self, data: LawData, count: int) -> tuple[np.ndarray, np.ndarray]:
        low = float(data.log_loss.min()) - LOG_SCALE_FLOOR
        high = float(data.log_loss.max()) + LOG_SCALE_HEADROOM
        return np.full(count, low), np.full(count, high)


def as_column(params: Mapping) -> dict:
    """Replicate parameters as a column (R, 1), so that they broadcast against budgets (M,)."""
    return {key: np.reshape(np.asarray(value, float), (-1, 1)) for key, value in params.items()}
