"""Training curves against compute, coloured by model size: approach 1's envelope, or every run when no
fit could be made."""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.colors import LogNorm, Normalize

from analysis.fits.approach1 import EnvelopeDetails
from analysis.reporting.figure_style import FLOPS_LABEL, LOSS_LABEL, N_LABEL, flops_text, plain_log_y, save, styled


def _size_norm(n: pd.Series) -> Normalize:
    """Colour scale of model size N: logarithmic, or linear when every run has one size (no log range)."""
    return LogNorm(n.min(), n.max()) if n.max() > n.min() else Normalize(0, 2 * n.max())


def _size_colour(n, norm: Normalize):
    return plt.cm.plasma(norm(n) * 0.9)  # the top of plasma is too pale to see on white


def _draw_curves(ax: plt.Axes, curves: pd.DataFrame, norm: Normalize) -> None:
    """Each run's loss against compute as one line in its size's colour, and one neutral legend entry for all."""
    for _, curve in curves.sort_values("C").groupby("run"):
        ax.plot(curve["C"], curve["loss"], color=_size_colour(curve["N"].iloc[0], norm), lw=0.9, alpha=0.85)
    ax.plot([], [], color="grey", lw=0.9, label="training curve of one run (colour: N)")


def _size_axes(fig: plt.Figure, ax: plt.Axes, norm: Normalize, title: str) -> None:
    """Loss against compute on log axes, with the colour bar of N and the legend."""
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="plasma"), ax=ax, label=N_LABEL)
    ax.set(xscale="log", yscale="log", xlabel=FLOPS_LABEL, ylabel=LOSS_LABEL, title=title)
    plain_log_y(ax)
    ax.legend(fontsize=9)


@styled
def plot_curves(details: EnvelopeDetails, path: Path) -> Path:
    """Each run's loss against compute coloured by N, the lower envelope approach 1 fits, and what it leaves out."""
    points, env = details.points, details.envelope
    fig, ax = plt.subplots(figsize=(8, 5.5))
    norm = _size_norm(points["N"])
    _draw_curves(ax, points, norm)
    if details.start > points["C"].min():
        ax.axvspan(
            points["C"].min(),
            details.start,
            color="grey",
            alpha=0.15,
            lw=0,
            label=f"left out of the envelope: C < {flops_text(details.start)} FLOPs",
        )
    ax.scatter(
        env.flops,
        env.loss,
        color="black",
        s=8,
        zorder=3,
        label="lower envelope, less the stretches won by the smallest or largest model",
    )
    _size_axes(fig, ax, norm, "Approach 1: training curves and envelope")
    return save(fig, path)


@styled
def plot_runs(runs: pd.DataFrame, curves: pd.DataFrame | None, path: Path) -> Path:
    """Each run's loss against compute coloured by N, with no fit: what the report shows when approach 1 cannot run."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    norm = _size_norm(runs["N"])
    if curves is not None:
        _draw_curves(ax, curves, norm)
    ax.scatter(
        runs["C"],
        runs["loss"],
        color=_size_colour(runs["N"], norm),
        s=18,
        edgecolors="black",
        linewidths=0.4,
        zorder=3,
        label="final evaluation of one run (colour: N)",
    )
    _size_axes(fig, ax, norm, f"Runs: {'training curves' if curves is not None else 'final points'} (no fit)")
    return save(fig, path)
