"""Approaches 1-3 against known truths: Epoch's Chinchilla refit, synthetic laws, and bad input."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import FitError, InputError
from analysis.fit import main
from analysis.fits import approach3
from analysis.fits.analyse import FitConfig, analyse
from analysis.fits.approach1 import fit_approach1
from analysis.fits.approach2 import budget_groups, fit_approach2, fit_parabola
from analysis.fits.approach3 import fit_approach3, fit_loss_model
from analysis.fits.bootstrap import interval_warnings
from analysis.fits.lossmodel import (
    LossParams,
    allocation_coefficient,
    allocation_exponents,
    compute_optimal,
)
from analysis.fits.reference import BESIROGLU_2024, HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs, training_curves
from analysis.runs import Columns, load

EPOCH_CSV = Path(__file__).parent / "data" / "svg_extracted_data.csv"
EPOCH_COLUMNS = Columns(n="Model Size", flops="Training FLOP", loss="loss")
SKEWED = LossParams(E=2.0, A=1500.0, B=300.0, alpha=0.45, beta=0.30)  # a = 0.40, far from a = b
PARAM_SETS = [HOFFMANN_2022, BESIROGLU_2024, SKEWED]
BUDGETS = np.logspace(18, 22, 8)
PLATEAU_SOFTNESS = 0.05  # nats over which a synthetic curve bends off its initial plateau


@pytest.fixture(scope="module")
def epoch_runs() -> pd.DataFrame:
    """Epoch's 240 points: the extracted data less its 5 highest-loss rows."""
    return load(EPOCH_CSV, EPOCH_COLUMNS).runs.sort_values("loss").iloc[:-5].reset_index(drop=True)


def test_closed_form_optimum_minimises_loss_at_fixed_compute():
    """N_opt = G (C/6)^a really is the minimum of L along 6 N D = C (checks lossmodel itself)."""
    p = HOFFMANN_2022
    C = 1e21
    n = compute_optimal(C, **p.as_dict())[0] * np.geomspace(0.5, 2.0, 201)
    loss = p.E + p.A / n**p.alpha + p.B / (C / (6 * n)) ** p.beta
    assert np.argmin(loss) == 100
    G = allocation_coefficient(p.A, p.B, p.alpha, p.beta)
    assert compute_optimal(C, **p.as_dict())[0] == pytest.approx(G * (C / 6) ** (p.beta / (p.alpha + p.beta)))


def test_approach3_reproduces_epoch_fit(epoch_runs):
    result = fit_approach3(epoch_runs, n_boot=300, seed=0)
    fit = result.estimate
    assert len(epoch_runs) == 240
    assert fit["E"] == pytest.approx(1.8172, rel=0.01)
    assert fit["alpha"] == pytest.approx(0.3478, rel=0.01)
    assert fit["beta"] == pytest.approx(0.3658, rel=0.01)
    assert fit["A"] == pytest.approx(482.01, rel=0.10)
    assert fit["B"] == pytest.approx(2085.43, rel=0.25)
    low, high = result.interval("a", 0.8)
    assert 0.47 < low < 0.50 and 0.53 < high < 0.56


def test_hoffmann_grid_reaches_the_varpro_optimum(epoch_runs, monkeypatch):
    """Both start sets land on one optimum (a thinned Hoffmann grid keeps the test fast; the benchmark runs it all)."""
    thinned = {key: values[::2] for key, values in approach3.HOFFMANN_GRID.items()}
    monkeypatch.setattr(approach3, "HOFFMANN_GRID", thinned)
    N, D, loss = (epoch_runs[c].to_numpy() for c in ("N", "D", "loss"))
    grid, varpro = fit_loss_model(N, D, loss, init="grid"), fit_loss_model(N, D, loss, init="varpro")
    assert grid.objective == pytest.approx(varpro.objective, rel=1e-8)
    for key, value in varpro.params.as_dict().items():
        assert getattr(grid.params, key) == pytest.approx(value, rel=1e-4)


