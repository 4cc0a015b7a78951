"""Numbers drawn from tasks.parquet for the figures and the report: where a discrete metric leaves
chance, how far the continuous metric had moved by then, and the ladder's inputs. Nothing here runs
a model.

Emergence is measured two ways (Wei et al. 2022; Schaeffer et al. 2023): a discrete metric (exact
match, accuracy) can sit at chance and then jump, while a continuous one (the answer's
log-likelihood, the probability of the right choice) may have been moving all along. "Above chance"
is a discrete metric more than RISE_SIGMAS binomial standard errors above the task's chance level
(with at least one item right), so n items of noise do not count as a rise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.abilities.suite import ANSWER_LOGPROB, Task

RISE_SIGMAS = 3.0


def series(table: pd.DataFrame, run: str, task: str, metric: str) -> pd.DataFrame:
    """(step, tokens, flops, value, n) of one metric of one task of one run, in step order."""
    rows = table[(table.run == run) & (table.task == task) & (table.metric == metric)]
    return rows.sort_values("step")[["step", "tokens", "flops", "value", "n"]]


def above_chance(value: float, chance: float, n: int) -> bool:
    """More than RISE_SIGMAS binomial standard errors above chance (a p of 0 is taken as 1/n)."""
    p0 = min(max(chance, 1.0 / n), 1 - 1.0 / n)
    return value * n >= 1 and value > chance + RISE_SIGMAS * math.sqrt(p0 * (1 - p0) / n)


@dataclass(frozen=True)
class Rise:
    """Where one run's discrete metric first rose above chance, and the continuous metric by then."""

    run: str
    step: int | None  # None: never above chance in the checkpoints scored
    flops: float | None
    final_discrete: float
    continuous_share: float | None  # share of its whole change (first -> last checkpoint) done by `step`


def rise(table: pd.DataFrame, run: str, task: Task) -> Rise | None:
    """None if the run has no rows for the task."""
    discrete, continuous = series(table, run, task.name, task.discrete), series(table, run, task.name, task.continuous)
    if discrete.empty:
        return None
    up = [row for row in discrete.itertuples() if above_chance(row.value, task.chance, row.n)]
    final = float(discrete.value.iloc[-1])
    if not up:
        return Rise(run, None, None, final, None)
    first = up[0]
    values = continuous.set_index("step").value
    change = values.iloc[-1] - values.iloc[0]
    share = float((values[first.step] - values.iloc[0]) / change) if change else math.nan
    return Rise(run, int(first.step), float(first.flops), final, share)


def ladder_points(table: pd.DataFrame, task: Task, params: dict[str, int]) -> pd.DataFrame:
    """One row per checkpoint after the first: run, N, D, final, loss (task loss), value (discrete metric)."""
    wide = table[table.task == task.name].pivot_table(index=["run", "step", "tokens"], columns="metric", values="value")
    wide = wide.reset_index()
    wide = wide[wide.tokens > 0]
    points = pd.DataFrame(
        {
            "run": wide.run,
            "N": wide.run.map(params).astype(float),
            "D": wide.tokens.astype(float),
            "final": wide.step == wide.groupby("run").step.transform("max"),
            "loss": -wide[ANSWER_LOGPROB],
            "value": wide[task.discrete],
        }
    )
    return points.reset_index(drop=True)


def uniform_logprob(vocab_size: int) -> float:
    """The answer log-likelihood per token of a model that spreads its probability evenly: -ln V."""
    return -float(np.log(vocab_size))
