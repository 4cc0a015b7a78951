"""Approach 1: the envelope of training curves recovers known exponents, and final points alone are refused."""

import numpy as np
import pandas as pd
import pytest

from analysis.failures import FitError
from analysis.fits.approach1 import FINAL_POINTS_ONLY, fit_approach1
from analysis.fits.lossmodel import LossParams, allocation_exponents
from analysis.fits.reference import HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs, training_curves

SKEWED = LossParams(E=2.0, A=1500.0, B=300.0, alpha=0.45, beta=0.30)  # a = 0.40, far from a = b
PLATEAU_SOFTNESS = 0.05  # nats over which a synthetic curve bends off its initial plateau


def _long_curves(truth: LossParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """25 sizes, each trained to 400 tokens per parameter so curves cross near the optimum, from an initial plateau.

    Every curve starts near ln V at a height its initialisation sets (a soft minimum of L(N, D) and that height).
    """
    N = np.geomspace(1e8, 1e11, 25)
    runs = pd.DataFrame(
        {
            "run": [f"r{i}" for i in range(N.size)],
            "N": N,
            "D": 400 * N,
            "C": 2400 * N * N,
            "loss": 0.0,
            "budget": np.nan,
        }
    )
    curves = training_curves(truth, runs, evals=100, first_fraction=1e-7)
    height = curves["run"].map(dict(zip(runs["run"], np.log(32_000) + 0.01 * np.random.default_rng(0).normal(size=25))))
    return runs, curves.assign(
        loss=-PLATEAU_SOFTNESS * np.logaddexp(-curves["loss"] / PLATEAU_SOFTNESS, -height / PLATEAU_SOFTNESS)
    )


@pytest.mark.parametrize("truth", [HOFFMANN_2022, SKEWED], ids=["hoffmann", "skewed"])
def test_approach1_recovers_exponent_past_the_initial_plateau(truth):
    """From the smallest run's end up the envelope finds a; from the first evaluation the plateau drags it down."""
    a_true, _ = allocation_exponents(truth.alpha, truth.beta)
    runs, curves = _long_curves(truth)
    result = fit_approach1(runs, curves, n_boot=20, seed=0)
    assert result.estimate["a"] == pytest.approx(a_true, abs=0.015)
    assert result.estimate["b"] == pytest.approx(1 - a_true, abs=0.015)
    from_first_evaluation = fit_approach1(runs, curves, n_boot=20, seed=0, start_fraction=0.0)
    assert from_first_evaluation.estimate["a"] < a_true - 0.1


def test_final_points_alone_are_refused_with_what_is_needed():
    runs = isoflop_runs(HOFFMANN_2022, np.logspace(18, 22, 8), sizes=9, noise=0.01, seed=0)
    with pytest.raises(FitError, match="approach 1 needs training curves") as error:
        fit_approach1(runs, None, n_boot=20, seed=0)
    assert str(error.value) == FINAL_POINTS_ONLY and "final points only" in FINAL_POINTS_ONLY


def test_an_envelope_starting_past_every_run_is_named():
    runs, curves = _long_curves(HOFFMANN_2022)
    with pytest.raises(FitError, match="past the last run's end: lower --envelope-start"):
        fit_approach1(runs, curves, n_boot=5, seed=0, start_fraction=1e9)
