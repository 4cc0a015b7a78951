"""Approach 3's figures: the fitted loss surface L(N, D) with the efficient frontier, and each run's observed
loss against the law's prediction."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize

from analysis.fits.lossmodel import tokens_from_flops
from analysis.fits.result import ApproachResult
from analysis.reporting.figure_style import D_LABEL, FLOPS_LABEL, LOSS_LABEL, N_LABEL, flops_text, save, styled


def _round_budgets(low: float, high: float) -> np.ndarray:
    """A few compute values across [low, high] to draw as lines of constant C: whole decades when the
    runs span two or more, else three values spread over the span."""
    decades = 10.0 ** np.arange(np.ceil(np.log10(low)), np.floor(np.log10(high)) + 1)
    if len(decades) < 2:
        return np.geomspace(low, high, 3)
    return decades[:: int(np.ceil(len(decades) / 5))]


@styled
def plot_contours(result: ApproachResult, runs: pd.DataFrame, path: Path) -> Path:
    """Loss contours of the fitted L(N, D), the efficient frontier, IsoFLOP lines, and the runs."""
    n = np.geomspace(runs["N"].min() / 3, runs["N"].max() * 3, 200)
    d = np.geomspace(runs["D"].min() / 3, runs["D"].max() * 3, 200)
    grid_n, grid_d = np.meshgrid(n, d)
    loss = result.details.predict(grid_n, grid_d)
    norm = Normalize(vmin=loss.min(), vmax=np.percentile(loss, 95))
    fig, ax = plt.subplots(figsize=(8, 6))
    levels = np.geomspace(loss.min() * 1.002, np.percentile(loss, 95), 14)
    filled = ax.contourf(grid_n, grid_d, loss, levels=levels, norm=norm, cmap="viridis_r", alpha=0.55, extend="max")
    lines = ax.contour(grid_n, grid_d, loss, levels=levels, norm=norm, cmap="viridis_r", linewidths=0.8)
    ax.clabel(lines, fmt="%.2f", fontsize=7)
    flops = np.geomspace(6 * n.min() * d.min(), 6 * n.max() * d.max(), 200)
    n_opt, d_opt, _ = result.frontier(result.estimate, flops)
    ax.plot(n_opt, d_opt, color="crimson", lw=2.5, label="efficient frontier N_opt(C), D_opt(C)")
    budgets = _round_budgets(runs["C"].min(), runs["C"].max())
    label = "constant compute C = 6ND at " + ", ".join(flops_text(b) for b in budgets) + " FLOPs"
    for i, budget in enumerate(budgets):
        ax.plot(n, tokens_from_flops(budget, n), color="black", lw=0.8, ls="--", alpha=0.6, label=None if i else label)
    # White with a black rim: visible on every shade of the filled contours, which already give the loss.
    ax.scatter(
        runs["N"],
        runs["D"],
        color="white",
        s=30,
        edgecolors="black",
        linewidths=1.0,
        zorder=3,
        label="runs: the (N, D) each was trained at",
    )
    fig.colorbar(filled, ax=ax, label=f"fitted L(N, D), {LOSS_LABEL}", format="%.2f")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(n.min(), n.max()),
        ylim=(d.min(), d.max()),
        xlabel=N_LABEL,
        ylabel=D_LABEL,
        title="Fitted L(N, D) (approach 3); contour lines labelled with the loss",
    )
    ax.legend(fontsize=8, loc="lower left", framealpha=0.9)
    return save(fig, path)


@styled
def plot_observed_vs_predicted(result: ApproachResult, runs: pd.DataFrame, path: Path) -> Path:
    """Observed final loss against the fitted L(N, D), coloured by compute; the diagonal is a perfect fit."""
    predicted = result.details.predict(runs["N"], runs["D"], runs["epochs"].fillna(1.0))
    residual = np.log(runs["loss"]) - np.log(predicted)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    points = ax.scatter(
        runs["loss"],
        predicted,
        c=runs["C"],
        norm=LogNorm(),
        cmap="cividis",
        s=20,
        edgecolors="black",
        linewidths=0.4,
        label="one run (colour: its compute C)",
    )
    low, high = min(runs["loss"].min(), predicted.min()), max(runs["loss"].max(), predicted.max())
    ax.plot([low, high], [low, high], color="crimson", lw=1, label="predicted = observed")
    fig.colorbar(points, ax=ax, label=FLOPS_LABEL)
    ax.set(
        xlabel=f"observed {LOSS_LABEL}",
        ylabel=f"predicted {LOSS_LABEL}",
        title=f"Approach 3 fit: RMS log residual {np.sqrt(np.mean(residual**2)):.4f}",
    )
    ax.legend(fontsize=9)
    return save(fig, path)
