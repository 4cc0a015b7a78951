"""The comparison section: each variant against the reference as an effective compute multiplier, an exponent
difference and a crossover, each with its interval, and one sentence a reader can act on."""

import math
from pathlib import Path

from analysis.fits.multiplier import CROSSOVER_RANGE
from analysis.fits.variant_comparison import Comparison, Estimate, Gap, interval
from analysis.reporting.compare_figures import FIGURE, plot
from analysis.reporting.document import figure
from analysis.reporting.figure_style import flops_text

FRONTIER_KEYS = ("E", "gamma", "K", "alpha", "beta")
# What to do, by where the variant stands at the largest budget trained and where the exponents point.
ACTIONS = {
    ("better", "flat"): "Adopt {var}.",
    ("better", "for"): "Adopt {var}: its lead grows with scale.",
    ("better", "against"): "{var} wins below the crossover; check {ref} with a run beyond it before scaling up.",
    ("worse", "flat"): "Keep {ref}.",
    ("worse", "against"): "Keep {ref}: the gap widens with scale.",
    (
        "worse",
        "for",
    ): "Keep {ref} at these scales; {var} may overtake it beyond the crossover: train a run there first.",
    (
        "even",
        "flat",
    ): "No measurable difference at the largest budget: choose on other grounds (speed, stability), or add seeds or budgets "
    "to narrow the interval.",
    ("even", "for"): "{var} gains with scale: test it at a larger budget before adopting it.",
    ("even", "against"): "{var} loses ground with scale: keep {ref}.",
}


def times(value: float) -> str:
    return "unreachable" if math.isinf(value) else f"{value:.3g}x"


def multiplier_text(low: float, high: float, point: float) -> str:
    return f"{times(point)} [{times(low)}, {times(high)}]"


def crossover_text(gap: Gap) -> str:
    """The crossover compute with its interval, or why there is none to state: exponents that do not differ
    measurably leave the frontiers parallel within the interval, so where they meet is not identified."""
    d, estimate = gap.exponent_difference, gap.crossover_log10
    if d.low <= 0 <= d.high:
        return "not identified (the exponents do not differ measurably)"

    def one(value: float) -> str:
        if math.isinf(value):
            return f"none between 1e{CROSSOVER_RANGE[0]:.0f} and 1e{CROSSOVER_RANGE[1]:.0f}"
        return flops_text(10.0**value)

    return f"{one(estimate.point)} FLOPs [{one(estimate.low)}, {one(estimate.high)}]"


def exponent_text(estimate: Estimate) -> str:
    return f"{estimate.point:+.3f} [{estimate.low:+.3f}, {estimate.high:+.3f}]"


def verdict(comparison: Comparison, gap: Gap) -> str:
    """What the numbers say and what to do, at the largest budget trained and along the trend."""
    ref, var = comparison.labels[0], gap.label
    row = gap.multiplier[gap.multiplier["fitted"]].iloc[-1]
    worth = multiplier_text(row["low"], row["high"], row["point"])
    now = "better" if row["low"] > 1 else "worse" if row["high"] < 1 else "even"
    d = gap.exponent_difference
    trend = "for" if d.low > 0 else "against" if d.high < 0 else "flat"
    at = f"At {flops_text(row['C'])} FLOPs"
    state = {
        "better": f"{at} {var} is worth {worth} the compute of {ref}",
        "worse": f"{at} {var} is worth only {worth} the compute of {ref}",
        "even": f"{at} the runs do not tell {var} from {ref} (multiplier {worth} includes 1x)",
    }[now]
    first, then = (ref, var) if trend == "for" else (var, ref)
    crossing = f"the frontiers cross at {crossover_text(gap)}: {first} is better below it, {then} above"
    slope = {
        "flat": f"the exponent difference {exponent_text(d)} includes 0, so nothing shows the gap changing with scale",
        "for": f"{var}'s exponent is larger by {exponent_text(d)}, so the multiplier grows with compute ({crossing})",
        "against": f"{var}'s exponent is smaller by {exponent_text(d)}, so the multiplier shrinks ({crossing})",
    }[trend]
    caveat = _smaller_budgets(gap, now, var)
    if off := [label for label in (ref, var) if label in comparison.off_grid]:
        caveat += (
            f" But the fitted optimum of {' and '.join(off)} lies outside the sizes trained (see the warnings): "
            "extend the grid before relying on this."
        )
    return f"{state}; {slope}. {ACTIONS[now, trend].format(ref=ref, var=var)}{caveat}"


