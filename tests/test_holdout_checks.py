"""The held-out run's placement in the (N, D/N) plane and the leave-one-point-out spread of its prediction:
pure functions of the runs table, right on synthetic sweeps drawn from a known law."""

import numpy as np
import pandas as pd
import pytest

from analysis.fits.approach3 import fit_law, law_by_name, prepare, run_columns
from analysis.fits.holdout_checks import leave_one_point_out, placement, spread
from analysis.fits.lossmodel import LossParams, compute_optimal, predict_loss
from analysis.fits.synthetic import isoflop_runs

TRUTH = LossParams(E=1.7, A=80.0, B=900.0, alpha=0.36, beta=0.35)
BUDGETS = np.array([1e11, 2e11, 4e11, 8e11])


def sweep(noise: float = 0.0, seeds: int = 1) -> pd.DataFrame:
    runs = isoflop_runs(TRUTH, BUDGETS, sizes=5, span_decades=0.6)
    rng = np.random.default_rng(0)
    copies = [runs.assign(run=runs["run"] + f",seed={s}") for s in range(seeds)]
    out = pd.concat(copies, ignore_index=True)
    return out.assign(loss=out["loss"] * np.exp(noise * rng.standard_normal(len(out))))


def test_placement_says_whether_the_held_out_d_per_n_was_reached_by_runs_of_its_size():
    runs = sweep()
    ratio = runs["D"] / runs["N"]
    n_opt = float(compute_optimal(3.2e12, **TRUTH.as_dict())[0])
    at_optimum = placement(runs, n_opt, 3.2e12 / (6 * n_opt))
    assert at_optimum.fitted_range == (ratio.min(), ratio.max())
    small = n_opt / 4  # far below the optimum: many more tokens per parameter than any run of its size
    beyond = placement(runs, small, 3.2e12 / (6 * small))
    assert not beyond.inside and beyond.tokens_per_param > beyond.near_range[1]
    inside = runs.iloc[7]
    here = placement(runs, float(inside["N"]), float(inside["D"]))
    assert here.inside and here.nearest == inside["run"]
    assert placement(runs, small, 3.2e12 / (6 * small)) == beyond  # nothing but the table goes in


def test_leave_one_point_out_is_flat_on_the_law_and_equals_fits_made_without_each_point():
    n, d = 1.0e5, 3.2e12 / 6e5
    exact = leave_one_point_out(sweep(seeds=2), n, d, "chinchilla")
    assert len(exact) == 1 + 20 and (exact["seeds"].iloc[1:] == 2).all() and exact["seeds"].iloc[0] == 40
    truth = float(predict_loss(n, d, **TRUTH.as_dict()))
    np.testing.assert_allclose(exact["predicted"], truth, rtol=2e-4)
    assert spread(exact) < 1e-3
    runs = sweep(noise=0.005, seeds=2)
    table = leave_one_point_out(runs, n, d, "chinchilla")
    law = law_by_name("chinchilla")
    for row in (1, 7, 13, 20):  # against fits made from scratch without the point
        keep = ~((runs["N"] == table["N"].iloc[row]) & (runs["D"] == table["D"].iloc[row]))
        N, D, loss, epochs = run_columns(runs[keep])
        alone = fit_law(law, prepare(law, N, D, loss, epochs)).predict(n, d)
        assert table["predicted"].iloc[row] == pytest.approx(float(alone), rel=1e-4)
    assert spread(table) == pytest.approx(table["predicted"].iloc[1:].max() - table["predicted"].iloc[1:].min())
    assert spread(table) > spread(exact)
    pd.testing.assert_frame_equal(table, leave_one_point_out(runs, n, d, "chinchilla"))  # a pure function
