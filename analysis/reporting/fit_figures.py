"""The report's figures, one function each, written as PNG with labelled axes and units."""

import functools
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import FormatStrFormatter

from analysis.fits.analyse import Analysis
from analysis.fits.approach1 import EnvelopeDetails
from analysis.fits.approach2 import IsoflopDetails
from analysis.fits.bootstrap import percentile_interval
from analysis.fits.lossmodel import tokens_from_flops
from analysis.fits.reference import reference_frontiers
from analysis.fits.result import ApproachResult

APPROACH_COLOURS = {"approach1": "tab:blue", "approach2": "tab:orange", "approach3": "tab:green"}
REFERENCE_STYLES = {0: ("black", "--"), 1: ("tab:red", "--"), 2: ("grey", ":")}
FLOPS_LABEL = "training compute C (FLOPs)"
N_LABEL = "parameters N"
D_LABEL = "training tokens D"
LOSS_LABEL = "loss (nats/token)"
DPI = 130
FIGURE_FILES = ("isoflop.png", "frontier.png", "contours.png", "observed_vs_predicted.png", "curves.png", "runs.png")

STYLE = {"font.size": 11, "axes.grid": True, "grid.alpha": 0.3}


def _styled(plot):
    """Draw under our font size and grid without changing matplotlib's settings for anyone else."""

    @functools.wraps(plot)
    def styled(*args, **kwargs):
        with plt.rc_context(STYLE):
            return plot(*args, **kwargs)

    return styled


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _plain_log_y(ax: plt.Axes) -> None:
    """Loss on a log axis reads better as 2.5, 3.0 than as 3 x 10^0."""
    for formatter in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        formatter(FormatStrFormatter("%.1f"))


def _budget_label(budget: float) -> str:
    return f"C = {budget:.2g} FLOPs"


@_styled
def plot_isoflops(details: IsoflopDetails, path: Path) -> Path:
    """Loss against N at each budget, the fitted profile, and its minimum with a +-1 s.e. bar in N."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    fitted = {p.budget: p for p in details.profiles}
    unfitted = details.runs[~details.runs["group"].isin(fitted)]
    if len(unfitted):
        ax.scatter(unfitted["N"], unfitted["loss"], color="lightgrey", s=14, label="budgets without a clear minimum")
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(fitted)))
    for (budget, parabola), colour in zip(sorted(fitted.items()), colours):
        runs = details.runs[details.runs["group"] == budget]
        ax.scatter(runs["N"], runs["loss"], color=colour, s=22, label=_budget_label(budget))
        n = np.geomspace(runs["N"].min(), runs["N"].max(), 100)
        ax.plot(n, parabola.at(np.log(n)), color=colour, lw=1.5)
        n_opt, se = np.exp(parabola.log_n_opt), parabola.se_log_n_opt
        ax.errorbar(n_opt, parabola.loss_opt, xerr=[[n_opt - n_opt * np.exp(-se)], [n_opt * np.exp(se) - n_opt]],
                    color=colour, marker="*", ms=14, mec="black", capsize=3)
    ax.set(xscale="log", xlabel=N_LABEL, ylabel=LOSS_LABEL,
           title=f"IsoFLOP profiles ({details.kind}) per budget, minimum marked (approach 2)")
    ax.legend(fontsize=8, ncol=2 if len(fitted) > 6 else 1)
    return _save(fig, path)


@_styled
def plot_frontier(results: dict[str, ApproachResult], flops: np.ndarray, data_max: float, level: float,
                  path: Path) -> Path:
    """N_opt(C) and D_opt(C) for every approach with its interval band, beside the published lines."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for name, result in results.items():
        point = result.frontier(result.estimate, flops)
        replicas = result.frontier({k: v[:, None] for k, v in result.samples.items()}, flops)
        for ax, value, replica in zip(axes, point[:2], replicas[:2]):
            low, high = percentile_interval(replica, level)
            ax.plot(flops, value, color=APPROACH_COLOURS[name], lw=2, label=result.title)
            ax.fill_between(flops, low, high, color=APPROACH_COLOURS[name], alpha=0.2)
    for i, (label, lines) in enumerate(reference_frontiers(flops).items()):
        colour, style = REFERENCE_STYLES[i]
        for ax, value in zip(axes, lines):
            ax.plot(flops, value, color=colour, ls=style, lw=1.2, label=label)
    _mark_data(axes, results)
    for ax, quantity in zip(axes, ("N_opt: compute-optimal parameters", "D_opt: compute-optimal tokens")):
        ax.axvspan(data_max, flops.max(), color="grey", alpha=0.08, lw=0)
        ax.set(xscale="log", yscale="log", xlabel=FLOPS_LABEL, title=quantity)
    axes[0].set_ylabel(N_LABEL)
    axes[1].set_ylabel(D_LABEL)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Compute-optimal frontier ({level:.0%} bootstrap bands; grey: beyond the largest run)")
    return _save(fig, path)


