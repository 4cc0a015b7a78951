"""Synthetic runs drawn from a known L(N, D): the ground truth that tests and the benchmark check fits against.

Noise is multiplicative (log-normal), matching the log-space residuals approach 3 fits.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.lossmodel import FLOPS_PER_PARAM_TOKEN, LossParams, compute_optimal, predict_loss, tokens_from_flops

VOCAB_SIZE = 32_000


def noisy_loss(params: LossParams, N: np.ndarray, D: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """L(N, D) times exp(noise * standard normal)."""
    return predict_loss(N, D, **params.as_dict()) * np.exp(noise * rng.standard_normal(np.shape(N)))


def isoflop_runs(params: LossParams, budgets: np.ndarray, sizes: int = 9, span_decades: float = 1.2,
                 noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """An IsoFLOP sweep: at each budget, `sizes` models log-spaced across `span_decades` around the true N_opt."""
    rng = np.random.default_rng(seed)
    offsets = np.logspace(-span_decades / 2, span_decades / 2, sizes)
    budget = np.repeat(np.asarray(budgets, float), sizes)
    N = np.round(np.outer(compute_optimal(budgets, **params.as_dict())[0], offsets).ravel())
    D = np.round(tokens_from_flops(budget, N))
    return pd.DataFrame({"run": [f"run{i:04d}" for i in range(N.size)], "N": N, "D": D,
                         "C": FLOPS_PER_PARAM_TOKEN * N * D, "loss": noisy_loss(params, N, D, noise, rng),
                         "budget": budget})


def training_curves(params: LossParams, runs: pd.DataFrame, evals: int = 20, first_fraction: float = 0.02,
                    noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Each run's eval curve: L(N, tokens so far) at `evals` points log-spaced up to its final D."""
    rng = np.random.default_rng(seed)
    fractions = np.geomspace(first_fraction, 1.0, evals)
    pieces = []
    for run in runs.itertuples():
        D = np.round(run.D * fractions)
        pieces.append(pd.DataFrame({"run": run.run, "N": run.N, "D": D, "C": FLOPS_PER_PARAM_TOKEN * run.N * D,
                                    "loss": noisy_loss(params, np.full(evals, run.N), D, noise, rng)}))
    return pd.concat(pieces, ignore_index=True)


def embedding_params(N: np.ndarray) -> np.ndarray:
    """Plausible embedding counts: vocab x d_model, d_model ~ sqrt(N / 1000), so small models are embedding-heavy."""
    return VOCAB_SIZE * np.round(np.sqrt(np.asarray(N) / 1000.0))


def write_sweep(folder: Path, runs: pd.DataFrame, curves: pd.DataFrame, failed: int = 0) -> Path:
    """Write runs (N = total parameters) and curves as a sweep folder in the training side's format.

    The last `failed` runs are marked diverged, so loaders must drop them.
    """
    folder = Path(folder)
    status = np.where(np.arange(len(runs)) >= len(runs) - failed, "diverged", "completed")
    embedding = embedding_params(runs["N"].to_numpy()).astype(np.int64)
    table = pd.DataFrame({
        "run_name": runs["run"], "status": status,
        "params_total": runs["N"].astype(np.int64), "params_embedding": embedding,
        "params_nonembedding": runs["N"].astype(np.int64) - embedding,
        "tokens": runs["D"].astype(np.int64), "flops_6n": runs["C"], "flops_chinchilla": 1.05 * runs["C"],
        "final_eval_loss": runs["loss"], "final_train_loss": runs["loss"],
        "d_model": np.round(np.sqrt(runs["N"] / 1000.0)).astype(np.int64), "n_layers": 4, "n_heads": 4,
        "seq_len": 256, "vocab_size": VOCAB_SIZE, "steps": 1000, "wall_s": 1.0,
        "budget": runs["budget"], "run_dir": "runs/" + runs["run"],
    })
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / "runs.parquet")
    for name, curve in curves.groupby("run"):
        run_dir = folder / "runs" / str(name)
        run_dir.mkdir(parents=True, exist_ok=True)
        steps = np.arange(1, len(curve) + 1) * 50
        pd.DataFrame({"step": steps, "tokens": curve["D"].astype(np.int64), "flops": curve["C"], "lr": 1e-3,
                      "train_loss": np.nan, "eval_loss": curve["loss"], "tokens_per_s": 1e5,
                      "wall_s": steps / 10.0}).to_parquet(run_dir / "metrics.parquet")
    return folder
