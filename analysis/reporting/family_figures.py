"""The families section's figures: each family's compute-optimal frontier on its own loss, and the task scores
(the common yardstick, analysis/abilities/family_scoring.py) against compute, one colour per family."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from analysis.abilities.suite import METRIC_LABELS, Task
from analysis.fits.powerlaw import evaluate_power_law
from analysis.fits.result import ApproachResult
from analysis.reporting.figure_style import FLOPS_LABEL, N_LABEL, save, styled

COLOURS = {"decoder": "tab:blue", "encoder": "tab:orange", "encoder_decoder": "tab:green"}
NAMES = {
    "decoder": "decoder (next token)",
    "encoder": "encoder (masked LM)",
    "encoder_decoder": "encoder-decoder (span corruption)",
}


@styled
def frontier_figure(fits: dict[str, ApproachResult], level: float, path: Path) -> Path:
    """Left: N_opt against C per family (approach 2's minima, +-1 s.e., and power law with its band); right:
    the minima's losses against C, each family on its own loss."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for family, result in fits.items():
        colour, profiles = COLOURS[family], result.details.profiles
        budgets = np.array([p.budget for p in profiles])
        n_opt, se = np.exp([p.log_n_opt for p in profiles]), np.array([p.se_log_n_opt for p in profiles])
        left.errorbar(
            budgets,
            n_opt,
            yerr=[n_opt * (1 - np.exp(-se)), n_opt * (np.exp(se) - 1)],
            color=colour,
            marker="*",
            ms=11,
            ls="none",
            capsize=3,
        )
        c = np.geomspace(budgets.min() / 1.5, budgets.max() * 1.5, 50)
        est = result.estimate
        low, high = result.interval("a", level)
        left.plot(
            c,
            evaluate_power_law(c, est["log_k_n"], est["a"]),
            color=colour,
            label=f"{NAMES[family]}: a = {est['a']:.2f} [{low:.2f}, {high:.2f}]",
        )
        band = np.array([evaluate_power_law(c, k, a) for k, a in zip(result.samples["log_k_n"], result.samples["a"])])
        band = band[np.isfinite(band).all(axis=1)]
        if len(band):
            q = (1 - level) / 2
            left.fill_between(c, *np.quantile(band, [q, 1 - q], axis=0), color=colour, alpha=0.15, lw=0)
        right.plot(budgets, [p.loss_opt for p in profiles], color=colour, marker="*", ms=11, ls="none")
        right.plot(
            c,
            evaluate_power_law(c, est["log_k_loss"], est["loss_exponent"]),
            color=colour,
            label=f"{NAMES[family]}: L_opt ∝ C^{est['loss_exponent']:.3f}",
        )
    left.set(
        xscale="log",
        yscale="log",
        xlabel=FLOPS_LABEL + ", each family's own count",
        ylabel="N_opt " + N_LABEL,
        title="Compute-optimal size per family (approach 2)",
    )
    right.set(
        xscale="log",
        xlabel=FLOPS_LABEL + ", each family's own count",
        ylabel="IsoFLOP minimum of the family's own loss (nats)",
        title="Each family's own loss at its optimum\n(not comparable across families)",
    )
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    marks = [
        Line2D([], [], color="grey", marker="*", ms=10, ls="none", label="a budget's IsoFLOP minimum (± 1 s.e. in N)"),
        Line2D([], [], color="grey", lw=1.5, label=f"power law fitted to the minima; band: {level:.0%} bootstrap"),
    ]
    fig.legend(handles=marks, loc="outside lower center", ncol=2, fontsize=8)
    return save(fig, path)


def final_scores(tasks_table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's last scored checkpoint, with its family and IsoFLOP budget."""
    last = tasks_table.groupby("run").step.transform("max") == tasks_table.step
    return tasks_table[last].merge(runs, on="run", how="inner")


@styled
def tasks_figure(scores: pd.DataFrame, tasks: list[Task], path: Path) -> Path:
    """One row per task, discrete (left) and continuous (right) metric against each run's training compute:
    a dot per run, and per family a line through the best run at each budget."""
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 3.3 * len(tasks)), squeeze=False, layout="constrained")
    for row, task in zip(axes, tasks):
        for ax, metric in zip(row, (task.discrete, task.continuous)):
            rows = scores[(scores.task == task.name) & (scores.metric == metric)]
            for family, group in rows.groupby("family"):
                colour = COLOURS.get(family, "black")
                ax.scatter(group.flops, group.value, color=colour, s=12, alpha=0.5)
                best = group.loc[group.groupby("budget").value.idxmax()].sort_values("budget")
                ax.plot(best.flops, best.value, color=colour, marker="o", ms=4, label=NAMES.get(family, family))
            if metric != "answer_logprob":
                ax.axhline(task.chance, color="grey", ls="--", lw=1, label=f"chance ({task.chance:.2g})")
            ax.set(
                xscale="log",
                xlabel="training FLOPs (each family's own count)",
                ylabel=METRIC_LABELS[metric],
                title=f"{task.name}: {metric}",
            )
        row[0].legend(fontsize=7)
    marks = [
        Line2D([], [], color="grey", marker="o", ms=4, ls="none", alpha=0.5, label="a run's final checkpoint"),
        Line2D([], [], color="grey", marker="o", ms=4, label="a family's best run at each IsoFLOP budget"),
    ]
    fig.legend(handles=marks, loc="outside lower center", ncol=2, fontsize=8)
    fig.suptitle("The common yardstick: task scores by each family's own objective, against training compute")
    return save(fig, path)