def _mark_data(axes: np.ndarray, results: dict[str, ApproachResult]) -> None:
    """The points the power laws were fitted to: envelope winners (approach 1), IsoFLOP minima (approach 2)."""
    if "approach1" in results:
        env = results["approach1"].details.envelope
        axes[0].scatter(env.flops, env.n, s=6, color=APPROACH_COLOURS["approach1"], alpha=0.5)
        axes[1].scatter(env.flops, tokens_from_flops(env.flops, env.n), s=6, color=APPROACH_COLOURS["approach1"],
                        alpha=0.5)
    if "approach2" in results:
        for p in results["approach2"].details.profiles:
            n_opt = np.exp(p.log_n_opt)
            for ax, value in zip(axes, (n_opt, tokens_from_flops(p.budget, n_opt))):
                ax.errorbar(p.budget, value, yerr=[[value - value * np.exp(-p.se_log_n_opt)],
                                                   [value * np.exp(p.se_log_n_opt) - value]],
                            color=APPROACH_COLOURS["approach2"], marker="o", ms=5, mec="black", capsize=2)


@_styled
def plot_contours(result: ApproachResult, runs: pd.DataFrame, path: Path) -> Path:
    """Loss contours of the fitted L(N, D), the efficient frontier, IsoFLOP lines, and the runs."""
    n = np.geomspace(runs["N"].min() / 3, runs["N"].max() * 3, 200)
    d = np.geomspace(runs["D"].min() / 3, runs["D"].max() * 3, 200)
    grid_n, grid_d = np.meshgrid(n, d)
    loss = result.details.predict(grid_n, grid_d)
    norm = Normalize(vmin=loss.min(), vmax=np.percentile(loss, 95))
    fig, ax = plt.subplots(figsize=(8, 6))
    levels = np.geomspace(loss.min() * 1.002, np.percentile(loss, 95), 14)
    ax.contourf(grid_n, grid_d, loss, levels=levels, norm=norm, cmap="viridis_r", alpha=0.55, extend="max")
    lines = ax.contour(grid_n, grid_d, loss, levels=levels, norm=norm, cmap="viridis_r", linewidths=0.8)
    ax.clabel(lines, fmt="%.2f", fontsize=7)
    flops = np.geomspace(6 * n.min() * d.min(), 6 * n.max() * d.max(), 200)
    n_opt, d_opt, _ = result.frontier(result.estimate, flops)
    ax.plot(n_opt, d_opt, color="crimson", lw=2.5, label="efficient frontier N_opt(C), D_opt(C)")
    for budget in np.logspace(np.ceil(np.log10(runs["C"].min())), np.floor(np.log10(runs["C"].max())), 4):
        ax.plot(n, tokens_from_flops(budget, n), color="grey", lw=0.8, ls="--")
    points = ax.scatter(runs["N"], runs["D"], c=runs["loss"], norm=norm, cmap="viridis_r", s=22, edgecolors="black",
                        linewidths=0.5, label="runs (colour: observed loss)")
    fig.colorbar(points, ax=ax, label=LOSS_LABEL)
    ax.set(xscale="log", yscale="log", xlim=(n.min(), n.max()), ylim=(d.min(), d.max()), xlabel=N_LABEL,
           ylabel=D_LABEL, title="Fitted L(N, D) (approach 3); dashed: constant C = 6ND")
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


@_styled
def plot_curves(details: EnvelopeDetails, path: Path) -> Path:
    """Each run's loss against compute coloured by N, the lower envelope approach 1 fits, and what it leaves out."""
    points, env = details.points, details.envelope
    fig, ax = plt.subplots(figsize=(8, 5.5))
    norm = LogNorm(points["N"].min(), points["N"].max())
    for _, curve in points.sort_values("C").groupby("run"):
        ax.plot(curve["C"], curve["loss"], color=plt.cm.plasma(norm(curve["N"].iloc[0]) * 0.9), lw=0.9, alpha=0.8)
    if details.start > points["C"].min():
        ax.axvspan(points["C"].min(), details.start, color="grey", alpha=0.15, lw=0,
                   label=f"left out of the envelope: C < {details.start:.2g} FLOPs")
    ax.scatter(env.flops, env.loss, color="black", s=8, zorder=3,
               label="lower envelope, less the stretches won by the smallest or largest model")
    mappable = plt.cm.ScalarMappable(norm=norm, cmap="plasma")
    fig.colorbar(mappable, ax=ax, label=N_LABEL)
    ax.set(xscale="log", yscale="log", xlabel=FLOPS_LABEL, ylabel=LOSS_LABEL, title="Approach 1: training curves and envelope")
    _plain_log_y(ax)
    ax.legend(fontsize=9)
    return _save(fig, path)


