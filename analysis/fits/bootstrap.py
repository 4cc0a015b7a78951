"""Bootstrap: resample runs (or residuals), refit, summarise as percentile intervals, flag intervals not to trust."""

from collections.abc import Callable, Iterable

import numpy as np

from analysis.failures import FitError

DEFAULT_N_BOOT = 1000
# Hoffmann et al. (2022) and Besiroglu et al. (2024) both report 10th-90th percentile intervals.
DEFAULT_LEVEL = 0.8
# An exponent interval narrower than 1% of the exponent is not credible from a few hundred runs:
# Hoffmann's [0.454, 0.455] would need ~600,000 runs (Besiroglu et al. 2024, section 4).
NARROW_RELATIVE_WIDTH = 0.01
CHECKED_KEYS = ("a", "b")
WARN_FRACTION = 0.05  # warn when more refits than this fail, or end on a bound


def point_counts(points: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_runs) counts of a two-stage bootstrap: the grid points are resampled, then the seeds of each
    point drawn (the runs sharing its label) are resampled within it, as often as it was drawn.

    Seeds of one point are not independent designs but repeats of one, so resampling runs across points
    would let a replicate hold three seeds of one point and none of its neighbour. With one seed per point
    this is the runs bootstrap."""
    rng = np.random.default_rng(seed)
    labels, index = np.unique(points, return_inverse=True)
    drawn = rng.multinomial(labels.size, np.full(labels.size, 1.0 / labels.size), size=n_boot)  # (n_boot, P)
    counts = np.zeros((n_boot, points.size), dtype=np.int64)
    for k in range(labels.size):
        members = np.flatnonzero(index == k)
        # a point drawn c times brings c x (its seeds) draws among its seeds
        counts[:, members] = rng.multinomial(drawn[:, k] * members.size, np.full(members.size, 1.0 / members.size))
    return counts


def replicate(
    refit: Callable[[np.ndarray], dict[str, float]], draws: np.ndarray, keys: Iterable[str]
) -> dict[str, np.ndarray]:
    """Run `refit` on every row of draws (resample counts or noise); a refit raising FitError leaves NaN in its row."""
    samples = {key: np.full(len(draws), np.nan) for key in keys}
    for i, row in enumerate(draws):
        try:
            fitted = refit(row)
        except FitError:
            continue
        for key in samples:
            samples[key][i] = fitted[key]
    return samples


def percentile_interval(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) percentiles enclosing `level` of the replicates along axis 0, skipping failed ones.

    A 1-D array of replicates gives two scalars; a (replicates, budgets) array gives two bands.
    """
    ok = np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if not ok.any():
        return np.full(values.shape[1:], np.nan), np.full(values.shape[1:], np.nan)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(values[ok], [tail, 100.0 - tail], axis=0)
    return low, high


def centred(samples: dict[str, np.ndarray], estimate: dict[str, float]) -> dict[str, np.ndarray]:
    """Replicates shifted so that each one's median is the estimate, so the interval is about the estimator
    reported: a bootstrap world whose truth differs from the estimator's fit (approach 2's flexible curve)
    otherwise centres its replicates elsewhere, and an interval can exclude its own estimate."""
    out = {}
    for key, values in samples.items():
        found = values[np.isfinite(values)]
        out[key] = values - (np.median(found) - estimate[key]) if found.size else values
    return out


def centred_columns(replicates: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """As `centred`, for each column of (n_boot, B) replicates and its estimate (B,)."""
    columns = {str(j): replicates[:, j] for j in range(replicates.shape[1])}
    out = centred(columns, {str(j): float(value) for j, value in enumerate(estimate)})
    return np.column_stack([out[str(j)] for j in range(replicates.shape[1])])


def interval_warnings(
    name: str,
    estimate: dict[str, float],
    samples: dict[str, np.ndarray],
    level: float,
    keys: tuple[str, ...] = CHECKED_KEYS,
) -> list[str]:
    """Warnings about refits that failed and exponent intervals (`keys`) too narrow to be believed."""
    warnings = []
    failed = np.isnan(samples[keys[0]]).mean()
    if failed > WARN_FRACTION:
        warnings.append(
            f"{name}: {failed:.0%} of bootstrap refits failed; the intervals use the rest and may be too narrow"
        )
    for key in keys:
        low, high = percentile_interval(samples[key], level)
        if high - low < NARROW_RELATIVE_WIDTH * abs(estimate[key]):
            warnings.append(
                f"{name}: the {level:.0%} interval for {key}, [{low:.4f}, {high:.4f}], is under "
                f"{NARROW_RELATIVE_WIDTH:.0%} of its value: suspiciously narrow for a few hundred runs "
                "(check for duplicated runs, noise-free data, or a fit pinned to a bound)"
            )
    return warnings
