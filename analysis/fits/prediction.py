"""Backtests: fit a law on the smaller runs, predict the held-out larger ones, and check each prediction.

A prediction interval must hold a new run's loss, not the law's mean, and a law fitted on small runs can
be wrong in form, not only in its parameters. So an interval has two parts, and is the wider of them:

- the bootstrap's: each replicate's prediction (parameter uncertainty) times exp(e), e drawn from the fit's
  own log residuals (leverage-corrected, kernel-smoothed: one run's noise about the law, as approach 3's
  bootstrap draws it);
- the rollout's (split conformal prediction, Vovk et al. 2005; normalised scores as in Lei et al. 2018,
  "Distribution-Free Predictive Inference for Regression"): the law, fitted with its bootstrap on the
  steps up to k, predicted the runs of step k+1 (rollout.py), and each prediction's |log error| divided by
  its bootstrap predictive spread is a score. The interval is the prediction times exp(+-q s), s the
  predictive spread at the new run and q the ceil((n + 1) level)-th smallest of the n scores (the largest
  when n is too small for that). Where the law's form is right, q is close to the normal quantile and the
  bootstrap's interval stands; where the form is wrong, the steps it mispredicted widen every interval, in
  proportion to how far the bootstrap already says the new run lies from the fitted ones.

Relative error is (predicted - observed) / observed.
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
from analysis.fits.huber import DEFAULT_OBJECTIVE, Objective
from analysis.fits.result import ApproachResult
from analysis.fits.rollout import MIN_FITTED, LawChoice, resolve_law, rollout_steps

DEFAULT_HOLDOUT_SHARE = 0.1  # without IsoFLOP budgets, hold out this share of the runs, largest compute first
MIN_BUDGETS_TO_HOLD_ONE_OUT = 4  # one held out leaves the three approach 2 needs
MIN_RUNS_IN_CLUSTER = 3  # compute clusters smaller than this are not IsoFLOP budgets
CALIBRATION_BOOT = 200  # bootstrap refits per rollout step for the conformal scores
NORMAL_SPREAD = (15.865525393145708, 84.13447460685429)  # percentiles at -1 and +1 standard deviation


@dataclass(frozen=True)
class Holdout:
    """Which runs are held out (True), and a phrase saying which."""

    mask: np.ndarray
    description: str


@dataclass(frozen=True)
class Calibration:
    """The rollout's conformal scores for one law: |log error| / predictive spread of each rollout prediction."""

    scores: np.ndarray
    steps: int

    def quantile(self, level: float) -> float:
        """The ceil((n + 1) level)-th smallest score (split conformal), or the largest when n is too small."""
        ordered = np.sort(self.scores)
        rank = int(np.ceil((ordered.size + 1) * level))
        return float(ordered[min(rank, ordered.size) - 1])


@dataclass(frozen=True)
class Backtest:
    """A law fitted on some runs, and its predictions for the others."""

    law: str
    holdout: str
    level: float
    fit: ApproachResult
    predictions: pd.DataFrame  # run, N, D, C, epochs, observed, predicted, low, high, relative_error, interval_held
    choice: LawChoice
    calibration: Calibration | None

    @property
    def mean_abs_relative_error(self) -> float:
        return float(self.predictions["relative_error"].abs().mean())

    @property
    def coverage(self) -> float:
        """The share of held-out runs whose loss the prediction interval held."""
        return float(self.predictions["interval_held"].mean())


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


