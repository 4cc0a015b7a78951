"""Approach 3: fit a parametric law L(N, D) to every run (Hoffmann et al. 2022, section 3.3).

The law is chosen by name (analysis/fits/laws/: chinchilla, tied, kaplan, data_constrained, farseer; `auto` is
resolved before, by rollout.py); the objective and the optimiser are in huber.py. The full fit starts from the best few points of the law's variable-projection
grid (or, for chinchilla, Hoffmann's 4,500-point grid); each bootstrap refit starts from every distinct
optimum those starts reached, so a replicate that prefers another basin can still reach it.

Intervals come from a smoothed residual bootstrap. The runs' sizes and token counts are a design the
experimenter chose, so each replicate keeps them and redraws every run's log loss as the fitted law plus
a draw from the fit's residuals (leverage-corrected, pooled), smoothed by a Gaussian kernel. With
delta = 1e-3 (`--loss epoch`) and ~1% noise the Huber fit behaves like least absolute deviations, whose
spread depends on the noise density near zero, so the draws must have that density right (De Angelis,
Hall & Young 1993). Nominal 80% intervals for a, on 100 synthetic sweeps per design with that delta
(benchmarks/RESULTS.md, issue 15), held the truth: smoothed residual draws 76-84% of the time (4 designs,
chinchilla law; 73-85% over every law);
plain residual draws 74-79%; each run's own residual with a random sign (a wild bootstrap) 66-76%; the
same times a standard normal 43-44%; resampling runs, which redraws the design too, 86-95%.

The residual bootstrap assumes the law's form and exact N and D. Where they are in doubt (the law
misfits, or N and D were read off a plot) resampling runs (`--bootstrap runs`) is the safer choice: on
Epoch's points extracted from Hoffmann et al.'s figure it gives an 80% interval for a twice as wide,
[0.491, 0.542] against [0.502, 0.527]. `analysis.backtest` and the rollout (rollout.py) show a misfit.

Every refit runs to convergence (huber.MAX_STEPS is a safety net, and a refit that reaches it is counted
in a warning, never silently kept); the warnings also name each parameter the runs do not identify: its
interval reaches the end of the search range, a scale spans more than two decades, or one term of the
law is flat over the runs (the report's summary flags any interval over one decade).
"""

import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from analysis.failures import FitError
from analysis.fits.bootstrap import (
    DEFAULT_LEVEL,
    WARN_FRACTION,
    percentile_interval,
    point_counts,
)
from analysis.fits.huber import DEFAULT_OBJECTIVE, EPOCH_DELTA, MAX_STEPS, Objective, polish, robust_scale
from analysis.fits.laws import DEFAULT_LAW, LAWS, Law, LawData, law_data
from analysis.fits.result import ApproachResult
from analysis.fits.seeds import point_ids

MIN_POINTS = 8
MIN_DELTA = 1e-6  # floor on the scaled Huber delta, for runs the law fits exactly (noise-free synthetic data)
MIN_FREEDOM = 1e-3  # floor on 1 - leverage, for a run the fit passes through exactly
FULL_FIT_STARTS = 3  # best grid points polished for the full fit
# Two polished optima closer than this (largest coordinate difference) are one optimum.
SAME_OPTIMUM = 1e-3
# A term of the law whose value changes by less than this share of the mean loss across the runs
# does not shape the fit: its parameters are not identified by the data (however the optimiser
# made it vanish: an exponent on its bound, or a coefficient that cancels a large exponent).
VANISHING_SHARE = 5e-3
# A scale parameter (E, A, B, N_c, D_c) whose interval spans more than this factor is not identified.
MAX_SCALE_SPREAD = 100.0
HOFFMANN_GRID = {
    "a": np.arange(0.0, 30.0, 5.0),
    "b": np.arange(0.0, 30.0, 5.0),
    "e": np.arange(-1.0, 1.5, 0.5),
    "alpha": np.arange(0.0, 2.5, 0.5),
    "beta": np.arange(0.0, 2.5, 0.5),
}
Init = Literal["varpro", "grid"]
Bootstrap = Literal["residuals", "runs"]
BOOTSTRAPS = ("residuals", "runs")


