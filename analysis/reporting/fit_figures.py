"""The report's figures, one function each, written as PNG with labelled axes and units and a legend
entry for every kind of mark, since a figure read without its caption must still say what it shows."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D

from analysis.fits.analyse import Analysis
from analysis.fits.approach2 import IsoflopDetails
from analysis.fits.bootstrap import percentile_interval
from analysis.fits.lossmodel import tokens_from_flops
from analysis.fits.reference import PUBLISHED_FIT_FLOPS, RULE_LABEL, reference_frontiers
from analysis.fits.result import ApproachResult
from analysis.reporting import rollout_section
from analysis.reporting.curve_figures import plot_curves, plot_runs
from analysis.reporting.figure_style import (
    D_LABEL,
    FLOPS_LABEL,
    LOSS_LABEL,
    N_LABEL,
    budget_label,
    flops_text,
    save,
    styled,
)
from analysis.reporting.law_figures import plot_contours, plot_observed_vs_predicted

APPROACH_COLOURS = {"approach1": "tab:blue", "approach2": "tab:orange", "approach3": "tab:green"}
REFERENCE_COLOURS = ("black", "tab:red", "dimgrey")
FIGURE_FILES = ("isoflop.png", "frontier.png", "contours.png", "observed_vs_predicted.png", "curves.png", "runs.png")


@styled
def plot_isoflops(details: IsoflopDetails, path: Path) -> Path:
    """Loss against N at each budget, the fitted profile, and its minimum with a +-1 s.e. bar in N."""
    fig, ax = plt.subplots(figsize=(9.5, 6), layout="constrained")
    fitted = {p.budget: p for p in details.profiles}
    unfitted = details.runs[~details.runs["group"].isin(fitted)]
    if len(unfitted):
        ax.scatter(unfitted["N"], unfitted["loss"], color="lightgrey", s=14, label="budgets without a clear minimum")
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(fitted)))
    for (budget, parabola), colour in zip(sorted(fitted.items()), colours):
        runs = details.runs[details.runs["group"] == budget]
        ax.scatter(runs["N"], runs["loss"], color=colour, s=22, label=budget_label(budget))
        n = np.geomspace(runs["N"].min(), runs["N"].max(), 100)
        ax.plot(n, parabola.at(np.log(n)), color=colour, lw=1.5)
        n_opt, se = np.exp(parabola.log_n_opt), parabola.se_log_n_opt
        ax.errorbar(
            n_opt,
            parabola.loss_opt,
            xerr=[[n_opt - n_opt * np.exp(-se)], [n_opt * np.exp(se) - n_opt]],
            color=colour,
            ecolor="black",
            elinewidth=1.2,
            marker="*",
            ms=14,
            mec="black",
            capsize=4,
            zorder=3,
        )
    ax.set(
        xscale="log",
        xlabel=N_LABEL,
        ylabel=LOSS_LABEL,
        title=f"IsoFLOP profiles ({details.kind}) per budget, minimum marked (approach 2)",
    )
    # Colour says the budget (legend on the right); the legend below says what each kind of mark is.
    fig.legend(
        loc="outside right upper",
        fontsize=8,
        ncol=2 if len(fitted) > 12 else 1,
        title="colour: budget",
        title_fontsize=8,
    )
    marks = [
        Line2D([], [], color="grey", marker="o", ls="none", ms=5, label="run: final loss"),
        Line2D([], [], color="grey", lw=1.5, label=f"profile ({details.kind}) fitted to a budget's runs"),
        ax.errorbar(
            [],
            [],
            xerr=[],
            color="grey",
            ecolor="black",
            marker="*",
            ms=11,
            mec="black",
            capsize=4,
            label="minimum; bar: N_opt ± 1 standard error",
        ),
    ]
    fig.legend(handles=marks, loc="outside lower center", ncol=3, fontsize=8)
    return save(fig, path)


@styled
def plot_frontier(
    results: dict[str, ApproachResult], flops: np.ndarray, data_max: float, level: float, path: Path
) -> Path:
    """N_opt(C) and D_opt(C) for every approach with its interval band, beside the published lines."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 6.8), layout="constrained")
    handles = []
    for name, result in results.items():
        point = result.frontier(result.estimate, flops)
        replicas = result.frontier({k: v[:, None] for k, v in result.samples.items()}, flops)
        for ax, value, replica in zip(axes, point[:2], replicas[:2]):
            low, high = percentile_interval(replica, level)
            line = ax.plot(flops, value, color=APPROACH_COLOURS[name], lw=2)[0]
            band = ax.fill_between(flops, low, high, color=APPROACH_COLOURS[name], alpha=0.2, lw=0)
        handles.append(((line, band), f"{result.title}; band: {level:.0%} bootstrap interval"))
    handles += _mark_data(axes, results) + _draw_published(axes, flops)
    for ax, quantity in zip(axes, ("N_opt: compute-optimal parameters", "D_opt: compute-optimal tokens")):
        beyond = ax.axvspan(data_max, flops.max(), color="grey", alpha=0.08, lw=0)
        ax.set(xscale="log", yscale="log", xlabel=FLOPS_LABEL, title=quantity)
    handles.append((beyond, "beyond our largest run: our fits extrapolated"))
    axes[0].set_ylabel(N_LABEL)
    axes[1].set_ylabel(D_LABEL)
    fig.legend(
        *zip(*handles), loc="outside lower center", ncol=2, fontsize=8, handler_map={tuple: HandlerTuple(ndivide=1)}
    )
    fig.suptitle("Compute-optimal frontier: fitted allocation of compute between N and D")
    return save(fig, path)


