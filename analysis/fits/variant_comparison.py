"""Compare variants across scale: one joint fit, then each variant against the reference with bootstrap intervals.

The runs of every variant are fitted together (joint_law.py: shared E unless freed); each variant's
compute-optimal frontier then gives, against the reference (the first variant), the effective compute
multiplier at each fitted budget and at the budgets asked for, the exponent difference, and the crossover
compute (multiplier.py). Intervals are percentiles of refits to resampled runs: the grid points (runs that
share a variant, N and D) are resampled within each variant's budget, and each point's seeds within it, so the
interval holds both the choice of sizes and seed-to-seed noise (a point with one seed is one run).

Resampling is a Bayesian bootstrap (Rubin 1981): each of a stratum's n points gets a Dirichlet weight instead of
a count of draws, with concentration (n - 1)/n so that its variance is a count's, (n - 1)/n, but no replicate
drops a run entirely. On synthetic pairs of this suite's ladder (3-4 sizes per budget; benchmarks/
compare_coverage.py) the classic resample, which often leaves a budget with one or two distinct sizes and the
law fitted on the rest, covered the true multiplier 87-96% of the time for a nominal 80% with 3 sizes per
budget (75-82% with 4); these weights 77-84% with 4 (benchmarks/RESULTS.md). `weights="counts"` keeps the
classic resample.
"""

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from analysis.failures import FitError
from analysis.fits.approach2 import budget_groups, off_budget_note
from analysis.fits.approach3 import LawFit
from analysis.fits.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, WARN_FRACTION
from analysis.fits.joint_law import JOINT, fit_joint, joint_data, refit_joint
from analysis.fits.lossmodel import compute_optimal
from analysis.fits.multiplier import crossover_log10, exponent_difference, frontier_constants, log_multiplier

Weights = Literal["dirichlet", "counts"]
MIN_BUDGETS = 2
EXTRAPOLATE = (10.0, 100.0)  # without budgets asked for: these multiples of the largest fitted budget


@dataclass(frozen=True)
class CompareConfig:
    """How to compare: bootstrap refits, seed, interval level, shared or free E, budgets to extrapolate to."""

    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    level: float = DEFAULT_LEVEL
    shared_e: bool = True
    budgets: tuple[float, ...] = ()
    weights: Weights = "dirichlet"


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its interval (the interval may reach +-inf: a multiplier or crossover that is not
    reached in some refits)."""

    point: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"point": self.point, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Gap:
    """One variant against the reference."""

    label: str
    multiplier: pd.DataFrame  # C, fitted (a budget the runs trained at), point, low, high
    exponent_difference: Estimate  # gamma_v - gamma_r
    crossover_log10: Estimate  # log10 FLOPs; +inf: the frontiers do not meet in the range searched


@dataclass(frozen=True)
class Comparison:
    """The joint fit, each variant's frontier (point and replicates), and each variant against the reference."""

    labels: tuple[str, ...]
    config: CompareConfig
    runs: pd.DataFrame  # run, N, D, C, loss, variant (index into labels), budget, point
    budgets: np.ndarray  # the fitted budgets (FLOPs)
    frontiers: list[dict[str, float]]  # per variant: E, A, B, alpha, beta, K, gamma
    replicates: list[dict[str, np.ndarray]]  # the same, one value per bootstrap refit (NaN: the refit failed)
    gaps: list[Gap]
    weights: np.ndarray  # (n_boot, n_runs): each run's weight in each refit
    warnings: tuple[str, ...]
    off_grid: tuple[str, ...] = ()  # variants whose fitted optimum lies outside the sizes trained at some budget


def grid_points(runs: pd.DataFrame) -> np.ndarray:
    """An id per run: runs of one variant at the same N and D are one grid point (its seeds)."""
    keys = runs[["variant", "N", "D"]].astype(float).round(6)
    return keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()


def run_weights(
    strata: np.ndarray, points: np.ndarray, n_boot: int, seed: int, kind: Weights = "dirichlet"
) -> np.ndarray:
    """(n_boot, n_runs): each run's weight in each refit. Grid points are resampled within each stratum, then
    each point's seeds within it. `dirichlet`, a Bayesian bootstrap (Rubin 1981): Dirichlet weights scaled to
    the number of points (of seeds), the smooth form of resampling; `counts`: the classic resample, how often
    each was drawn. The weights of a stratum sum to its number of runs either way."""
    rng = np.random.default_rng(seed)
    ids, first = np.unique(points, return_index=True)
    point_weight = _draw(strata[first], n_boot, rng, kind)
    weights = np.zeros((n_boot, points.size))
    for column, point in enumerate(ids):
        members = np.flatnonzero(points == point)
        m, drawn = members.size, point_weight[:, column]
        if kind == "counts" and m > 1:  # k draws of m seeds each: the sum of k multinomials is one of k m draws
            weights[:, members] = rng.multinomial(drawn.astype(np.int64) * m, np.full(m, 1.0 / m))
        else:
            weights[:, members] = drawn[:, None] * _share(m, n_boot, rng, kind)
    return weights


