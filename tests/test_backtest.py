"""Backtests: held-out predictions on Gadre et al.'s over-training study, prediction intervals that hold new
runs at about the nominal rate, the hold-out rules, and the command line."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.backtest import main
from analysis.failures import FitError
from analysis.fit_input import Columns, load
from analysis.fits.prediction import (
    backtest,
    check_laws,
    default_holdout,
    fitted_on,
    largest,
)
from analysis.fits.reference import HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs

GADRE_CSV = Path(__file__).parent / "data" / "gadre2024_rpj_c4_eval.csv"
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
    runs, holdout = gadre
    errors = _errors(backtest(runs, holdout, "chinchilla", n_boot=50))
    assert errors["rpj-open_lm_7b-1.0"] == pytest.approx(-0.030, abs=0.002)
    assert errors["rpj-open_lm_1b-32.0"] == pytest.approx(-0.011, abs=0.002)


def test_the_tied_law_of_the_authors_extrapolates_within_one_percent(gadre):
    """Gadre et al.'s own law (one exponent for N and D) on the same 32 small models: under 1% on all three."""
    runs, holdout = gadre
    result = backtest(runs, holdout, "tied", n_boot=200)
    assert result.predictions["relative_error"].abs().max() < 0.01
    assert result.predictions["interval_held"].all()


def test_prediction_intervals_hold_new_runs_at_about_the_nominal_rate():
    """25 synthetic sweeps, the largest budget's 5 runs held out each time: 125 predictions, 80% intervals."""
    held = []
    for seed in range(25):
        runs = isoflop_runs(HOFFMANN_2022, np.logspace(18, 21, 6), sizes=5, noise=0.01, seed=seed)
        result = backtest(runs, default_holdout(runs), "chinchilla", n_boot=100, seed=seed)
        held += list(result.predictions["interval_held"])
    assert 0.68 <= np.mean(held) <= 0.92, np.mean(held)


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


def test_every_law_is_checked_or_says_why_not(gadre):
    runs, _ = gadre
    checks = check_laws(runs)
    assert set(checks) == {"chinchilla", "tied", "kaplan", "data_constrained"}
    assert "epochs" in checks["data_constrained"]
    assert checks["tied"].mean_abs_relative_error < checks["kaplan"].mean_abs_relative_error


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
        ([str(GADRE_CSV)], "column 'N' not found"),
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
