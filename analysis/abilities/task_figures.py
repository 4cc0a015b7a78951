"""The task figures, drawn from tasks.parquet alone.

tasks_emergence.png: one row per task; left, the discrete metric against training compute (log
axis), right, the continuous metric against the same axis; one line per model size (viridis, small
to large), chance marked. tasks_ladder.png: one panel per task, the two-step prediction of the
largest model's score from the smaller ones (analysis/abilities/two_step.py).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.abilities.emergence import series, uniform_logprob
from analysis.abilities.suite import ANSWER_LOGPROB, METRIC_LABELS, Task
from analysis.abilities.two_step import LadderPrediction
from analysis.trained_runs import RunInfo, size_label

PANEL = (4.8, 3.2)  # inches per panel


def _colours(runs: list[RunInfo]) -> dict[str, tuple]:
    ranks = np.linspace(0.1, 0.85, len(runs)) if len(runs) > 1 else [0.4]
    return {run.name: plt.cm.viridis(r) for run, r in zip(runs, ranks)}


def _chance_line(ax, task: Task, metric: str, vocab_size: int) -> None:
    """Chance for the discrete metric and the choice probability; an even spread for the log-likelihood."""
    if metric == ANSWER_LOGPROB:
        ax.axhline(uniform_logprob(vocab_size), color="grey", ls=":", lw=1, label="uniform over the vocabulary")
    else:
        ax.axhline(task.chance, color="grey", ls="--", lw=1, label=f"chance ({task.chance:.2g})")


def emergence_figure(table: pd.DataFrame, tasks: list[Task], runs: list[RunInfo], folder: Path) -> str:
    colours = _colours(runs)
    fig, axes = plt.subplots(
        len(tasks), 2, figsize=(PANEL[0] * 2, PANEL[1] * len(tasks)), squeeze=False, constrained_layout=True
    )
    for row, task in zip(axes, tasks):
        for ax, metric in zip(row, (task.discrete, task.continuous)):
            for run in runs:
                s = series(table, run.name, task.name, metric)
                s = s[s.flops > 0]  # the initialisation has no place on a log axis
                ax.plot(s.flops, s.value, marker="o", ms=3, color=colours[run.name], label=size_label(run))
            _chance_line(ax, task, metric, runs[0].vocab_size)
            ax.set_xscale("log")
            ax.set(xlabel="training FLOPs (log)", ylabel=METRIC_LABELS[metric], title=f"{task.name}: {metric}")
            ax.grid(alpha=0.3, which="both")
        row[0].legend(fontsize=7)
    fig.suptitle("Abilities through training and across sizes: discrete (left) and continuous (right) metrics")
    return _save(fig, folder, "tasks_emergence.png")


def ladder_figure(
    points: dict[str, pd.DataFrame], predictions: dict[str, LadderPrediction], tasks: list[Task], folder: Path
) -> str:
    fig, axes = plt.subplots(
        1,
        max(len(predictions), 1),
        figsize=(PANEL[0] * max(len(predictions), 2), PANEL[1] + 0.6),
        squeeze=False,
        constrained_layout=True,
    )
    for ax, task in zip(axes[0], [t for t in tasks if t.name in predictions]):
        p, pts = predictions[task.name], points[task.name]
        small = pts[pts.N < p.N]
        ax.scatter(small.loss, small.value, s=10, c="tab:blue", label="smaller models (fitted)")
        big = pts[pts.N == p.N]
        ax.scatter(big.loss, big.value, s=10, c="tab:orange", label="largest model (held out)")
        grid = np.linspace(min(pts.loss.min(), p.predicted_loss), max(pts.loss.max(), p.predicted_loss), 200)
        ax.plot(grid, p.sigmoid(grid), color="tab:blue", lw=1, label="step 2: sigmoid of task loss")
        ax.plot([p.predicted_loss], [p.predicted_value], "k*", ms=11, label="predicted (steps 1 + 2)")
        ax.plot([p.actual_loss], [p.actual_value], "rX", ms=9, label="measured")
        ax.axhline(task.chance, color="grey", ls="--", lw=1)
        ax.set(
            xlabel="task loss (nats/token of the right answer)",
            ylabel=METRIC_LABELS[task.discrete],
            title=f"{task.name}: error {p.error:+.3f}",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle("Two-step prediction of the largest model's final score (OLMo ladder)")
    return _save(fig, folder, "tasks_ladder.png")


def _save(fig: plt.Figure, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name
