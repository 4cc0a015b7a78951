"""Approach 2: IsoFLOP profiles (Hoffmann et al. 2022, section 3.2).

For each compute budget, fit a parabola of loss against log N, take its minimum as N_opt(C), and fit
power laws N_opt = k C^a and D_opt = C/(6 N_opt) = k' C^b (so b = 1 - a exactly). Each minimum's standard
error (delta method on the parabola) weights the power-law fit.

Intervals come from a residual bootstrap, not from resampling runs. A budget has few sizes (4-7 is usual)
and they are chosen by design: resampled with replacement, 5 sizes often keep fewer than 4 distinct ones
(on a real 3 x 5 sweep 937 of 1000 refits failed), and the refits that survive are not representative.
So each replicate keeps every run's size and draws its loss afresh: fitted parabola x (1 + e), with e
drawn from the relative residuals of all budgets, pooled. Each residual is divided by sqrt(1 - leverage)
so that it has the noise's variance, and the pool is centred. Pooling assumes the same relative noise at
every budget (the multiplicative noise approach 3 assumes too), because a budget alone leaves only 1-4
degrees of freedom to estimate it from. The pooled variance also gives each minimum its standard error,
and replicates keep those as weights. On synthetic sweeps with 1% noise (200 per design), 80% intervals
for a held the truth 79-83% of the time at 3 x 5, 3 x 7, 5 x 5 and 8 x 9 budgets x sizes, and 72% at 4 x 4,
where each budget leaves 1 degree of freedom; resampling runs held it 65% at 3 x 5 (93% of refits failed).
With noise differing tenfold between 3 budgets of 5 sizes, pooling still held it 80-81% of the time.
"""

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from analysis.errors import FitError
from analysis.fits.bootstrap import replicate
from analysis.fits.powerlaw import fit_power_law
from analysis.fits.result import ApproachResult, power_law_frontier

MIN_SIZES_PER_BUDGET = 4  # a parabola has 3 coefficients; a fourth size leaves a residual to gauge the noise by
MIN_BUDGETS = 3
# Without a budget column, runs are grouped by C: a gap wider than this (in decades) starts a new budget,
# and a group wider than the spread limit is not an IsoFLOP profile at all.
BUDGET_GAP_DECADES = 0.05
MAX_BUDGET_SPREAD_DECADES = 0.15
MIN_SE = 1e-6  # floor on a minimum's standard error (log N units) so noise-free data still weights sensibly


@dataclass(frozen=True)
class Parabola:
    """loss = c0 + c1 x + c2 x^2 with x = log N - centre, fitted to one budget's runs (log_n, loss)."""

    budget: float
    log_n: np.ndarray
    loss: np.ndarray
    coef: tuple[float, float, float]
    centre: float
    log_n_opt: float
    loss_opt: float
    se_log_n_opt: float = math.nan  # needs the noise pooled over budgets: set by with_standard_error

    def at(self, log_n: np.ndarray) -> np.ndarray:
        """The fitted loss at log model sizes log_n."""
        x = log_n - self.centre
        c0, c1, c2 = self.coef
        return c0 + c1 * x + c2 * x * x


@dataclass(frozen=True)
class IsoflopDetails:
    """What the IsoFLOP figure needs: the runs of each budget and the parabolas fitted to them."""

    runs: pd.DataFrame  # the runs approach 2 used, with a `group` column (budget in FLOPs)
    parabolas: tuple[Parabola, ...]


