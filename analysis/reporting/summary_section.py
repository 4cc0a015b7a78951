"""The report's opening: the answer first, then when not to trust it.

A reader who stops after this section knows the exponents with their intervals, the law approach 3
fitted and why, the held-out prediction against its outcome (when the sweep trained one), and every flag:
a parameter whose interval spans over a decade (the runs do not identify it), a prediction that moves
further when any single run is left out than its interval allows (the interval does not know how fragile
it is), a held-out run outside its interval, and the law's rollout error.
"""

import numpy as np
import pandas as pd

from analysis.fits.analyse import Analysis
from analysis.fits.approach3 import law_by_name
from analysis.fits.extrapolate import frontier_table
from analysis.fits.prediction import leave_one_out
from analysis.fits.result import ApproachResult
from analysis.fits.rollout import CLOSE_SCORES

DECADE = 10.0


def unidentified(result: ApproachResult, level: float) -> list[str]:
    """Parameters whose interval spans over a decade, or holds zero for a parameter whose estimate is not zero:
    the exponents a and b of every approach, and approach 3's law's own parameters (the power laws'
    intercepts, at C = 1 FLOP, are not meant to be read)."""
    keys = ("a", "b") + (result.details.law.theta_keys if result.name == "approach3" else ())
    flags = []
    for key in keys:
        value = result.estimate[key]
        low, high = result.interval(key, level)
        if not (np.isfinite(low) and np.isfinite(high)) or value == 0:
            continue
        straddles = low <= 0 <= high
        wide = (low > 0 and high > DECADE * low) or (high < 0 and low < DECADE * high)
        if straddles or wide:
            why = "holds zero" if straddles else f"spans {np.log10(high / low):.1f} decades"
            flags.append(
                f"{key} = {value:.4g} [{low:.4g}, {high:.4g}]: its interval {why}, so the runs do not identify it"
            )
    return flags


def exponent_lines(analysis: Analysis) -> list[str]:
    """N_opt ~ C^a from every approach that fitted, with intervals."""
    level = analysis.config.level
    lines = []
    for result in analysis.results.values():
        low, high = result.interval("a", level)
        lines.append(f"- {result.title}: a = {result.estimate['a']:.3f} [{low:.3f}, {high:.3f}]")
    return lines


def held_out_lines(table: pd.DataFrame | None, level: float) -> tuple[list[str], list[str]]:
    """The held-out prediction against its outcome, and the flags it raises."""
    if table is None:
        return [], []
    lines, flags = [], []
    for row in table.itertuples():
        lines.append(
            f"- Held-out run {row.run} (C = {row.C:.3g}): predicted {row.predicted:.4f} "
            f"[{row.low:.4f}, {row.high:.4f}], measured {row.observed:.4f} ({row.relative_error:+.2%}, "
            f"{'inside' if row.interval_held else 'outside'} its {level:.0%} interval)"
        )
        if not row.interval_held:
            flags.append(f"the held-out run {row.run} fell outside its {level:.0%} prediction interval")
        if row.loo_high - row.loo_low > row.high - row.low:
            flags.append(
                f"leaving out any one fitted run moves the prediction for {row.run} over [{row.loo_low:.4f}, "
                f"{row.loo_high:.4f}], wider than its interval: the interval understates how fragile it is"
            )
    return lines, flags


def extrapolation_flags(analysis: Analysis) -> tuple[list[str], list[str]]:
    """Approach 3's best loss at the furthest budget, and a flag when one run moves it beyond its interval."""
    result = analysis.results.get("approach3")
    if result is None:
        return [], []
    level, C = analysis.config.level, analysis.budgets[-1:]
    row = frontier_table(result, C, level).iloc[0]
    n_opt, d_opt, _ = result.frontier(result.estimate, C)
    target = pd.DataFrame({"N": n_opt, "D": d_opt, "loss": np.nan, "epochs": 1.0})
    loo = leave_one_out(analysis.data.runs, target, result.details.law.name, analysis.config.objective)[:, 0]
    lines = [
        f"- Best loss at C = {C[0]:.3g} FLOPs (approach 3, `{result.details.law.name}`): {row['loss']:.4f} "
        f"[{row['loss_low']:.4f}, {row['loss_high']:.4f}]"
    ]
    if analysis.frontier_law is not None:
        law = analysis.frontier_law
        low, high = np.nanpercentile(law.replicas(C)[:, 0], [50 * (1 - level), 100 - 50 * (1 - level)])
        lines.append(
            f"- Best loss there by the floor law E + k C^-g on approach 2's minima: "
            f"{law.predict(C)[0]:.4f} [{low:.4f}, {high:.4f}]"
        )
    flags = []
    if np.nanmax(loo) - np.nanmin(loo) > row["loss_high"] - row["loss_low"]:
        flags.append(
            f"leaving out any one run moves approach 3's best loss at C = {C[0]:.3g} over [{np.nanmin(loo):.4f}, "
            f"{np.nanmax(loo):.4f}], wider than its interval: the interval understates how fragile it is"
        )
    return lines, flags