def _smaller_budgets(gap: Gap, now: str, var: str) -> str:
    """Where the variant stands at a smaller budget trained when that differs from the largest."""
    trained = gap.multiplier[gap.multiplier["fitted"]].iloc[:-1]
    differs = trained[(trained["low"] > 1) | (trained["high"] < 1)] if now == "even" else trained.iloc[:0]
    if differs.empty:
        return ""
    cells = ", ".join(
        f"{multiplier_text(row.low, row.high, row.point)} at {flops_text(row.C)}" for row in differs.itertuples()
    )
    return f" At the smaller budgets trained {var} does differ (> 1x: {var} is better): {cells} FLOPs."


def _frontier_row(comparison: Comparison, index: int) -> str:
    cells = []
    for key in FRONTIER_KEYS:
        point = float(comparison.frontiers[index][key])
        low, high = interval(comparison.replicates[index][key], comparison.config.level)
        cells.append(f"{point:.3g} [{low:.3g}, {high:.3g}]")
    return f"| {comparison.labels[index]} | " + " | ".join(cells) + " |"


def _seeds(points) -> str:
    low, high = int(points.min()), int(points.max())
    return ("one seed" if high == 1 else f"{high} seeds") if low == high else f"{low}-{high} seeds"


def section(comparison: Comparison, figures: Path, notes: tuple[str, ...] = ()) -> str:
    """The markdown of the comparison section (its figure drawn into `figures`)."""
    config, labels = comparison.config, comparison.labels
    plot(comparison, figures / FIGURE)
    e_text = "one irreducible loss E shared by all variants" if config.shared_e else "a free E per variant"
    points = comparison.runs.groupby(["variant", "N", "D"]).size()
    lines = [
        "# Variants compared across scale",
        "",
        f"{len(comparison.runs)} runs of {len(labels)} variants ({', '.join(labels)}; reference: **{labels[0]}**) at "
        f"{len(comparison.budgets)} budgets from {flops_text(comparison.budgets.min())} to "
        f"{flops_text(comparison.budgets.max())} FLOPs, {_seeds(points)} per grid point. One fit of "
        f"L_v(N, D) = E + A_v/N^alpha_v + B_v/D^beta_v to every run, with {e_text} (OLMo's ladder, Bhagia et al. "
        "2024); each variant's compute-optimal frontier is L*(C) = E + K (C/6)^-gamma, gamma = alpha beta / (alpha + "
        "beta). The effective compute multiplier at C is the factor of compute the reference needs to reach the "
        "variant's loss (> 1: the variant is better); a difference in gamma makes it change with scale (Tay et al. "
        f"2022). Intervals: {config.level:.0%} bootstrap percentiles of {config.n_boot} refits to resampled runs "
        "(grid points within each variant's budget, seeds within each point).",
        "",
    ]
    lines += [f"**{gap.label} against {labels[0]}.** {verdict(comparison, gap)}\n" for gap in comparison.gaps]
    lines += ["| variant | C (FLOPs) | | compute multiplier | interval |", "|---|---|---|---|---|"]
    for gap in comparison.gaps:
        for row in gap.multiplier.itertuples():
            kind = "trained" if row.fitted else "extrapolated"
            cells = [gap.label, flops_text(row.C), kind, times(row.point), f"[{times(row.low)}, {times(row.high)}]"]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| variant | exponent difference gamma_v - gamma_ref | crossover compute |", "|---|---|---|"]
    lines += [
        f"| {gap.label} | {exponent_text(gap.exponent_difference)} | {crossover_text(gap)} |" for gap in comparison.gaps
    ]
    lines += ["", "| variant | " + " | ".join(FRONTIER_KEYS) + " |", "|---" * (len(FRONTIER_KEYS) + 1) + "|"]
    lines += [_frontier_row(comparison, index) for index in range(len(labels))]
    lines += [
        "",
        figure(
            FIGURE,
            f"left: each variant's runs (dots) and fitted loss frontier (line, {config.level:.0%} band); right: the "
            "effective compute multiplier of each variant against the reference (line and band; dots and their interval at the "
            "budgets trained), 1x meaning no difference; the dotted line is the largest budget trained",
        ),
    ]
    lines += [f"- warning: {warning}" for warning in comparison.warnings]
    lines += [f"- note: {note}" for note in notes]
    return "\n".join(lines).rstrip() + "\n"
