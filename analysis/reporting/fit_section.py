"""The fit section of report.md: exponents beside the published ones, the L(N, D) fit, conventions,
extrapolations, figures, warnings, and what could not be fitted."""

from analysis.fits.analyse import Analysis
from analysis.fits.approach3 import with_allocation
from analysis.fits.extrapolate import frontier_table
from analysis.fits.laws import DEFAULT_LAW
from analysis.fits.profiles import LOCAL_SIZES
from analysis.fits.reference import BESIROGLU_2024, HOFFMANN_2022, HOFFMANN_TABLE2
from analysis.fits.result import ApproachResult
from analysis.reporting import rollout_section
from analysis.reporting.document import figure

BOOTSTRAP_NOTES = {
    "residuals": "keeps every run and redraws its log loss as the fit plus a kernel-smoothed draw from the fit's "
    "residuals (calibrated when the law holds; `--bootstrap runs` resamples runs instead, safer when "
    "the law may misfit).",
    "runs": "resamples runs (`--bootstrap runs`): wider than the default residual bootstrap when the law holds, "
    "safer when it may not.",
}
PROFILE_NOTES = {
    "local": f"a parabola in log N through the {LOCAL_SIZES} sizes nearest each budget's lowest loss, so the window "
    "follows the minimum",
    "parabola": "a parabola in log N through all of each budget's sizes (Hoffmann et al. 2022)",
    "akima": "Akima interpolation of log loss in log N (Porian et al. 2024; the default: the least biased "
    "estimator we measured on profiles whose shape is not a parabola's, benchmarks/RESULTS.md)",
}


def _interval(result: ApproachResult, key: str, level: float) -> str:
    low, high = result.interval(key, level)
    return f"{result.estimate[key]:.4g} [{low:.4g}, {high:.4g}]"


