"""Write report.md and figures/ for a sweep folder or a table: `python -m analysis.report PATH`.

For a folder the report goes into it; for a CSV/parquet file into `<stem>_report/` beside it, so user
data is never overwritten. Our block sits between the fit markers, and anything else already in
report.md (for example a probe section) is kept.
"""

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from analysis.approach3 import with_allocation
from analysis.errors import InputError
from analysis.extrapolate import frontier_table
from analysis.fit import Analysis, load_and_analyse, make_parser, read_and_analyse
from analysis.plots import (
    plot_contours,
    plot_curves,
    plot_frontier,
    plot_isoflops,
    plot_observed_vs_predicted,
    plot_runs,
)
from analysis.reference import BESIROGLU_2024, HOFFMANN_2022, HOFFMANN_TABLE2
from analysis.result import ApproachResult

START, END = "<!-- fit:start -->", "<!-- fit:end -->"
REPORT_FILE = "report.md"
FIGURE_FILES = ("isoflop.png", "frontier.png", "contours.png", "observed_vs_predicted.png", "curves.png", "runs.png")


def report_folder(path: Path) -> Path:
    """Where the report goes: the sweep folder itself, or `<stem>_report/` next to a table file."""
    return path if path.is_dir() else path.parent / f"{path.stem}_report"


def make_figures(analysis: Analysis, figures: Path) -> list[tuple[str, str]]:
    """Draw every figure the fitted approaches support; returns (file name, caption) pairs."""
    figures.mkdir(parents=True, exist_ok=True)
    for name in FIGURE_FILES:  # a figure from an earlier report whose approach now fails would mislead
        (figures / name).unlink(missing_ok=True)
    results, runs, made = analysis.results, analysis.data.runs, []
    if "approach2" in results:
        plot_isoflops(results["approach2"].details, figures / "isoflop.png")
        made.append(("isoflop.png", "IsoFLOP profiles: loss against N per budget, fitted parabolas and their minima"))
    if not results:  # too few runs for any fit: still show what trained
        plot_runs(runs, analysis.data.curves, figures / "runs.png")
        return [("runs.png", "Loss against compute for every run, coloured by N; no approach could be fitted")]
    lowest = runs["C"].min()
    if "approach1" in results:  # reach down to the envelope points approach 1 was fitted to
        lowest = min(lowest, results["approach1"].details.envelope.flops.min())
    flops = np.geomspace(lowest, max(runs["C"].max(), analysis.budgets.max()), 120)
    plot_frontier(results, flops, runs["C"].max(), analysis.config.level, figures / "frontier.png")
    made.append(("frontier.png", "Compute-optimal N_opt(C) and D_opt(C) per approach, with the published lines"))
    if "approach3" in results:
        plot_contours(results["approach3"], runs, figures / "contours.png")
        made.append(("contours.png", "Loss contours of the fitted L(N, D), the efficient frontier, and the runs"))
        plot_observed_vs_predicted(results["approach3"], runs, figures / "observed_vs_predicted.png")
        made.append(("observed_vs_predicted.png", "Observed against predicted final loss (approach 3)"))
    if "approach1" in results:
        plot_curves(results["approach1"].details, figures / "curves.png")
        made.append(("curves.png", "Training curves (or final points) and the lower envelope (approach 1)"))
    return made


def _interval(result: ApproachResult, key: str, level: float) -> str:
    low, high = result.interval(key, level)
    return f"{result.estimate[key]:.4g} [{low:.4g}, {high:.4g}]"


def allocation_section(analysis: Analysis) -> list[str]:
    """Exponents a and b of every approach, beside Hoffmann et al.'s Table 2."""
    level = analysis.config.level
    lines = ["## Compute-optimal allocation: N_opt ∝ C^a, D_opt ∝ C^b", "",
             "| approach | a | b | Hoffmann et al. 2022: a | b | bootstrap refits failed |",
             "|---|---|---|---|---|---|"]
    for name, result in analysis.results.items():
        a, a_ci, b, b_ci = HOFFMANN_TABLE2[name]
        published = f"{a} [{a_ci[0]}, {a_ci[1]}] | {b} [{b_ci[0]}, {b_ci[1]}]"
        lines.append(f"| {result.title} | {_interval(result, 'a', level)} | {_interval(result, 'b', level)} | "
                     f"{published} | {result.n_failed} of {result.n_boot} |")
    return lines + ["", f"Intervals: {level:.0%} bootstrap percentile intervals over {analysis.config.n_boot} refits; "
                        "failed refits are counted above and left out. Approaches 1 and 3 resample runs. Approach 2 "
                        "keeps every run and redraws its loss as its budget's fitted parabola x (1 + a residual drawn "
                        "from the relative residuals of all budgets, pooled), because with 4-7 sizes per budget "
                        "resampled runs too often leave too few distinct sizes for a parabola. Hoffmann's are their "
                        "published 10th-90th percentiles."] + envelope_note(analysis)


def envelope_note(analysis: Analysis) -> list[str]:
    """Where approach 1's envelope starts, and why it does not start at the first evaluation."""
    if "approach1" not in analysis.results:
        return []
    start = analysis.results["approach1"].details.start
    return ["", f"Approach 1 uses the envelope from C = {start:.3g} FLOPs, {analysis.config.envelope_start:g} x the "
                "smallest run's final compute (--envelope-start). Before that no run has finished, and every run "
                "starts on the same plateau near ln(vocabulary size), where initialisation and cost per token pick "
                "the winner, not compute-optimality."]


