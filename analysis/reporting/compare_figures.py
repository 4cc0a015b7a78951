"""The comparison figure: each variant's runs and loss frontier (left), each variant's effective compute
multiplier against compute (right), both with their bootstrap bands."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter

from analysis.fits.multiplier import frontier_loss, log_multiplier
from analysis.fits.variant_comparison import Comparison, interval
from analysis.reporting.figure_style import FLOPS_LABEL, LOSS_LABEL, plain_log_y, save, styled

FIGURE = "compare_variants.png"
COLOURS = plt.cm.tab10.colors


@styled
def plot(comparison: Comparison, path: Path) -> Path:
    """Two panels: runs and frontiers with bands; multiplier of each variant against the reference with bands."""
    level = comparison.config.level
    C = np.geomspace(comparison.budgets.min() / 2, max(comparison.gaps[0].multiplier["C"].max(), 1) * 1.5, 120)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.5, 4.8))
    for index, label in enumerate(comparison.labels):
        colour = COLOURS[index % len(COLOURS)]
        runs = comparison.runs[comparison.runs["variant"] == index]
        left.plot(runs["C"], runs["loss"], "o", ms=4, color=colour, alpha=0.6, label=f"{label}: runs")
        replicates = {k: v[:, None] for k, v in comparison.replicates[index].items()}
        low, high = interval(frontier_loss(replicates, C), level)
        left.fill_between(C, low, high, color=colour, alpha=0.2, lw=0)
        left.plot(
            C,
            frontier_loss(comparison.frontiers[index], C),
            color=colour,
            label=f"{label}: fitted frontier L*(C), {level:.0%} band",
        )
    left.axvline(comparison.budgets.max(), color="grey", ls=":", lw=1, label="largest budget trained")
    left.set(xscale="log", yscale="log", xlabel=FLOPS_LABEL, ylabel=LOSS_LABEL, title="Loss frontier of each variant")
    plain_log_y(left)
    left.legend(fontsize=8)
    reference = comparison.replicates[0]
    for index, gap in enumerate(comparison.gaps, start=1):
        colour = COLOURS[index % len(COLOURS)]
        mine = {k: v[:, None] for k, v in comparison.replicates[index].items()}
        ref = {k: v[:, None] for k, v in reference.items()}
        low, high = interval(np.exp(log_multiplier(ref, mine, C)), level)
        right.fill_between(C, low, np.minimum(high, 1e6), color=colour, alpha=0.2, lw=0)
        point = np.exp(log_multiplier(comparison.frontiers[0], comparison.frontiers[index], C))
        right.plot(C, point, color=colour, label=f"{gap.label} against {comparison.labels[0]} ({level:.0%} band)")
        fitted = gap.multiplier[gap.multiplier["fitted"]]
        # The interval as drawn from low to high, not as error bars about the point: a point can lie outside
        # its own bootstrap interval (the report warns), and error bars cannot show that.
        right.vlines(fitted["C"], fitted["low"], np.minimum(fitted["high"], 1e6), color=colour, lw=1.5)
        right.plot(fitted["C"], fitted["point"], "o", color=colour, label=f"{gap.label}: at the budgets trained")
    right.axhline(1.0, color="black", lw=1, label="no difference (1x)")
    right.axvline(comparison.budgets.max(), color="grey", ls=":", lw=1)
    right.set(
        xscale="log",
        yscale="log",
        xlabel=FLOPS_LABEL,
        ylabel=f"compute multiplier (x {comparison.labels[0]}'s compute)",
        title="Effective compute multiplier (> 1: the variant is better)",
    )
    for formatter in (right.yaxis.set_major_formatter, right.yaxis.set_minor_formatter):
        formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    right.legend(fontsize=8)
    return save(fig, path)