@dataclass(frozen=True)
class LawFit:
    """A fitted law: its coordinates theta, the data it was fitted on, and how the optimiser ended."""

    law: Law
    theta: np.ndarray
    data: LawData
    objective: float
    converged: bool
    optima: np.ndarray  # (S, P) the distinct optima the starts reached, best first: the refits' starts
    delta: float = EPOCH_DELTA  # the Huber delta the fit used (inf: least squares); refits use the same

    @property
    def params(self) -> dict[str, float]:
        return {key: float(value) for key, value in self.law.named(self.theta, self.data).items()}

    def predict(self, N, D, epochs=1.0) -> np.ndarray:
        """The fitted loss at (N, D), and at `epochs` passes over the data for data_constrained."""
        return self.law.loss(self.params, N, D, epochs)


def law_by_name(name: str) -> Law:
    """The law of that name, or FitError listing the laws there are."""
    if name not in LAWS:
        raise FitError(f"unknown law {name!r}: choose one of {', '.join(LAWS)}")
    return LAWS[name]


def prepare(law: Law, N: np.ndarray, D: np.ndarray, loss: np.ndarray, epochs: np.ndarray | None) -> LawData:
    """Centred data for `law`, or FitError naming what the runs lack."""
    distinct_n, distinct_d = np.unique(N).size, np.unique(D).size
    if N.size < MIN_POINTS or distinct_n < 3 or distinct_d < 3:
        raise FitError(
            f"approach 3 needs at least {MIN_POINTS} runs spanning 3 distinct N and 3 distinct D; "
            f"got {N.size} runs, {distinct_n} distinct N, {distinct_d} distinct D: add runs"
        )
    data = law_data(N, D, loss, epochs)
    law.check_data(data)
    return data


def _best_starts(law: Law, data: LawData, count: np.ndarray, k: int) -> np.ndarray:
    theta, score = law.grid_starts(data, count)
    return theta[np.argsort(score, kind="stable")[:k]]


def hoffmann_starts(data: LawData) -> np.ndarray:
    """Hoffmann et al.'s 4,500-point initialisation grid, in the chinchilla law's centred coordinates."""
    a, b, e, alpha, beta = np.array(list(itertools.product(*HOFFMANN_GRID.values()))).T
    return np.column_stack([a - alpha * data.centre_n, b - beta * data.centre_d, e, alpha, beta])


def _polish_best(
    law: Law,
    starts: np.ndarray,
    data: LawData,
    count: np.ndarray,
    target: np.ndarray | None = None,
    delta: float = EPOCH_DELTA,
) -> tuple[np.ndarray, ...]:
    """Polish starts (R, S, P) against counts and target log losses (R, n); per row, the best start's
    (theta, objective, converged)."""
    rows, n_starts, size = starts.shape
    target = None if target is None else np.repeat(target, n_starts, axis=0)
    theta, value, converged = polish(
        law, starts.reshape(-1, size), data, np.repeat(count, n_starts, axis=0), target, delta=delta
    )
    best = value.reshape(rows, n_starts).argmin(axis=1) + np.arange(rows) * n_starts
    return theta[best], value[best], converged[best]


