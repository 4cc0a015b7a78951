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

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from scaling import contract
from scaling.config import replace as cfg_replace
from scaling.config import run_config
from scaling.files import write_json
from scaling.planning.grids import CHINCHILLA_TOKENS_PER_PARAM, expected_optimum, grid_ladder, sweep_values
from scaling.planning.ladder import Rung, nearest_rung
from scaling.runtime import initialize
from scaling.sweeping.jobs import run_one, seeded_runs
from scaling.sweeping.naming import run_folder, run_name, sweep_dir

# Which fit names the held-out size: the parametric fit when it converged, else the IsoFLOP minima.
PREDICTORS = (contract.FIT_APPROACH3, contract.FIT_APPROACH2)
FIT_BOOTSTRAP = 50  # refits for the planning fit: only its point estimate of N_opt is used
HOLDOUT_PREFIX, LEGACY_HOLDOUT_PREFIX = "holdout_", "holdout,"  # the held-out run's name: holdout_<grid point>


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
        rows = fit.get(name, {}).get(contract.FIT_EXTRAPOLATION) or []
        if rows and rows[0].get(contract.FIT_N_OPT):
            return float(rows[0][contract.FIT_N_OPT]), name
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


def run_holdout(config: DictConfig) -> dict | None:
    """After the grid: fit it, then train the held-out run the fits place (placed by `holdout_point`)."""
    cfg = run_config(config)
    budgets = [float(c) for c in sweep_values(config, "train.flops")]
    budget = holdout_budget(budgets, cfg.sweep.holdout_factor)
    vocab = cfg.data.vocab_size
    rungs = grid_ladder(cfg.model, vocab, cfg.sweep.spacing, [budget], [0], cfg.sweep.tokens_per_param)
    plan = holdout_point(fit_sweep(sweep_dir(cfg), budget), budget, rungs, cfg.sweep.tokens_per_param)
    if plan is None:
        print(f"[{cfg.sweep.name}] holdout: skipped, no fit predicts the optimal size", file=sys.stderr)
        return None
    swept = {"train.flops": plan.budget, "sweep.point": plan.point}
    cfg = cfg_replace(cfg, train={"flops": plan.budget, "tokens": None}, sweep={"point": plan.point})
    cfg, swept = seeded_runs(cfg, swept)[0]  # one run, at the design's first seed
    name, legacy = f"{HOLDOUT_PREFIX}{run_name(swept)}", f"{LEGACY_HOLDOUT_PREFIX}{run_name(swept, legacy=True)}"
    cfg = dataclasses.replace(cfg, run_dir=str(run_folder(sweep_dir(cfg) / contract.RUNS_SUBDIR, name, legacy)))
    write_json(sweep_dir(cfg) / contract.HOLDOUT_FILE, {**plan.as_dict(), "run_name": Path(cfg.run_dir).name})
    print(
        f"[{cfg.sweep.name}] holdout: the fits ({plan.approach}) put the optimum at N = {plan.n_opt:,.0f} for "
        f"C = {plan.budget:.3g} FLOPs; training point {plan.point} of that budget",
        file=sys.stderr,
    )
    return run_one(cfg, swept, {contract.HOLDOUT: True}, initialize(cfg.compilation_cache))
