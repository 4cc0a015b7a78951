"""Fit every approach that the data support: the one call behind analysis.fit and analysis.report."""

from dataclasses import dataclass, field, replace

import numpy as np

from analysis.failures import FitError
from analysis.fits.approach1 import DEFAULT_ENVELOPE_START, fit_approach1
from analysis.fits.approach2 import fit_approach2
from analysis.fits.approach3 import Bootstrap, Init, fit_approach3, law_by_name
from analysis.fits.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, interval_warnings
from analysis.fits.extrapolate import default_budgets
from analysis.fits.fit_data import FitData
from analysis.fits.laws import DEFAULT_LAW
from analysis.fits.prediction import LawCheck, check_laws
from analysis.fits.profiles import DEFAULT_PROFILE
from analysis.fits.result import ApproachResult


@dataclass(frozen=True)
class FitConfig:
    """How to fit: bootstrap, interval level, extrapolation budgets, approach-3 law, starts and bootstrap kind,
    approach-2 profile estimator, approach-1 envelope start, and whether to check how far every law extrapolates."""

    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    level: float = DEFAULT_LEVEL
    budgets: tuple[float, ...] = ()
    init: Init = "varpro"
    envelope_start: float = DEFAULT_ENVELOPE_START
    law: str = DEFAULT_LAW
    profile: str = DEFAULT_PROFILE
    check_laws: bool = True
    bootstrap: Bootstrap = "residuals"


@dataclass(frozen=True)
class Analysis:
    """Every approach that could be fitted, a one-line reason for each that could not, and each law's
    extrapolation check (or the reason it could not run)."""

    data: FitData
    results: dict[str, ApproachResult]
    skipped: dict[str, str]
    config: FitConfig
    law_checks: dict[str, LawCheck | str] = field(default_factory=dict)

    @property
    def budgets(self) -> np.ndarray:
        return np.array(self.config.budgets) if self.config.budgets else default_budgets(self.data.runs["C"].max())


def analyse(data: FitData, config: FitConfig) -> Analysis:
    """Fit each approach independently; a FitError in one is recorded and does not stop the others."""
    law = law_by_name(config.law)
    fits = {
        "approach1": lambda: _approach1(data, config),
        "approach2": lambda: fit_approach2(data.runs, config.n_boot, config.seed, config.profile),
        "approach3": lambda: fit_approach3(
            data.runs, config.n_boot, config.seed, config.init, config.law, config.level, config.bootstrap
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
    return Analysis(data, results, skipped, config, check_laws(data.runs) if config.check_laws else {})


def _approach1(data: FitData, config: FitConfig) -> ApproachResult:
    """Approach 1 on the runs that have curves (it refuses tables without any)."""
    curves = data.curves
    runs = data.runs if curves is None else data.runs[data.runs["run"].isin(curves["run"])].reset_index(drop=True)
    return fit_approach1(runs, curves, config.n_boot, config.seed, config.envelope_start)