def test_averaged_objective_is_not_what_we_minimise(epoch_runs):
    """The objective is summed: it scales with the number of runs (averaging is the early-stopping trap)."""
    data = approach3.centre(*(epoch_runs[c].to_numpy() for c in ("N", "D", "loss")))
    theta = approach3.varpro_starts(data, np.ones(len(epoch_runs)))[:1]
    single, _, _ = approach3._evaluate(theta, data, np.ones((1, len(epoch_runs))))
    double, _, _ = approach3._evaluate(theta, data, 2 * np.ones((1, len(epoch_runs))))
    assert double[0] == pytest.approx(2 * single[0])


@pytest.mark.parametrize("truth", PARAM_SETS, ids=["hoffmann", "epoch", "skewed"])
def test_approach3_recovers_parameters_exactly_without_noise(truth):
    runs = isoflop_runs(truth, BUDGETS)
    fit = fit_loss_model(runs["N"].to_numpy(), runs["D"].to_numpy(), runs["loss"].to_numpy()).params
    for key, value in truth.as_dict().items():
        assert getattr(fit, key) == pytest.approx(value, rel=1e-4), key


@pytest.mark.parametrize("truth", PARAM_SETS, ids=["hoffmann", "epoch", "skewed"])
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


def _coverage(fit, repeats: int, budgets: np.ndarray = BUDGETS, sizes: int = 9) -> tuple[float, float]:
    """How often the 80% interval for a holds the true a over fresh noisy sweeps, and the share of refits failed."""
    a_true = allocation_exponents(HOFFMANN_2022.alpha, HOFFMANN_2022.beta)[0]
    hits, failed = [], []
    for seed in range(repeats):
        runs = isoflop_runs(HOFFMANN_2022, budgets, sizes=sizes, noise=0.01, seed=100 + seed)
        result = fit(runs, seed)
        low, high = result.interval("a", 0.8)
        hits.append(low <= a_true <= high)
        failed.append(result.n_failed / result.n_boot)
    return float(np.mean(hits)), float(np.mean(failed))


def test_bootstrap_intervals_cover_truth_at_about_nominal_rate():
    """Over 30 draws, 80% intervals should hold the truth 24 times, give or take binomial noise (sd ~2.2)."""
    rate3, _ = _coverage(lambda runs, seed: fit_approach3(runs, n_boot=60, seed=seed), repeats=30)
    rate2, _ = _coverage(lambda runs, seed: fit_approach2(runs, n_boot=60, seed=seed), repeats=30)
    assert 0.6 <= rate3 <= 0.95, rate3
    assert 0.6 <= rate2 <= 0.95, rate2


def test_approach2_intervals_hold_with_five_sizes_per_budget():
    """3 budgets x 5 sizes, like a small real sweep, where resampling runs within budgets failed ~93% of refits."""
    rate, failed = _coverage(lambda runs, seed: fit_approach2(runs, n_boot=60, seed=seed), repeats=30,
                             budgets=np.logspace(18, 20, 3), sizes=5)
    assert 0.6 <= rate <= 0.95, rate
    assert failed < 0.1, failed


def test_noise_free_data_gets_a_suspiciously_narrow_warning():
    noise_free = fit_approach2(isoflop_runs(HOFFMANN_2022, BUDGETS), n_boot=30, seed=0)
    noisy = fit_approach2(isoflop_runs(HOFFMANN_2022, BUDGETS, noise=0.01, seed=1), n_boot=30, seed=0)
    assert any("suspiciously narrow" in w for w in interval_warnings("approach2", noise_free.estimate,
                                                                    noise_free.samples, 0.8))
    assert not interval_warnings("approach2", noisy.estimate, noisy.samples, 0.8)


@pytest.mark.parametrize("truth", [HOFFMANN_2022, SKEWED], ids=["hoffmann", "skewed"])
def test_approach2_recovers_exponents_on_noise_free_isoflops(truth):
    a_true, b_true = allocation_exponents(truth.alpha, truth.beta)
    result = fit_approach2(isoflop_runs(truth, BUDGETS), n_boot=20, seed=0)
    assert result.estimate["a"] == pytest.approx(a_true, abs=1e-3)
    assert result.estimate["b"] == pytest.approx(b_true, abs=1e-3)


