"""Compare variants across scale: effective compute multipliers, exponent differences and crossovers, with intervals.

    python -m analysis.compare results/pre_ln results/post_ln           # two sweeps, the first is the reference
    python -m analysis.compare results/norm_position                     # one sweep that swept a switch
    python -m analysis.compare results/norm_position --by model.norm_position --reference pre --format json
    python -m analysis.compare runs.csv --n-col N --d-col D --loss-col loss --by variant

All runs are fitted jointly, L_v(N, D) = E + A_v/N^alpha_v + B_v/D^beta_v with E shared (--free-e frees it);
each variant is then set against the reference (the first sweep, or --reference): the factor of compute the
reference needs to reach its loss at each budget trained and at --budgets, the difference of the frontier
exponents, and the compute where the frontiers cross, each with a bootstrap interval that resamples runs (and
seeds). Bad input (runs on different corpora, tokenizers or evaluation sets, a variant at fewer than two budgets,
a folder without completed runs) is one line on stderr and exit status 2.
"""

import argparse
import json
import sys
from pathlib import Path

from analysis.command import finite_or_none, run
from analysis.failures import FitError, InputError
from analysis.fit_input import Columns
from analysis.fits.variant_comparison import CompareConfig, Comparison, compare
from analysis.fitting import add_bootstrap_options, add_budgets_option, input_parser
from analysis.reporting.compare_section import crossover_text, exponent_text, multiplier_text, section, verdict
from analysis.reporting.document import write_section
from analysis.reporting.figure_style import flops_text
from analysis.variants import Variants, load_variants, sweep_table, variant_column
from scaling import contract
from scaling.runtime import initialize


def parser() -> argparse.ArgumentParser:
    parser = input_parser("python -m analysis.compare", __doc__.split("\n")[0], several=True)
    parser.add_argument("--by", help="column (or swept key, e.g. model.norm_position) whose values are the variants")
    parser.add_argument("--reference", help="the variant the others are set against (default: the first)")
    parser.add_argument("--free-e", action="store_true", help="fit one irreducible loss E per variant, not one shared")
    add_bootstrap_options(parser)
    add_budgets_option(parser)
    parser.add_argument("--format", choices=["text", "json"], default="text")
    return parser


def read_and_compare(args: argparse.Namespace) -> tuple[Variants, Comparison]:
    """Read the variants named on the command line and compare them (InputError on bad input)."""
    columns = Columns(n=args.n_col, d=args.d_col, flops=args.flops_col, loss=args.loss_col, budget=args.budget_col)
    variants = load_variants(args.paths, args.by, args.reference, columns, args.params, args.where)
    config = CompareConfig(args.n_boot, args.seed, args.level, not args.free_e, args.budgets)
    try:
        return variants, compare(variants.runs, variants.labels, config)
    except FitError as error:
        raise InputError(f"{', '.join(map(str, variants.sources))}: {error}") from error


def to_json(variants: Variants, comparison: Comparison) -> dict:
    """One JSON-ready object: the frontiers, and per variant its multiplier per budget, exponent difference and
    crossover, each as point and interval (null where infinite: a multiplier the reference cannot reach, or
    frontiers that do not cross in the range searched)."""
    config = comparison.config
    out = {
        "sources": [str(source) for source in variants.sources],
        "reference": comparison.labels[0],
        "labels": list(comparison.labels),
        "shared_e": config.shared_e,
        "level": config.level,
        "n_boot": config.n_boot,
        "n_runs": len(comparison.runs),
        "budgets": comparison.budgets.tolist(),
        "notes": list(variants.notes),
        "warnings": list(comparison.warnings),
        "off_grid": list(comparison.off_grid),
        "frontiers": {
            label: {key: float(value) for key, value in comparison.frontiers[index].items()}
            for index, label in enumerate(comparison.labels)
        },
        "variants": {},
    }
    for gap in comparison.gaps:
        out["variants"][gap.label] = {
            "multiplier": gap.multiplier.astype({"fitted": bool}).to_dict(orient="records"),
            "exponent_difference": gap.exponent_difference.as_dict(),
            "crossover_log10_flops": gap.crossover_log10.as_dict(),
            "verdict": verdict(comparison, gap),
        }
    return finite_or_none(out)


def to_text(variants: Variants, comparison: Comparison) -> str:
    """A readable summary: what was compared, each variant's numbers with intervals, the verdict, warnings."""
    labels, config = comparison.labels, comparison.config
    lines = [
        f"{', '.join(map(str, variants.sources))}: {len(comparison.runs)} runs, variants {', '.join(labels)} "
        f"(reference {labels[0]}), E {'shared' if config.shared_e else 'free per variant'}, "
        f"{config.level:.0%} intervals from {config.n_boot} refits resampling runs"
    ]
    lines += [f"  note: {note}" for note in variants.notes]
    for gap in comparison.gaps:
        lines += ["", f"{gap.label} against {labels[0]}: compute multiplier (> 1: {gap.label} is better)"]
        for row in gap.multiplier.itertuples():
            kind = "trained" if row.fitted else "extrapolated"
            lines.append(
                f"  C = {flops_text(row.C):>8} FLOPs ({kind:>12}): {multiplier_text(row.low, row.high, row.point)}"
            )
        lines.append(
            f"  exponent difference gamma_{gap.label} - gamma_{labels[0]}: {exponent_text(gap.exponent_difference)}"
        )
        lines.append(f"  crossover: {crossover_text(gap)}")
        lines.append(f"  {verdict(comparison, gap)}")
    lines += [f"warning: {warning}" for warning in comparison.warnings]
    return "\n".join(lines) + "\n"


def report_variants(args: argparse.Namespace, folder: Path) -> bool:
    """For a sweep whose runs differ in a swept switch: its comparison section in `folder`'s report (True),
    instead of one scaling fit of runs that follow different laws."""
    table = sweep_table(Path(args.path))
    by = variant_column(table) if table is not None else None
    if by is None:
        return False
    options = {"paths": [args.path], "by": by, "reference": None, "free_e": False}
    variants, comparison = read_and_compare(argparse.Namespace(**vars(args), **options))
    (folder / contract.FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    body = section(comparison, folder / contract.FIGURES_DIR, variants.notes)
    write_section(folder / contract.REPORT_FILE, "compare", body)
    return True


def main_compare(args: argparse.Namespace) -> int:
    variants, comparison = read_and_compare(args)
    print(
        json.dumps(to_json(variants, comparison), indent=2) if args.format == "json" else to_text(variants, comparison),
        end="",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    initialize(compilation_cache=False)
    return run(main_compare, parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
