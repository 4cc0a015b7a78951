"""Synthetic runs drawn from a known law: the ground truth that tests and the benchmarks check fits against.

Noise is multiplicative (log-normal), matching the log-space residuals approach 3 fits.

FARSEER_MARIN_DCLM is a real-like law to draw sweeps from that no simpler law here matches: Farseer
(Li et al. 2025) as approach 3 fits it (`--law farseer`, default loss) to all six budgets of Marin's dclm
IsoFLOP sweep (the QC-kept runs of tests/data/isoflop_real_marin.csv). Its IsoFLOP profiles change shape
with scale and its compute-optimal frontier is not a power law.
"""

import numpy as np
import pandas as pd

from analysis.fits.laws import Law
from analysis.fits.lossmodel import (
    FLOPS_PER_PARAM_TOKEN,
    LossParams,
    compute_optimal,
    predict_loss,
    tokens_from_flops,
)

FARSEER_MARIN_DCLM = {
    "a1": 339719.0,
    "b1": -1.62369,
    "alpha": -0.68421,
    "a2": 511913000.0,
    "b2": 4.68126,
    "beta": -0.989939,
    "a3": 70.7415,
    "b3": 0.308648,
    "gamma": -0.227775,
}


def noisy_loss(params: LossParams, N: np.ndarray, D: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """L(N, D) times exp(noise * standard normal)."""
    return predict_loss(N, D, **params.as_dict()) * np.exp(noise * rng.standard_normal(np.shape(N)))


def isoflop_runs(
    params: LossParams,
    budgets: np.ndarray,
    sizes: int = 9,
    span_decades: float = 1.2,
    noise: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """An IsoFLOP sweep: at each budget, `sizes` models log-spaced across `span_decades` around the true N_opt."""
    rng = np.random.default_rng(seed)
    offsets = np.logspace(-span_decades / 2, span_decades / 2, sizes)
    budget = np.repeat(np.asarray(budgets, float), sizes)
    N = np.round(np.outer(compute_optimal(budgets, **params.as_dict())[0], offsets).ravel())
    D = np.round(tokens_from_flops(budget, N))
    return pd.DataFrame(
        {
            "run": [f"run{i:04d}" for i in range(N.size)],
            "N": N,
            "D": D,
            "C": FLOPS_PER_PARAM_TOKEN * N * D,
            "loss": noisy_loss(params, N, D, noise, rng),
            "budget": budget,
        }
    )


def training_curves(
    params: LossParams,
    runs: pd.DataFrame,
    evals: int = 20,
    first_fraction: float = 0.02,
    noise: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Each run's eval curve: L(N, tokens so far) at `evals` points log-spaced up to its final D."""
    rng = np.random.default_rng(seed)
    fractions = np.geomspace(first_fraction, 1.0, evals)
    pieces = []
    for run in runs.itertuples():
        D = np.round(run.D * fractions)
        pieces.append(
            pd.DataFrame(
                {
                    "run": run.run,
                    "N": run.N,
                    "D": D,
                    "C": FLOPS_PER_PARAM_TOKEN * run.N * D,
                    "loss": noisy_loss(params, np.full(evals, run.N), D, noise, rng),
                }
            )
        )
    return pd.concat(pieces, ignore_index=True)


def law_runs(
    law: Law,
    params: dict,
    N: np.ndarray,
    D: np.ndarray,
    epochs: np.ndarray | float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Runs at the given (N, D, epochs) whose loss is `law` with `params`, times exp(noise * standard normal)."""
    rng = np.random.default_rng(seed)
    N, D = np.asarray(N, float), np.asarray(D, float)
    epochs = np.broadcast_to(np.asarray(epochs, float), N.shape)
    loss = law.loss(params, N, D, epochs) * np.exp(noise * rng.standard_normal(N.shape))
    return pd.DataFrame(
        {
            "run": [f"run{i:04d}" for i in range(N.size)],
            "N": N,
            "D": D,
            "C": FLOPS_PER_PARAM_TOKEN * N * D,
            "loss": loss,
            "budget": np.nan,
            "epochs": epochs,
        }
    )


def scaled_law(params: LossParams, n_factor: float, d_factor: float) -> LossParams:
    """The law of a variant whose every parameter counts as n_factor and every token as d_factor of the
    reference's: L_v(N, D) = L(n_factor N, d_factor D). Its compute multiplier is n_factor * d_factor at every C."""
    return LossParams(
        params.E, params.A * n_factor**-params.alpha, params.B * d_factor**-params.beta, params.alpha, params.beta
    )


def variant_runs(
    variants: list[LossParams],
    budgets: np.ndarray,
    sizes: int = 5,
    span_decades: float = 0.6,
    noise: float = 0.0,
    seeds: int = 1,
    seed: int = 0,
) -> pd.DataFrame:
    """Several variants trained on one ladder (the IsoFLOP grid around the first variant's optimum), each run's
    loss drawn from its variant's law, `seeds` runs per grid point; a `variant` column indexes `variants`."""
    rng = np.random.default_rng(seed)
    grid = isoflop_runs(variants[0], budgets, sizes, span_decades)
    pieces = []
    for index, params in enumerate(variants):
        for repeat in range(seeds):
            pieces.append(
                grid.assign(
                    loss=noisy_loss(params, grid["N"].to_numpy(), grid["D"].to_numpy(), noise, rng),
                    variant=index,
                    seed=repeat,
                )
            )
    runs = pd.concat(pieces, ignore_index=True)
    return runs.assign(run=[f"run{i:04d}" for i in range(len(runs))])