def budget_groups(runs: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The budget (FLOPs) each run belongs to, NaN if none, from the budget column or by grouping C."""
    if runs["budget"].notna().any():
        missing = int(runs["budget"].isna().sum())
        notes = [f"approach 2: {missing} runs have no budget and are left out"] if missing else []
        return runs["budget"].to_numpy(float), notes
    log_c = np.log10(runs["C"].to_numpy(float))
    order = np.argsort(log_c)
    cluster = np.concatenate([[0], np.cumsum(np.diff(log_c[order]) > BUDGET_GAP_DECADES)])
    groups, notes = np.full(log_c.size, np.nan), []
    for label in np.unique(cluster):
        members = order[cluster == label]
        spread = np.ptp(log_c[members])
        if spread > MAX_BUDGET_SPREAD_DECADES:
            notes.append(
                f"approach 2: {members.size} runs between C = {10 ** log_c[members].min():.3g} and "
                f"{10 ** log_c[members].max():.3g} FLOPs span {spread:.2f} decades, not one IsoFLOP budget: "
                "pass --budget-col"
            )
            continue
        groups[members] = 10 ** log_c[members].mean()
    return groups, notes


def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(x), x, x * x])


def fit_parabola(budget: float, log_n: np.ndarray, loss: np.ndarray) -> Parabola:
    """Least-squares parabola of loss on log N; FitError, naming the budget, if it has no interior minimum."""
    sizes = np.unique(log_n).size
    if sizes < MIN_SIZES_PER_BUDGET:
        raise FitError(f"budget {budget:.3g} FLOPs: runs at {sizes} distinct model sizes, need {MIN_SIZES_PER_BUDGET}: "
                       "add sizes")
    centre = float(log_n.mean())
    x = log_n - centre
    (c0, c1, c2), *_ = np.linalg.lstsq(_design(x), loss, rcond=None)
    if c2 <= 0:
        raise FitError(
            f"budget {budget:.3g} FLOPs: the IsoFLOP parabola opens downward or is flat (curvature {c2:.3g}); "
            "add runs on both sides of the optimum"
        )
    x_opt = -c1 / (2 * c2)
    if not x.min() <= x_opt <= x.max():
        raise FitError(
            f"budget {budget:.3g} FLOPs: the parabola's minimum lies outside the sampled sizes "
            f"(N = {np.exp(log_n.min()):.3g} to {np.exp(log_n.max()):.3g}); extend the sweep past it"
        )
    return Parabola(float(budget), log_n, loss, (float(c0), float(c1), float(c2)), centre, float(centre + x_opt),
                    float(c0 - c1**2 / (4 * c2)))


def relative_residuals(parabola: Parabola) -> np.ndarray:
    """(loss - fit) / fit per run, divided by sqrt(1 - leverage) so each has the noise's variance."""
    design = _design(parabola.log_n - parabola.centre)
    leverage = np.einsum("ij,jk,ik->i", design, np.linalg.inv(design.T @ design), design)
    fitted = parabola.at(parabola.log_n)
    return (parabola.loss - fitted) / fitted / np.sqrt(1.0 - leverage)


def with_standard_error(parabola: Parabola, relative_var: float) -> Parabola:
    """The parabola with its minimum's standard error in log N (delta method), given the relative noise variance."""
    design = _design(parabola.log_n - parabola.centre)
    _, c1, c2 = parabola.coef
    slope = np.array([0.0, -1 / (2 * c2), c1 / (2 * c2**2)])  # d x_opt / d coef
    loss_var = relative_var * np.mean(parabola.at(parabola.log_n) ** 2)
    se = np.sqrt(loss_var * slope @ np.linalg.inv(design.T @ design) @ slope)
    return replace(parabola, se_log_n_opt=float(max(se, MIN_SE)))


def fit_minima(runs: pd.DataFrame) -> tuple[list[Parabola], list[str]]:
    """One parabola per budget with enough sizes and an interior minimum; messages for the budgets skipped."""
    parabolas, skipped = [], []
    log_n, loss = np.log(runs["N"].to_numpy(float)), runs["loss"].to_numpy(float)
    for budget, index in runs.groupby("group").indices.items():
        try:
            parabolas.append(fit_parabola(budget, log_n[index], loss[index]))
        except FitError as error:
            skipped.append(f"approach 2: {error}")
    return parabolas, skipped


def refit_minima(parabolas: list[Parabola], noise: np.ndarray) -> list[Parabola]:
    """Each parabola refitted to its fitted losses x (1 + noise); a budget whose refit fails drops out, as in the fit."""
    refits = []
    for parabola, e in zip(parabolas, np.split(noise, np.cumsum([p.log_n.size for p in parabolas])[:-1])):
        try:
            refits.append(fit_parabola(parabola.budget, parabola.log_n, parabola.at(parabola.log_n) * (1.0 + e)))
        except FitError:
            continue
    return refits


def frontier_params(parabolas: list[Parabola], se: dict[float, float]) -> dict[str, float]:
    """Power laws through the minima: N_opt weighted by 1/se^2 of each budget's minimum, L_opt unweighted."""
    if len(parabolas) < MIN_BUDGETS:
        raise FitError(f"only {len(parabolas)} budgets kept a clear minimum, need {MIN_BUDGETS}")
    budget = np.array([p.budget for p in parabolas])
    n_law = fit_power_law(budget, np.exp([p.log_n_opt for p in parabolas]), [se[b] for b in budget])
    loss_law = fit_power_law(budget, [p.loss_opt for p in parabolas])
    return {"a": n_law.exponent, "b": 1.0 - n_law.exponent, "log_k_n": n_law.log_k,
            "loss_exponent": loss_law.exponent, "log_k_loss": loss_law.log_k}


def fit_approach2(runs: pd.DataFrame, n_boot: int, seed: int) -> ApproachResult:
    """IsoFLOP minima and their power laws, with intervals from a pooled residual bootstrap."""
    groups, notes = budget_groups(runs)
    runs = runs.assign(group=groups).dropna(subset=["group"]).reset_index(drop=True)
    if runs.empty:
        raise FitError("approach 2 found no IsoFLOP budgets: add a budget column (--budget-col) or IsoFLOP runs")
    parabolas, skipped = fit_minima(runs)
    if len(parabolas) < MIN_BUDGETS:
        reasons = "; ".join(reason.removeprefix("approach 2: ") for reason in notes + skipped)
        raise FitError(f"approach 2 needs at least {MIN_BUDGETS} budgets with a clear IsoFLOP minimum, found "
                       f"{len(parabolas)}" + (f" ({reasons})" if reasons else ""))
    pool = np.concatenate([relative_residuals(p) for p in parabolas])
    pool -= pool.mean()
    parabolas = [with_standard_error(p, float(np.mean(pool**2))) for p in parabolas]
    se = {p.budget: p.se_log_n_opt for p in parabolas}
    estimate = frontier_params(parabolas, se)
    noise = np.random.default_rng(seed).choice(pool, size=(n_boot, pool.size))
    samples = replicate(lambda draw: frontier_params(refit_minima(parabolas, draw), se), noise, estimate)
    return ApproachResult(
        name="approach2",
        title="Approach 2: IsoFLOP parabolas",
        estimate=estimate,
        samples=samples,
        frontier=power_law_frontier,
        warnings=tuple(notes + skipped),
        details=IsoflopDetails(runs, tuple(parabolas)),
    )
