"""Fit Chinchilla approaches 1-3 with bootstrap intervals and extrapolate the compute-optimal frontier.

    python -m analysis.fit results/NAME                 # readable summary
    python -m analysis.fit runs.csv --n-col "Model Size" --flops-col "Training FLOP" --format json

Each approach runs when the data support it; one that cannot says why in one line and the others go on.
The CLI exits 2 with a one-line error when the input cannot be read or nothing can be fitted.
"""

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace

import numpy as np

from analysis.approach1 import DEFAULT_ENVELOPE_START, fit_approach1
from analysis.approach2 import fit_approach2
from analysis.approach3 import Init, fit_approach3
from analysis.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, interval_warnings
from analysis.errors import FitError, InputError
from analysis.extrapolate import default_budgets, frontier_table
from analysis.result import ApproachResult
from analysis.tables import Columns, RunData, load


@dataclass(frozen=True)
class FitConfig:
    """How to fit: bootstrap size and seed, interval level, extrapolation budgets, approach-3 starts, envelope start."""

    n_boot: int = DEFAULT_N_BOOT
    seed: int = 0
    level: float = DEFAULT_LEVEL
    budgets: tuple[float, ...] = ()
    init: Init = "varpro"
    envelope_start: float = DEFAULT_ENVELOPE_START


@dataclass(frozen=True)
class Analysis:
    """Every approach that could be fitted, and a one-line reason for each that could not."""

    data: RunData
    results: dict[str, ApproachResult]
    skipped: dict[str, str]
    config: FitConfig

    @property
    def budgets(self) -> np.ndarray:
        return np.array(self.config.budgets) if self.config.budgets else default_budgets(self.data.runs["C"].max())


def analyse(data: RunData, config: FitConfig) -> Analysis:
    """Fit each approach independently; a FitError in one is recorded and does not stop the others."""
    fits = {
        "approach1": lambda: _approach1(data, config),
        "approach2": lambda: fit_approach2(data.runs, config.n_boot, config.seed),
        "approach3": lambda: fit_approach3(data.runs, config.n_boot, config.seed, config.init),
    }
    results, skipped = {}, {}
    for name, fit in fits.items():
        try:
            result = fit()
        except FitError as error:
            skipped[name] = str(error)
            continue
        checks = interval_warnings(name.replace("approach", "approach "), result.estimate, result.samples, config.level)
        results[name] = replace(result, warnings=result.warnings + tuple(checks))
    return Analysis(data, results, skipped, config)


def _approach1(data: RunData, config: FitConfig) -> ApproachResult:
    """Approach 1 on the runs that have curves, or on final points when no run has one."""
    if data.curves is None:
        return fit_approach1(data.runs, None, config.n_boot, config.seed, config.envelope_start)
    runs = data.runs[data.runs["run"].isin(data.curves["run"])].reset_index(drop=True)
    return fit_approach1(runs, data.curves, config.n_boot, config.seed, config.envelope_start)


def to_json(analysis: Analysis) -> dict:
    """One JSON-ready object: approach1..3 (those fitted), each with estimates, intervals and extrapolation."""
    level = analysis.config.level
    out = {
        "source": str(analysis.data.source),
        "params": analysis.data.convention,
        "n_runs": len(analysis.data.runs),
        "level": level,
        "n_boot": analysis.config.n_boot,
        "notes": list(analysis.data.notes),
        "skipped": analysis.skipped,
    }
    for name, result in analysis.results.items():
        extrapolation = frontier_table(result, analysis.budgets, level)
        out[name] = {
            **result.estimate,
            "ci": {key: list(result.interval(key, level)) for key in result.estimate},
            "n_boot_failed": result.n_failed,
            "warnings": list(result.warnings),
            "extrapolation": extrapolation.to_dict(orient="records"),
        }
    return _finite_or_none(out)


