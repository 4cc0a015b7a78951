"""The rollout in the report: every predictor fitted on the first k steps and judged on step k+1, as a table
and a figure (Bhagia et al. 2024; analysis/fits/rollout.py)."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from analysis.fits.analyse import Analysis
from analysis.fits.rollout import RolloutRow, percent
from analysis.reporting.figure_style import save, styled

FIGURE = "rollout.png"


def table(analysis: Analysis) -> list[str]:
    """The rollout table, and how the law was chosen."""
    choice = analysis.choice
    lines = [
        "## Rollout: which predictor extrapolates",
        "",
        "Each predictor is fitted on the first k budgets (or model sizes) and asked for step k+1, which it never "
        "saw (Bhagia et al. 2024). Mean |error| is over that step's runs; best loss compares the predicted "
        "best loss at the step's budget with the step's IsoFLOP minimum.",
        "",
    ]
    if not choice.rows:
        return lines + [f"Not run: {choice.note}."]
    seeds = any(row.has_seeds for row in choice.rows)
    head = "| predictor | fitted steps | predicts | runs | mean abs. error | mean error | best loss |"
    if seeds:
        lines += [
            "With seeds, mean abs. error over points compares each grid point's prediction with its seeds' mean "
            "loss: the law's own error, without the seed noise no law can predict. Laws are chosen by it.",
            "",
        ]
        head += " points | mean abs. error over points |"
    lines += [head, "|---" * head.count(" | ") + "|---|"]
    for row in choice.rows:
        points = f" {row.n_points or '-'} | {percent(row.mean_abs_point_error)} |" if seeds else ""
        if row.note:
            blank = " | |" if seeds else ""
            lines.append(f"| {row.predictor} | {row.fitted} | {row.target} | not fitted: {row.note} | | | |{blank}")
            continue
        lines.append(
            f"| {row.predictor} | {row.fitted} | {row.target} | {row.n_predicted} | {percent(row.mean_abs_error)} | "
            f"{percent(row.mean_error, '+')} | {percent(row.best_loss_error, '+')} |{points}"
        )
    return lines + ["", f"Approach 3 fits {choice.note}."]


@styled
def plot(rows: tuple[RolloutRow, ...], path: Path) -> Path:
    """Signed error of every predictor at every rollout step: runs' mean (laws) and best loss (all)."""
    fig, (runs_ax, best_ax) = plt.subplots(1, 2, figsize=(11, 4.8), layout="constrained", sharex=True)
    names = list(dict.fromkeys(row.predictor for row in rows))
    for colour, name in zip(plt.cm.tab10(np.linspace(0, 1, 10)), names):
        mine = [row for row in rows if row.predictor == name and not row.note]
        steps = [row.fitted for row in mine]
        for ax, key in ((runs_ax, "mean_error"), (best_ax, "best_loss_error")):
            values = np.array([100 * getattr(row, key) for row in mine])
            if np.isfinite(values).any():
                ax.plot(steps, values, "o-", color=colour, label=name)
    labels = {row.fitted: row.target.replace(" FLOPs", "").replace(" parameters", "") for row in rows}
    for ax, title in ((runs_ax, "every run of step k+1 (mean)"), (best_ax, "best loss at step k+1")):
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set(
            xticks=list(labels),
            xticklabels=[f"k={k}\n{label}" for k, label in labels.items()],
            xlabel="fitted on the first k steps, predicting step k+1",
            ylabel="(predicted - observed) / observed (%)",
            title=title,
        )
        ax.grid(alpha=0.3)
    runs_ax.legend(fontsize=8)
    if best_ax.lines:
        best_ax.legend(fontsize=8)
    return save(fig, path)


def figure_caption() -> str:
    return (
        "Rollout: each predictor fitted on the first k steps and asked for step k+1; left, the mean signed error "
        "over that step's runs (approach 3's laws); right, the error of the predicted best loss against the "
        "step's IsoFLOP minimum (every predictor; budgets only). Zero is a perfect prediction"
    )


def make_figure(analysis: Analysis, figures: Path) -> list[tuple[str, str]]:
    """The rollout figure, when the rollout ran."""
    if not any(not row.note for row in analysis.choice.rows):
        return []
    plot(analysis.choice.rows, figures / FIGURE)
    return [(FIGURE, figure_caption())]
