"""Backtests: held-out predictions on Gadre et al.'s over-training study, prediction intervals that hold new
runs at about the nominal rate (and more often than the bootstrap alone when the law is wrong), the
hold-out rules, and the command line."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.backtest import main
from analysis.failures import FitError
from analysis.fit_input import Columns, load
from analysis.fits.huber import Objective
from analysis.fits.laws import LAWS
from analysis.fits.prediction import (
    Calibration,
    backtest,
    default_holdout,
    fitted_on,
    largest,
    prediction_interval,
)
from analysis.fits.reference import HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs, law_runs

DATA = Path(__file__).parent / "data"
GADRE_CSV = DATA / "gadre2024_rpj_c4_eval.csv"
# Gadre et al.'s own law, fitted by them to 5 small models, missed the 6.9B model (M = 20) by these, and the
# three held-out models by these on average (their scaling_explorer.ipynb prints the rpj ones;
# tests/data/README.md says how the others were checked).
AUTHORS_ERROR_7B = {"rpj": 0.00732, "rw": 0.01619, "c4": 0.04295}
AUTHORS_MEAN_ERROR = {"rpj": (0.00110 + 0.007103 + 0.00732) / 3, "rw": (0.00560 + 0.00005 + 0.01619) / 3}
GADRE_FLAGS = ["--n-col", "params", "--d-col", "tokens", "--loss-col", "loss_c4_val"]
SMALL = "params < 1e9"  # the 0.011B-0.411B models; held out: 1.4B (M = 20, 640) and 6.9B (M = 20)


@pytest.fixture(scope="module")
def gadre():
    data = load(GADRE_CSV, Columns(n="params", d="tokens", loss="loss_c4_val"))
    fit_runs = set(load(GADRE_CSV, Columns(n="params", d="tokens", loss="loss_c4_val"), where=SMALL).runs["run"])
    return data.runs, fitted_on(data.runs, fit_runs, SMALL)


def _errors(result) -> dict[str, float]:
    names = pd.read_csv(GADRE_CSV)["name"]
    return {
        names[int(run)]: error for run, error in zip(result.predictions["run"], result.predictions["relative_error"])
    }


def test_chinchilla_law_misses_the_large_models_by_what_the_issue_measured(gadre):
    """With the old default (chinchilla, Huber delta 1e-3) the 6.9B model is missed by 3%."""
    runs, holdout = gadre
    errors = _errors(backtest(runs, holdout, "chinchilla", n_boot=50, objective=Objective("epoch")))
    assert errors["rpj-open_lm_7b-1.0"] == pytest.approx(-0.030, abs=0.002)
    assert errors["rpj-open_lm_1b-32.0"] == pytest.approx(-0.011, abs=0.002)


def test_the_tied_law_of_the_authors_extrapolates_within_one_percent(gadre):
    """Gadre et al.'s own law (one exponent for N and D) on the same 32 small models: under 1% on all three."""
    runs, holdout = gadre
    result = backtest(runs, holdout, "tied", n_boot=200)
    assert result.predictions["relative_error"].abs().max() < 0.01
    assert result.predictions["interval_held"].all()


@pytest.mark.parametrize(
    "sweeps, low, high", [(10, 0.6, 0.96), pytest.param(40, 0.7, 0.9, marks=pytest.mark.slow)], ids=["quick", "full"]
)
def test_prediction_intervals_hold_new_runs_at_about_the_nominal_rate(sweeps, low, high):
    """Synthetic sweeps, the largest budget's 5 runs held out each time, 80% intervals, the law right, the
    rollout's widening included: binomial noise on 50 predictions allows 0.6-0.96, on 200 0.7-0.9."""
    held = []
    for seed in range(sweeps):
        runs = isoflop_runs(HOFFMANN_2022, np.logspace(18, 21, 6), sizes=5, noise=0.01, seed=seed)
        result = backtest(runs, default_holdout(runs), "chinchilla", n_boot=60, seed=seed)
        held += list(result.predictions["interval_held"])
    assert low <= np.mean(held) <= high, np.mean(held)


def test_the_rollout_widens_intervals_where_the_law_is_wrong():
    """Sweeps drawn from Kaplan's law (no floor) and fitted with chinchilla's: the bootstrap alone holds few of
    the held-out runs; the rollout's conformal widening holds more of them, and never fewer."""
    bootstrap_only, calibrated = [], []
    for seed in range(6):
        runs = kaplan_sweep(seed)
        holdout = default_holdout(runs)
        result = backtest(runs, holdout, "chinchilla", n_boot=60, seed=seed)
        observed = runs["loss"][holdout.mask].to_numpy()
        _, low, high = prediction_interval(result.fit, runs[holdout.mask], 0.8, seed, None)
        bootstrap_only += list((low <= observed) & (observed <= high))
        calibrated += list(result.predictions["interval_held"])
    assert np.mean(calibrated) >= np.mean(bootstrap_only) + 0.2, (np.mean(bootstrap_only), np.mean(calibrated))
    assert np.mean(calibrated) >= 0.7


