"""The probe section of report.md (`analysis.probe` writes it through `reporting.document`)."""

from __future__ import annotations

import math

import pandas as pd

from analysis.probes import results
from analysis.probes.measure import (
    FORGET_FRACTIONS,
    FORGETTING,
    ICL_SCORE,
    MEMORISATION,
    MEMORISATION_HELDOUT,
    VAL_LOSS,
    ProbeSettings,
    band_label,
    icl_bands,
)
from analysis.probes.probe_table import probe_values
from analysis.reporting.document import figure
from analysis.trained_runs import RunInfo, size_label


def _fmt(value: float, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _last(table: pd.DataFrame, probe: str, key: str, run: str) -> float:
    s = results.series(table, probe, key, run)
    return float(s.value.iloc[-1]) if len(s) else math.nan


def _summary_table(table: pd.DataFrame, runs: list[RunInfo]) -> list[str]:
    lines = [
        "| run | size | checkpoints | final val loss | ICL score | memorised (seen) | memorised (held-out) "
        "| uniformity chi2 (dof), p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        test = results.uniformity(table, run.name)
        untested = test is None or math.isnan(test.statistic)
        uniform = "n/a" if untested else f"{test.statistic:.1f} ({test.dof}), {test.p_value:.2g}"
        steps = table[table.run == run.name].step.nunique()
        lines.append(
            f"| {run.name} | {size_label(run)} | {steps} | {_fmt(_last(table, VAL_LOSS, 'mean', run.name))} "
            f"| {_fmt(_last(table, ICL_SCORE, 'late_minus_early', run.name))} "
            f"| {_fmt(_last(table, MEMORISATION, 'memorised_fraction', run.name), '.2%')} "
            f"of {_fmt(_last(table, MEMORISATION, 'n', run.name), '.0f')} "
            f"| {_fmt(_last(table, MEMORISATION_HELDOUT, 'memorised_fraction', run.name), '.2%')} | {uniform} |"
        )
    return lines


def _prediction_lines(table: pd.DataFrame, runs: list[RunInfo]) -> list[str]:
    lines = ["| predictor | of | precision | recall |", "|---|---|---|---|"]
    for run in runs:
        pr = results.checkpoint_prediction(table, run.name)
        earlier = pr[pr.step < pr.step.max()].dropna(subset=["precision"]) if len(pr) else pr
        for row in earlier.tail(3).itertuples():  # the latest earlier checkpoints: the informative ones
            lines.append(
                f"| {run.name} step {row.step} | {run.name} final | {_fmt(row.precision)} | {_fmt(row.recall)} |"
            )
    for p in results.size_prediction(table, runs):
        lines.append(f"| {p.run} final | {p.target} final | {_fmt(p.precision)} | {_fmt(p.recall)} |")
    return lines


def _forgetting_lines(table: pd.DataFrame, runs: list[RunInfo]) -> list[str]:
    lines = ["| run | batch of step | loss right after | lowest later (step) | final |", "|---|---|---|---|---|"]
    rows = probe_values(table, FORGETTING)
    for run in runs:
        for key, batch in sorted(rows[rows.run == run.name].groupby("key"), key=lambda group: int(group[0])):
            after = batch[batch.step >= int(key)]
            if after.empty:
                continue
            later = after.iloc[1:] if len(after) > 1 else after
            low = later.loc[later.value.idxmin()]
            lines.append(
                f"| {run.name} | {key} | {after.value.iloc[0]:.3f} | {low.value:.3f} ({low.step}) | {after.value.iloc[-1]:.3f} |"
            )
    return lines


def section(table: pd.DataFrame, runs: list[RunInfo], settings: ProbeSettings, figures: list[tuple[str, str]]) -> str:
    """Markdown of the probe section: settings, per-run summary, memorisation prediction, forgetting, figures."""
    runs = sorted(runs, key=lambda r: r.params)
    early, late = (band_label(band) for band in icl_bands(runs[0].seq_len))
    auto = ", ".join(f"{f:.0%}" for f in FORGET_FRACTIONS)
    forget = ", ".join(map(str, settings.forget_steps)) or f"auto (the saved steps nearest {auto} of training)"
    parts = [
        "## Checkpoint probes",
        "",
        f"Written by `python -m analysis.probe`; rows in `probes.parquet`. Held-out set: {settings.eval_tokens:,} tokens. "
        f"ICL score = mean loss at context lengths {late} minus at {early} tokens (negative: context helps). "
        f"Memorisation: {settings.memo_samples} training positions sampled uniformly over training order, scored once "
        f"seen; prompt {settings.k} tokens, greedy {settings.continuation} tokens, memorised = all matched; held-out "
        f"sequences give the chance level. Uniformity: chi-square homogeneity test of memorised counts in equal-sample "
        f"bins of training order (p small = clustered). Forgetting: loss at every checkpoint on the batch of the "
        f"update that produced checkpoint steps {forget}.",
        "",
        *_summary_table(table, runs),
        "",
        "Memorised sets as predictors (precision = share of the predictor's set also memorised by the target; "
        "recall = share of the target's set the predictor found):",
        "",
        *_prediction_lines(table, runs),
        "",
        "Forgetting (loss in nats/token on the batch trained at that step):",
        "",
        *_forgetting_lines(table, runs),
        "",
        *[figure(name, caption) for name, caption in figures],
    ]
    return "\n".join(parts)
