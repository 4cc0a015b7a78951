"""The families section of report.md, for a sweep that trains several pre-training families (sweep=objectives).

Each family is fitted alone, on its own validation loss and its own compute: the losses of the families are
different quantities (the decoder predicts every next token from the left; the encoder 15% of the tokens from
both sides; the encoder-decoder the corrupted spans from the rest), so one fit across them would mean nothing,
and each family's FLOPs per token are its own (scaling/model/sizing.py). Approach 2 (IsoFLOP minima against
each budget; Hoffmann et al. 2022) gives each family's compute-optimal size and loss. Approaches 1 and 3 assume
C = 6 N D, which only the decoder spends, so they are left to `analysis.fit --where "family == 'decoder'"`.

What compares across families is the task suite, each family scoring the items by its own objective
(analysis/abilities/family_scoring.py): `analysis.tasks PATH --final` scores every run's last checkpoint, and this
section sets the scores against compute, one line per family through its best run at each budget.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.abilities.task_set import TASK_SET_FILE, read_task_set
from analysis.failures import FitError, InputError
from analysis.fits.approach2 import fit_approach2
from analysis.fits.result import ApproachResult
from analysis.fitting import read_input
from analysis.reporting.document import figure
from analysis.reporting.family_figures import NAMES, final_scores, frontier_figure, tasks_figure
from analysis.reporting.figure_style import flops_text
from analysis.reporting.fit_figures import plot_isoflops
from scaling import contract

ORDER = ("decoder", "encoder", "encoder_decoder")


def families(table: pd.DataFrame) -> list[str]:
    """The families a runs table holds, in ORDER (a table without the column holds decoders)."""
    column = table[contract.FAMILY] if contract.FAMILY in table else pd.Series([contract.DEFAULT_FAMILY])
    present = set(column.fillna(contract.DEFAULT_FAMILY))
    return [family for family in ORDER if family in present] + sorted(present - set(ORDER))


def fit_family(args: argparse.Namespace, family: str) -> ApproachResult:
    """Approach 2 on one family's completed runs, grouped by their IsoFLOP budgets (in that family's FLOPs)."""
    data = read_input(args, where=f"{contract.FAMILY} == '{family}'")
    return fit_approach2(data.runs, args.n_boot, args.seed, args.profile)


def _compute_line(table: pd.DataFrame, family: str) -> str:
    """FLOPs per parameter per corpus token: 6 for a decoder; what the family's own count gives at its sizes."""
    rows = table[(table[contract.FAMILY] == family) & (table["tokens"] > 0)]
    ratio = rows["flops_6n"] / (rows[contract.PARAMS_TOTAL] * rows["tokens"])
    return f"{ratio.min():.2f}" if np.isclose(ratio.min(), ratio.max()) else f"{ratio.min():.2f}-{ratio.max():.2f}"


def _fit_lines(table: pd.DataFrame, fits: dict[str, ApproachResult], skipped: dict[str, str], level: float) -> list:
    lines = [
        f"| family | completed runs | FLOPs per parameter per token (6n / N) | a: N_opt ∝ C^a [{level:.0%}] "
        "| N_opt at each budget | own loss at the optimum | L_opt ∝ C^c |",
        "|---|---|---|---|---|---|---|",
    ]
    for family in [f for f in ORDER if f in fits or f in skipped] + sorted((fits.keys() | skipped.keys()) - set(ORDER)):
        runs = int((table[contract.FAMILY] == family).sum())
        per_token = _compute_line(table, family)
        if family in skipped:
            lines.append(
                f"| {NAMES.get(family, family)} | {runs} | {per_token} | not fitted: {skipped[family]} | | | |"
            )
            continue
        result = fits[family]
        low, high = result.interval("a", level)
        profiles = result.details.profiles
        n_opt = ", ".join(f"{np.exp(p.log_n_opt):,.0f} ({flops_text(p.budget)})" for p in profiles)
        losses = ", ".join(f"{p.loss_opt:.3f}" for p in profiles)
        lines.append(
            f"| {NAMES.get(family, family)} | {runs} | {per_token} | {result.estimate['a']:.2f} [{low:.2f}, {high:.2f}] "
            f"| {n_opt} | {losses} | {result.estimate['loss_exponent']:.3f} |"
        )
    return lines