def rollout_flags(analysis: Analysis) -> list[str]:
    """The fitted law's error one step ahead, as its rollout measured it."""
    rows = [row for row in analysis.choice.rows if row.predictor == analysis.choice.law and not row.note]
    if not rows:
        return [f"approach 3's law was not checked by a rollout: {analysis.choice.note}"]
    last = rows[-1]
    error = f"{last.mean_abs_error:.2%} on average"
    if last.has_seeds:
        error = (
            f"{last.mean_abs_point_error:.2%} on average over its {last.n_points} points' seed means "
            f"({last.mean_abs_error:.2%} over its {last.n_predicted} runs, which adds seed noise)"
        )
    flags = [
        f"rolled out, `{analysis.choice.law}` fitted on the first {last.fitted} budgets missed {last.target} by "
        f"{error} (the rollout table below has every predictor)"
    ]
    return flags + law_choice_flags(analysis.choice)


def law_choice_flags(choice) -> list[str]:
    """Flags on the law the rollout chose: another law scored about as well (the rollout, a few steps, does
    not tell them apart), and a chosen law whose form fixes the exponents (its interval for a is a point)."""
    flags = []
    scores = choice.scores
    if choice.law in scores and len(scores) > 1:
        close = [
            f"`{n}` ({v:.2%})"
            for n, v in sorted(scores.items(), key=lambda kv: kv[1])
            if n != choice.law and v <= CLOSE_SCORES * scores[choice.law]
        ]
        if close:
            flags.append(
                f"the rollout scored {', '.join(close)} within {CLOSE_SCORES - 1:.0%} of `{choice.law}` "
                f"({scores[choice.law]:.2%}): these runs do not tell the laws apart, so approach 3's exponents "
                "depend on a choice the data barely make; compare them under `--law NAME`"
            )
    fixed = law_by_name(choice.law).fixed_allocation
    if fixed:
        values = ", ".join(f"{k} = {v:g}" for k, v in fixed.items())
        flags.append(
            f"`{choice.law}` fixes {values} by its form, so approach 3's interval for them is a point, not a "
            "measurement: read the exponents from approach 2, or from `--law chinchilla`"
        )
    return flags


def section(analysis: Analysis, held: pd.DataFrame | None) -> str:
    """Markdown for the summary section (`held`: the prediction section's table, or None)."""
    level = analysis.config.level
    lines = [f"# Summary: {analysis.data.source}", ""]
    if not analysis.results:
        return "\n".join(lines + ["Nothing could be fitted; the sections below say why."])
    lines += [f"Compute-optimal allocation, N_opt ∝ C^a ({level:.0%} intervals):", ""] + exponent_lines(analysis)
    if "approach3" in analysis.results:
        lines += ["", f"Approach 3 fitted `{analysis.choice.law}`: {analysis.choice.note}."]
    held_lines, held_flags = held_out_lines(held, level)
    extrapolated, extrapolation_flag = extrapolation_flags(analysis)
    lines += [""] + held_lines + extrapolated
    flags = held_flags + extrapolation_flag
    for result in analysis.results.values():
        flags += [f"{result.title}: {flag}" for flag in unidentified(result, level)]
    flags += rollout_flags(analysis) if "approach3" in analysis.results else []
    warnings = sum(len(result.warnings) for result in analysis.results.values())
    if warnings:
        flags.append(f"{warnings} warnings from the fits (under Warnings below)")
    lines += ["", "**When not to trust these numbers:**", ""] + [f"- {flag}" for flag in flags or ["no flags"]]
    return "\n".join(lines) + "\n"
