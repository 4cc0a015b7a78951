"""`python -m analysis.tasks PATH`: score every saved checkpoint of a run or a sweep on the task suite.

PATH is a run folder (config.yaml) or a sweep folder (runs.parquet). The tasks are cut once from the
held-out documents of the runs' corpus (analysis/abilities/build.py) into PATH/task_set.json; every
checkpoint of every run is scored into PATH/tasks.parquet; then PATH/figures/tasks_*.png and the
tasks section of PATH/report.md are redrawn from that table. A re-run scores only the checkpoints not
yet in the table, and refuses settings that would score other items than the table holds.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tokenizers import Tokenizer

from analysis.abilities import task_table as tables
from analysis.abilities.build import MAX_ANSWER, build_suite
from analysis.abilities.documents import heldout_texts, tokenize
from analysis.abilities.emergence import ladder_points
from analysis.abilities.score import SuiteScorer
from analysis.abilities.suite import Task
from analysis.abilities.task_figures import emergence_figure, ladder_figure
from analysis.abilities.task_section import section
from analysis.abilities.task_set import TASK_SET_FILE, read_task_set, write_task_set
from analysis.abilities.two_step import two_step
from analysis.command import OneLineParser, positive_int
from analysis.command import run as run_command
from analysis.failures import FitError, InputError
from analysis.measurements import TableSpec, measure_run, measured_runs, publish
from analysis.trained_runs import RunInfo, find_run_dirs, read_run
from scaling import contract
from scaling.data.load import load_corpus
from scaling.runtime import initialize
from scaling.training.rundir import read_config

MIN_CONTEXT = 16


@dataclass(frozen=True)
class TaskSettings:
    """What fixes the task set: items per task, the seed that draws them, prompt tokens (None: the
    shortest run's context minus MAX_ANSWER)."""

    n: int = 128
    seed: int = 0
    context: int | None = None


def resolve_context(settings: TaskSettings, runs: list[RunInfo]) -> int:
    """Prompt tokens: every prompt plus its longest answer must fit every run's context."""
    fits = min(run.seq_len for run in runs) - MAX_ANSWER
    context = fits if settings.context is None else settings.context
    if not MIN_CONTEXT <= context <= fits:
        raise InputError(
            f"--context: {context} is outside {MIN_CONTEXT}..{fits} (the shortest run's context "
            f"{fits + MAX_ANSWER} minus {MAX_ANSWER} answer tokens); pass a value in that range"
        )
    return context


def task_set(path: Path, runs: list[RunInfo], settings: TaskSettings, context: int) -> tuple[dict, list[Task]]:
    """(header, tasks): the stored set if it was cut with these settings, else cut anew (not yet written)."""
    # The tasks are cut from the held-out documents, which a training filter (data.exclude) leaves alone: runs
    # of two training mixes of one corpus are scored on one task set.
    corpora = {run.held_out_hash for run in runs}
    if len(corpora) > 1:
        raise InputError(
            f"PATH: the runs under {path} were trained on {len(corpora)} different corpora; "
            f"score each corpus's runs separately (the tasks are cut from one corpus)"
        )
    header = {"n": settings.n, "seed": settings.seed, "context": context, contract.CORPUS_HASH: runs[0].held_out_hash}
    stored = read_task_set(path / TASK_SET_FILE)
    if stored is not None and stored[0] == header:
        return stored
    texts = heldout_texts(runs[0].data)  # refuses data=tokens in one line
    corpus = load_corpus(runs[0].data, progress=False)
    here = corpus.meta.get("prepared_corpus_hash", corpus.meta.get(contract.CORPUS_HASH))
    if here != runs[0].held_out_hash:
        raise InputError(
            f"data: the corpus on this machine (hash {here}) is not the "
            f"one {runs[0].name} trained on ({runs[0].held_out_hash}); score where the runs were trained"
        )
    tokenizer = Tokenizer.from_file(corpus.tokenizer_path)
    return header, build_suite(tokenize(texts, tokenizer), tokenizer, context, settings.n, settings.seed)


def flops_per_token(run: RunInfo) -> float:
    """Training FLOPs per token, 6 N (the `flops` column of metrics.parquet uses the same)."""
    return float(read_config(run.run_dir)[contract.DERIVED_SECTION]["flops_per_token"]["6n"])


def score_run(
    run: RunInfo, table: pd.DataFrame, tasks: list[Task], settings: dict, spec: TableSpec, final: bool = False
) -> pd.DataFrame:
    """Score the checkpoints `run` still lacks (only its last with `final`; analysis/measurements.py writes the
    table after each). Each run is scored by its family's own objective (analysis/abilities/family_scoring.py)."""
    done = tables.scored_steps(table, run.name)
    wanted = run.checkpoints[-1:] if final else run.checkpoints
    missing = {step for step, _ in wanted if step not in done}
    if not missing:
        return table
    scorer, per_token = None, flops_per_token(run)
    sizes = {task.name: len(task.items) for task in tasks}

    def measure(step: int, tokens: int, graphdef, state) -> pd.DataFrame:
        nonlocal scorer
        scorer = scorer or SuiteScorer(graphdef, tasks, run.vocab_size, run.family)
        return tables.rows(run.name, step, tokens, tokens * per_token, run.params, scorer.score(state), sizes)

    # float32 whatever the training dtype: scores then do not depend on the machine that scores
    return measure_run(run, missing, measure, table, spec, settings, "scored", compute_dtype="float32")


def predictions(table: pd.DataFrame, tasks: list[Task], runs: list[RunInfo]) -> tuple[dict, dict, dict[str, str]]:
    """(points, predictions, reasons a task was not fitted) of the two-step ladder, per task."""
    params = {run.name: run.params for run in runs}
    points, fitted, skipped = {}, {}, {}
    if len({run.family for run in runs}) > 1:  # one law across families' task losses would mix objectives
        why = "the runs span several model families; analysis.report's families section compares them"
        return points, fitted, {task.name: why for task in tasks}
    for task in tasks:
        points[task.name] = ladder_points(table, task, params)
        try:
            fitted[task.name] = two_step(points[task.name])
        except FitError as err:
            skipped[task.name] = str(err)
    return points, fitted, skipped


def score_path(path: Path, settings: TaskSettings, final: bool = False) -> pd.DataFrame:
    """Score every run under `path` (every checkpoint, or with `final` each run's last), then redraw the figures
    and the report section from the whole table."""
    runs = sorted((read_run(run_dir) for run_dir in find_run_dirs(path)), key=lambda r: r.params)
    context = resolve_context(settings, runs)
    header, tasks = task_set(path, runs, settings, context)
    scored = [task for task in tasks if task.items]
    if not scored:
        raise InputError(
            f"PATH: the held-out documents of {runs[0].name}'s corpus yield no task items; "
            f"train on a corpus with more held-out text (data.val_fraction)"
        )
    table_settings = {**header, "tasks": {task.name: task.hash for task in tasks}}
    spec = tables.task_table(path)
    table = spec.read(table_settings)  # refuses before anything is written
    write_task_set(path / TASK_SET_FILE, header, tasks)
    for run in runs:
        table = score_run(run, table, tasks, table_settings, spec, final)
    scored_runs = measured_runs(path, runs, table)
    points, fitted, skipped = predictions(table, scored, scored_runs)
    figures = [emergence_figure(table, scored, scored_runs, path / contract.FIGURES_DIR)]
    if fitted:
        figures.append(ladder_figure(points, fitted, scored, path / contract.FIGURES_DIR))
    body = section(table, scored, scored_runs, header, fitted, skipped, figures)
    publish(path, "tasks", body)
    return table


def parser() -> OneLineParser:
    defaults = TaskSettings()
    parser = OneLineParser(prog="python -m analysis.tasks", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run folder or a sweep folder (results/NAME)")
    parser.add_argument("--n", type=positive_int, default=defaults.n, help="items per task")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed that draws the items")
    parser.add_argument(
        "--context",
        type=positive_int,
        default=defaults.context,
        help=f"prompt tokens (default: the shortest run's context minus {MAX_ANSWER})",
    )
    parser.add_argument(
        "--final",
        action="store_true",
        help="score only each run's last checkpoint (a sweep of many runs: scores against compute, one per run)",
    )
    return parser


def tasks_command(args: argparse.Namespace) -> int:
    score_path(args.path, TaskSettings(args.n, args.seed, args.context), args.final)
    print(
        f"wrote {args.path / contract.TASKS_TABLE}, {args.path / TASK_SET_FILE}, "
        f"{args.path / contract.FIGURES_DIR}/tasks_*.png and the tasks section of {args.path / contract.REPORT_FILE}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(tasks_command, parser().parse_args(argv), setup=lambda: initialize(plotting=True))


if __name__ == "__main__":
    raise SystemExit(main())
