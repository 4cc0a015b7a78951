"""Predict, then verify: after an IsoFLOP grid, one held-out run at a budget beyond every fitted one,
at the size the fits call compute-optimal (the OLMo ladder's backtest, Bhagia et al. 2024).

A sweep asks for it with `sweep.holdout_factor` (> 1): once its grid has trained, the held-out
budget is that factor times the largest grid budget. The fits come from `python -m analysis.fit`
(run as a command, so training never imports analysis), and `holdout_point` turns them into a grid
point of the same ladder: the rung nearest the predicted optimum, trained on C / (6 N) tokens like
any other point. Its row in runs.parquet is marked `holdout`, so the fits leave it out and the report
sets the prediction beside the measured loss.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from scaling.isoflop import CHINCHILLA_TOKENS_PER_PARAM, expected_optimum
from scaling.ladder import Rung, nearest_rung

# Which fit names the held-out size: the parametric fit when it converged, else the IsoFLOP minima.
PREDICTORS = ("approach3", "approach2")
FIT_BOOTSTRAP = 50  # refits for the planning fit: only its point estimate of N_opt is used


@dataclass(frozen=True)
class HoldoutPlan:
    """The held-out run: its budget, its grid point, and the fitted optimum it was placed at."""

    budget: float
    point: int
    n_opt: float
    approach: str

    def as_dict(self) -> dict:
        return {"budget": self.budget, "point": self.point, "n_opt_predicted": self.n_opt, "approach": self.approach}


def holdout_budget(budgets: list[float], factor: float) -> float:
    return factor * max(budgets)


def fitted_optimum(fit: dict) -> tuple[float, str] | None:
    """(N_opt at the first extrapolation budget, approach) from `analysis.fit --format json`; None if
    no approach that predicts N_opt was fitted."""
    for name in PREDICTORS:
        rows = fit.get(name, {}).get("extrapolation") or []
        if rows and rows[0].get("N_opt"):
            return float(rows[0]["N_opt"]), name
    return None


def holdout_point(
    fit: dict, budget: float, rungs: list[Rung], tokens_per_param: float = CHINCHILLA_TOKENS_PER_PARAM
) -> HoldoutPlan | None:
    """The grid point at `budget` whose ladder rung is nearest the fitted optimum (a pure function of
    the fit); None when nothing that predicts N_opt was fitted."""
    found = fitted_optimum(fit)
    if found is None:
        return None
    n_opt, approach = found
    centre = nearest_rung(rungs, expected_optimum(budget, tokens_per_param)).index
    return HoldoutPlan(budget, nearest_rung(rungs, n_opt).index - centre, n_opt, approach)


def fit_sweep(sweep_folder: Path, budget: float) -> dict:
    """`python -m analysis.fit` on the grid, extrapolated to `budget`, as a dict ({} if it fails)."""
    command = [
        sys.executable,
        "-m",
        "analysis.fit",
        str(sweep_folder),
        "--format",
        "json",
        "--budgets",
        f"{budget:g}",
        "--n-boot",
        str(FIT_BOOTSTRAP),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"holdout: the fit failed ({last})", file=sys.stderr)
        return {}
    return json.loads(result.stdout)