def _draw(strata: np.ndarray, n_boot: int, rng: np.random.Generator, kind: Weights) -> np.ndarray:
    """(n_boot, n) weights of n units, drawn within each stratum and summing to its size."""
    out = np.zeros((n_boot, strata.size))
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        out[:, members] = _share(members.size, n_boot, rng, kind)
    return out


def _share(n: int, n_boot: int, rng: np.random.Generator, kind: Weights) -> np.ndarray:
    """(n_boot, n) weights of n units summing to n: a resample's counts, or Dirichlet weights with concentration
    (n - 1)/n, which give each weight the variance of a count, (n - 1)/n, without its zeros."""
    if kind == "counts":
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    if n == 1:
        return np.ones((n_boot, 1))
    return n * rng.dirichlet(np.full(n, (n - 1) / n), size=n_boot)


def with_budgets(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Runs with a `budget` per run (grouped by C where the table has none, as approach 2 does) and a grid point."""
    runs = runs.reset_index(drop=True).copy()
    notes: list[str] = []
    for index in np.unique(runs["variant"]):
        mine = runs["variant"] == index
        budgets, group_notes = budget_groups(runs[mine])
        runs.loc[mine, "budget"] = budgets
        notes += group_notes + list(off_budget_note(runs[mine]))
    runs["point"] = grid_points(runs)
    return runs, notes


def compare(runs: pd.DataFrame, labels: tuple[str, ...], config: CompareConfig = CompareConfig()) -> Comparison:
    """Fit every variant's runs jointly and compare each with the reference (variant 0).

    `runs` has columns N, D, C, loss, variant (0 = reference) and budget (NaN: grouped by C).
    """
    runs, notes = with_budgets(runs)
    for index, label in enumerate(labels):
        found = np.unique(runs.loc[runs["variant"] == index, "budget"].dropna())
        if found.size < MIN_BUDGETS:
            raise FitError(
                f"variant {label}: runs at {found.size} budget(s); comparing across scale needs at least {MIN_BUDGETS}"
            )
    data = joint_data(runs["N"], runs["D"], runs["loss"], runs["variant"], config.shared_e)
    fit = fit_joint(data)
    # Strata: a variant's budget (runs without one form their own stratum per variant).
    strata = runs.assign(budget=runs["budget"].fillna(-1.0)).groupby(["variant", "budget"]).ngroup().to_numpy()
    weights = run_weights(strata, runs["point"].to_numpy(), config.n_boot, config.seed, config.weights)
    theta, converged = refit_joint(fit, weights)
    frontiers = [{k: float(v) for k, v in _frontier(p).items()} for p in JOINT.named(fit.theta, data)]
    replicates = [_frontier(p) for p in JOINT.named(theta, data)]
    for replicate in replicates:  # a refit that did not converge is reported, not silently kept
        for value in replicate.values():
            value[~converged] = np.nan
    budgets = np.unique(runs["budget"].dropna())
    asked = np.array(config.budgets) if config.budgets else budgets.max() * np.array(EXTRAPOLATE)
    C = np.unique(np.concatenate([budgets, asked]))
    centre = float(np.log10(runs["C"]).mean())
    gaps = [_gap(labels[i], frontiers, replicates, i, C, budgets, centre, config.level) for i in range(1, len(labels))]
    outside = _outside_grid(frontiers, runs, labels)
    warnings = notes + _warnings(fit, converged, labels) + [message for _, message in outside] + _off_interval(gaps)
    off_grid = tuple(dict.fromkeys(label for label, _ in outside))
    return Comparison(labels, config, runs, budgets, frontiers, replicates, gaps, weights, tuple(warnings), off_grid)


def _off_interval(gaps: list["Gap"]) -> list[str]:
    """A warning for each fitted budget whose multiplier lies outside its own bootstrap interval: the
    replicates then disagree with the fit (a skewed or bimodal bootstrap), and the interval should not be
    read as the estimate's uncertainty."""
    warnings = []
    for gap in gaps:
        table = gap.multiplier[gap.multiplier["fitted"]]
        off = table[(table["point"] < table["low"]) | (table["point"] > table["high"])]
        for row in off.itertuples():
            warnings.append(
                f"{gap.label}: the multiplier at {row.C:.2g} FLOPs, {row.point:.3g}x, lies outside its own "
                f"interval [{row.low:.3g}, {row.high:.3g}]: the bootstrap refits disagree with the fit there, so "
                "read that interval as unreliable (more seeds or budgets steady it)".replace("e+", "e")
            )
    return warnings


def _frontier(params: dict) -> dict:
    return {**params, **frontier_constants(params)}


def interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over replicates (axis 0), skipping failed (NaN) ones and keeping infinite ones:
    the nearest-rank percentile where some are infinite, so that an unreached multiplier counts as one."""
    values = np.asarray(values, float)
    ok = ~np.isnan(values.reshape(len(values), -1)).any(axis=1)
    if not ok.any():
        return np.full(values.shape[1:], np.nan), np.full(values.shape[1:], np.nan)
    tail = 50.0 * (1.0 - level)
    method = "linear" if np.isfinite(values[ok]).all() else "inverted_cdf"
    low, high = np.percentile(values[ok], [tail, 100.0 - tail], axis=0, method=method)
    return low, high


def _estimate(point, samples, level: float) -> Estimate:
    low, high = interval(samples, level)
    return Estimate(float(point), float(low), float(high))


def _gap(label, frontiers, replicates, index, C, fitted, centre, level) -> Gap:
    """Variant `index` against the reference: multiplier at each budget C, exponent difference, crossover."""
    ref, var = frontiers[0], frontiers[index]
    ref_r, var_r = ({k: v[:, None] for k, v in f.items()} for f in (replicates[0], replicates[index]))
    point = np.exp(log_multiplier(ref, var, C))
    low, high = interval(np.exp(log_multiplier(ref_r, var_r, C)), level)
    table = pd.DataFrame({"C": C, "fitted": np.isin(C, fitted), "point": point, "low": low, "high": high})
    failed = np.isnan(replicates[index]["gamma"]) | np.isnan(replicates[0]["gamma"])
    cross = crossover_log10(replicates[0], replicates[index], centre)
    return Gap(
        label,
        table,
        _estimate(exponent_difference(ref, var), exponent_difference(replicates[0], replicates[index]), level),
        _estimate(crossover_log10(ref, var, centre), np.where(failed, np.nan, cross), level),
    )


def _warnings(fit: LawFit, converged: np.ndarray, labels: tuple[str, ...]) -> list[str]:
    """Refits that did not converge, a fit that did not, and parameters pinned to a bound of the search."""
    warnings = []
    if not fit.converged:
        warnings.append("the joint fit stopped without converging")
    failed = float((~converged).mean())
    if failed > WARN_FRACTION:
        warnings.append(
            f"{failed:.0%} of bootstrap refits did not converge; the intervals use the rest and may be too narrow"
        )
    lower, upper = JOINT.bounds(fit.data)
    on_bound = np.isclose(fit.theta, lower, rtol=1e-6, atol=1e-9) | np.isclose(fit.theta, upper, rtol=1e-6, atol=1e-9)
    for column in np.flatnonzero(on_bound):
        warnings.append(
            f"{_parameter_name(column, fit.data.n_e, labels)} sits on the bound of its search range: "
            "the runs do not identify it"
        )
    return warnings


def _outside_grid(frontiers: list[dict], runs: pd.DataFrame, labels: tuple[str, ...]) -> list[tuple[str, str]]:
    """Each variant whose fitted compute-optimal size lies outside the sizes it trained at a budget: there its
    frontier is the law extrapolated in N, not a loss the runs bracket (approach 2 names such budgets too)."""
    warnings = []
    for index, label in enumerate(labels):
        mine = runs[runs["variant"] == index].groupby("budget")["N"].agg(["min", "max"])
        params = {k: frontiers[index][k] for k in ("E", "A", "B", "alpha", "beta")}
        n_opt = compute_optimal(mine.index.to_numpy(), **params)[0]
        for side, outside in (("below", n_opt < mine["min"]), ("above", n_opt > mine["max"])):
            if outside.any():
                where = ", ".join(
                    f"{C:.2g} FLOPs ({n:,.0f} against {low:,.0f}-{high:,.0f})".replace("e+", "e")
                    for C, n, low, high in zip(
                        mine.index[outside], n_opt[outside], mine["min"][outside], mine["max"][outside]
                    )
                )
                grow = "smaller" if side == "below" else "larger"
                message = (
                    f"{label}: the fitted compute-optimal size lies {side} the sizes trained at {where}: its frontier "
                    f"there is the law extrapolated in N; extend the grid to {grow} models"
                )
                warnings.append((label, message))
    return warnings


def _parameter_name(column: int, n_e: int, labels: tuple[str, ...]) -> str:
    if column < n_e:
        return "E" if n_e == 1 else f"E of {labels[column]}"
    index, which = divmod(column - n_e, 4)
    return f"{('A', 'B', 'alpha', 'beta')[which]} of {labels[index]}"
