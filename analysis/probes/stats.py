"""Statistics over memorised sets: uniformity over training order, and one set as a predictor of another.

Uniformity (Biderman et al. 2023 find memorised sequences spread uniformly over training order):
the sampled sequences are cut, in training order, into bins holding equally many samples; if where
a sequence sits in training order does not matter, every bin's memorised count is
Binomial(n_bin, p) with one shared p, which for small p is the Poisson law their Q-Q figure uses.
The statistic is the chi-square test of homogeneity, sum (O - n p)^2 / (n p (1 - p)) with bins - 1
degrees of freedom (p estimated): unlike the Poisson dispersion index it stays valid when p is large.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Uniformity:
    """Memorised counts per bin of training position and the homogeneity test on them."""

    memorised_B: np.ndarray
    sampled_B: np.ndarray
    statistic: float  # chi-square; NaN when nothing (or everything) is memorised
    dof: int
    p_value: float

    @property
    def expected_B(self) -> np.ndarray:
        return self.sampled_B * self.memorised_B.sum() / self.sampled_B.sum()


def default_bins(n_memorised: int) -> int:
    """About 5 expected memorised sequences per bin (the chi-square rule of thumb), between 2 and 20 bins."""
    return int(np.clip(n_memorised // 5, 2, 20))


def uniformity_test(positions: np.ndarray, memorised: np.ndarray, n_bins: int) -> Uniformity:
    """Do memorised samples cluster in training order? Bins hold equally many samples, in position order."""
    in_order = np.argsort(positions, kind="stable")
    bins = np.array_split(in_order, n_bins)
    hits_B = np.array([memorised[b].sum() for b in bins], np.float64)
    sampled_B = np.array([len(b) for b in bins], np.float64)
    p = hits_B.sum() / sampled_B.sum()
    if p in (0.0, 1.0):
        return Uniformity(hits_B, sampled_B, math.nan, n_bins - 1, math.nan)
    statistic = float((((hits_B - sampled_B * p) ** 2) / (sampled_B * p * (1 - p))).sum())
    return Uniformity(hits_B, sampled_B, statistic, n_bins - 1, float(stats.chi2.sf(statistic, n_bins - 1)))


def poisson_quantiles(n_bins: int, mean: float) -> np.ndarray:
    """Theoretical Poisson(mean) quantiles at the plotting positions (i + 0.5) / n, for a Q-Q figure."""
    return stats.poisson.ppf((np.arange(n_bins) + 0.5) / n_bins, mean)


def precision_recall(predicted: set, actual: set) -> tuple[float, float]:
    """How much of `predicted` is in `actual` (precision) and how much of `actual` it finds (recall)."""
    both = len(predicted & actual)
    precision = both / len(predicted) if predicted else math.nan
    recall = both / len(actual) if actual else math.nan
    return precision, recall
