"""Rollout backtests: fit on the steps up to k, predict step k+1, for every k that leaves MIN_FITTED steps fitted.

Bhagia et al. (2024), "Establishing Task Scaling Laws via Compute-Efficient Model Ladders" (OLMo's
`ScalingLawRollout`): a law that is to be trusted beyond the runs must have predicted, from the smaller
runs alone, the larger runs it was not fitted on. A step is an IsoFLOP budget when the runs have budgets,
else a model size (a ladder trained to several token counts per size, as Gadre et al. 2024).

Every predictor takes part: approach 3 under each law (predicting every run of step k+1, and its best
loss from the law's compute-optimal frontier), and, on IsoFLOP budgets, approach 2's power law through
the minima and the floor law E + k C^-g (frontier_law.py), which predict only the best loss. The best
loss observed at a budget is its IsoFLOP minimum (the default profile estimator on that budget's runs).

`choose_law` picks the law by its rollout error alone: the mean over steps of each step's mean
|log(predicted / observed)| over its grid points. A point trained at several seeds is judged by its seeds'
mean: a law predicts a point's expected loss, and one seed's deviation from it is noise no law can predict
(it would add the same blur to every law's score and hide the differences in bias that tell laws apart).
With one seed per point the two are the same. Runs that are later held out never enter (the caller passes
only the runs to fit).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.failures import FitError
from analysis.fits.approach2 import MIN_BUDGETS as MIN_APPROACH2_BUDGETS
from analysis.fits.approach2 import budget_groups, fit_minima
from analysis.fits.approach3 import fit_law, law_by_name, prepare, run_columns
from analysis.fits.frontier_law import MIN_BUDGETS as MIN_FRONTIER_BUDGETS
from analysis.fits.frontier_law import fit_rows, law_loss
from analysis.fits.huber import DEFAULT_OBJECTIVE, Objective
from analysis.fits.laws import LAWS
from analysis.fits.powerlaw import fit_lines
from analysis.fits.profiles import DEFAULT_PROFILE
from analysis.fits.seeds import point_ids

MIN_FITTED = 3  # a law with a floor and two exponents needs three steps to say anything about a fourth
MIN_RUNS_PER_BUDGET = 3  # compute clusters smaller than this are not IsoFLOP budgets
MAX_SIZE_STEPS = 8  # without budgets, more distinct sizes than this are grouped into this many steps
APPROACH2, FRONTIER = "approach 2 (power law)", "frontier E + k C^-g"
AUTO = "auto"
FALLBACK_LAW = "chinchilla"  # the default's law when the runs are too few to roll out


@dataclass(frozen=True)
class Steps:
    """The runs' steps in order: IsoFLOP budgets (FLOPs) or model sizes (N), and each run's step (-1: none)."""

    kind: str  # "budget" or "size"
    values: np.ndarray  # each step's budget, or its (largest) size
    of_run: np.ndarray
    grouped: bool = False  # sizes grouped into ranges (each step: sizes up to its value)

    def runs_upto(self, k: int) -> np.ndarray:
        """Mask of the runs in the first k steps."""
        return (self.of_run >= 0) & (self.of_run < k)

    def label(self, k: int) -> str:
        if self.kind == "budget":
            return f"C = {self.values[k]:.3g} FLOPs"
        return f"N {'<=' if self.grouped else '='} {self.values[k]:.3g}"


@dataclass(frozen=True)
class RolloutRow:
    """One predictor fitted on the first `fitted` steps, judged on step `fitted` (0-based) it never saw."""

    predictor: str
    fitted: int
    target: str  # the step predicted, in words
    n_predicted: int
    mean_abs_error: float  # mean |relative error| over the step's runs (NaN for best-loss predictors)
    mean_error: float  # signed: (predicted - observed) / observed, averaged
    mean_abs_log_error: float  # over the step's points (seed means): what choose_law ranks by
    best_loss_error: float  # relative error of the predicted best loss at the step's budget (NaN for sizes)
    note: str = ""  # why the predictor could not be fitted at this step
    n_points: int = 0  # distinct (N, D) among the step's runs: fewer than n_predicted when points have seeds
    mean_abs_point_error: float = np.nan  # mean |relative error| of the points' seed means

    @property
    def has_seeds(self) -> bool:
        return 0 < self.n_points < self.n_predicted


def rollout_steps(runs: pd.DataFrame) -> Steps:
    """IsoFLOP budgets when the runs have them (a budget column, or compute clusters of 3 or more runs),
    else distinct model sizes."""
    groups, _ = budget_groups(runs)
    budgets, sizes = np.unique(groups[np.isfinite(groups)], return_counts=True)
    if runs["budget"].notna().any() or (budgets.size and sizes.min() >= MIN_RUNS_PER_BUDGET):
        of_run = np.where(np.isfinite(groups), np.searchsorted(budgets, np.nan_to_num(groups)), -1)
        return Steps("budget", budgets, of_run)
    N = runs["N"].to_numpy(float)
    sizes = np.unique(N)
    if sizes.size <= MAX_SIZE_STEPS:
        return Steps("size", sizes, np.searchsorted(sizes, N))
    # Not a ladder of a few sizes (e.g. points read off a figure, each at its own N): equal-count groups by N,
    # each step named by its largest size.
    edges = np.quantile(np.log(N), np.linspace(0.0, 1.0, MAX_SIZE_STEPS + 1))[1:-1]
    of_run = np.searchsorted(edges, np.log(N), side="right")
    return Steps("size", np.array([N[of_run == k].max() for k in range(MAX_SIZE_STEPS)]), of_run, grouped=True)


def require_steps(steps: Steps, what: str) -> None:
    """FitError naming the steps there are, when there are too few to roll out."""
    if steps.values.size < MIN_FITTED + 1:
        kind = "IsoFLOP budgets" if steps.kind == "budget" else "distinct model sizes"
        raise FitError(
            f"{what} needs at least {MIN_FITTED + 1} {kind} ({MIN_FITTED} to fit and one to predict), the runs "
            f"have {steps.values.size}: add budgets, or pass --law NAME"
        )


def budget_minima(runs: pd.DataFrame, steps: Steps) -> tuple[np.ndarray, np.ndarray]:
    """Each budget's IsoFLOP minimum loss by the default profile estimator (NaN where it has none), and the
    best loss to judge predictions by: that minimum, or the budget's lowest loss where it has none."""
    if steps.kind != "budget":
        return np.full(steps.values.size, np.nan), np.full(steps.values.size, np.nan)
    inside = steps.of_run >= 0
    profiles, _ = fit_minima(runs[inside].assign(group=steps.values[steps.of_run[inside]]), DEFAULT_PROFILE)
    found = {p.budget: p.loss_opt for p in profiles}
    loss_opt = np.array([found.get(budget, np.nan) for budget in steps.values])
    lowest = np.array([runs["loss"].to_numpy(float)[steps.of_run == k].min() for k in range(steps.values.size)])
    return loss_opt, np.where(np.isfinite(loss_opt), loss_opt, lowest)