def distinct_optima(theta: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The polished starts (S, P) that reached different optima, best first."""
    kept: list[np.ndarray] = []
    for i in np.argsort(value, kind="stable"):
        if all(np.abs(theta[i] - other).max() > SAME_OPTIMUM for other in kept):
            kept.append(theta[i])
    return np.array(kept)


def fit_law(law: Law, data: LawData, init: Init = "varpro", objective: Objective = DEFAULT_OBJECTIVE) -> LawFit:
    """The fit on all runs, each counted once, under the objective's loss (huber.py says which delta).

    The scaled Huber loss needs the residuals' scale: a first fit with delta = 1e-3 gives it, and its
    optima start the second."""
    if init == "grid" and law.name != DEFAULT_LAW:
        raise FitError(f"--init grid (Hoffmann's starts) applies to --law {DEFAULT_LAW} only, not {law.name}")
    starts = (
        hoffmann_starts(data) if init == "grid" else _best_starts(law, data, np.ones(data.u.size), law.full_fit_starts)
    )
    if objective.kind == "lsq":
        return _fit_with_delta(law, data, starts, np.inf)
    first = _fit_with_delta(law, data, starts, EPOCH_DELTA)
    if objective.kind == "epoch":
        return first
    log_pred, _ = law.log_predict(first.theta[None], data)
    delta = max(objective.c * robust_scale(data.log_loss - log_pred[0]), MIN_DELTA)
    return _fit_with_delta(law, data, first.optima, delta)


def _fit_with_delta(law: Law, data: LawData, starts: np.ndarray, delta: float) -> LawFit:
    """Polish every start under Huber's delta; the best is the fit, the distinct optima seed the refits."""
    count = np.ones(data.u.size)
    theta, value, converged = polish(law, starts, data, np.broadcast_to(count, (len(starts), count.size)), delta=delta)
    best = int(np.argmin(value))
    # At most FULL_FIT_STARTS optima seed the refits (Hoffmann's 4,500 starts reach many degenerate ones).
    optima = (
        distinct_optima(theta[converged], value[converged])[:FULL_FIT_STARTS] if converged.any() else theta[best][None]
    )
    return LawFit(law, theta[best], data, float(value[best]), bool(converged[best]), optima, delta)


def refit(fit: LawFit, counts: np.ndarray, target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Theta (R, P) and convergence (R,) for each row of run counts and target log losses (R, n).

    Each refit starts from every distinct optimum the full fit's starts reached: near the full fit's
    optimum a replicate's own lies a few steps away, and a replicate that prefers another basin can reach it.
    """
    starts = np.broadcast_to(fit.optima, (len(counts), *fit.optima.shape))
    theta, _, converged = _polish_best(fit.law, starts, fit.data, counts.astype(float), target, fit.delta)
    return theta, converged


def residuals(fit: LawFit) -> np.ndarray:
    """The fit's log residuals, each divided by sqrt(1 - leverage) so it has the noise's variance, centred."""
    log_pred, jac = fit.law.log_predict(fit.theta[None], fit.data)
    leverage = np.einsum("ij,ji->i", jac[0], np.linalg.pinv(jac[0]))
    residual = (fit.data.log_loss - log_pred[0]) / np.sqrt(np.maximum(1.0 - leverage, MIN_FREEDOM))
    return residual - residual.mean()


def smoothed_draws(pool: np.ndarray, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Draws from the pool plus Gaussian kernel noise (Silverman's bandwidth), rescaled to the pool's variance."""
    bandwidth = 1.06 * pool.std() * pool.size**-0.2
    draws = rng.choice(pool, size=shape) + bandwidth * rng.standard_normal(shape)
    return draws * pool.std() / np.sqrt(pool.var() + bandwidth**2 + 1e-300)


def replicate_targets(fit: LawFit, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) log losses for the bootstrap: the fitted law at every run plus smoothed residual draws."""
    log_pred, _ = fit.law.log_predict(fit.theta[None], fit.data)
    return log_pred[0] + smoothed_draws(residuals(fit), (n_boot, log_pred.shape[1]), np.random.default_rng(seed))


def with_allocation(law: Law, params: dict) -> dict:
    """Named parameters plus a, b and G (N_opt = G (C/6)^a); works on floats and on replicate arrays."""
    return {**params, **law.allocation(params)}


def vanishing_terms(law: Law, params: dict, N, D, loss, epochs=1.0) -> list[str]:
    """One note per term of the law that is (nearly) constant over the runs, so its parameters are unidentified."""
    mean_loss, notes = float(np.mean(loss)), []
    for name, term in law.terms(params, N, D, epochs).items():
        spread = float(np.ptp(term))
        if spread < VANISHING_SHARE * mean_loss:
            notes.append(
                f"{name} varies by only {spread:.2g} nats over the runs ({spread / mean_loss:.2%} of the loss): "
                "it vanishes, so its coefficient and exponent are not identified; add runs that vary it"
            )
    if "E" in params and params["E"] < VANISHING_SHARE * mean_loss:
        notes.append(f"E = {params['E']:.2g} vanishes: the irreducible loss is not identified by these runs")
    return notes


def _vanishing_share(law: Law, samples: dict, N, D, loss, epochs) -> float:
    """The share of bootstrap refits in which some term of the law is flat over the runs."""
    columns = {key: value[:, None] for key, value in samples.items()}
    flat = np.zeros(len(next(iter(samples.values()))), dtype=bool)
    for term in law.terms(columns, N, D, epochs).values():
        flat |= np.ptp(np.broadcast_to(term, (len(flat), np.size(N))), axis=1) < VANISHING_SHARE * np.mean(loss)
    return float(flat.mean())


def identification_notes(law: Law, fit: LawFit, boot_theta: np.ndarray, samples: dict, level: float) -> list[str]:
    """Parameters the runs leave open: an interval reaching the end of the search range, or a huge scale spread."""
    lower, upper = law.bounds(fit.data)
    tol = 1e-6 * (upper - lower)
    q_low, q_high = percentile_interval(boot_theta, level)
    notes = []
    for j, (theta_name, key) in enumerate(zip(law.theta_names, law.theta_keys)):
        low, high = percentile_interval(samples[key], level)
        ends = [
            end
            for end, hit in (("lower", q_low[j] <= lower[j] + tol[j]), ("upper", q_high[j] >= upper[j] - tol[j]))
            if hit
        ]
        if ends:
            notes.append(
                f"{key}: its {level:.0%} interval [{low:.3g}, {high:.3g}] reaches the {' and '.join(ends)} end "
                f"of its search range ({theta_name} in [{lower[j]:.3g}, {upper[j]:.3g}]): the runs do not "
                f"identify {key}"
            )
        elif key in law.scale_names and high > MAX_SCALE_SPREAD * low:
            notes.append(
                f"{key}: its {level:.0%} interval [{low:.3g}, {high:.3g}] spans more than "
                f"{np.log10(MAX_SCALE_SPREAD):.0f} decades: the runs do not identify {key}"
            )
    return notes


def _bound_notes(law: Law, fit: LawFit) -> list[str]:
    lower, upper = law.bounds(fit.data)
    return [
        f"{name} = {value:.4g} sits on its bound [{low:.3g}, {high:.3g}]"
        for name, value, low, high in zip(law.theta_names, fit.theta, lower, upper)
        if np.isclose(value, [low, high], rtol=1e-6, atol=1e-9).any()
    ]


def run_columns(runs: pd.DataFrame) -> tuple[np.ndarray, ...]:
    """N, D, loss and epochs (1 where a run recorded none) as float arrays."""
    epochs = runs["epochs"].fillna(1.0) if "epochs" in runs else pd.Series(1.0, index=runs.index)
    return tuple(np.asarray(column, float) for column in (runs["N"], runs["D"], runs["loss"], epochs))


def bootstrap_refits(
    fit: LawFit, n_boot: int, seed: int, bootstrap: Bootstrap, points: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Theta and convergence of n_boot refits: to smoothed residual draws, or to resamples of the runs
    (grid points, then the seeds within each: `points` labels each run's point; None, every run its own)."""
    n = fit.data.u.size
    if bootstrap == "runs":
        return refit(fit, point_counts(np.arange(n) if points is None else points, n_boot, seed))
    return refit(fit, np.ones((n_boot, n)), replicate_targets(fit, n_boot, seed))


def fit_approach3(
    runs: pd.DataFrame,
    n_boot: int,
    seed: int,
    init: Init = "varpro",
    law_name: str = DEFAULT_LAW,
    level: float = DEFAULT_LEVEL,
    bootstrap: Bootstrap = "residuals",
    objective: Objective = DEFAULT_OBJECTIVE,
) -> ApproachResult:
    """Fit the law to all runs, then refit each bootstrap replicate."""
    law = law_by_name(law_name)
    N, D, loss, epochs = run_columns(runs)
    data = prepare(law, N, D, loss, epochs)
    main = fit_law(law, data, init, objective)
    boot_theta, converged = bootstrap_refits(main, n_boot, seed, bootstrap, point_ids(runs))
    samples = law.named(boot_theta, data)
    warnings = [
        f"approach 3: {note}"
        for note in (
            *_bound_notes(law, main),
            *vanishing_terms(law, main.params, N, D, loss, epochs),
            *identification_notes(law, main, boot_theta, samples, level),
        )
    ]
    if not main.converged:
        warnings.append(f"approach 3: the fit stopped after {MAX_STEPS} steps without converging")
    if (~converged).any():
        warnings.append(
            f"approach 3: {int((~converged).sum())} of {n_boot} bootstrap refits stopped after {MAX_STEPS} "
            "steps without converging; they are kept in the intervals"
        )
    flat = _vanishing_share(law, samples, N, D, loss, epochs)
    if flat > WARN_FRACTION:
        warnings.append(f"approach 3: in {flat:.0%} of bootstrap refits a term of the law is flat over the runs")
    return ApproachResult(
        name="approach3",
        title=f"Approach 3: parametric fit of L(N, D), law {law.name}",
        estimate={key: float(value) for key, value in with_allocation(law, main.params).items()},
        samples=with_allocation(law, samples),
        frontier=law.frontier,
        warnings=tuple(warnings),
        details=main,
    )
