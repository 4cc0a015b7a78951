"""The learning-rate transfer section: optima per width from a synthetic sweep with known optima."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.report import main
from analysis.reporting.transfer_section import lr_sweep, optima, transfers
from scaling import contract

LRS = 6.25e-4 * 2.0 ** np.arange(7)
WIDTHS = (32, 64, 128)


def _loss(lr: float, best: float) -> float:
    """A bowl in log lr with its minimum at `best` (what a real lr sweep looks like near its optimum)."""
    return 3.0 + 0.05 * np.log2(lr / best) ** 2


def sweep_table(sp_moves: bool = True) -> pd.DataFrame:
    """muP's optimum stays at 5e-3; SP's halves with every doubling of width (from 1e-2 at width 32)."""
    rows = []
    for param in ("sp", "mup"):
        for i, width in enumerate(WIDTHS):
            best = 1e-2 / 2**i if (param == "sp" and sp_moves) else 5e-3
            for lr in LRS:
                rows.append(
                    {
                        contract.RUN_NAME: f"{param}-{width}-{lr:g}",
                        "status": contract.COMPLETED,
                        "d_model": width,
                        f"{contract.SWEPT_PREFIX}train.lr": lr,
                        f"{contract.SWEPT_PREFIX}model.parametrization": param,
                        contract.FINAL_EVAL_LOSS: _loss(lr, best),
                        contract.PARAMS_TOTAL: 1000 * width,
                    }
                )
    return pd.DataFrame(rows)


def test_optima_and_the_transfer_verdict():
    runs = lr_sweep(sweep_table())
    best = optima(runs)
    mup = best[best.parametrization == "mup"]
    assert (mup["lr"] == 5e-3).all() and np.allclose(mup["lr_refined"], 5e-3)
    sp = best[best.parametrization == "sp"].sort_values("width")
    assert list(sp["lr"]) == [1e-2, 5e-3, 2.5e-3]
    assert transfers(best) == {"mup": 0, "sp": 2}


def test_an_off_grid_optimum_is_refined_between_grid_points():
    table = sweep_table()
    table[contract.FINAL_EVAL_LOSS] = [_loss(lr, 7e-3) for lr in table[f"{contract.SWEPT_PREFIX}train.lr"]]
    best = optima(lr_sweep(table))
    assert np.allclose(best["lr_refined"], 7e-3, rtol=1e-6)  # a parabola in log lr is exact on this bowl


def test_a_diverged_run_counts_as_the_worst_loss():
    table = sweep_table()
    at_best = (table[f"{contract.SWEPT_PREFIX}model.parametrization"] == "mup") & (
        table[f"{contract.SWEPT_PREFIX}train.lr"] == 5e-3
    )
    table.loc[at_best & (table.d_model == 64), "status"] = contract.DIVERGED
    best = optima(lr_sweep(table)).set_index(["parametrization", "width"])
    assert best.loc[("mup", 64), "lr"] != 5e-3


def test_the_report_of_an_lr_sweep_is_the_transfer_section(tmp_path, capsys):
    sweep_table().to_parquet(tmp_path / contract.RUNS_TABLE)
    assert main([str(tmp_path)]) == 0
    report = (tmp_path / contract.REPORT_FILE).read_text()
    assert "transfer holds (at most one grid step)" in report and "transfer does not hold" in report
    assert "<!-- fit:start -->" not in report  # no scaling fit over runs that differ in learning rate
    assert (tmp_path / contract.FIGURES_DIR / "lr_transfer.png").stat().st_size > 10_000


def test_a_sweep_without_several_learning_rates_is_not_an_lr_sweep():
    table = sweep_table()
    assert lr_sweep(table.drop(columns=[f"{contract.SWEPT_PREFIX}train.lr"])) is None
    two_rates = table[table[f"{contract.SWEPT_PREFIX}train.lr"].isin(LRS[:2])]
    assert lr_sweep(two_rates) is None  # an optimum needs at least three learning rates