def law_rollout(runs: pd.DataFrame, steps: Steps, name: str, objective: Objective, best: np.ndarray) -> list:
    """Rows for approach 3 under one law, one per rollout step."""
    law = law_by_name(name)
    N, D, loss, epochs = run_columns(runs)
    points, rows = point_ids(runs), []
    for k in range(MIN_FITTED, steps.values.size):
        fit_mask, target = steps.runs_upto(k), steps.of_run == k
        try:
            fit = fit_law(
                law, prepare(law, N[fit_mask], D[fit_mask], loss[fit_mask], epochs[fit_mask]), "varpro", objective
            )
        except FitError as error:
            rows.append(_unfitted(name, k, steps, int(target.sum()), str(error)))
            continue
        predicted = fit.predict(N[target], D[target], epochs[target])
        best_error = np.nan
        if steps.kind == "budget":
            best_error = float(law.frontier(fit.params, steps.values[k : k + 1])[2][0] / best[k] - 1.0)
        rows.append(_row(name, k, steps, predicted, loss[target], best_error, points[target]))
    return rows


def minima_rollout(steps: Steps, loss_opt: np.ndarray, best: np.ndarray) -> list:
    """Rows for the best-loss predictors fitted to the budgets' minima: approach 2's power law (unweighted
    here) and the floor law."""
    if steps.kind != "budget":
        return []
    log_c, rows = np.log(steps.values), []
    for k in range(MIN_FITTED, steps.values.size):
        known = np.where(np.arange(steps.values.size) < k, loss_opt, np.nan)[None]
        n_known = int(np.isfinite(known).sum())
        intercept, slope = fit_lines(log_c, np.log(known), np.ones_like(known))
        power = np.exp(intercept[0] + slope[0] * log_c[k]) if n_known >= MIN_APPROACH2_BUDGETS else np.nan
        floor = fit_rows(log_c, known)
        at = law_loss({key: value[0] for key, value in floor.items()}, steps.values[k])
        for name, value, needed in ((APPROACH2, power, MIN_APPROACH2_BUDGETS), (FRONTIER, at, MIN_FRONTIER_BUDGETS)):
            if np.isfinite(value):
                rows.append(_row(name, k, steps, np.array([]), np.array([]), float(value / best[k] - 1.0)))
            else:
                rows.append(_unfitted(name, k, steps, 0, f"needs the minima of {needed} budgets, {n_known} fitted"))
    return rows


def percent(value: float, sign: str = "") -> str:
    """A relative error as a percentage (sign "+" to always show one), or "-" where there is none."""
    return "-" if not np.isfinite(value) else f"{value:{sign}.2%}"


def _row(name: str, k: int, steps: Steps, predicted, observed, best_error: float, points=()) -> RolloutRow:
    """A row from each run's prediction and loss; `points` (an id per run) groups the seeds of one point."""
    if not predicted.size:
        return RolloutRow(name, k, steps.label(k), 0, np.nan, np.nan, np.nan, best_error)
    error = predicted / observed - 1.0
    # Every seed of a point shares its (N, D), so its prediction: the point's error is against the seeds' mean.
    _, point = np.unique(points, return_inverse=True)
    count = np.bincount(point)
    point_predicted = np.bincount(point, predicted) / count
    point_observed = np.bincount(point, observed) / count
    return RolloutRow(
        name,
        k,
        steps.label(k),
        int(predicted.size),
        float(np.mean(np.abs(error))),
        float(np.mean(error)),
        float(np.mean(np.abs(np.log(point_predicted / point_observed)))),
        best_error,
        n_points=int(count.size),
        mean_abs_point_error=float(np.mean(np.abs(point_predicted / point_observed - 1.0))),
    )


