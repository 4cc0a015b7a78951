"""Predict, then verify: the held-out run is a pure function of the fitted results, and on a synthetic
sweep with a known law it lands on the rung nearest the true compute-optimal size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.fits.lossmodel import LossParams, compute_optimal
from analysis.fits.synthetic import isoflop_runs, training_curves
from scaling import contract
from scaling.config import ModelConfig
from scaling.planning.grids import expected_optimum, grid_ladder
from scaling.planning.ladder import nearest_rung
from scaling.sweeping.holdout import fit_sweep, fitted_optimum, holdout_budget, holdout_point
from tests.helpers import write_sweep

MODEL = ModelConfig(seq_len=64, head_dim=4, aspect_ratio=16)
VOCAB = 512
SPACING = math.sqrt(2)


def test_the_plan_is_a_pure_function_of_the_fit():
    budget = holdout_budget([1e11, 2e11, 4e11, 8e11], 4)
    assert budget == 3.2e12
    rungs = grid_ladder(MODEL, VOCAB, SPACING, [budget], [3])
    fit = {
        "approach2": {"extrapolation": [{"C": budget, "N_opt": 1.0e5}]},
        "approach3": {"extrapolation": [{"C": budget, "N_opt": 2.3e5}]},
    }
    plan = holdout_point(fit, budget, rungs)
    centre = nearest_rung(rungs, expected_optimum(budget)).index
    assert (plan.approach, plan.n_opt) == ("approach3", 2.3e5)  # the parametric fit is preferred
    assert plan.point == nearest_rung(rungs, 2.3e5).index - centre
    assert holdout_point(fit, budget, rungs) == plan  # nothing else goes in
    del fit["approach3"]
    assert holdout_point(fit, budget, rungs).approach == "approach2"
    assert holdout_point({}, budget, rungs) is None and fitted_optimum({"approach1": {}}) is None


def test_on_a_synthetic_sweep_the_held_out_run_lands_at_the_true_optimum(tmp_path):
    """The real `analysis.fit` command on a sweep folder drawn from a known L(N, D) (at CPU scale)."""
    truth = LossParams(E=1.7, A=80.0, B=900.0, alpha=0.36, beta=0.35)
    budgets = [1e11, 2e11, 4e11, 8e11]
    runs = isoflop_runs(truth, np.array(budgets), sizes=5, span_decades=0.6, noise=0.002, seed=0)
    folder = write_sweep(tmp_path / "demo", runs, training_curves(truth, runs, noise=0.002, seed=1))
    budget = holdout_budget(budgets, 4)
    rungs = grid_ladder(MODEL, VOCAB, SPACING, [budget], [3])
    fit = fit_sweep(folder, budget)
    # The keys training reads from the fit's JSON are named in the contract (training never imports analysis).
    for approach in (contract.FIT_APPROACH2, contract.FIT_APPROACH3):
        assert fit[approach][contract.FIT_EXTRAPOLATION][0][contract.FIT_N_OPT] > 0
    plan = holdout_point(fit, budget, rungs)
    true_n = float(compute_optimal(budget, **truth.as_dict())[0])
    centre = nearest_rung(rungs, expected_optimum(budget)).index
    assert plan.approach == "approach3" and plan.n_opt == pytest.approx(true_n, rel=0.15)
    assert abs(plan.point - (nearest_rung(rungs, true_n).index - centre)) <= 1
