"""Approach 3: Epoch's Chinchilla refit, the optimiser converging, and warnings for what the runs leave open."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.failures import FitError
from analysis.fit_input import Columns, load
from analysis.fits import approach3, huber
from analysis.fits.approach3 import fit_approach3, fit_law, prepare, vanishing_terms
from analysis.fits.huber import Objective
from analysis.fits.laws import LAWS, law_data
from analysis.fits.lossmodel import LossParams, allocation_exponents
from analysis.fits.reference import BESIROGLU_2024, HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs

DATA = Path(__file__).parent / "data"
EPOCH_COLUMNS = Columns(n="Model Size", flops="Training FLOP", loss="loss")
SKEWED = LossParams(E=2.0, A=1500.0, B=300.0, alpha=0.45, beta=0.30)  # a = 0.40, far from a = b
BUDGETS = np.logspace(18, 22, 8)
CHINCHILLA = LAWS["chinchilla"]


@pytest.fixture(scope="module")
def epoch_runs() -> pd.DataFrame:
    """Epoch's 240 points: the extracted data less its 5 highest-loss rows."""
    return (
        load(DATA / "svg_extracted_data.csv", EPOCH_COLUMNS).runs.sort_values("loss").iloc[:-5].reset_index(drop=True)
    )


@pytest.fixture(scope="module")
def gadre_small() -> pd.DataFrame:
    """Gadre et al.'s 32 small RedPajama models, where the old optimiser left 20 of 1000 refits at its cap."""
    table = pd.read_csv(DATA / "gadre2024_rpj_c4_eval.csv")
    table = table[~table["name"].str.contains("open_lm")]
    return pd.DataFrame({"N": table["params"], "D": table["tokens"], "loss": table["loss_c4_val"]}).reset_index(
        drop=True
    )


def _data(runs: pd.DataFrame):
    return law_data(*(runs[c].to_numpy(float) for c in ("N", "D", "loss")))


def test_approach3_reproduces_epoch_fit(epoch_runs):
    """Epoch's estimates with their loss (Huber, delta 1e-3), and (resampling runs, as they did) their interval
    for a."""
    result = fit_approach3(epoch_runs, n_boot=300, seed=0, bootstrap="runs", objective=Objective("epoch"))
    fit = result.estimate
    assert len(epoch_runs) == 240
    assert fit["E"] == pytest.approx(1.8172, rel=0.01)
    assert fit["alpha"] == pytest.approx(0.3478, rel=0.01)
    assert fit["beta"] == pytest.approx(0.3658, rel=0.01)
    assert fit["A"] == pytest.approx(482.01, rel=0.10)
    assert fit["B"] == pytest.approx(2085.43, rel=0.25)
    low, high = result.interval("a", 0.8)
    assert 0.47 < low < 0.50 and 0.53 < high < 0.56


def test_residual_bootstrap_on_epochs_points_is_narrower_than_resampling_runs(epoch_runs):
    """Points read off a plot carry error in N and D that redrawing losses alone cannot show (documented)."""
    residuals = fit_approach3(epoch_runs, n_boot=300, seed=0).interval("a", 0.8)
    runs = fit_approach3(epoch_runs, n_boot=300, seed=0, bootstrap="runs").interval("a", 0.8)
    assert residuals[0] < 0.5139 < residuals[1] and runs[1] - runs[0] > 1.5 * (residuals[1] - residuals[0])


def test_hoffmann_grid_reaches_the_varpro_optimum(epoch_runs, monkeypatch):
    """Both start sets land on one optimum (a thinned Hoffmann grid keeps the test fast)."""
    thinned = {key: values[::2] for key, values in approach3.HOFFMANN_GRID.items()}
    monkeypatch.setattr(approach3, "HOFFMANN_GRID", thinned)
    data = _data(epoch_runs)
    epoch = Objective("epoch")
    grid, varpro = fit_law(CHINCHILLA, data, "grid", epoch), fit_law(CHINCHILLA, data, "varpro", epoch)
    assert grid.objective == pytest.approx(varpro.objective, rel=1e-8)
    for key, value in varpro.params.items():
        assert grid.params[key] == pytest.approx(value, rel=1e-4)


def test_hoffmann_grid_is_for_the_chinchilla_law_only(epoch_runs):
    with pytest.raises(FitError, match="--init grid .* applies to --law chinchilla only"):
        fit_law(LAWS["tied"], _data(epoch_runs), init="grid")


def test_objective_is_summed_over_runs_not_averaged(epoch_runs):
    """Doubling every run's count doubles the objective (averaging is the early-stopping trap)."""
    data = _data(epoch_runs)
    theta = fit_law(CHINCHILLA, data).theta[None]
    single, _, _ = huber.evaluate(CHINCHILLA, theta, data, np.ones((1, len(epoch_runs))), data.log_loss[None])
    double, _, _ = huber.evaluate(CHINCHILLA, theta, data, 2 * np.ones((1, len(epoch_runs))), data.log_loss[None])
    assert double[0] == pytest.approx(2 * single[0])


@pytest.mark.parametrize("bootstrap", ["residuals", "runs"])
def test_every_bootstrap_refit_converges_where_the_old_optimiser_stalled(gadre_small, bootstrap):
    result = fit_approach3(gadre_small, n_boot=1000, seed=0, bootstrap=bootstrap)
    assert not any("without converging" in w for w in result.warnings)
    assert result.n_failed == 0