def _unfitted(name: str, k: int, steps: Steps, n: int, why: str) -> RolloutRow:
    return RolloutRow(name, k, steps.label(k), n, np.nan, np.nan, np.nan, np.nan, why)


def applicable_laws(runs: pd.DataFrame) -> list[str]:
    """The laws worth rolling out: all, less data_constrained when no run repeated its data."""
    repeats = "epochs" in runs and (runs["epochs"].fillna(1.0) > 1.0).any()
    return [name for name in LAWS if name != "data_constrained" or repeats]


def rollout(
    runs: pd.DataFrame, objective: Objective = DEFAULT_OBJECTIVE, laws: list[str] | None = None
) -> list[RolloutRow]:
    """The rollout table of every predictor (every law that applies, and the minima's predictors)."""
    steps = rollout_steps(runs)
    require_steps(steps, "a rollout")
    loss_opt, best = budget_minima(runs, steps)
    rows = [row for name in laws or applicable_laws(runs) for row in law_rollout(runs, steps, name, objective, best)]
    return rows + minima_rollout(steps, loss_opt, best)


def law_scores(rows: list[RolloutRow]) -> dict[str, float]:
    """Each law's rollout error: the mean over steps of its mean |log error| over points; laws not fitted at
    every step (or not at all) are left out, since a law that cannot be fitted on the smaller steps has not
    been tested."""
    scores = {}
    for name in LAWS:
        mine = [row.mean_abs_log_error for row in rows if row.predictor == name]
        if mine and all(np.isfinite(mine)):
            scores[name] = float(np.mean(mine))
    return scores


# A law that is a special case of another, and that other. Tied is chinchilla with alpha = beta, which fixes
# a = b = 1/2: chosen, it would report the exponents as points. Over a few rollout steps the two predict
# alike when the truth is near either, so tied is chosen only when it predicted clearly better (by more than
# CLOSE_SCORES); otherwise the general law is kept and the exponents are measured. On Gadre et al.'s runs,
# whose law is tied, chinchilla's rollout error is 1.45-2.0x tied's, so tied is still chosen there.
NESTED_IN = {"tied": "chinchilla"}
CLOSE_SCORES = 1.25


def choose_law(rows: list[RolloutRow]) -> tuple[str, dict[str, float]]:
    """The law with the smallest rollout error (a nested law only when it beats its general law by more than
    CLOSE_SCORES), and every law's score."""
    scores = law_scores(rows)
    if not scores:
        raise FitError("--law auto: no law could be fitted at every rollout step; pass --law NAME")
    best = min(scores, key=scores.get)
    general = NESTED_IN.get(best)
    if general in scores and scores[general] <= CLOSE_SCORES * scores[best]:
        return general, scores
    return best, scores


@dataclass(frozen=True)
class LawChoice:
    """The law approach 3 fits, how it was chosen, and the rollout table it was chosen by (empty when the runs
    have too few steps to roll out)."""

    law: str
    rows: tuple[RolloutRow, ...]
    scores: dict[str, float]
    note: str


def resolve_law(runs: pd.DataFrame, requested: str | None, objective: Objective = DEFAULT_OBJECTIVE) -> LawChoice:
    """The law to fit: `requested`, or for `auto` the rollout's choice. Without a request (the default) too few
    steps fall back to FALLBACK_LAW with a note; an explicit `auto` with too few steps is a FitError."""
    steps = rollout_steps(runs)
    if requested == AUTO:
        require_steps(steps, "--law auto")
    rows = tuple(rollout(runs, objective)) if steps.values.size > MIN_FITTED else ()
    if requested not in (None, AUTO):
        law_by_name(requested)
        return LawChoice(requested, rows, law_scores(list(rows)), f"law {requested} (--law)")
    if not rows:
        return LawChoice(
            FALLBACK_LAW,
            rows,
            {},
            f"law {FALLBACK_LAW}: the runs have {steps.values.size} "
            f"{'budgets' if steps.kind == 'budget' else 'sizes'}, too few to roll out and choose a law by "
            f"(needs {MIN_FITTED + 1})",
        )
    law, scores = choose_law(list(rows))
    best = min(scores, key=scores.get)
    if law != best:
        note = (
            f"law {law}: its rollout error ({scores[law]:.2%}) is within {CLOSE_SCORES - 1:.0%} of that of {best} "
            f"({scores[best]:.2%}), a special case of it that fixes the exponents, so the general law is kept"
        )
    else:
        note = f"law {law}: the smallest rollout error ({scores[law]:.2%}) of {len(scores)} laws"
    return LawChoice(law, rows, scores, note)
