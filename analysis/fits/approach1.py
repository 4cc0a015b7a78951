"""Approach 1: the lower envelope of loss against FLOPs over all training curves (Hoffmann et al. 2022, 3.1).

At each FLOP value on a log grid, the run with the lowest (interpolated) loss there gives N_opt(C), and
D_opt = C / (6 N_opt). Power laws are fitted to N_opt and to the envelope's loss. Where the smallest or
largest model wins, the true optimum may lie beyond the sizes trained, so those stretches are dropped, and
so are FLOP values that only one run reaches (the runs of one budget end a hair apart, and past the others'
ends the last one wins by default).

The envelope starts at a fraction (default 1) of the smallest run's final compute. Below that no run has
finished, and early on every run sits on the initial plateau (loss near ln V) where the winner is set by
initialisation and by being cheap per token, not by being compute-optimal: on a real sweep that stretch
spanned three decades of C and pulled the fitted a to 0.

Tables without training curves are refused (FINAL_POINTS_ONLY): with one point per run the envelope is
the Pareto front of the final points, which is biased (on 30 synthetic 8 x 9 IsoFLOP sweeps with 1% noise,
a = 0.440 for a true 0.452, and its 80% interval held the truth 28 times in 30, far above 80%).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.failures import FitError
from analysis.fits.bootstrap import point_counts, replicate
from analysis.fits.powerlaw import fit_power_law
from analysis.fits.result import ApproachResult, power_law_frontier
from analysis.fits.seeds import point_ids

GRID_POINTS = 200
SMOOTH_EVALS = 5
DEFAULT_ENVELOPE_START = 1.0  # fraction of the smallest run's final compute at which the envelope starts
FINAL_POINTS_ONLY = (
    "approach 1 needs training curves (each run's metrics.parquet in a sweep folder): with final "
    "points only its envelope is biased; use approaches 2 and 3 for this table"
)


@dataclass(frozen=True)
class Envelope:
    """Points of the lower envelope: compute, winning model size, and loss there."""

    flops: np.ndarray
    n: np.ndarray
    loss: np.ndarray
    n_edge: int  # points dropped because the smallest or largest model won there


@dataclass(frozen=True)
class EnvelopeSource:
    """Everything an envelope is computed from: each run's loss on one FLOP grid."""

    flops: np.ndarray  # (G,) the grid
    loss: np.ndarray  # (R, G) curves interpolated on the grid (inf outside a run)
    run_n: np.ndarray  # (R,) model size of each run


@dataclass(frozen=True)
class EnvelopeDetails:
    """What the training-curve figure needs."""

    points: pd.DataFrame  # every run's whole curve (run, N, C, loss)
    start: float  # FLOPs below which the envelope is not used
    source: EnvelopeSource
    envelope: Envelope


def envelope_start(runs: pd.DataFrame, fraction: float) -> float:
    """The compute at which the envelope starts: `fraction` of the smallest run's final compute."""
    return fraction * runs["C"].min()


def smooth(curves: pd.DataFrame) -> pd.DataFrame:
    """Each run's log loss averaged over SMOOTH_EVALS consecutive evaluations (fewer at its ends).

    The envelope is a minimum over runs, so it picks evaluations whose noise happens to be low, and where
    the IsoFLOP profile is asymmetric those sit more often on its flatter side: on synthetic curves with
    0.2% noise per evaluation that moved a by -0.008; averaging 5 evaluations brings it to -0.003.
    """
    curves = curves.sort_values(["run", "C"])
    log_loss = (
        np.log(curves["loss"])
        .groupby(curves["run"])
        .transform(lambda values: values.rolling(SMOOTH_EVALS, center=True, min_periods=1).mean())
    )
    return curves.assign(loss=np.exp(log_loss))


def curve_source(runs: pd.DataFrame, curves: pd.DataFrame, start: float) -> EnvelopeSource:
    """Interpolate every run's smoothed curve (loss linear in log C) onto one log-spaced grid from `start` on."""
    grid = np.geomspace(max(start, curves["C"].min()), curves["C"].max(), GRID_POINTS)
    by_run = smooth(curves).groupby("run")
    matrix = np.full((len(runs), GRID_POINTS), np.inf)
    for row, name in enumerate(runs["run"]):
        curve = by_run.get_group(name)
        matrix[row] = np.interp(np.log(grid), np.log(curve["C"]), curve["loss"], left=np.inf, right=np.inf)
    return EnvelopeSource(grid, matrix, runs["N"].to_numpy(float))


def envelope(source: EnvelopeSource, present: np.ndarray) -> Envelope:
    """The envelope over the runs marked present, without the stretches won by the extreme sizes."""
    masked = np.where(present[:, None], source.loss, np.inf)
    winner = masked.argmin(axis=0)
    keep = np.isfinite(masked).sum(axis=0) >= 2  # with one run present there is no choice to learn from
    flops, winner, loss = source.flops[keep], winner[keep], masked.min(axis=0)[keep]
    n = source.run_n[winner]
    sizes = source.run_n[present]
    inner = (n > sizes.min()) & (n < sizes.max())
    return Envelope(flops[inner], n[inner], loss[inner], n_edge=int((~inner).sum()))


def frontier_params(env: Envelope) -> dict[str, float]:
    """Power laws through the envelope: N_opt = k C^a (b = 1 - a as D = C/6N) and L = k_L C^c."""
    if np.unique(env.n).size < 2:
        raise FitError(
            f"approach 1: between the smallest and largest model the envelope is won by {np.unique(env.n).size} "
            "model size(s), need 2: train more sizes, or longer so that curves cross"
        )
    n_law, loss_law = fit_power_law(env.flops, env.n), fit_power_law(env.flops, env.loss)
    return {
        "a": n_law.exponent,
        "b": 1.0 - n_law.exponent,
        "log_k_n": n_law.log_k,
        "loss_exponent": loss_law.exponent,
        "log_k_loss": loss_law.log_k,
    }


def fit_approach1(
    runs: pd.DataFrame,
    curves: pd.DataFrame | None,
    n_boot: int,
    seed: int,
    start_fraction: float = DEFAULT_ENVELOPE_START,
) -> ApproachResult:
    """Envelope power laws from `start_fraction` of the smallest final compute up, resampling whole runs."""
    if curves is None:
        raise FitError(FINAL_POINTS_ONLY)
    start = envelope_start(runs, start_fraction)
    if start > curves["C"].max():
        raise FitError(
            f"approach 1: the envelope would start at {start:.3g} FLOPs, past the last run's end: "
            "lower --envelope-start"
        )
    source = curve_source(runs, curves, start)
    env = envelope(source, np.ones(len(source.run_n), dtype=bool))
    estimate = frontier_params(env)
    counts = point_counts(point_ids(runs), n_boot, seed)  # grid points, then seeds within each
    samples = replicate(lambda count: frontier_params(envelope(source, count > 0)), counts, estimate)
    notes = (
        [f"approach 1: dropped {env.n_edge} envelope points won by the smallest or largest model"] if env.n_edge else []
    )
    return ApproachResult(
        name="approach1",
        title="Approach 1: envelope of training curves",
        estimate=estimate,
        samples=samples,
        frontier=power_law_frontier,
        warnings=tuple(notes),
        details=EnvelopeDetails(curves, start, source, env),
    )
