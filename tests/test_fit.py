"""analysis.fit and the loader behind it: the JSON shape, the law and profile options, one-line errors, and
how tables become runs (epochs included)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.failures import InputError
from analysis.fit import main
from analysis.fit_input import Columns, load
from analysis.fits.analyse import FitConfig, analyse
from analysis.fits.laws import LAWS
from analysis.fits.profiles import DEFAULT_PROFILE
from analysis.fits.reference import HOFFMANN_2022
from analysis.fits.rollout import CLOSE_SCORES, NESTED_IN
from analysis.fits.synthetic import isoflop_runs, training_curves
from scaling import contract
from tests.helpers import write_sweep

EPOCH_CSV = Path(__file__).parent / "data" / "svg_extracted_data.csv"
EPOCH_FLAGS = ["--n-col", "Model Size", "--flops-col", "Training FLOP", "--where", "loss < 3.44"]
BUDGETS = np.logspace(18, 22, 8)


def test_cli_json_has_each_approach_with_intervals(capsys):
    code = main([str(EPOCH_CSV), *EPOCH_FLAGS, "--n-boot", "40", "--budgets", "1e21,1e23", "--format", "json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for name in ("approach2", "approach3"):
        assert {"a", "b", "ci", "n_boot_failed", "warnings", "extrapolation"} <= out[name].keys()
        assert len(out[name]["ci"]["a"]) == 2
    assert set(LAWS[out["law"]].theta_keys) <= out["approach3"].keys()
    assert [row["C"] for row in out["approach3"]["extrapolation"]] == [1e21, 1e23]
    assert "approach1" in out["skipped"]  # final points only
    assert out["profile"] == DEFAULT_PROFILE and out["approach3"]["law"] == out["law"] == out["rollout"]["law"]
    # Epoch's points have no budgets: the rollout steps are model sizes, each law fitted on the smaller ones.
    rows = out["rollout"]["rows"]
    assert {row["predictor"] for row in rows} == {"chinchilla", "tied", "kaplan", "farseer"}
    # the smallest rollout error, except that tied yields to chinchilla (its general law) within CLOSE_SCORES
    scores = out["rollout"]["scores"]
    best = min(scores, key=scores.get)
    kept = NESTED_IN.get(best) if scores.get(NESTED_IN.get(best), np.inf) <= CLOSE_SCORES * scores[best] else None
    assert out["law"] == (kept or best)
    assert all(0 < row["mean_abs_error"] < 0.2 for row in rows if row["predictor"] == "chinchilla")


@pytest.mark.parametrize(
    "law, keys", [("tied", {"E", "A", "B", "alpha"}), ("kaplan", {"N_c", "D_c", "alpha_N", "alpha_D"})]
)
def test_cli_law_option_fits_that_law(law, keys, capsys):
    assert main([str(EPOCH_CSV), *EPOCH_FLAGS, "--n-boot", "20", "--law", law, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)["approach3"]
    assert keys | {"a", "b", "G"} == set(out["ci"]) and out["law"] == law


def test_cli_profile_option_reaches_approach2(capsys):
    assert main([str(EPOCH_CSV), *EPOCH_FLAGS, "--n-boot", "20", "--profile", "parabola", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["approach2"]["profile"] == "parabola"


def test_text_summary_ends_with_the_rollout(capsys):
    assert main([str(EPOCH_CSV), *EPOCH_FLAGS, "--n-boot", "20", "--law", "chinchilla"]) == 0
    out = capsys.readouterr().out
    assert "Rollout (Bhagia et al. 2024)" in out and "kaplan" in out and "law chinchilla (--law)" in out


def test_auto_with_too_few_budgets_and_a_law_that_cannot_be_fitted_exit_2(tmp_path, capsys):
    path = tmp_path / "three_budgets.csv"
    isoflop_runs(HOFFMANN_2022, BUDGETS[:3], sizes=6, noise=0.003).to_csv(path, index=False)
    assert main([str(path), "--law", "auto", "--n-boot", "10"]) == 2
    err = capsys.readouterr().err
    assert "--law auto needs at least 4 IsoFLOP budgets" in err and err.count("\n") == 1
    assert main([str(path), "--law", "data_constrained", "--n-boot", "10"]) == 2
    err = capsys.readouterr().err
    assert "--law data_constrained: law data_constrained needs runs that repeated" in err and err.count("\n") == 1
    assert main([str(path), "--n-boot", "10", "--format", "json"]) == 0  # the default falls back, and says so
    assert "too few to roll out" in json.loads(capsys.readouterr().out)["rollout"]["how"]


def test_a_named_law_that_cannot_be_fitted_is_the_one_line_even_when_nothing_else_fits(capsys):
    """Gadre et al.'s table has no IsoFLOP budgets or curves either: the law's own reason comes first."""
    table = Path(__file__).parent / "data" / "gadre2024_rw_c4_eval.csv"
    assert main([str(table), "--law", "data_constrained", "--n-boot", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --law data_constrained: law data_constrained needs runs that repeated")
    assert err.count("\n") == 1 and "approach 2" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["does/not/exist.csv"], "does not exist"),
        ([str(EPOCH_CSV)], "column 'N' not found"),
        ([str(EPOCH_CSV), "--n-col", "Model Size", "--flops-col", "Training FLOP", "--where", "loss <"], "--where"),
        ([str(EPOCH_CSV), "--n-col", "Model Size", "--flops-col", "Training FLOP", "--where", "loss < 0"], "no row"),
        (
            [str(EPOCH_CSV), "--n-col", "Model Size", "--flops-col", "Training FLOP", "--epochs-col", "epochs"],
            "column 'epochs' not found",
        ),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("option, value", [("--envelope-start", "-1"), ("--law", "gpt"), ("--profile", "cubic")])
def test_cli_rejects_bad_options_in_one_line(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(EPOCH_CSV), option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and option in err and err.count("\n") == 1


def test_cli_exits_2_when_nothing_can_be_fitted(tmp_path, capsys):
    path = tmp_path / "tiny.csv"
    pd.DataFrame({"N": [1e8, 2e8], "D": [1e9, 1e9], "loss": [3.0, 2.9]}).to_csv(path, index=False)
    assert main([str(path), "--n-boot", "5"]) == 2
    assert capsys.readouterr().err.startswith("error: nothing could be fitted")


def test_too_few_budgets_skips_approach2_but_not_approach3(tmp_path):
    runs = isoflop_runs(HOFFMANN_2022, BUDGETS[:2], sizes=6, noise=0.003)
    path = tmp_path / "two_budgets.csv"
    runs.to_csv(path, index=False)
    analysis = analyse(load(path, Columns(budget="budget")), FitConfig(n_boot=10, rollout=False))
    assert "at least 3 budgets" in analysis.skipped["approach2"]
    assert "approach3" in analysis.results and analysis.choice.rows == ()


def test_epochs_column_reaches_the_runs(tmp_path):
    runs = isoflop_runs(HOFFMANN_2022, BUDGETS[:3], sizes=5).assign(passes=2.0)
    path = tmp_path / "runs.csv"
    runs.to_csv(path, index=False)
    assert (load(path, Columns(epochs="passes")).runs["epochs"] == 2.0).all()
    assert load(path).runs["epochs"].isna().all()


def test_sweep_tables_carry_the_epochs_each_run_recorded(tmp_path):
    runs = isoflop_runs(HOFFMANN_2022, BUDGETS[:3], sizes=5)
    folder = write_sweep(tmp_path / "sweep", runs, training_curves(HOFFMANN_2022, runs, evals=5))
    table = pd.read_parquet(folder / contract.RUNS_TABLE)
    table.assign(epochs=np.linspace(1.0, 3.0, len(table))).to_parquet(folder / contract.RUNS_TABLE)
    assert np.allclose(load(folder).runs["epochs"], np.linspace(1.0, 3.0, len(table)))


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
    pd.DataFrame({"size": [1e8], "D": [1e9], "loss": [3.0]}).to_csv(path, index=False)
    with pytest.raises(InputError, match="column 'N' not found.*pass --n-col NAME"):
        load(path)


def test_where_filter_and_flops_column():
    data = load(EPOCH_CSV, Columns(n="Model Size", flops="Training FLOP"), where="loss < 3.44")
    assert len(data.runs) == 240
    assert np.allclose(6 * data.runs["N"] * data.runs["D"], data.runs["C"])


def test_common_column_names_and_a_budget_column_are_used_and_said(tmp_path):
    """Gadre et al.'s tables name N `params` and D `tokens`: used when N and D are missing, with a note."""
    data = load(Path(__file__).parent / "data" / "gadre2024_rw_c4_eval.csv")
    assert any("using 'params'" in note for note in data.notes) and any("'loss_c4_val'" in note for note in data.notes)
    path = tmp_path / "runs.csv"
    isoflop_runs(HOFFMANN_2022, BUDGETS[:3], sizes=5).to_csv(path, index=False)
    data = load(path)
    assert data.runs["budget"].notna().all() and any("column 'budget'" in note for note in data.notes)
