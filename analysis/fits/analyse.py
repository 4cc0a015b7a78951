"""Fit every approach that the data support: the one call behind analysis.fit and analysis.report."""

from dataclasses import dataclass, replace

import numpy as np

from analysis.failures import FitError
from analysis.fits.approach1 import DEFAULT_ENVELOPE_START, fit_approach1
from analysis.fits.approach2 import fit_approach2
from analysis.fits.approach3 import Bootstrap, Init, fit_approach3, law_by_name
from analysis.fits.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, centred, interval_warnings
from analysis.fits.extrapolate import default_budgets
from analysis.fits.fit_data import FitData
from analysis.fits.frontier_law import FrontierLaw, fit_frontier_law
from analysis.fits.huber import DEFAULT_OBJECTIVE, Objective
from analysis.fits.profiles import DEFAULT_PROFILE
from analysis.fits.result import ApproachResult
from analysis.fits.rollout import FALLBACK_LAW, LawChoice, resolve_law


@dataclass(frozen=True)
class FitConfig:
    """How to fit: bootstrap, interval level, extrapolation budgets, approach-3 law (None: chosen by the rollout,
    or the fallback law when the runs are too few to roll out; "auto": chosen by the rollout, or an error),
    starts, bootstrap kind and loss, approach-2 profile estimator, approach-1 envelope start, and whether to
    roll every predictor out."""

    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    level: float = DEFAULT_LEVEL
    budgets: tuple[float, ...] = ()
    init: Init = "varpro"
    envelope_start: float = DEFAULT_ENVELOPE_START
    law: str | None = None
    profile: str = DEFAULT_PROFILE
    rollout: bool = True
    bootstrap: Bootstrap = "residuals"
    objective: Objective = DEFAULT_OBJECTIVE


@dataclass(frozen=True)
class Analysis:
    """Every approach that could be fitted, a one-line reason for each that could not, the law approach 3 fitted
    and the rollout it was chosen by, and the floor law through approach 2's minima (or why not)."""

    data: FitData
    results: dict[str, ApproachResult]
    skipped: dict[str, str]
    config: FitConfig
    choice: LawChoice
    frontier_law: FrontierLaw | None = None

    @property
    def budgets(self) -> np.ndarray:
        return np.array(self.config.budgets) if self.config.budgets else default_budgets(self.data.runs["C"].max())


def analyse(data: FitData, config: FitConfig) -> Analysis:
    """Fit each approach independently; a FitError in one is recorded and does not stop the others. The law
    is resolved first (FitError for an explicit `--law auto` the runs cannot roll out)."""
    choice = (
        resolve_law(data.runs, config.law, config.objective)
        if config.rollout
        else LawChoice(config.law or FALLBACK_LAW, (), {}, "no rollout")
    )
    law = law_by_name(choice.law)
    fits = {
        "approach1": lambda: _approach1(data, config),
        "approach2": lambda: fit_approach2(data.runs, config.n_boot, config.seed, config.profile),
        "approach3": lambda: fit_approach3(
            data.runs,
            config.n_boot,
            config.seed,
            config.init,
            choice.law,
            config.level,
            config.bootstrap,
            config.objective,
        ),
    }
    checked = {"approach1": ("a", "b"), "approach2": ("a", "b"), "approach3": law.checked_keys}
    results, skipped = {}, {}
    for name, fit in fits.items():
        try:
            result = fit()
        except FitError as error:
            skipped[name] = str(error)
            continue
        checks = interval_warnings(
            name.replace("approach", "approach "), result.estimate, result.samples, config.level, checked[name]
        )
        results[name] = replace(result, warnings=result.warnings + tuple(checks))
    frontier = None
    if "approach2" in results:
        try:
            frontier = _frontier_law(results["approach2"])
        except FitError as error:
            skipped["frontier law"] = str(error)
    return Analysis(data, results, skipped, config, choice, frontier)


def _frontier_law(result: ApproachResult) -> FrontierLaw:
    """The floor law through approach 2's minima, its replicates centred on its estimate."""
    details = result.details
    budgets = np.array([p.budget for p in details.profiles])
    law = fit_frontier_law(budgets, np.array([p.loss_opt for p in details.profiles]), details.replicate_loss_opt)
    return replace(law, samples=centred(law.samples, law.estimate))


def _approach1(data: FitData, config: FitConfig) -> ApproachResult:
    """Approach 1 on the runs that have curves (it refuses tables without any)."""
    curves = data.curves
    runs = data.runs if curves is None else data.runs[data.runs["run"].isin(curves["run"])].reset_index(drop=True)
    return fit_approach1(runs, curves, config.n_boot, config.seed, config.envelope_start)
