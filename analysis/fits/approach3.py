"""Approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta to every run (Hoffmann et al. 2022, section 3.3).

The objective follows Besiroglu et al. (2024): the Huber loss (delta = 1e-3) between
lse(a - alpha log N, b - beta log D, e) and log L, SUMMED over runs, with A = e^a, B = e^b, E = e^e.
Averaging instead of summing shrinks the objective by 1/n and lets an optimiser's tolerance stop it early:
the trap that left Hoffmann's published fit short of the optimum.

Starts come from either
- variable projection (default): for each (alpha, beta) on a grid, E, A, B solve a linear least-squares
  problem in closed form, so the whole grid costs one batched 3x3 solve; the best few grid points are
  polished; or
- Hoffmann's grid: all 4,500 starts alpha, beta in {0, .5, .., 2}, e in {-1, -.5, .., 1}, a, b in {0, 5, .., 25}.
The polish is Levenberg-Marquardt on Huber's quadratic majoriser (weights min(1, delta/|r|)), vectorised
over starts and bootstrap replicates at once, so 1,000 refits cost about as much as a few scipy calls.
Internally log N and log D are centred, which decorrelates a from alpha and b from beta.
"""

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from analysis.errors import FitError
from analysis.fits.bootstrap import WARN_FRACTION, resample_counts
from analysis.fits.lossmodel import (
    LossParams,
    allocation_coefficient,
    allocation_exponents,
)
from analysis.fits.result import ApproachResult, loss_model_frontier

HUBER_DELTA = 1e-3
MIN_POINTS = 8
# Variable-projection grid: geometric, because exponents matter by ratio (0.1 vs 0.2 as much as 1 vs 2).
EXPONENT_GRID = np.geomspace(0.02, 3.0, 28)
VARPRO_STARTS = 3
# Bounds on theta = (log A, log B centred, log E, alpha, beta): far wider than any loss curve needs, and
# narrow enough that exp() of the model terms can never overflow, so no log-sum-exp shift is needed.
LOWER = np.array([-50.0, -50.0, -50.0, 1e-4, 1e-4])
UPPER = np.array([50.0, 50.0, 50.0, 5.0, 5.0])
MAX_STEPS = 500
# A term of L(N, D) whose value changes by less than this share of the mean loss across the runs
# does not shape the fit: its parameters are not identified by the data (however the optimiser
# made it vanish: an exponent on its bound, or a coefficient that cancels a large exponent).
VANISHING_SHARE = 5e-3
# A step that improves the summed objective by less than this fraction ends that start's polish.
F_TOL = 1e-12
HOFFMANN_GRID = {
    "a": np.arange(0.0, 30.0, 5.0),
    "b": np.arange(0.0, 30.0, 5.0),
    "e": np.arange(-1.0, 1.5, 0.5),
    "alpha": np.arange(0.0, 2.5, 0.5),
    "beta": np.arange(0.0, 2.5, 0.5),
}
Init = Literal["varpro", "grid"]


@dataclass(frozen=True)
class CentredData:
    """log N and log D centred on their means, and log L: what the objective reads."""

    u: np.ndarray
    v: np.ndarray
    log_loss: np.ndarray
    centre_n: float
    centre_d: float


@dataclass(frozen=True)
class LossFit:
    """A fitted L(N, D), the summed Huber objective it reached, and notes on touching the search limits."""

    params: LossParams
    objective: float
    edge_notes: tuple[str, ...]
    converged: bool


def centre(N: np.ndarray, D: np.ndarray, loss: np.ndarray) -> CentredData:
    """log N and log D minus their means, and log L."""
    log_n, log_d = np.log(N), np.log(D)
    return CentredData(log_n - log_n.mean(), log_d - log_d.mean(), np.log(loss), log_n.mean(), log_d.mean())