def test_a_refit_at_the_step_cap_is_reported_not_hidden(gadre_small, monkeypatch):
    monkeypatch.setattr(huber, "MAX_STEPS", 3)
    monkeypatch.setattr(approach3, "MAX_STEPS", 3)
    result = fit_approach3(gadre_small, n_boot=50, seed=0)
    assert any("of 50 bootstrap refits stopped after 3 steps without converging" in w for w in result.warnings)


def test_refits_reach_the_optimum_of_their_resample(epoch_runs):
    """A refit started from the full fit's optima ends where a fresh fit of the same resample ends."""
    data = _data(epoch_runs)
    fit = fit_law(CHINCHILLA, data)
    counts = np.random.default_rng(1).multinomial(len(epoch_runs), np.full(len(epoch_runs), 1 / len(epoch_runs)), 3)
    theta, converged = approach3.refit(fit, counts)
    for row, count in enumerate(counts):
        fresh = approach3._best_starts(CHINCHILLA, data, count.astype(float), 3)
        best, value, _ = approach3._polish_best(
            CHINCHILLA, fresh[None], data, count[None].astype(float), delta=fit.delta
        )
        refit_value, _, _ = huber.evaluate(
            CHINCHILLA, theta[row][None], data, count[None].astype(float), data.log_loss[None], fit.delta
        )
        assert converged[row] and refit_value[0] <= value[0] * (1 + 1e-9)


@pytest.mark.parametrize("truth", [HOFFMANN_2022, BESIROGLU_2024, SKEWED], ids=["hoffmann", "epoch", "skewed"])
def test_approach3_recovers_parameters_with_noise(truth):
    runs = isoflop_runs(truth, BUDGETS, noise=0.005, seed=7)
    result = fit_approach3(runs, n_boot=100, seed=0)
    a_true, _ = allocation_exponents(truth.alpha, truth.beta)
    assert result.estimate["E"] == pytest.approx(truth.E, rel=0.03)
    assert result.estimate["alpha"] == pytest.approx(truth.alpha, rel=0.1)
    assert result.estimate["beta"] == pytest.approx(truth.beta, rel=0.1)
    assert result.estimate["a"] == pytest.approx(a_true, abs=0.02)
    low, high = result.interval("a", 0.95)
    assert low < a_true < high


def test_unidentified_irreducible_loss_is_named():
    """Few, small runs far from the loss floor: E's interval runs down to the end of its range, and the warning says so."""
    N = np.repeat(np.geomspace(2e7, 6e7, 3), 4)
    D = np.tile(np.geomspace(4e8, 1.2e9, 4), 3)
    loss = HOFFMANN_2022.E + 406.4 / N**0.34 + 410.7 / D**0.28
    runs = pd.DataFrame({"N": N, "D": D, "loss": loss * np.exp(0.01 * np.random.default_rng(0).standard_normal(12))})
    warnings = fit_approach3(runs, n_boot=200, seed=0).warnings
    assert any(w.startswith("approach 3: E: its 80% interval") and "the runs do not identify E" in w for w in warnings)


def test_a_well_sampled_law_raises_no_identification_warning():
    runs = isoflop_runs(HOFFMANN_2022, BUDGETS, noise=0.005, seed=7)
    assert not [w for w in fit_approach3(runs, n_boot=100, seed=0).warnings if "identify" in w]


def test_a_term_that_vanishes_over_the_data_is_flagged():
    """Loss that ignores D: the D term must vanish from the fit, and the warnings say so, whichever of
    the degenerate optima (beta on its bound, or B cancelling a large beta) this CPU's rounding reaches."""
    rng = np.random.default_rng(0)
    N, D = np.geomspace(1e7, 1e9, 40), rng.permutation(np.geomspace(1e9, 1e11, 40))
    runs = pd.DataFrame({"N": N, "D": D, "loss": 1.8 + 400 / N**0.34 * np.exp(0.002 * rng.standard_normal(40))})
    warnings = fit_approach3(runs, n_boot=20, seed=0).warnings
    assert any("the D term B/D^beta" in w and "vanishes" in w for w in warnings)
    assert not any("the N term" in w for w in warnings)


@pytest.mark.parametrize(
    "beta, B",
    [(1e-4, 1e-3), (4.73, 4e25), (1e-4, 1.8)],
    ids=["beta-on-lower-bound", "large-beta-cancelled-by-B", "B-absorbs-E"],
)
def test_every_degenerate_optimum_that_drops_the_d_term_is_caught(beta, B):
    """The optima seen on different CPUs for the data above, and one more, all make the D term vanish."""
    N, D = np.geomspace(1e7, 1e9, 40), np.geomspace(1e9, 1e11, 40)
    loss = 1.8 + 400 / N**0.34
    params = dict(E=1.8 if B < 1 else 1e-6, A=400.0, B=B, alpha=0.34, beta=beta)
    notes = vanishing_terms(CHINCHILLA, params, N, D, loss)
    assert any(note.startswith("the D term") for note in notes)


def test_a_fit_where_every_term_matters_raises_no_vanishing_note():
    N, D = np.geomspace(1e7, 1e9, 40), np.geomspace(1e9, 1e11, 40)
    loss = 1.8 + 400 / N**0.34 + 2000 / D**0.37
    assert vanishing_terms(CHINCHILLA, dict(E=1.8, A=400.0, B=2000.0, alpha=0.34, beta=0.37), N, D, loss) == []


def test_too_few_points_for_approach3():
    with pytest.raises(FitError, match="approach 3 needs at least 8 runs"):
        prepare(CHINCHILLA, np.array([1e8, 2e8, 4e8]), np.array([1e9, 2e9, 4e9]), np.array([3.0, 2.9, 2.8]), None)
