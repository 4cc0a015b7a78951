"""The tasks section of report.md (`analysis.tasks` writes it through `reporting.document`)."""

from __future__ import annotations

import math

import pandas as pd

from analysis.abilities.emergence import RISE_SIGMAS, rise, series
from analysis.abilities.suite import Task
from analysis.abilities.two_step import FIRST_SHARE, LadderPrediction
from analysis.trained_runs import RunInfo, size_label


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _task_lines(tasks: list[Task]) -> list[str]:
    lines = ["| task | measures | scored by | chance | items | sha256 |", "|---|---|---|---|---|---|"]
    for task in tasks:
        lines.append(
            f"| {task.name} | {task.measures} | {task.discrete}; {', '.join(task.metrics[1:])} "
            f"| {task.chance:.3g} | {len(task.items)} | `{task.hash[:16]}` |"
        )
    return lines


def _rise_lines(table: pd.DataFrame, tasks: list[Task], runs: list[RunInfo]) -> list[str]:
    lines = [
        "| task | run | size | final discrete | final continuous | first above chance (FLOPs, step) "
        "| continuous change done by then |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        for run in runs:
            r = rise(table, run.name, task)
            if r is None:
                continue
            final_continuous = series(table, run.name, task.name, task.continuous).value.iloc[-1]
            where = "never" if r.step is None else f"{r.flops:.3g} (step {r.step})"
            share = _fmt(r.continuous_share, ".0%") if r.continuous_share is not None else "-"
            lines.append(
                f"| {task.name} | {run.name} | {size_label(run)} | {r.final_discrete:.3f} | "
                f"{final_continuous:.3f} | {where} | {share} |"
            )
    return lines


def _ladder_lines(predictions: dict[str, LadderPrediction], skipped: dict[str, str]) -> list[str]:
    lines = [
        "| task | held-out run | task loss predicted / measured | score predicted / measured | error "
        "| L(N, D) fit: E, A, alpha, B, beta | sigmoid: a, b, k, L0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in predictions.items():
        lp, s = p.loss_params, p.sigmoid
        lines.append(
            f"| {name} | {p.target} | {p.predicted_loss:.3f} / {p.actual_loss:.3f} | {p.predicted_value:.3f} / "
            f"{p.actual_value:.3f} | {p.error:+.3f} | {lp.E:.3g}, {lp.A:.3g}, {lp.alpha:.3g}, {lp.B:.3g}, {lp.beta:.3g} "
            f"| {s.a:.3g}, {s.b:.3g}, {s.k:.3g}, {s.L0:.3g} |"
        )
    lines += [f"| {name} | not fitted: {reason} | | | | | |" for name, reason in skipped.items()]
    return lines


def section(
    table: pd.DataFrame,
    tasks: list[Task],
    runs: list[RunInfo],
    settings: dict,
    predictions: dict[str, LadderPrediction],
    skipped: dict[str, str],
    figures: list[str],
) -> str:
    """Markdown of the tasks section: the task set, where each ability rose, the ladder's backtest, figures."""
    runs = sorted(runs, key=lambda r: r.params)
    parts = [
        "## Abilities across scale",
        "",
        f"Written by `python -m analysis.tasks`; rows in `tasks.parquet`, items in `task_set.json`. Tasks cut from "
        f"the held-out documents (seed {settings['seed']}, prompts of {settings['context']} tokens, up to "
        f"{settings['n']} items each), scored at every saved checkpoint (each run's last with `--final`) in float32, "
        "each run by its family's own objective (analysis/abilities/family_scoring.py). Discrete metrics: exact match "
        f"of the greedy answer, or accuracy of a multiple choice by total log-likelihood; continuous: the right answer's "
        f'mean log-likelihood per token and the probability of the right choice. "Above chance": more than '
        f"{RISE_SIGMAS:g} binomial standard errors above the chance level.",
        "",
        *_task_lines(tasks),
        "",
        "Where each discrete metric first rose above chance, and how much of its whole change (first to last "
        "checkpoint) the continuous metric had made by then (Schaeffer et al. 2023: a smooth continuous metric "
        "under a sharp discrete one means the jump is the metric's):",
        "",
        *_rise_lines(table, tasks, runs),
        "",
        f"Two-step prediction (Bhagia et al. 2024): task loss L(N, D) fitted on the smaller models' checkpoints from "
        f"{FIRST_SHARE:.3g} of training on, the discrete metric as a sigmoid of task loss fitted on all their "
        f"checkpoints, then the largest model's final score predicted:",
        "",
        *_ladder_lines(predictions, skipped),
        "",
        *[f"![{name}](figures/{name})" for name in figures],
    ]
    return "\n".join(parts)