def fit_loss_models(
    N: np.ndarray, D: np.ndarray, loss: np.ndarray, counts: np.ndarray, init: Init = "varpro"
) -> list[LossFit]:
    """One fit per row of `counts` (how often each run enters that fit): the full data, or bootstrap resamples.

    Every start of every row is polished in one batch; each row keeps its best start.
    """
    _check_points(N, D)
    data = centre(N, D, loss)
    if init == "varpro":
        starts = np.stack([varpro_starts(data, row) for row in counts])  # (R, K, 5)
    else:
        grid = hoffmann_starts(data)
        starts = np.broadcast_to(grid, (len(counts), *grid.shape))
    n_starts = starts.shape[1]
    theta, value, converged = polish(starts.reshape(-1, 5), data, np.repeat(counts, n_starts, axis=0).astype(float))
    best = value.reshape(-1, n_starts).argmin(axis=1)
    fits = []
    for row, start in enumerate(best):
        i = row * n_starts + start
        notes = _edge_notes(theta[i], starts[row, start], init)
        fits.append(LossFit(_uncentre(theta[i], data), float(value[i]), notes, bool(converged[i])))
    return fits


def fit_loss_model(N: np.ndarray, D: np.ndarray, loss: np.ndarray, init: Init = "varpro") -> LossFit:
    """The fit on all runs, each counted once."""
    return fit_loss_models(N, D, loss, np.ones((1, N.size)), init)[0]


def varpro_starts(data: CentredData, count: np.ndarray) -> np.ndarray:
    """The VARPRO_STARTS best (alpha, beta) grid points with E, A, B solved linearly, as rows of theta.

    Each grid point is scored by its weighted least-squares residual, which the normal equations give
    without forming a (grid x runs) array of fitted values: O(G n) to build, O(G^2) to solve.
    """
    x = np.exp(-EXPONENT_GRID[:, None] * data.u)  # (G, n): (N/N0)^-alpha
    y = np.exp(-EXPONENT_GRID[:, None] * data.v)  # (G, n): (D/D0)^-beta
    # Relative residuals (fit - L)/L approximate log-space residuals, so rows are weighted by 1/L
    # (times each run's count); the target L/L is then 1 for every run.
    inv_loss = np.exp(-data.log_loss)
    gram, rhs = _normal_equations(x * inv_loss, y * inv_loss, inv_loss, count)
    coef = np.linalg.solve(gram, rhs[..., None])[..., 0]  # (G, G, 3): E, A', B'
    residual = count.sum() - np.einsum("ijk,ijk->ij", coef, rhs)
    # Grid points where E, A or B came out negative rank last; clipped to the bound they still make a start,
    # so a bootstrap resample never fails for want of one.
    valid = (coef > 0).all(axis=-1)
    best = np.lexsort((residual.ravel(), ~valid.ravel()))[:VARPRO_STARTS]
    i, j = np.unravel_index(best, residual.shape)
    log_coef = np.log(np.maximum(coef[i, j], np.exp(LOWER[0])))
    return np.column_stack([log_coef[:, 1], log_coef[:, 2], log_coef[:, 0], EXPONENT_GRID[i], EXPONENT_GRID[j]])