def allocation_section(analysis: Analysis) -> list[str]:
    """Exponents a and b of every approach, beside Hoffmann et al.'s Table 2."""
    level = analysis.config.level
    lines = [
        "## Compute-optimal allocation: N_opt ∝ C^a, D_opt ∝ C^b",
        "",
        "| approach | a | b | Hoffmann et al. 2022: a | b | bootstrap refits failed |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in analysis.results.items():
        a, a_ci, b, b_ci = HOFFMANN_TABLE2[name]
        published = f"{a} [{a_ci[0]}, {a_ci[1]}] | {b} [{b_ci[0]}, {b_ci[1]}]"
        lines.append(
            f"| {result.title} | {_interval(result, 'a', level)} | {_interval(result, 'b', level)} | "
            f"{published} | {result.n_failed} of {result.n_boot} |"
        )
    return (
        lines
        + [
            "",
            f"Intervals: {level:.0%} bootstrap percentile intervals over {analysis.config.n_boot} refits; "
            "failed refits are counted above and left out. Approach 1 resamples runs. Approach 2 keeps "
            "every run and redraws its loss from a curve more flexible than the profile estimator's (a "
            "cubic in log N through the sizes near each budget's lowest loss), times (1 + noise drawn from "
            "that curve's residuals, scaled to each budget), then finds the minimum exactly as on the data, so "
            "the estimator's misfit shows in the intervals; the replicates are centred on the estimate. "
            "Approach 3 " + BOOTSTRAP_NOTES[analysis.config.bootstrap] + " Hoffmann's are their published 10th-90th "
            "percentiles.",
        ]
        + profile_note(analysis)
        + envelope_note(analysis)
    )


def profile_note(analysis: Analysis) -> list[str]:
    """Which IsoFLOP profile estimator approach 2 used."""
    if "approach2" not in analysis.results:
        return []
    details = analysis.results["approach2"].details
    return [
        "",
        f"Approach 2 finds each budget's minimum with `--profile {details.kind}`: {PROFILE_NOTES[details.kind]}.",
    ]


def envelope_note(analysis: Analysis) -> list[str]:
    """Where approach 1's envelope starts, and why it does not start at the first evaluation."""
    if "approach1" not in analysis.results:
        return []
    start = analysis.results["approach1"].details.start
    return [
        "",
        f"Approach 1 uses the envelope from C = {start:.3g} FLOPs, {analysis.config.envelope_start:g} x the "
        "smallest run's final compute (--envelope-start). Before that no run has finished, and every run "
        "starts on the same plateau near ln(vocabulary size), where initialisation and cost per token pick "
        "the winner, not compute-optimality.",
    ]


def approach3_section(analysis: Analysis) -> list[str]:
    """The fitted law's parameters; for the Chinchilla law, beside the Hoffmann and Epoch estimates."""
    if "approach3" not in analysis.results:
        return []
    result, level = analysis.results["approach3"], analysis.config.level
    law = result.details.law
    lines = [f"## Approach 3: L(N, D), law `{law.name}`: {law.formula} ({law.citation})", ""]
    if law.name == DEFAULT_LAW:
        published = (with_allocation(law, HOFFMANN_2022.as_dict()), with_allocation(law, BESIROGLU_2024.as_dict()))
        lines += [
            f"| parameter | estimate [{level:.0%} interval] | Hoffmann et al. 2022 | Besiroglu et al. 2024 |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {key} | {_interval(result, key, level)} | {published[0][key]:.4g} | {published[1][key]:.4g} |"
            for key in result.estimate
        ]
    else:
        lines += [f"| parameter | estimate [{level:.0%} interval] |", "|---|---|"]
        lines += [f"| {key} | {_interval(result, key, level)} |" for key in result.estimate]
    starts = "variable-projection starts" if analysis.config.init == "varpro" else "Hoffmann et al.'s grid of starts"
    note = f" The frontier: {law.frontier_note}." if law.frontier_note else ""
    delta = result.details.delta
    loss = (
        "least squares"
        if not delta < float("inf")
        else f"Huber loss (delta {delta:.3g}, `--loss {analysis.config.objective.kind}`)"
    )
    return lines + [
        "",
        f"G is the coefficient in N_opt = G (C/6)^a. Fit: {loss} on log L, summed over runs (Besiroglu et al. "
        f"2024), from {starts}; bootstrap refits start from every distinct optimum those starts reached, and "
        "each runs to convergence." + note,
    ]


def frontier_law_section(analysis: Analysis) -> list[str]:
    """The floor law through approach 2's minima: its parameters and its best loss at the requested budgets."""
    law, level = analysis.frontier_law, analysis.config.level
    if law is None:
        return []
    lines = [
        "## Frontier with a floor: L*(C) = E + k (C / 1e18)^-g through approach 2's minima",
        "",
        "Approach 2's own loss law is a pure power law, which falls without limit; this one levels off at E. "
        "It predicts the best loss at a budget only.",
        "",
        f"| parameter | estimate [{level:.0%} interval] |",
        "|---|---|",
    ]
    for key, value in law.estimate.items():
        low, high = law.interval(key, level)
        lines.append(f"| {key} | {value:.4g} [{low:.4g}, {high:.4g}] |")
    return lines


def convention_section(analysis: Analysis, other: Analysis | None) -> list[str]:
    """Exponent a under total and non-embedding parameter counts (Porian et al. 2024: the choice moves it)."""
    if other is None:
        return []
    level = analysis.config.level
    pair = {analysis.data.convention: analysis, other.data.convention: other}
    lines = [
        "## Parameter convention: total against non-embedding N",
        "",
        "Porian et al. (2024) showed that counting N with or without embeddings alone shifts the exponent.",
        "",
        "| approach | a, N = total | a, N = non-embedding |",
        "|---|---|---|",
    ]
    for name, result in analysis.results.items():
        cells = [
            _interval(pair[c].results[name], "a", level) if name in pair[c].results else "not fitted"
            for c in ("total", "nonembedding")
        ]
        lines.append(f"| {result.title} | {cells[0]} | {cells[1]} |")
    return lines


def extrapolation_section(analysis: Analysis) -> list[str]:
    """N_opt, D_opt, loss and D/N at the requested budgets, per approach."""
    level = analysis.config.level
    lines = [
        "## Extrapolation",
        "",
        f"{level:.0%} intervals. Approaches 1 and 2 predict loss with a pure power law "
        "fitted to the envelope or minima (no irreducible term), so far beyond the data it is optimistic.",
    ]
    for result in analysis.results.values():
        table = frontier_table(result, analysis.budgets, level)
        lines += [
            "",
            f"**{result.title}**",
            "",
            "| C (FLOPs) | N_opt | D_opt | loss | tokens per parameter |",
            "|---|---|---|---|---|",
        ]
        for row in table.to_dict(orient="records"):
            cells = [
                f"{row[q]:.3g} [{row[q + '_low']:.3g}, {row[q + '_high']:.3g}]"
                for q in ("N_opt", "D_opt", "loss", "tokens_per_param")
            ]
            lines.append(f"| {row['C']:.3g} | " + " | ".join(cells) + " |")
    return lines


def render(analysis: Analysis, other: Analysis | None, figures: list[tuple[str, str]]) -> str:
    """The fit section of report.md (its markers are added by `document.write_section`)."""
    data = analysis.data
    n_meaning = {"total": "total parameters", "nonembedding": "non-embedding parameters"}.get(
        data.convention, data.convention
    )
    lines = [
        f"# Scaling-law fit: {data.source}",
        "",
        f"{len(data.runs)} runs; N = **{n_meaning}**; D = training tokens; C = 6 N D.",
        "",
    ]
    lines += [f"- {note}" for note in data.notes]
    if analysis.results:
        lines += [""] + allocation_section(analysis) + [""] + approach3_section(analysis)
        lines += [""] + frontier_law_section(analysis)
        lines += [""] + convention_section(analysis, other) + [""] + extrapolation_section(analysis)
        lines += [""] + rollout_section.table(analysis)
    else:
        lines += ["", "**No approach could be fitted** (reasons under *Not fitted*); the figure shows the runs only."]
    lines += ["", "## Figures", ""]
    lines += [figure(name, caption) for name, caption in figures]
    warnings = [w for result in analysis.results.values() for w in result.warnings]
    lines += ["## Warnings", ""] + ([f"- {w}" for w in warnings] or ["- none"])
    notes = [note for result in analysis.results.values() for note in result.notes]
    if notes:
        lines += ["", "Notes (by design; no reason to doubt a number):", ""] + [f"- {note}" for note in notes]
    lines += ["", "## Not fitted", ""] + ([f"- {name}: {why}" for name, why in analysis.skipped.items()] or ["- none"])
    return "\n".join(lines) + "\n"