def _mark_data(axes: np.ndarray, results: dict[str, ApproachResult]) -> list[tuple]:
    """The points the power laws were fitted to: envelope winners (approach 1), IsoFLOP minima (approach 2);
    returns their (legend handle, label) pairs."""
    handles = []
    if "approach1" in results:
        env = results["approach1"].details.envelope
        for ax, value in zip(axes, (env.n, tokens_from_flops(env.flops, env.n))):
            points = ax.scatter(env.flops, value, s=6, color=APPROACH_COLOURS["approach1"], alpha=0.5)
        handles.append(
            (
                points,
                "approach 1 data: the run with the lowest loss at each C, one dot per evaluation "
                "(a bar where one run stays the best)",
            )
        )
    if "approach2" in results:
        for p in results["approach2"].details.profiles:
            n_opt = np.exp(p.log_n_opt)
            for ax, value in zip(axes, (n_opt, tokens_from_flops(p.budget, n_opt))):
                minimum = ax.errorbar(
                    p.budget,
                    value,
                    yerr=[[value - value * np.exp(-p.se_log_n_opt)], [value * np.exp(p.se_log_n_opt) - value]],
                    color=APPROACH_COLOURS["approach2"],
                    marker="o",
                    ms=5,
                    mec="black",
                    capsize=2,
                )
        handles.append((minimum, "approach 2 data: each budget's IsoFLOP minimum, bar ± 1 standard error"))
    return handles