def kaplan_sweep(seed: int) -> pd.DataFrame:
    """6 budgets x 7 sizes around Kaplan's optimum, 0.3% noise."""
    law = LAWS["kaplan"]
    params = dict(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095)
    pieces = []
    for i, C in enumerate(np.logspace(18, 20.5, 6)):
        N = law.frontier(params, np.array([C]))[0][0] * np.logspace(-0.5, 0.5, 7)
        pieces.append(law_runs(law, params, N, C / (6 * N), noise=0.003, seed=100 * seed + i).assign(budget=C))
    runs = pd.concat(pieces, ignore_index=True)
    return runs.assign(run=[f"r{i}" for i in range(len(runs))])


def test_conformal_quantile_is_the_split_conformal_rank():
    scores = Calibration(np.arange(1.0, 10.0), steps=2)  # 9 scores: ceil(10 x 0.8) = 8th smallest
    assert scores.quantile(0.8) == 8.0 and scores.quantile(0.95) == 9.0  # ceil(9.5) = 10 > 9: the largest


def test_default_holdout_is_the_largest_budget_when_there_are_budgets():
    runs = isoflop_runs(HOFFMANN_2022, np.logspace(18, 21, 4), sizes=5)
    holdout = default_holdout(runs)
    assert holdout.mask.sum() == 5 and (runs["budget"][holdout.mask] == 1e21).all()
    assert "largest IsoFLOP budget" in holdout.description


def test_default_holdout_without_budgets_is_the_largest_tenth_by_compute(gadre):
    runs, _ = gadre
    holdout = default_holdout(runs.assign(budget=np.nan))
    assert holdout.mask.sum() == 4 and set(runs["C"][holdout.mask]) == set(runs["C"].nlargest(4))


def test_largest_and_fitted_on_refuse_empty_sides(gadre):
    runs, _ = gadre
    with pytest.raises(FitError, match="--holdout-largest 35: there are 35 runs"):
        largest(runs, 35)
    with pytest.raises(FitError, match="--fit-where 'x' selects 35 of 35 runs"):
        fitted_on(runs, set(runs["run"]), "x")


@pytest.mark.parametrize("dataset", ["rpj", "rw", "c4"])
def test_default_settings_on_gadres_three_datasets(dataset, capsys):
    """`python -m analysis.backtest TABLE --fit-where "not heldout" --format json`, as issue 23 runs it: the law
    is chosen by the rollout over the 4 small sizes (tied, Gadre et al.'s own form), and every 80% interval
    holds its run. On rpj and rw the 6.9B model's error, and the mean over the three, are within the
    authors' own; on c4 the 6.9B model is missed by 6%, against the authors' 4.3% (benchmarks/RESULTS.md)."""
    table = DATA / f"gadre2024_{dataset}_c4_eval.csv"
    assert main([str(table), "--fit-where", "not heldout", "--format", "json", "--n-boot", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["law"] == "tied" and out["rollout"]["law"] == "tied"
    assert all(row["interval_held"] for row in out["predictions"])
    names = pd.read_csv(table)["name"]
    errors = {names[int(row["run"])]: abs(row["relative_error"]) for row in out["predictions"]}
    if dataset != "c4":
        assert errors[f"{'rpj' if dataset == 'rpj' else 'rw_original'}-open_lm_7b-1.0"] <= AUTHORS_ERROR_7B[dataset]
        assert out["mean_abs_relative_error"] <= AUTHORS_MEAN_ERROR[dataset], errors


def test_cli_json_has_each_held_out_run(capsys):
    code = main(
        [str(GADRE_CSV), *GADRE_FLAGS, "--fit-where", SMALL, "--law", "tied", "--n-boot", "50", "--format", "json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["law"] == "tied" and out["n_fit"] == 32 and out["n_held_out"] == 3
    for row in out["predictions"]:
        assert {"run", "observed", "predicted", "low", "high", "relative_error", "interval_held"} <= row.keys()
        assert row["low"] <= row["predicted"] <= row["high"] and isinstance(row["interval_held"], bool)


def test_cli_text_prints_relative_error_and_whether_held(capsys):
    assert main([str(GADRE_CSV), *GADRE_FLAGS, "--holdout-largest", "2", "--n-boot", "30"]) == 0
    out = capsys.readouterr().out
    assert "relative_error" in out and "held" in out and out.count("%") >= 3


@pytest.mark.parametrize(
    "argv, message",
    [
        ([str(GADRE_CSV), *GADRE_FLAGS, "--holdout-largest", "0"], "--holdout-largest 0"),
        ([str(GADRE_CSV), *GADRE_FLAGS, "--fit-where", "params <"], "--where"),
        ([str(GADRE_CSV), *GADRE_FLAGS, "--law", "data_constrained"], "epochs"),
        ([str(GADRE_CSV), *GADRE_FLAGS, "--fit-where", "params < 1e8", "--law", "auto"], "--law auto needs at least 4"),
        (
            [str(GADRE_CSV), *GADRE_FLAGS, "--law", "farseer", "--fit-where", "params < 2e8"],
            "law farseer needs runs at 4",
        ),
        ([str(DATA / "porian2024_published_a.csv")], "column 'N' not found"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_refuses_both_holdout_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(GADRE_CSV), "--holdout-largest", "1", "--fit-where", SMALL])
    assert exit_info.value.code == 2 and capsys.readouterr().err.count("\n") == 1
