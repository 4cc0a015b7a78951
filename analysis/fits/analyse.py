"""Fit every approach that the data support: the one call behind analysis.fit and analysis.report."""

from dataclasses import dataclass, replace

import numpy as np

from analysis.errors import FitError
from analysis.fits.approach1 import DEFAULT_ENVELOPE_START, fit_approach1
from analysis.fits.approach2 import fit_approach2
from analysis.fits.approach3 import Init, fit_approach3
from analysis.fits.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, interval_warnings
from analysis.fits.data import FitData
from analysis.fits.extrapolate import default_budgets
from analysis.fits.result import ApproachResult


@dataclass(frozen=True)
class FitConfig:
    """How to fit: bootstrap size and seed, interval level, extrapolation budgets, approach-3 starts, envelope start."""

    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    level: float = DEFAULT_LEVEL
    budgets: tuple[float, ...] = ()
    init: Init = "varpro"
    envelope_start: float = DEFAULT_ENVELOPE_START


@dataclass(frozen=True)
class Analysis:
    """Every approach that could be fitted, and a one-line reason for each that could not."""

    data: FitData
    results: dict[str, ApproachResult]
    skipped: dict[str, str]
    config: FitConfig

    @property
    def budgets(self) -> np.ndarray:
        return np.array(self.config.budgets) if self.config.budgets else default_budgets(self.data.runs["C"].max())


def analyse(data: FitData, config: FitConfig) -> Analysis:
    """Fit each approach independently; a FitError in one is recorded and does not stop the others."""
    fits = {
        "approach1": lambda: _approach1(data, config),
        "approach2": lambda: fit_approach2(data.runs, config.n_boot, config.seed),
        "approach3": lambda: fit_approach3(data.runs, config.n_boot, config.seed, config.init),
    }
    results, skipped = {}, {}
    for name, fit in fits.items():
        try:
            result = fit()
        except FitError as error:
            skipped[name] = str(error)
            continue
        checks = interval_warnings(name.replace("approach", "approach "), result.estimate, result.samples, config.level)
        results[name] = replace(result, warnings=result.warnings + tuple(checks))
    return Analysis(data, results, skipped, config)


def _approach1(data: FitData, config: FitConfig) -> ApproachResult:
    """Approach 1 on the runs that have curves, or on final points when no run has one."""
    if data.curves is None:
        return fit_approach1(data.runs, None, config.n_boot, config.seed, config.envelope_start)
    runs = data.runs[data.runs["run"].isin(data.curves["run"])].reset_index(drop=True)
    return fit_approach1(runs, data.curves, config.n_boot, config.seed, config.envelope_start)
