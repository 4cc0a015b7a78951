"""What every approach hands back: point estimates, their bootstrap replicates, and the frontier they imply."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.fits.bootstrap import percentile_interval
from analysis.fits.lossmodel import tokens_from_flops
from analysis.fits.powerlaw import evaluate_power_law

# (parameters, budgets C) -> (N_opt, D_opt, L_opt); parameters may be floats or arrays of replicates.
Frontier = Callable[[Mapping[str, Any], np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class ApproachResult:
    """One approach's estimates, each with its bootstrap replicates (NaN where a refit failed)."""

    name: str
    title: str
    estimate: dict[str, float]
    samples: dict[str, np.ndarray]
    frontier: Frontier
    warnings: tuple[str, ...]
    details: Any  # what the figures need: envelope, parabolas, or fitted points
    # What the approach did by design and a reader should know, but that is no reason to doubt a number
    # (runs a sweep trained off its budgets, left out of the IsoFLOP profiles); warnings are such reasons.
    notes: tuple[str, ...] = ()

    def interval(self, key: str, level: float) -> tuple[float, float]:
        """Percentile interval of one estimate's replicates, e.g. level 0.8 gives the 10th and 90th."""
        low, high = percentile_interval(self.samples[key], level)
        return float(low), float(high)

    @property
    def n_boot(self) -> int:
        return len(next(iter(self.samples.values())))

    @property
    def n_failed(self) -> int:
        return int(np.isnan(next(iter(self.samples.values()))).sum())


def power_law_frontier(params: Mapping[str, Any], C: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Approaches 1 and 2: N_opt = k C^a, D_opt = C/(6 N_opt), and L_opt = k_L C^c fitted to the optimal losses."""
    n_opt = evaluate_power_law(C, params["log_k_n"], params["a"])
    loss = evaluate_power_law(C, params["log_k_loss"], params["loss_exponent"])
    return n_opt, tokens_from_flops(C, n_opt), loss
