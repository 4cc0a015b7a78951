"""The report's "placement" section: where the held-out run sits against the fitted runs in the (N, D/N)
plane (a figure), and how far its prediction moves when any one grid point, all its seeds, is left out of
the fit (analysis/fits/holdout_checks.py)."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.failures import FitError
from analysis.fits.analyse import Analysis
from analysis.fits.holdout_checks import Placement, leave_one_point_out, placement, spread
from analysis.reporting.document import figure

FIGURE = "placement.png"
SPREAD_TARGET = 0.06  # nats: the demo's bound on the leave-one-point-out spread


def plot(runs: pd.DataFrame, held: pd.DataFrame, path: Path) -> None:
    """Tokens per parameter against N: the fitted runs coloured by budget, the held-out runs as stars."""
    fig, ax = plt.subplots(figsize=(7, 5))
    budgets = sorted(runs["budget"].dropna().unique())
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(budgets), 1)))
    for colour, budget in zip(colours, budgets):
        at = runs[runs["budget"] == budget]
        ax.scatter(at["N"], at["D"] / at["N"], color=colour, s=28, label=f"fitted, C = {budget:.2g}", zorder=2)
    unbudgeted = runs[runs["budget"].isna()]
    if len(unbudgeted):
        label = "fitted, off the budgets" if budgets else "fitted"  # (in a sweep: reach runs, sweep.reach)
        ax.scatter(unbudgeted["N"], unbudgeted["D"] / unbudgeted["N"], color="0.4", marker="s", s=28, label=label)
    ax.scatter(held["N"], held["D"] / held["N"], marker="*", s=260, color="C3", label="held-out run", zorder=3)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters N",
        ylabel="tokens per parameter D / N",
        title="The held-out run against the fitted runs",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _where(place: Placement) -> str:
    near = (
        f"runs within 2x of its size reached {place.near_range[0]:.1f} to {place.near_range[1]:.1f}"
        if place.near_range
        else "no fitted run is within 2x of its size"
    )
    verdict = (
        "inside what they reached: the prediction interpolates in D/N"
        if place.inside
        else ("**outside** what they reached: the prediction extrapolates in D/N")
    )
    return (
        f"N = {place.n:,.0f} at {place.tokens_per_param:.1f} tokens per parameter; the fitted runs span "
        f"{place.fitted_range[0]:.1f} to {place.fitted_range[1]:.1f}, and {near}: {verdict} (nearest fitted "
        f"run: {place.nearest})."
    )


def section(analysis: Analysis, figures: Path) -> str | None:
    """Markdown for the placement section, or None when the sweep has no held-out run."""
    held = analysis.data.held_out
    if held is None or held.empty:
        return None
    runs, law = analysis.data.runs, analysis.choice.law
    lines = ["## Where the held-out run sits, and what steers its prediction", ""]
    for row in held.itertuples():
        lines.append(f"- {row.run}: " + _where(placement(runs, row.N, row.D)))
    figures.mkdir(parents=True, exist_ok=True)
    plot(runs, held, figures / FIGURE)
    lines += ["", figure(FIGURE, "tokens per parameter against model size: every fitted run, and the held-out run")]
    for row in held.itertuples():
        try:
            table = leave_one_point_out(runs, row.N, row.D, law, analysis.config.objective)
        except FitError as error:
            lines += ["", f"Leave one point out: not fitted ({error})."]
            continue
        moved = table["predicted"].iloc[1:] - table["predicted"].iloc[0]
        worst = table.iloc[1:].loc[moved.abs().idxmax()]
        lines += [
            "",
            f"Leave one point out ({row.run}, law `{law}`, point estimates): the prediction on every run is "
            f"{table['predicted'].iloc[0]:.4f}; refitted without each of the {len(table) - 1} grid points in turn "
            f"(all its seeds) it ranges over {table['predicted'].iloc[1:].min():.4f} to "
            f"{table['predicted'].iloc[1:].max():.4f}: a spread of **{spread(table):.4f}** nats (target: at most "
            f"{SPREAD_TARGET}). The point that moves it most is N = {worst['N']:,.0f}, D = {worst['D']:,.0f} "
            f"({moved.abs().max():+.4f}).",
        ]
    return "\n".join(lines)