def approach3_section(analysis: Analysis) -> list[str]:
    """The fitted L(N, D) parameters beside the Hoffmann and Epoch estimates."""
    if "approach3" not in analysis.results:
        return []
    result, level = analysis.results["approach3"], analysis.config.level
    published = with_allocation(HOFFMANN_2022.as_dict()), with_allocation(BESIROGLU_2024.as_dict())
    lines = ["## Approach 3: L(N, D) = E + A/N^alpha + B/D^beta", "",
             f"| parameter | estimate [{level:.0%} interval] | Hoffmann et al. 2022 | Besiroglu et al. 2024 |",
             "|---|---|---|---|"]
    for key in result.estimate:
        hoffmann, epoch = (f"{p[key]:.4g}" for p in published)
        lines.append(f"| {key} | {_interval(result, key, level)} | {hoffmann} | {epoch} |")
    starts = "variable-projection starts" if analysis.config.init == "varpro" else "Hoffmann et al.'s grid of starts"
    return lines + ["", "G is the coefficient in N_opt = G (C/6)^a. Fit: Huber loss (delta 1e-3) on log L, "
                        f"summed over runs (Besiroglu et al. 2024), from {starts}; bootstrap refits start from "
                        "variable projection."]


def convention_section(analysis: Analysis, other: Analysis | None) -> list[str]:
    """Exponent a under total and non-embedding parameter counts (Porian et al. 2024: the choice moves it)."""
    if other is None:
        return []
    level = analysis.config.level
    pair = {analysis.data.convention: analysis, other.data.convention: other}
    lines = ["## Parameter convention: total against non-embedding N", "",
             "Porian et al. (2024) showed that counting N with or without embeddings alone shifts the exponent.", "",
             "| approach | a, N = total | a, N = non-embedding |", "|---|---|---|"]
    for name, result in analysis.results.items():
        cells = [_interval(pair[c].results[name], "a", level) if name in pair[c].results else "not fitted"
                 for c in ("total", "nonembedding")]
        lines.append(f"| {result.title} | {cells[0]} | {cells[1]} |")
    return lines


def extrapolation_section(analysis: Analysis) -> list[str]:
    """N_opt, D_opt, loss and D/N at the requested budgets, per approach."""
    level = analysis.config.level
    lines = ["## Extrapolation", "", f"{level:.0%} intervals. Approaches 1 and 2 predict loss with a pure power law "
             "fitted to the envelope or minima (no irreducible term), so far beyond the data it is optimistic."]
    for result in analysis.results.values():
        table = frontier_table(result, analysis.budgets, level)
        lines += ["", f"**{result.title}**", "", "| C (FLOPs) | N_opt | D_opt | loss | tokens per parameter |",
                  "|---|---|---|---|---|"]
        for row in table.to_dict(orient="records"):
            cells = [f"{row[q]:.3g} [{row[q + '_low']:.3g}, {row[q + '_high']:.3g}]"
                     for q in ("N_opt", "D_opt", "loss", "tokens_per_param")]
            lines.append(f"| {row['C']:.3g} | " + " | ".join(cells) + " |")
    return lines


def render(analysis: Analysis, other: Analysis | None, figures: list[tuple[str, str]]) -> str:
    """The whole fit block of report.md, markers included."""
    data = analysis.data
    n_meaning = {"total": "total parameters", "nonembedding": "non-embedding parameters"}.get(data.convention,
                                                                                               data.convention)
    lines = [START, f"# Scaling-law fit: {data.source}", "",
             f"{len(data.runs)} runs; N = **{n_meaning}**; D = training tokens; C = 6 N D.", ""]
    lines += [f"- {note}" for note in data.notes]
    if analysis.results:
        lines += [""] + allocation_section(analysis) + [""] + approach3_section(analysis)
        lines += [""] + convention_section(analysis, other) + [""] + extrapolation_section(analysis)
    else:
        lines += ["", "**No approach could be fitted** (reasons under *Not fitted*); the figure shows the runs only."]
    lines += ["", "## Figures", ""]
    lines += [f"![{caption}](figures/{name})\n\n*{caption}.*\n" for name, caption in figures]
    warnings = [w for result in analysis.results.values() for w in result.warnings]
    lines += ["## Warnings", ""] + ([f"- {w}" for w in warnings] or ["- none"])
    lines += ["", "## Not fitted", ""] + ([f"- {name}: {why}" for name, why in analysis.skipped.items()] or ["- none"])
    return "\n".join(lines + [END]) + "\n"


def write_block(report: Path, block: str) -> None:
    """Put our block into report.md: replace the old one between the markers, keep everything else."""
    existing = report.read_text() if report.exists() else ""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END) + r"\n?", re.DOTALL)
    if pattern.search(existing):
        text = pattern.sub(lambda _: block, existing, count=1)
    else:
        text = block + ("\n" + existing if existing else "")
    report.write_text(text)


def other_convention(args: argparse.Namespace, analysis: Analysis) -> Analysis | None:
    """For our own runs, the same fit with the other parameter count (total <-> non-embedding)."""
    if not analysis.data.ours:
        return None
    other = "nonembedding" if args.params == "total" else "total"
    try:
        return load_and_analyse(argparse.Namespace(**{**vars(args), "params": other}))
    except InputError:
        return None


def main(argv: list[str] | None = None) -> int:
    args = make_parser("python -m analysis.report", __doc__.split("\n")[0]).parse_args(argv)
    try:
        analysis = read_and_analyse(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    folder = report_folder(Path(args.path))
    figures = make_figures(analysis, folder / "figures")
    write_block(folder / REPORT_FILE, render(analysis, other_convention(args, analysis), figures))
    if not analysis.results:  # the report is still written (the runs figure), but say plainly that nothing was fitted
        print("warning: nothing could be fitted: " + "; ".join(analysis.skipped.values()), file=sys.stderr)
    print(folder / REPORT_FILE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
