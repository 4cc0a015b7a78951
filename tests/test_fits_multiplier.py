"""The comparison of variants (analysis/fits/joint_law.py, multiplier.py, variant_comparison.py) against truths
computed independently: compute-optimal losses from lossmodel.compute_optimal and root finding."""

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import brentq, minimize

from analysis.failures import FitError
from analysis.fits.lossmodel import LossParams, compute_optimal
from analysis.fits.multiplier import crossover_log10, frontier_constants, frontier_loss
from analysis.fits.synthetic import scaled_law, variant_runs
from analysis.fits.variant_comparison import CompareConfig, compare, run_weights

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


@pytest.mark.parametrize("kind", ["counts", "dirichlet"])
def test_points_and_seeds_are_resampled_within_their_stratum(kind):
    strata = np.array([0, 0, 0, 0, 1, 1, 1])
    points = np.array([0, 0, 0, 1, 2, 3, 4])  # point 0 has three seeds
    weights = run_weights(strata, points, 4000, seed=3, kind=kind)
    seeds_of_point0 = weights[:, :3].sum(axis=1)
    assert np.allclose(seeds_of_point0 / 3 + weights[:, 3], 2) and np.allclose(weights[:, 4:].sum(axis=1), 3)
    assert weights.mean(axis=0) == pytest.approx(np.ones(7), abs=0.05)
    # Its seeds are redrawn within the point, not all given the point's weight.
    assert (np.abs(weights[:, :3] - seeds_of_point0[:, None] / 3) > 1e-9).any(axis=1).mean() > 0.5
    if kind == "counts":  # a run is left out of about (1 - 1/3)^3 of the resamples
        assert set(np.unique(seeds_of_point0)) == {0, 3, 6}
        assert (weights[:, 4] == 0).mean() == pytest.approx((2 / 3) ** 3, abs=0.03)
    else:  # every run kept, each weight with a count's variance (n - 1)/n
        assert (weights > 0).all() and weights[:, 4].var() == pytest.approx(2 / 3, abs=0.05)


def huber_objective(frontiers: list[dict], runs: pd.DataFrame, weights: np.ndarray) -> float:
    """The summed Huber loss (delta 1e-3) of log L, each run weighted, written out here in float64."""
    params = pd.DataFrame(frontiers)[["E", "A", "B", "alpha", "beta"]].astype(float)
    params = params.iloc[runs["variant"]].reset_index(drop=True)
    predicted = params["E"] + params["A"] / runs["N"] ** params["alpha"] + params["B"] / runs["D"] ** params["beta"]
    r = np.log(predicted.to_numpy()) - np.log(runs["loss"].to_numpy())
    return float(np.sum(weights * np.where(np.abs(r) <= 1e-3, 0.5 * r**2, 1e-3 * (np.abs(r) - 0.5e-3))))


def test_the_interval_resamples_runs():
    """Each bootstrap replicate is the joint fit to its own weighting of the runs: no step lowers that weighting's
    Huber objective, which the full fit does not minimise; and the replicates differ from one another."""
    variant = scaled_law(REFERENCE, 2.0, 1.0)
    runs = variant_runs([REFERENCE, variant], BUDGETS, sizes=5, span_decades=0.8, noise=0.01, seed=4)
    result = compare(runs, ("ref", "var"), CompareConfig(n_boot=4, seed=1))
    keys = ("E", "A", "B", "alpha", "beta")

    def unpack(x: np.ndarray) -> list[dict]:
        return [
            {
                "E": np.exp(x[0]),
                "A": np.exp(x[1 + 4 * i]),
                "B": np.exp(x[2 + 4 * i]),
                "alpha": x[3 + 4 * i],
                "beta": x[4 + 4 * i],
            }
            for i in (0, 1)
        ]

    for replicate in range(4):
        weights = result.weights[replicate]
        mine = [{k: float(result.replicates[i][k][replicate]) for k in keys} for i in (0, 1)]
        start = np.array(
            [np.log(mine[0]["E"])] + [v for p in mine for v in (np.log(p["A"]), np.log(p["B"]), p["alpha"], p["beta"])]
        )
        at_replicate = huber_objective(mine, result.runs, weights)
        polished = minimize(
            lambda x, w=weights: huber_objective(unpack(x), result.runs, w),
            start,
            method="Powell",
            options={"xtol": 1e-10, "ftol": 1e-14},
        )
        assert polished.fun >= at_replicate * (1 - 1e-6)
        assert at_replicate < huber_objective(result.frontiers, result.runs, weights) * (1 - 1e-3)
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
    assert result.weights.shape == (5, 48)


def test_an_optimum_outside_the_sizes_trained_is_named():
    """The grid centred on the reference's optimum, 0.3 decades wide: the steeper variant's optimum lies below it."""
    runs = variant_runs([REFERENCE, STEEPER], BUDGETS, sizes=3, span_decades=0.3)
    warnings = compare(runs, ("pre", "post"), CompareConfig(n_boot=4)).warnings
    assert len(warnings) == 1 and warnings[0].startswith("post: the fitted compute-optimal size lies below the sizes")
    assert "4e11 FLOPs" in warnings[0] and warnings[0].endswith("extend the grid to smaller models")