def _normal_equations(
    xw: np.ndarray, yw: np.ndarray, w: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrices (G, G, 3, 3) and right-hand sides (G, G, 3) of 1 ~ [w, x_i w, y_j w], rows weighted by count."""
    g = xw.shape[0]
    xc, yc = xw * count, yw * count
    gram = np.empty((g, g, 3, 3))
    gram[..., 0, 0] = (w * count) @ w
    gram[..., 0, 1] = gram[..., 1, 0] = (xc @ w)[:, None]
    gram[..., 0, 2] = gram[..., 2, 0] = (yc @ w)[None, :]
    gram[..., 1, 1] = np.einsum("in,in->i", xc, xw)[:, None]
    gram[..., 2, 2] = np.einsum("jn,jn->j", yc, yw)[None, :]
    gram[..., 1, 2] = gram[..., 2, 1] = xc @ yw.T
    rhs = np.empty((g, g, 3))
    rhs[..., 0] = w @ count
    rhs[..., 1] = (xc.sum(axis=1))[:, None]
    rhs[..., 2] = (yc.sum(axis=1))[None, :]
    # A tiny ridge keeps near-collinear corners of the grid (alpha or beta ~ 0) solvable.
    gram += 1e-12 * np.trace(gram, axis1=-2, axis2=-1)[..., None, None] * np.eye(3)
    return gram, rhs


def hoffmann_starts(data: CentredData) -> np.ndarray:
    """Hoffmann et al.'s 4,500-point initialisation grid, expressed in the centred parameters."""
    a, b, e, alpha, beta = np.array(list(itertools.product(*HOFFMANN_GRID.values()))).T
    return np.column_stack([a - alpha * data.centre_n, b - beta * data.centre_d, e, alpha, beta])


def _evaluate(theta: np.ndarray, data: CentredData, count: np.ndarray) -> tuple[np.ndarray, ...]:
    """Objective (K,), gradient (K, 5) and majoriser Hessian (K, 5, 5) for K parameter rows at once."""
    a_c, b_c, e, alpha, beta = (column[:, None] for column in theta.T)
    w_n, w_d = np.exp(a_c - alpha * data.u), np.exp(b_c - beta * data.v)
    total = w_n + w_d + np.exp(e)
    r = np.log(total) - data.log_loss
    psi = np.clip(r, -HUBER_DELTA, HUBER_DELTA)
    value = np.einsum("kn,kn->k", count * psi, r - 0.5 * psi)
    s_n, s_d = w_n / total, w_d / total
    jac = np.stack([s_n, s_d, 1.0 - s_n - s_d, -s_n * data.u, -s_d * data.v], axis=-1)  # d log-prediction
    grad = np.einsum("kn,kni->ki", count * psi, jac)
    # Huber's rho(r) lies below the parabola through r with curvature psi(r)/r, so weighting each run by
    # min(1, delta/|r|) gives a Gauss-Newton model that majorises the objective.
    weight = count * np.minimum(1.0, HUBER_DELTA / np.maximum(np.abs(r), 1e-300))
    hess = np.matmul(jac.transpose(0, 2, 1), jac * weight[..., None])
    return value, grad, hess


def polish(theta: np.ndarray, data: CentredData, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levenberg-Marquardt from every row of theta (K, 5) at once; returns (theta, objective, converged)."""
    theta = np.clip(theta, LOWER, UPPER)
    value, grad, hess = _evaluate(theta, data, count)
    damping = np.full(len(theta), 1e-3)
    active = np.arange(len(theta))
    for _ in range(MAX_STEPS):
        h = hess[active]
        diag = np.diagonal(h, axis1=1, axis2=2) + 1e-12
        damped = h + damping[active, None, None] * np.eye(5) * diag[:, None, :]
        step = np.linalg.solve(damped, -grad[active][..., None])
        trial = np.clip(theta[active] + step[..., 0], LOWER, UPPER)
        t_value, t_grad, t_hess = _evaluate(trial, data, count[active])
        better = t_value < value[active]
        small = value[active] - t_value <= F_TOL * value[active] + 1e-300
        moved = active[better]
        theta[moved], value[moved] = trial[better], t_value[better]
        grad[moved], hess[moved] = t_grad[better], t_hess[better]
        damping[active] = np.where(better, damping[active] * 0.3, damping[active] * 4.0)
        # Done when an accepted step barely helps, or when no step, however short, helps any more.
        done = (better & small) | (damping[active] > 1e10)
        active = active[~done]
        if active.size == 0:
            break
    converged = np.ones(len(theta), dtype=bool)
    converged[active] = False
    return theta, value, converged


def _check_points(N: np.ndarray, D: np.ndarray) -> None:
    distinct_n, distinct_d = np.unique(N).size, np.unique(D).size
    if N.size < MIN_POINTS or distinct_n < 3 or distinct_d < 3:
        raise FitError(
            f"approach 3 needs at least {MIN_POINTS} runs spanning 3 distinct N and 3 distinct D; "
            f"got {N.size} runs, {distinct_n} distinct N, {distinct_d} distinct D: add runs"
        )


def _uncentre(theta: np.ndarray, data: CentredData) -> LossParams:
    a_c, b_c, e, alpha, beta = theta
    return LossParams(
        E=float(np.exp(e)),
        A=float(np.exp(a_c + alpha * data.centre_n)),
        B=float(np.exp(b_c + beta * data.centre_d)),
        alpha=float(alpha),
        beta=float(beta),
    )


def _edge_notes(theta: np.ndarray, start: np.ndarray, init: Init) -> tuple[str, ...]:
    """Name each exponent that ended on its bound or (variable projection) started on the grid's edge."""
    notes = []
    for name, value, first, low, high in zip(("alpha", "beta"), theta[3:], start[3:], LOWER[3:], UPPER[3:]):
        if np.isclose(value, [low, high], rtol=1e-3).any():
            notes.append(f"{name} = {value:.4g} sits on its bound [{low:g}, {high:g}]")
        if init == "varpro" and np.isclose(first, EXPONENT_GRID[[0, -1]]).any():
            notes.append(f"the best variable-projection start has {name} on the grid edge ({first:.3g})")
    return tuple(notes)


def vanishing_terms(params: LossParams, N: np.ndarray, D: np.ndarray, loss: np.ndarray) -> list[str]:
    """One note per term of L(N, D) that is (nearly) constant over the data, so its parameters are unidentified."""
    mean_loss, notes = float(np.mean(loss)), []
    for name, term in (("the N term A/N^alpha", params.A / np.power(N, params.alpha)),
                       ("the D term B/D^beta", params.B / np.power(D, params.beta))):
        spread = float(np.ptp(term))
        if spread < VANISHING_SHARE * mean_loss:
            notes.append(f"{name} varies by only {spread:.2g} nats over the runs ({spread / mean_loss:.2%} of the loss): "
                         "it vanishes, so its coefficient and exponent are not identified; add runs that vary it")
    if params.E < VANISHING_SHARE * mean_loss:
        notes.append(f"E = {params.E:.2g} vanishes: the irreducible loss is not identified by these runs")
    return notes


def with_allocation(params: dict) -> dict:
    """Add a, b and G (N_opt = G (C/6)^a) to E, A, B, alpha, beta; works on floats and on replicate arrays."""
    a, b = allocation_exponents(params["alpha"], params["beta"])
    G = allocation_coefficient(params["A"], params["B"], params["alpha"], params["beta"])
    return {**params, "a": a, "b": b, "G": G}


def fit_approach3(runs: pd.DataFrame, n_boot: int, seed: int, init: Init = "varpro") -> ApproachResult:
    """Fit L(N, D) to all runs, then refit each bootstrap resample of runs.

    Resamples always start from variable projection: 4,500 Hoffmann starts for each of 1,000 refits would
    take hours, and both start sets reach the same optimum (benchmarks/bench_fit.py checks it).
    """
    N, D, loss = (runs[column].to_numpy(float) for column in ("N", "D", "loss"))
    main = fit_loss_model(N, D, loss, init)
    boot = fit_loss_models(N, D, loss, resample_counts(np.zeros(N.size), n_boot, seed))
    columns = {key: np.array([getattr(fit.params, key) for fit in boot]) for key in main.params.as_dict()}
    warnings = [f"approach 3: {note}" for note in (*main.edge_notes, *vanishing_terms(main.params, N, D, loss))]
    if not main.converged:
        warnings.append(f"approach 3: the fit stopped after {MAX_STEPS} steps without converging")
    warnings += _bootstrap_notes(boot)
    return ApproachResult(
        name="approach3",
        title="Approach 3: parametric fit of L(N, D)",
        estimate={key: float(value) for key, value in with_allocation(main.params.as_dict()).items()},
        samples=with_allocation(columns),
        frontier=loss_model_frontier,
        warnings=tuple(warnings),
        details=main,
    )


def _bootstrap_notes(boot: list[LossFit]) -> list[str]:
    notes = []
    on_edge = np.mean([bool(fit.edge_notes) for fit in boot])
    if on_edge > WARN_FRACTION:
        notes.append(f"approach 3: {on_edge:.0%} of bootstrap refits ended on a bound or started on the grid edge")
    stalled = sum(not fit.converged for fit in boot)
    if stalled:
        notes.append(f"approach 3: {stalled} bootstrap refits stopped after {MAX_STEPS} steps without converging")
    return notes