def _finite_or_none(value):
    """NaN and infinity are not JSON: write them as null."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_text(analysis: Analysis) -> str:
    """A readable summary: the data, each approach's estimates with intervals, extrapolations, warnings."""
    data, level = analysis.data, analysis.config.level
    lines = [f"{data.source}: {len(data.runs)} runs, N = {data.convention}"]
    lines += [f"  note: {note}" for note in data.notes]
    for result in analysis.results.values():
        lines += ["", result.title]
        for key, value in result.estimate.items():
            low, high = result.interval(key, level)
            lines.append(f"  {key:>14} = {value:<12.5g} {level:.0%} interval [{low:.5g}, {high:.5g}]")
        table = frontier_table(result, analysis.budgets, level)
        lines.append(f"  {'C (FLOPs)':>10}  {'N_opt':>28}  {'D_opt':>28}  {'loss':>22}  {'D/N':>22}")
        for row in table.itertuples():
            cells = [_with_interval(row, name) for name in ("N_opt", "D_opt", "loss", "tokens_per_param")]
            lines.append(f"  {row.C:>10.3g}  {cells[0]:>28}  {cells[1]:>28}  {cells[2]:>22}  {cells[3]:>22}")
        lines += [f"  warning: {warning}" for warning in result.warnings]
    lines += [""] + [f"skipped {name}: {reason}" for name, reason in analysis.skipped.items()]
    return "\n".join(lines).rstrip() + "\n"


def _with_interval(row, name: str) -> str:
    return f"{getattr(row, name):.3g} [{getattr(row, name + '_low'):.3g}, {getattr(row, name + '_high'):.3g}]"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (exit 2), like every other input error here."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Input and fit options shared by analysis.fit and analysis.report."""
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("path", help="sweep folder (results/NAME) or a CSV/parquet table of runs")
    parser.add_argument("--n-col", default="N", help="outside tables: column of parameters N")
    parser.add_argument("--d-col", default="D", help="outside tables: column of training tokens D")
    parser.add_argument("--flops-col", help="outside tables: column of training FLOPs C (then D = C / 6N)")
    parser.add_argument("--loss-col", default="loss", help="outside tables: column of final loss")
    parser.add_argument("--budget-col", help="outside tables: column of IsoFLOP budgets (else grouped by C)")
    parser.add_argument("--where", help='pandas query to select rows, e.g. "loss < 3.4"')
    parser.add_argument("--params", choices=["total", "nonembedding"], default="total",
                        help="sweep folders: count N as total (Chinchilla) or non-embedding parameters")
    parser.add_argument("--budgets", type=_float_list, default=(), help="extrapolate to these FLOPs, e.g. 1e21,1e23")
    parser.add_argument("--n-boot", type=_positive_int, default=DEFAULT_N_BOOT, help="bootstrap refits per approach")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--level", type=_fraction, default=DEFAULT_LEVEL, help="interval level (0.8: 10th-90th)")
    parser.add_argument("--init", choices=["varpro", "grid"], default="varpro",
                        help="approach-3 starts: variable projection, or Hoffmann et al.'s 4,500-point grid (slow)")
    parser.add_argument("--envelope-start", type=_non_negative, default=DEFAULT_ENVELOPE_START,
                        help="approach 1: use the envelope from this fraction of the smallest run's final compute "
                             "(0: from the first evaluation, plateau included)")
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _number(text: str) -> float:
    """The number written in text, or NaN so that the caller's range check rejects it in its own words."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 such as 1 or 0.5, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 1 such as 0.8, got {text!r}")
    return value


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(item) for item in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive comma-separated FLOPs like 1e21,1e23, got {text!r}")
    return values


def read_and_analyse(args: argparse.Namespace) -> Analysis:
    """Read the input named on the command line and fit what can be fitted (InputError on bad input)."""
    columns = Columns(n=args.n_col, d=args.d_col, flops=args.flops_col, loss=args.loss_col, budget=args.budget_col)
    data = load(args.path, columns, args.params, args.where)
    config = FitConfig(args.n_boot, args.seed, args.level, args.budgets, args.init, args.envelope_start)
    return analyse(data, config)


def load_and_analyse(args: argparse.Namespace) -> Analysis:
    """As `read_and_analyse`, and InputError if nothing could be fitted."""
    analysis = read_and_analyse(args)
    if not analysis.results:
        raise InputError("nothing could be fitted: " + "; ".join(analysis.skipped.values()))
    return analysis


def main(argv: list[str] | None = None) -> int:
    parser = make_parser("python -m analysis.fit", __doc__.split("\n")[0])
    parser.add_argument("--format", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    try:
        analysis = load_and_analyse(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(to_json(analysis), indent=2) if args.format == "json" else to_text(analysis), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