def _long_curves(truth: LossParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """25 sizes, each trained to 400 tokens per parameter so curves cross near the optimum, from an initial plateau.

    Every curve starts near ln V at a height its initialisation sets (a soft minimum of L(N, D) and that height).
    """
    N = np.geomspace(1e8, 1e11, 25)
    runs = pd.DataFrame({"run": [f"r{i}" for i in range(N.size)], "N": N, "D": 400 * N, "C": 2400 * N * N,
                         "loss": 0.0, "budget": np.nan})
    curves = training_curves(truth, runs, evals=100, first_fraction=1e-7)
    height = curves["run"].map(dict(zip(runs["run"], np.log(32_000) + 0.01 * np.random.default_rng(0).normal(size=25))))
    return runs, curves.assign(loss=-PLATEAU_SOFTNESS * np.logaddexp(-curves["loss"] / PLATEAU_SOFTNESS,
                                                                      -height / PLATEAU_SOFTNESS))


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


def test_approach1_without_curves_uses_final_points_and_says_so(epoch_runs):
    result = fit_approach1(epoch_runs, None, n_boot=20, seed=0)
    assert any("final point" in w for w in result.warnings)
    assert 0.3 < result.estimate["a"] < 0.7


def test_budgets_found_by_grouping_compute():
    runs = isoflop_runs(HOFFMANN_2022, BUDGETS[:4], sizes=5).assign(budget=np.nan)
    runs["C"] *= np.exp(np.random.default_rng(0).normal(0, 0.02, len(runs)))  # a few % jitter per run
    groups, notes = budget_groups(runs)
    assert np.unique(groups).size == 4 and not notes


def test_parabola_opening_downward_is_named():
    log_n = np.log(np.geomspace(1e8, 1e9, 5))
    with pytest.raises(FitError, match="budget 1e\\+20 FLOPs: the IsoFLOP parabola opens downward"):
        fit_parabola(1e20, log_n, 3.0 - 0.01 * (log_n - log_n.mean()) ** 2)


def test_parabola_minimum_outside_sizes_is_named():
    log_n = np.log(np.geomspace(1e8, 1e9, 5))
    with pytest.raises(FitError, match="outside the sampled sizes"):
        fit_parabola(1e20, log_n, 3.0 + 0.01 * (log_n - log_n.max() - 1.0) ** 2)


def test_too_few_budgets_skips_approach2_but_not_approach3(tmp_path):
    runs = isoflop_runs(HOFFMANN_2022, BUDGETS[:2], sizes=6, noise=0.003)
    path = tmp_path / "two_budgets.csv"
    runs.to_csv(path, index=False)
    analysis = analyse(load(path, Columns(budget="budget")), FitConfig(n_boot=10))
    assert "at least 3 budgets" in analysis.skipped["approach2"]
    assert "approach3" in analysis.results


def test_a_term_that_vanishes_over_the_data_is_flagged():
    """Loss that ignores D: the D term must vanish from the fit, and the warnings say so, whichever of
    the degenerate optima (beta on its bound, or B cancelling a large beta) this CPU's rounding reaches."""
    rng = np.random.default_rng(0)
    N, D = np.geomspace(1e7, 1e9, 40), rng.permutation(np.geomspace(1e9, 1e11, 40))
    runs = pd.DataFrame({"N": N, "D": D, "loss": 1.8 + 400 / N**0.34 * np.exp(0.002 * rng.standard_normal(40))})
    warnings = fit_approach3(runs, n_boot=20, seed=0).warnings
    assert any("the D term B/D^beta" in w and "vanishes" in w for w in warnings)
    assert not any("the N term" in w for w in warnings)


@pytest.mark.parametrize("beta, B", [(1e-4, 1e-3), (4.73, 4e25), (1e-4, 1.8)],
                         ids=["beta-on-lower-bound", "large-beta-cancelled-by-B", "B-absorbs-E"])
def test_every_degenerate_optimum_that_drops_the_d_term_is_caught(beta, B):
    """The optima seen on different CPUs for the data above, and one more, all make the D term vanish."""
    N, D = np.geomspace(1e7, 1e9, 40), np.geomspace(1e9, 1e11, 40)
    loss = 1.8 + 400 / N**0.34
    params = LossParams(E=1.8 if B < 1 else 1e-6, A=400.0, B=B, alpha=0.34, beta=beta)
    notes = approach3.vanishing_terms(params, N, D, loss)
    assert any(note.startswith("the D term") for note in notes)


def test_a_fit_where_every_term_matters_raises_no_vanishing_note():
    N, D = np.geomspace(1e7, 1e9, 40), np.geomspace(1e9, 1e11, 40)
    loss = 1.8 + 400 / N**0.34 + 2000 / D**0.37
    assert approach3.vanishing_terms(LossParams(1.8, 400.0, 2000.0, 0.34, 0.37), N, D, loss) == []


def test_too_few_points_for_approach3():
    with pytest.raises(FitError, match="approach 3 needs at least 8 runs"):
        fit_loss_model(np.array([1e8, 2e8, 4e8]), np.array([1e9, 2e9, 4e9]), np.array([3.0, 2.9, 2.8]))


def test_non_positive_rows_are_dropped_with_a_note(tmp_path):
    runs = isoflop_runs(HOFFMANN_2022, BUDGETS[:3], sizes=5)
    runs.loc[0, "loss"] = -1.0
    runs.loc[1, "N"] = 0.0
    path = tmp_path / "runs.csv"
    runs.to_csv(path, index=False)
    data = load(path)
    assert len(data.runs) == len(runs) - 2
    assert any("dropped 2 rows" in note for note in data.notes)


def test_missing_column_names_the_column_and_the_option(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"params": [1e8], "D": [1e9], "loss": [3.0]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="column 'N' not found.*pass --n-col NAME"):
        load(path)


def test_where_filter_and_flops_column(epoch_runs):
    data = load(EPOCH_CSV, EPOCH_COLUMNS, where="loss < 3.44")
    assert len(data.runs) == len(epoch_runs)
    assert np.allclose(6 * data.runs["N"] * data.runs["D"], data.runs["C"])


def test_cli_json_has_each_approach_with_intervals(capsys):
    code = main([str(EPOCH_CSV), "--n-col", "Model Size", "--flops-col", "Training FLOP", "--where", "loss < 3.44",
                 "--n-boot", "40", "--budgets", "1e21,1e23", "--format", "json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for name in ("approach1", "approach2", "approach3"):
        if name in out:
            assert {"a", "b", "ci"} <= out[name].keys() and len(out[name]["ci"]["a"]) == 2
    assert {"E", "A", "B", "alpha", "beta"} <= out["approach3"].keys()
    assert [row["C"] for row in out["approach3"]["extrapolation"]] == [1e21, 1e23]


@pytest.mark.parametrize("argv, message", [
    (["does/not/exist.csv"], "does not exist"),
    ([str(EPOCH_CSV)], "column 'N' not found"),
    ([str(EPOCH_CSV), "--n-col", "Model Size", "--flops-col", "Training FLOP", "--where", "loss <"], "--where"),
    ([str(EPOCH_CSV), "--n-col", "Model Size", "--flops-col", "Training FLOP", "--where", "loss < 0"], "no row"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_rejects_a_negative_envelope_start(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(EPOCH_CSV), "--envelope-start", "-1"])
    assert exit_info.value.code == 2 and "--envelope-start" in capsys.readouterr().err


def test_cli_exits_2_when_nothing_can_be_fitted(tmp_path, capsys):
    path = tmp_path / "tiny.csv"
    pd.DataFrame({"N": [1e8, 2e8], "D": [1e9, 1e9], "loss": [3.0, 2.9]}).to_csv(path, index=False)
    assert main([str(path), "--n-boot", "5"]) == 2
    assert capsys.readouterr().err.startswith("error: nothing could be fitted")
