"""The compute-optimal frontier at chosen budgets, with bootstrap intervals, for any approach."""

import numpy as np
import pandas as pd

from analysis.fits.bootstrap import percentile_interval
from analysis.fits.result import ApproachResult

QUANTITIES = ("N_opt", "D_opt", "loss", "tokens_per_param")


def frontier_table(result: ApproachResult, budgets: np.ndarray, level: float) -> pd.DataFrame:
    """N_opt, D_opt, predicted loss and D/N at each budget C, each with its `level` percentile interval."""
    C = np.asarray(budgets, float)
    point = _quantities(*result.frontier(result.estimate, C))
    replicas = _quantities(*result.frontier({k: v[:, None] for k, v in result.samples.items()}, C))
    table = {"C": C}
    for name in QUANTITIES:
        low, high = percentile_interval(replicas[name], level)
        table |= {name: point[name], f"{name}_low": low, f"{name}_high": high}
    return pd.DataFrame(table)


def _quantities(n_opt: np.ndarray, d_opt: np.ndarray, loss: np.ndarray) -> dict[str, np.ndarray]:
    return {"N_opt": n_opt, "D_opt": d_opt, "loss": loss, "tokens_per_param": d_opt / n_opt}


def default_budgets(max_flops: float) -> np.ndarray:
    """Without --budgets: the largest budget trained, and 10x and 100x beyond it (one significant figure)."""
    return np.array([float(f"{max_flops * scale:.0e}") for scale in (1.0, 10.0, 100.0)])