def _task_lines(scores: pd.DataFrame, tasks: list) -> list[str]:
    """Per task and family, the best final score at each budget (discrete, then continuous)."""
    budgets = sorted(scores["budget"].dropna().unique())
    head = " | ".join(flops_text(b) for b in budgets)
    lines = [f"| task | metric | family | {head} |", "|---|---|---|" + "---|" * len(budgets)]
    for task in tasks:
        for metric in (task.discrete, task.continuous):
            rows = scores[(scores.task == task.name) & (scores.metric == metric)]
            for family in [f for f in ORDER if f in set(rows.family)]:
                best = rows[rows.family == family].groupby("budget").value.max()
                cells = " | ".join(f"{best[b]:.3f}" if b in best else "-" for b in budgets)
                lines.append(f"| {task.name} | {metric} | {NAMES.get(family, family)} | {cells} |")
    return lines


def tasks_part(path: Path, table: pd.DataFrame, figures: Path) -> list[str]:
    """The yardstick: scores from tasks.parquet against compute, or how to make them."""
    stored = read_task_set(path / TASK_SET_FILE)
    if not (path / contract.TASKS_TABLE).is_file() or stored is None:
        return [f"Task scores: none yet. `python -m analysis.tasks {path} --final` scores each run's last checkpoint."]
    runs = table.rename(columns={contract.RUN_NAME: "run"})[["run", contract.FAMILY, contract.BUDGET]]
    scores = final_scores(pd.read_parquet(path / contract.TASKS_TABLE), runs)
    tasks = [task for task in stored[1] if task.items and (scores.task == task.name).any()]
    if not tasks:
        return ["Task scores: tasks.parquet holds no scores of these runs."]
    tasks_figure(scores, tasks, figures / "families_tasks.png")
    return [
        "## Tasks against compute: the common yardstick",
        "",
        f"Each family scores the same {stored[0]['n']}-item tasks (seed {stored[0]['seed']}, prompts of "
        f"{stored[0]['context']} tokens) by its own objective: the decoder the answer as a continuation, the encoder "
        "its tokens masked together after the prompt, the encoder-decoder the answer as the corrupted span at the "
        "prompt's end (analysis/abilities/family_scoring.py). Best final score per family at each budget:",
        "",
        *_task_lines(scores, tasks),
        "",
        figure("families_tasks.png", "Task scores against training compute: a dot per run, a line per family"),
    ]


def section(args: argparse.Namespace, path: Path, folder: Path) -> str:
    """The markdown of the families section (its figures drawn into folder/figures)."""
    table = pd.read_parquet(path / contract.RUNS_TABLE)
    table = table[table["status"] == contract.COMPLETED]
    figures = folder / contract.FIGURES_DIR
    figures.mkdir(parents=True, exist_ok=True)
    fits, skipped = {}, {}
    for family in families(table):
        try:
            fits[family] = fit_family(args, family)
        except (FitError, InputError) as error:
            skipped[family] = str(error)
    lines = [
        "# Pre-training families: decoder, encoder, encoder-decoder",
        "",
        "Each family fitted alone on its own validation loss and its own FLOPs (approach 2, IsoFLOP minima; "
        f"{args.n_boot} bootstrap refits). The losses measure different predictions and do not compare across "
        "families; the exponents and the task scores below do.",
        "",
        *_fit_lines(table, fits, skipped, args.level),
        "",
    ]
    if fits:
        frontier_figure(fits, args.level, figures / "families_frontier.png")
        lines.append(figure("families_frontier.png", "Compute-optimal size and own loss against compute, per family"))
        for family, result in fits.items():
            name = f"families_isoflop_{family}.png"
            plot_isoflops(result.details, figures / name)
            lines.append(figure(name, f"IsoFLOP profiles of the {NAMES.get(family, family)} runs, its own loss"))
        lines.append("")
    return "\n".join([*lines, *tasks_part(path, table, figures)])
