"""Predict, then verify, on the analysis side: the held-out run is never fitted, and the report sets the
law's prediction (with its interval) beside the measured loss, on a synthetic sweep with a known law."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis import report
from analysis.fit_input import load
from analysis.fits.lossmodel import LossParams, compute_optimal, predict_loss
from analysis.fits.synthetic import isoflop_runs, training_curves
from scaling import contract
from tests.helpers import write_sweep

TRUTH = LossParams(E=1.7, A=80.0, B=900.0, alpha=0.36, beta=0.35)
BUDGETS = [1e11, 2e11, 4e11, 8e11]
HELD_BUDGET = 4 * BUDGETS[-1]


def held_out_sweep(folder, loss_factor: float = 1.0):
    """A synthetic grid (noise 0.002 nats) plus one held-out run at the true optimum of 4x the largest budget,
    its loss the truth times `loss_factor`; both tables as the training side writes them."""
    runs = isoflop_runs(TRUTH, np.array(BUDGETS), sizes=5, span_decades=0.6, noise=0.002, seed=0)
    n_opt, d_opt, _ = compute_optimal(HELD_BUDGET, **TRUTH.as_dict())
    loss = float(predict_loss(n_opt, d_opt, **TRUTH.as_dict())) * loss_factor
    held = pd.DataFrame(
        {
            "run": ["holdout,point=0"],
            "N": [float(n_opt)],
            "D": [float(d_opt)],
            "C": [6 * float(n_opt) * float(d_opt)],
            "loss": [loss],
            "budget": [HELD_BUDGET],
        }
    )
    everything = pd.concat([runs, held], ignore_index=True)
    write_sweep(folder, everything, training_curves(TRUTH, runs, noise=0.002, seed=1))
    table = pd.read_parquet(folder / contract.RUNS_TABLE)
    table[contract.HOLDOUT] = table[contract.RUN_NAME] == "holdout,point=0"
    table.to_parquet(folder / contract.RUNS_TABLE)
    (folder / contract.HOLDOUT_FILE).write_text(
        json.dumps({"budget": HELD_BUDGET, "point": 0, "n_opt_predicted": float(n_opt), "approach": "approach3"})
    )
    return folder, loss


def test_the_held_out_run_is_never_fitted(tmp_path):
    folder, _ = held_out_sweep(tmp_path / "demo")
    data = load(folder)
    assert "holdout,point=0" not in set(data.runs["run"]) and len(data.runs) == 20
    assert list(data.held_out["run"]) == ["holdout,point=0"]
    assert any("held out" in note for note in data.notes)


@pytest.mark.parametrize("loss_factor, inside", [(1.0, True), (1.05, False)])
def test_the_report_sets_prediction_beside_outcome(tmp_path, capsys, loss_factor, inside):
    folder, measured = held_out_sweep(tmp_path / "demo", loss_factor)
    assert report.main([str(folder), "--n-boot", "60"]) == 0
    text = (folder / contract.REPORT_FILE).read_text()
    section = text[text.index("<!-- prediction:start -->") : text.index("<!-- prediction:end -->")]
    row = next(line for line in section.splitlines() if line.startswith("| holdout,point=0"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    predicted, measured_cell, error = float(cells[4]), float(cells[6]), float(cells[7].rstrip("%")) / 100
    low, high = (float(x) for x in cells[5].strip("[]").split(","))
    assert measured_cell == pytest.approx(measured, abs=1e-4)
    assert error == pytest.approx((measured - predicted) / predicted, abs=1e-4)
    # The law fitted on the grid predicts the truth at 4x beyond it to well under 1% (noise is 0.1%).
    truth = measured / loss_factor
    assert predicted == pytest.approx(truth, rel=0.01) and low < truth < high
    assert (cells[8] == "yes") is inside and (low <= measured <= high) is inside
    assert (folder / contract.FIGURES_DIR / "prediction.png").stat().st_size > 10_000


def test_the_placement_section_leaves_each_point_out_under_the_chosen_law(tmp_path):
    """With the default law (chosen by rollout, so no law is named on the command line) the placement
    section still refits without each grid point, under the law the fit chose."""
    folder, _ = held_out_sweep(tmp_path / "demo")
    assert report.main([str(folder), "--n-boot", "30"]) == 0
    text = (folder / contract.REPORT_FILE).read_text()
    section = text[text.index("<!-- placement:start -->") : text.index("<!-- placement:end -->")]
    assert "not fitted" not in section
    assert "Leave one point out (holdout,point=0, law `" in section and "nats (target: at most" in section