@_styled
def plot_runs(runs: pd.DataFrame, curves: pd.DataFrame | None, path: Path) -> Path:
    """Each run's loss against compute coloured by N, with no fit: what the report shows when approach 1 cannot run."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    norm = LogNorm(runs["N"].min(), runs["N"].max()) if runs["N"].max() > runs["N"].min() else Normalize(0, 2 * runs["N"].max())
    if curves is not None:
        for _, curve in curves.sort_values("C").groupby("run"):
            ax.plot(curve["C"], curve["loss"], color=plt.cm.plasma(norm(curve["N"].iloc[0]) * 0.9), lw=1.0, alpha=0.85)
    ax.scatter(runs["C"], runs["loss"], color=plt.cm.plasma(norm(runs["N"]) * 0.9), s=18, edgecolors="black",
               linewidths=0.4, zorder=3, label="final evaluation of each run")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="plasma"), ax=ax, label=N_LABEL)
    kind = "training curves" if curves is not None else "final points"
    ax.set(xscale="log", yscale="log", xlabel=FLOPS_LABEL, ylabel=LOSS_LABEL, title=f"Runs: {kind} (no fit)")
    _plain_log_y(ax)
    ax.legend(fontsize=9)
    return _save(fig, path)


@_styled
def plot_observed_vs_predicted(result: ApproachResult, runs: pd.DataFrame, path: Path) -> Path:
    """Observed final loss against the fitted L(N, D), coloured by compute; the diagonal is a perfect fit."""
    predicted = result.details.predict(runs["N"], runs["D"], runs["epochs"].fillna(1.0))
    residual = np.log(runs["loss"]) - np.log(predicted)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    points = ax.scatter(runs["loss"], predicted, c=runs["C"], norm=LogNorm(), cmap="cividis", s=20, edgecolors="black",
                        linewidths=0.4)
    low, high = min(runs["loss"].min(), predicted.min()), max(runs["loss"].max(), predicted.max())
    ax.plot([low, high], [low, high], color="crimson", lw=1, label="predicted = observed")
    fig.colorbar(points, ax=ax, label=FLOPS_LABEL)
    ax.set(xlabel=f"observed {LOSS_LABEL}", ylabel=f"predicted {LOSS_LABEL}",
           title=f"Approach 3 fit: RMS log residual {np.sqrt(np.mean(residual**2)):.4f}")
    ax.legend(fontsize=9)
    return _save(fig, path)


def make_figures(analysis: Analysis, figures: Path) -> list[tuple[str, str]]:
    """Draw every figure the fitted approaches support; returns (file name, caption) pairs."""
    figures.mkdir(parents=True, exist_ok=True)
    for name in FIGURE_FILES:  # a figure from an earlier report whose approach now fails would mislead
        (figures / name).unlink(missing_ok=True)
    results, runs, made = analysis.results, analysis.data.runs, []
    if "approach2" in results:
        plot_isoflops(results["approach2"].details, figures / "isoflop.png")
        made.append(("isoflop.png", "IsoFLOP profiles: loss against N per budget, fitted profiles and their minima"))
    if not results:  # too few runs for any fit: still show what trained
        plot_runs(runs, analysis.data.curves, figures / "runs.png")
        return [("runs.png", "Loss against compute for every run, coloured by N; no approach could be fitted")]
    lowest = runs["C"].min()
    if "approach1" in results:  # reach down to the envelope points approach 1 was fitted to
        lowest = min(lowest, results["approach1"].details.envelope.flops.min())
    flops = np.geomspace(lowest, max(runs["C"].max(), analysis.budgets.max()), 120)
    plot_frontier(results, flops, runs["C"].max(), analysis.config.level, figures / "frontier.png")
    made.append(("frontier.png", "Compute-optimal N_opt(C) and D_opt(C) per approach, with the published lines"))
    if "approach3" in results:
        plot_contours(results["approach3"], runs, figures / "contours.png")
        made.append(("contours.png", "Loss contours of the fitted L(N, D), the efficient frontier, and the runs"))
        plot_observed_vs_predicted(results["approach3"], runs, figures / "observed_vs_predicted.png")
        made.append(("observed_vs_predicted.png", "Observed against predicted final loss (approach 3)"))
    if "approach1" in results:
        plot_curves(results["approach1"].details, figures / "curves.png")
        made.append(("curves.png", "Training curves and the lower envelope (approach 1)"))
    return made