def predictive(result: ApproachResult, runs: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Predicted loss at each run (n,), and the bootstrap's predictive draws of its log loss (n_boot, n):
    each replicate's prediction times one run's noise."""
    fit = result.details
    N, D, _, epochs = run_columns(runs)
    replicas = fit.law.loss({key: value[:, None] for key, value in result.samples.items()}, N, D, epochs)
    noise = smoothed_draws(residuals(fit), replicas.shape, np.random.default_rng(seed))
    with np.errstate(divide="ignore", invalid="ignore"):
        return fit.predict(N, D, epochs), np.log(replicas) + noise


def spread(log_draws: np.ndarray) -> np.ndarray:
    """Robust standard deviation of each column of draws: half the 16th-84th percentile range."""
    low, high = np.nanpercentile(log_draws, NORMAL_SPREAD, axis=0)
    return 0.5 * (high - low)


def prediction_interval(
    result: ApproachResult,
    runs: pd.DataFrame,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
    calibration: Calibration | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted loss and its `level` prediction interval for each run: the bootstrap's, widened to the
    rollout's conformal interval where that is wider."""
    predicted, log_draws = predictive(result, runs, seed)
    tail = 50.0 * (1.0 - level)
    low, high = np.exp(np.nanpercentile(log_draws, [tail, 100.0 - tail], axis=0))
    if calibration is not None:
        half = calibration.quantile(level) * spread(log_draws)
        low, high = np.minimum(low, predicted * np.exp(-half)), np.maximum(high, predicted * np.exp(half))
    return predicted, low, high


def calibrate(
    runs: pd.DataFrame,
    law: str,
    objective: Objective,
    seed: int = 0,
    init: Init = "varpro",
    bootstrap: Bootstrap = "residuals",
    n_boot: int = CALIBRATION_BOOT,
) -> Calibration | None:
    """Conformal scores from the law's rollout over `runs` (those to be fitted), or None with too few steps."""
    steps = rollout_steps(runs)
    scores = []
    for k in range(MIN_FITTED, steps.values.size):
        fitted, target = runs[steps.runs_upto(k)], runs[steps.of_run == k]
        try:
            result = fit_approach3(
                fitted, min(n_boot, CALIBRATION_BOOT), seed + k, init, law, bootstrap=bootstrap, objective=objective
            )
        except FitError:
            continue
        predicted, log_draws = predictive(result, target, seed + k)
        scores.append(np.abs(np.log(target["loss"].to_numpy(float) / predicted)) / spread(log_draws))
    return Calibration(np.concatenate(scores), len(scores)) if scores else None


def backtest(
    runs: pd.DataFrame,
    holdout: Holdout,
    law: str | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    init: Init = "varpro",
    bootstrap: Bootstrap = "residuals",
    objective: Objective = DEFAULT_OBJECTIVE,
) -> Backtest:
    """Fit approach 3 on the runs not held out (the law as asked, or chosen by their rollout), then predict
    each held-out run with an interval calibrated on that rollout."""
    train, test = runs[~holdout.mask].reset_index(drop=True), runs[holdout.mask].reset_index(drop=True)
    choice = resolve_law(train, law, objective)
    result = fit_approach3(train, n_boot, seed, init, choice.law, level, bootstrap, objective)
    calibration = calibrate(train, choice.law, objective, seed, init, bootstrap, n_boot)
    predicted, low, high = prediction_interval(result, test, level, seed, calibration)
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
    return Backtest(choice.law, holdout.description, level, result, predictions, choice, calibration)


def check_law(runs: pd.DataFrame, holdout: Holdout, law_name: str, objective: Objective = DEFAULT_OBJECTIVE) -> float:
    """Fit one law (no bootstrap) on the runs not held out: its mean |relative error| on the held-out ones."""
    law = law_by_name(law_name)
    N, D, loss, epochs = run_columns(runs)
    keep = ~holdout.mask
    fit = fit_law(law, prepare(law, N[keep], D[keep], loss[keep], epochs[keep]), "varpro", objective)
    return float(np.mean(np.abs(fit.predict(N[~keep], D[~keep], epochs[~keep]) - loss[~keep]) / loss[~keep]))


def leave_one_out(
    runs: pd.DataFrame, targets: pd.DataFrame, law: str, objective: Objective = DEFAULT_OBJECTIVE
) -> np.ndarray:
    """(n_runs, n_targets) point predictions of the targets by the law refitted without each run in turn:
    how far one run moves a prediction, which a bootstrap that keeps every run cannot show."""
    model = law_by_name(law)
    N, D, loss, epochs = run_columns(runs)
    tN, tD, _, t_epochs = run_columns(targets)
    out = np.full((len(runs), len(targets)), np.nan)
    for i in range(len(runs)):
        keep = np.arange(len(runs)) != i
        try:
            fit = fit_law(model, prepare(model, N[keep], D[keep], loss[keep], epochs[keep]), "varpro", objective)
        except FitError:
            continue
        out[i] = fit.predict(tN, tD, t_epochs)
    return out
