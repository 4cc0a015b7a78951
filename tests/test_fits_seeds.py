"""Seeds in the fits (analysis/fits/seeds.py, bootstrap.point_counts): seed means and pooled seed noise
against float64 references, the two-stage bootstrap, the misfit test's calibration on data with known
truth (and its power against a curve that misfits), and approach 2 on seeds equal to approach 2 on their
means."""

import numpy as np
import pandas as pd
import pytest

from analysis.fit_input import eval_set_note
from analysis.fits.approach2 import fit_approach2
from analysis.fits.bootstrap import point_counts
from analysis.fits.lossmodel import LossParams
from analysis.fits.seeds import (
    SeedNoise,
    misfit_test,
    parabola_residuals,
    point_ids,
    seed_means,
    seed_noise,
    seed_sd_by_size,
)
from analysis.fits.synthetic import isoflop_runs
from scaling import contract

TRUTH = LossParams(E=1.7, A=80.0, B=900.0, alpha=0.36, beta=0.35)


def seeded(runs: pd.DataFrame, k: int, sd: float, seed: int = 0) -> pd.DataFrame:
    """Each run repeated at k seeds, its loss plus independent noise of this sd."""
    rng = np.random.default_rng(seed)
    copies = [runs.assign(seed=s, run=runs["run"] + f",seed={s}") for s in range(k)]
    out = pd.concat(copies, ignore_index=True)
    return out.assign(loss=out["loss"] + rng.normal(0.0, sd, len(out)))


def test_seed_means_and_noise_match_a_float64_reference():
    runs = seeded(isoflop_runs(TRUTH, np.array([1e11, 2e11, 4e11]), sizes=5, span_decades=0.6), 3, 0.02)
    means = seed_means(runs)
    assert len(means) == 15 and (means["seeds"] == 3).all()
    for (n, d), group in runs.groupby(["N", "D"]):
        row = means[(means["N"] == n) & (means["D"] == d)].iloc[0]
        assert row["loss"] == pytest.approx(np.mean(group["loss"].to_numpy(np.float64)), abs=1e-12)
        assert row["loss_sd"] == pytest.approx(np.std(group["loss"].to_numpy(np.float64), ddof=1), abs=1e-12)
    noise = seed_noise(runs)
    deviations = runs["loss"] - runs.groupby(["N", "D"])["loss"].transform("mean")
    assert noise.dof == 15 * 2 and noise.variance == pytest.approx(np.sum(deviations**2) / 30, rel=1e-12)
    assert noise.sd == pytest.approx(0.02, rel=0.3)
    by_size = seed_sd_by_size(runs)
    assert len(by_size) == runs["N"].nunique() and (by_size["seeds"] == 3).all()
    one_seed = seed_means(runs[runs["seed"] == 0])
    assert (one_seed["seeds"] == 1).all() and one_seed["loss_sd"].isna().all() and seed_noise(one_seed).dof == 0


def test_the_point_bootstrap_resamples_points_then_seeds_within_them():
    points = np.repeat(np.arange(10), 3)  # 10 grid points of 3 seeds
    counts = point_counts(points, 4000, seed=0)
    assert (counts.sum(axis=1) == 30).all()
    per_point = counts.reshape(4000, 10, 3).sum(axis=2)
    assert (per_point % 3 == 0).all()  # a point drawn c times brings 3c seed draws
    assert counts.mean() == pytest.approx(1.0, abs=0.02)
    # the seeds within a point are resampled: a point drawn once does not always bring each seed once
    once = per_point == 3
    assert (counts.reshape(4000, 10, 3)[once] != 1).any(axis=1).mean() > 0.5
    single = point_counts(np.arange(20), 4000, seed=1)  # one seed per point: the runs bootstrap
    assert (single.sum(axis=1) == 20).all() and single.var() == pytest.approx(1 - 1 / 20, rel=0.05)


def test_the_misfit_test_holds_its_level_on_seed_noise_and_catches_a_misfit():
    """Parabola residuals of 5 sizes' seed means (3 seeds, sd 0.01): under a true parabola the F test's p
    is about uniform (p < 0.1 in 10% of 2,000 draws, within 3 binomial sds); with a cubic term of 0.05 nats
    at the ends it is below 0.1 in most draws."""
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 5)
    truth = 3.0 + 0.05 * x**2

    def p_values(curve: np.ndarray) -> np.ndarray:
        out = []
        for _ in range(2000):
            losses = curve[:, None] + rng.normal(0, 0.01, (5, 3))
            deviations = losses - losses.mean(axis=1, keepdims=True)
            noise = SeedNoise(float(np.sum(deviations**2) / 10), 10)
            test = misfit_test(parabola_residuals(x, losses.mean(axis=1)), np.full(5, 3), noise, 3)
            out.append(test.p_value)
        return np.array(out)

    null = p_values(truth)
    assert abs((null < 0.1).mean() - 0.1) < 3 * np.sqrt(0.1 * 0.9 / 2000)
    assert (p_values(truth + 0.05 * x**3) < 0.1).mean() > 0.6


def test_approach2_on_seeds_is_approach2_on_their_means():
    runs = seeded(isoflop_runs(TRUTH, np.array([1e11, 2e11, 4e11, 8e11]), sizes=5, span_decades=0.6), 3, 0.01)
    on_seeds = fit_approach2(runs, 200, 0)
    means = seed_means(runs).drop(columns=["loss_sd", "seeds"])
    on_means = fit_approach2(means, 200, 0)
    assert on_seeds.estimate == pytest.approx(on_means.estimate, rel=1e-12)
    assert np.unique(point_ids(runs)).size == 20


def test_runs_evaluated_on_different_sets_are_named():
    table = pd.DataFrame({contract.EVAL_DIGEST: ["a", "a", "b", None], contract.EVAL_SET: ["documents"] * 3 + [None]})
    note = eval_set_note(table)
    assert len(note) == 1 and "3 different eval sets" in note[0] and "2 on a (documents)" in note[0]
    assert eval_set_note(table.iloc[:2]) == []