def _draw_published(axes: np.ndarray, flops: np.ndarray) -> list[tuple]:
    """The published lines: dashed over the compute their fits were fitted on, dotted and labelled as
    extrapolated outside it (a small sweep sits many decades below Hoffmann's runs); (handle, label) pairs."""
    low, high = PUBLISHED_FIT_FLOPS
    c = np.union1d(flops, [bound for bound in (low, high) if flops.min() < bound < flops.max()])
    inside = (c >= low) & (c <= high)
    outside = ~inside | np.isin(c, (low, high))  # the two parts share their end points, so the line joins up
    handles = []
    for colour, (label, lines) in zip(REFERENCE_COLOURS, reference_frontiers(c).items()):
        if label == RULE_LABEL:  # a rule of thumb, not a fit to data: no range to keep to
            parts = [(np.ones_like(inside), "-.", 1.0, f"{label} (Chinchilla's rule of thumb)")]
        else:
            parts = [
                (inside, "--", 1.0, f"{label}, within its data ({flops_text(low)}-{flops_text(high)} FLOPs)"),
                (
                    outside,
                    ":",
                    0.6,
                    f"{label}, extrapolated outside its data ({flops_text(low)}-{flops_text(high)} FLOPs)",
                ),
            ]
        for mask, style, alpha, text in parts:
            if mask.sum() < 2:
                continue
            for ax, value in zip(axes, lines):
                drawn = ax.plot(c, np.where(mask, value, np.nan), color=colour, ls=style, lw=1.3, alpha=alpha)[0]
            handles.append((drawn, text))
    return handles


def make_figures(analysis: Analysis, figures: Path) -> list[tuple[str, str]]:
    """Draw every figure the fitted approaches support; returns (file name, caption) pairs."""
    figures.mkdir(parents=True, exist_ok=True)
    for name in FIGURE_FILES:  # a figure from an earlier report whose approach now fails would mislead
        (figures / name).unlink(missing_ok=True)
    results, runs, made = analysis.results, analysis.data.runs, []
    if "approach2" in results:
        plot_isoflops(results["approach2"].details, figures / "isoflop.png")
        made.append(
            (
                "isoflop.png",
                "IsoFLOP profiles (approach 2): each run's final loss against N, one colour per "
                "compute budget; the curve is the profile fitted to a budget's runs (estimator named in the title), the star its "
                "minimum and the horizontal bar N_opt ± 1 standard error",
            )
        )
    if not results:  # too few runs for any fit: still show what trained
        plot_runs(runs, analysis.data.curves, figures / "runs.png")
        return [
            (
                "runs.png",
                "Every run's loss against compute, coloured by N (training curves where recorded, dots "
                "for the final evaluations); no approach could be fitted",
            )
        ]
    lowest = runs["C"].min()
    if "approach1" in results:  # reach down to the envelope points approach 1 was fitted to
        lowest = min(lowest, results["approach1"].details.envelope.flops.min())
    flops = np.geomspace(lowest, max(runs["C"].max(), analysis.budgets.max()), 120)
    plot_frontier(results, flops, runs["C"].max(), analysis.config.level, figures / "frontier.png")
    low, high = (flops_text(c) for c in PUBLISHED_FIT_FLOPS)
    made.append(
        (
            "frontier.png",
            f"Compute-optimal N_opt(C) (left) and D_opt(C) (right) of each approach with its "
            f"{analysis.config.level:.0%} bootstrap band, and the points approaches 1 and 2 fitted their power laws "
            f"to; the published lines are dashed over the compute they were fitted on ({low}-{high} FLOPs) and "
            "dotted where extrapolated; grey: beyond our largest run",
        )
    )
    if "approach3" in results:
        plot_contours(results["approach3"], runs, figures / "contours.png")
        made.append(
            (
                "contours.png",
                "Contours of the fitted L(N, D) (approach 3), labelled with the loss, with the "
                "efficient frontier (red), lines of constant compute C = 6ND (dashed) and the (N, D) of every run "
                "(white circles)",
            )
        )
        plot_observed_vs_predicted(results["approach3"], runs, figures / "observed_vs_predicted.png")
        made.append(
            (
                "observed_vs_predicted.png",
                "Each run's observed final loss against the approach-3 prediction, "
                "coloured by compute; on the red diagonal the fit would be exact",
            )
        )
    if "approach1" in results:
        plot_curves(results["approach1"].details, figures / "curves.png")
        made.append(
            (
                "curves.png",
                "Approach 1: every run's loss against compute, coloured by N, and the lower "
                "envelope its power laws are fitted to (black dots); the grey span before the envelope starts "
                "is left out",
            )
        )
    return made + rollout_section.make_figure(analysis, figures)
