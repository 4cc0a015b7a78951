"""The comparison of variants (analysis/fits/joint_law.py, multiplier.py, variant_comparison.py) against truths
computed independently: compute-optimal losses from lossmodel.compute_optimal and root finding."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq

from analysis.failures import FitError
from analysis.fits.lossmodel import LossParams, compute_optimal
from analysis.fits.multiplier import crossover_log10, frontier_constants, frontier_loss
from analysis.fits.synthetic import scaled_law, variant_runs
from analysis.fits.variant_comparison import CompareConfig, compare, resample_points

REFERENCE = LossParams(E=1.8, A=40.0, B=120.0, alpha=0.35, beta=0.33)
STEEPER = LossParams(E=1.8, A=52.0, B=240.0, alpha=0.40, beta=0.37)
BUDGETS = np.array([5e10, 1e11, 2e11, 4e11])


def optimal_loss(params: LossParams, C) -> np.ndarray:
    return compute_optimal(np.asarray(C, float), **params.as_dict())[2]


def true_multiplier(reference: LossParams, variant: LossParams, C: float) -> float:
    """C_ref / C where the reference's optimal loss at C_ref is the variant's at C, by root finding."""
    target = optimal_loss(variant, C)
    root = brentq(lambda x: optimal_loss(reference, np.exp(x)) - target, np.log(C) - 20, np.log(C) + 20, xtol=1e-12)
    return float(np.exp(root) / C)


def test_frontier_is_the_compute_optimal_loss():
    C = np.geomspace(1e8, 1e24, 9)
    for params in (REFERENCE, STEEPER):
        assert np.allclose(frontier_loss(frontier_constants(params.as_dict()), C), optimal_loss(params, C), rtol=1e-12)


@pytest.mark.parametrize(
    ("variant", "expected_difference"),
    [(scaled_law(REFERENCE, 2.0, 1.5), 0.0), (STEEPER, 0.40 * 0.37 / 0.77 - 0.35 * 0.33 / 0.68)],
    ids=["constant", "growing"],
)
def test_joint_fit_recovers_the_multiplier_and_exponent_difference(variant, expected_difference):
    runs = variant_runs([REFERENCE, variant], BUDGETS, sizes=5, span_decades=0.8)
    result = compare(runs, ("ref", "var"), CompareConfig(n_boot=8, budgets=(4e12,)))
    gap = result.gaps[0]
    for row in gap.multiplier.itertuples():
        assert row.point == pytest.approx(true_multiplier(REFERENCE, variant, row.C), rel=2e-3)
    assert gap.exponent_difference.point == pytest.approx(expected_difference, abs=2e-4)
    assert list(gap.multiplier["fitted"]) == [True] * 4 + [False]
    if expected_difference == 0.0:  # parameters 2x and tokens 1.5x: 3x the compute at every budget
        assert np.allclose(gap.multiplier["point"], 3.0, rtol=2e-3)


def test_crossover_equals_its_closed_form():
    ref, var = (frontier_constants(p.as_dict()) for p in (REFERENCE, STEEPER))
    # K from the compute-optimal loss at C = 6 FLOPs, where (C/6)^-gamma = 1: L* - E = K.
    k_ref, k_var = (optimal_loss(p, 6.0) - p.E for p in (REFERENCE, STEEPER))
    closed = np.log10(6.0) + np.log10(k_var / k_ref) / (var["gamma"] - ref["gamma"])
    assert crossover_log10(ref, var, centre=11.0) == pytest.approx(closed, abs=1e-9)
    # With different E the frontiers cross where the compute-optimal losses are equal.
    lower_e = LossParams(1.7, 52.0, 240.0, 0.40, 0.37)
    root = crossover_log10(ref, frontier_constants(lower_e.as_dict()), centre=11.0)
    assert optimal_loss(lower_e, 10.0**root) == pytest.approx(optimal_loss(REFERENCE, 10.0**root), abs=1e-9)


def test_parallel_frontiers_do_not_cross():
    ref = frontier_constants(REFERENCE.as_dict())
    var = frontier_constants(scaled_law(REFERENCE, 2.0, 1.0).as_dict())
    assert crossover_log10(ref, var, centre=11.0) == np.inf


def test_points_and_seeds_are_resampled_within_their_stratum():
    strata = np.array([0, 0, 0, 0, 1, 1, 1])
    points = np.array([0, 0, 0, 1, 2, 3, 4])  # point 0 has three seeds
    counts = resample_points(strata, points, 4000, seed=3)
    seeds_of_point0 = counts[:, :3].sum(axis=1)
    assert (seeds_of_point0 / 3 + counts[:, 3] == 2).all() and (counts[:, 4:].sum(axis=1) == 3).all()
    assert set(np.unique(seeds_of_point0)) == {0, 3, 6}  # the point drawn 0, 1 or 2 times, 3 seeds each
    drawn_once = seeds_of_point0 == 3
    assert (counts[drawn_once, :3] != 1).any(axis=1).mean() > 0.5  # its seeds redrawn, not all kept
    assert (counts[:, 4] == 0).mean() == pytest.approx((2 / 3) ** 3, abs=0.03)  # a run left out of a resample


def test_the_interval_resamples_runs():
    """Each bootstrap replicate is the joint fit to a resample of the runs: refitting the runs repeated as its
    counts say (without weights) gives the same frontier; and the replicates differ from the full fit."""
    variant = scaled_law(REFERENCE, 2.0, 1.0)
    runs = variant_runs([REFERENCE, variant], BUDGETS, sizes=5, span_decades=0.8, noise=0.01, seed=4)
    result = compare(runs, ("ref", "var"), CompareConfig(n_boot=6, seed=1))
    assert (result.counts == 0).any(axis=1).all()  # every replicate left some runs out
    for replicate in (0, 5):
        repeated = result.runs.loc[result.runs.index.repeat(result.counts[replicate])].reset_index(drop=True)
        again = compare(repeated[["N", "D", "C", "loss", "variant", "budget"]], ("ref", "var"), CompareConfig(n_boot=1))
        for index in (0, 1):
            assert result.replicates[index]["gamma"][replicate] == pytest.approx(
                again.frontiers[index]["gamma"], abs=1e-4
            )
    assert np.ptp(result.replicates[1]["gamma"]) > 1e-3


def test_a_variant_at_one_budget_is_refused():
    runs = variant_runs([REFERENCE, REFERENCE], BUDGETS, sizes=5)
    runs = runs[(runs["variant"] == 0) | (runs["budget"] == BUDGETS[0])]
    with pytest.raises(FitError, match="variant post: runs at 1 budget"):
        compare(runs, ("pre", "post"))


def test_free_e_recovers_different_irreducible_losses():
    lower_e = LossParams(1.6, 40.0, 120.0, 0.35, 0.33)
    runs = variant_runs([REFERENCE, lower_e], BUDGETS, sizes=7, span_decades=1.2)
    result = compare(runs, ("ref", "var"), CompareConfig(n_boot=4, shared_e=False))
    assert [f["E"] for f in result.frontiers] == pytest.approx([1.8, 1.6], abs=0.01)
    assert result.gaps[0].multiplier["point"].iloc[-1] == pytest.approx(
        true_multiplier(REFERENCE, lower_e, result.gaps[0].multiplier["C"].iloc[-1]), rel=0.02
    )


def test_replicates_frame_is_consistent():
    runs = variant_runs([REFERENCE, STEEPER], BUDGETS, sizes=3, span_decades=0.3, noise=0.005, seeds=2)
    result = compare(runs, ("ref", "var"), CompareConfig(n_boot=5))
    assert isinstance(result.runs, pd.DataFrame) and result.runs["point"].nunique() == 24  # 2 seeds per point
    assert result.counts.shape == (5, 48)
