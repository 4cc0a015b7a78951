"""Backtests: fit a law on the smaller runs, predict the held-out larger ones, and check each prediction.

A prediction interval must hold a new run's loss, not the law's mean: so each bootstrap replicate's
prediction (parameter uncertainty) is multiplied by exp(e), e drawn from the fit's own log residuals
(leverage-corrected, kernel-smoothed: the noise of one run about the law, as approach 3's bootstrap
draws it). Relative error is (predicted - observed) / observed.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.failures import FitError
from analysis.fits.approach2 import budget_groups
from analysis.fits.approach3 import (
    Bootstrap,
    Init,
    fit_approach3,
    fit_law,
    law_by_name,
    prepare,
    residuals,
    run_columns,
    smoothed_draws,
)
from analysis.fits.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT
from analysis.fits.laws import LAWS
from analysis.fits.result import ApproachResult

DEFAULT_HOLDOUT_SHARE = 0.1  # without IsoFLOP budgets, hold out this share of the runs, largest compute first
MIN_BUDGETS_TO_HOLD_ONE_OUT = 4  # one held out leaves the three approach 2 needs
MIN_RUNS_IN_CLUSTER = 3  # compute clusters smaller than this are not IsoFLOP budgets


@dataclass(frozen=True)
class Holdout:
    """Which runs are held out (True), and a phrase saying which."""

    mask: np.ndarray
    description: str


@dataclass(frozen=True)
class Backtest:
    """A law fitted on some runs, and its predictions for the others."""

    law: str
    holdout: str
    level: float
    fit: ApproachResult
    predictions: pd.DataFrame  # run, N, D, C, epochs, observed, predicted, low, high, relative_error, interval_held

    @property
    def mean_abs_relative_error(self) -> float:
        return float(self.predictions["relative_error"].abs().mean())

    @property
    def coverage(self) -> float:
        """The share of held-out runs whose loss the prediction interval held."""
        return float(self.predictions["interval_held"].mean())


@dataclass(frozen=True)
class LawCheck:
    """One law's point predictions for the held-out runs: how far it extrapolates."""

    law: str
    holdout: str
    n_fit: int
    n_held_out: int
    mean_abs_relative_error: float
    max_abs_relative_error: float


def largest(runs: pd.DataFrame, k: int) -> Holdout:
    """Hold out the k runs with the largest compute."""
    if not 0 < k < len(runs):
        raise FitError(f"--holdout-largest {k}: there are {len(runs)} runs; hold out between 1 and {len(runs) - 1}")
    order = np.argsort(-runs["C"].to_numpy(float), kind="stable")
    mask = np.zeros(len(runs), dtype=bool)
    mask[order[:k]] = True
    return Holdout(mask, f"the {k} runs with the largest compute (C >= {runs['C'].to_numpy()[mask].min():.3g} FLOPs)")


def fitted_on(runs: pd.DataFrame, fit_runs: set[str], expression: str) -> Holdout:
    """Hold out every run not in fit_runs (the runs an expression selected for fitting)."""
    mask = ~runs["run"].isin(fit_runs).to_numpy()
    if mask.all() or not mask.any():
        raise FitError(
            f"--fit-where {expression!r} selects {int((~mask).sum())} of {len(runs)} runs: it must leave "
            "some runs to fit and some to predict"
        )
    return Holdout(mask, f"the {int(mask.sum())} runs outside --fit-where {expression!r}")


def default_holdout(runs: pd.DataFrame) -> Holdout:
    """The largest IsoFLOP budget when the runs have budgets, else the largest tenth of the runs by compute."""
    groups, _ = budget_groups(runs)
    budgets, sizes = np.unique(groups[np.isfinite(groups)], return_counts=True)
    has_budgets = runs["budget"].notna().any() or (sizes.size and sizes[-1] >= MIN_RUNS_IN_CLUSTER)
    if has_budgets and budgets.size >= MIN_BUDGETS_TO_HOLD_ONE_OUT:
        mask = groups == budgets.max()
        return Holdout(mask, f"the largest IsoFLOP budget (C = {budgets.max():.3g} FLOPs, {int(mask.sum())} runs)")
    return largest(runs, max(1, int(round(DEFAULT_HOLDOUT_SHARE * len(runs)))))


def prediction_interval(
    result: ApproachResult, runs: pd.DataFrame, level: float = DEFAULT_LEVEL, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted loss and its `level` prediction interval (parameters and one run's noise) for each run."""
    fit = result.details
    N, D, _, epochs = run_columns(runs)
    replicas = fit.law.loss({key: value[:, None] for key, value in result.samples.items()}, N, D, epochs)
    noise = smoothed_draws(residuals(fit), replicas.shape, np.random.default_rng(seed))
    tail = 50.0 * (1.0 - level)
    low, high = np.nanpercentile(replicas * np.exp(noise), [tail, 100.0 - tail], axis=0)
    return fit.predict(N, D, epochs), low, high


def backtest(
    runs: pd.DataFrame,
    holdout: Holdout,
    law: str = "chinchilla",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    init: Init = "varpro",
    bootstrap: Bootstrap = "residuals",
) -> Backtest:
    """Fit `law` (approach 3) on the runs not held out, then predict each held-out run with an interval."""
    train, test = runs[~holdout.mask].reset_index(drop=True), runs[holdout.mask].reset_index(drop=True)
    result = fit_approach3(train, n_boot, seed, init, law, level, bootstrap)
    predicted, low, high = prediction_interval(result, test, level, seed)
    observed = test["loss"].to_numpy(float)
    _, _, _, epochs = run_columns(test)
    predictions = pd.DataFrame(
        {
            "run": test["run"].astype(str),
            "N": test["N"],
            "D": test["D"],
            "C": test["C"],
            "epochs": epochs,
            "observed": observed,
            "predicted": predicted,
            "low": low,
            "high": high,
            "relative_error": (predicted - observed) / observed,
            "interval_held": (low <= observed) & (observed <= high),
        }
    )
    return Backtest(law, holdout.description, level, result, predictions)


def check_law(runs: pd.DataFrame, holdout: Holdout, law_name: str) -> LawCheck:
    """Fit one law (no bootstrap) on the runs not held out, and its relative errors on the held-out ones."""
    law = law_by_name(law_name)
    N, D, loss, epochs = run_columns(runs)
    keep = ~holdout.mask
    fit = fit_law(law, prepare(law, N[keep], D[keep], loss[keep], epochs[keep]))
    error = np.abs(fit.predict(N[~keep], D[~keep], epochs[~keep]) - loss[~keep]) / loss[~keep]
    return LawCheck(
        law_name, holdout.description, int(keep.sum()), int((~keep).sum()), float(error.mean()), float(error.max())
    )


def check_laws(runs: pd.DataFrame) -> dict[str, LawCheck | str]:
    """Every law's extrapolation error on the default held-out runs; a one-line reason where a law cannot fit."""
    try:
        holdout = default_holdout(runs)
    except FitError as error:
        return {name: str(error) for name in LAWS}
    checks: dict[str, LawCheck | str] = {}
    for name in LAWS:
        try:
            checks[name] = check_law(runs, holdout, name)
        except FitError as error:
            checks[name] = str(error)
    return checks
