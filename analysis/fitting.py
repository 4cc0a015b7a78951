"""What the fitting commands (analysis.fit, analysis.report, analysis.backtest) share: the options that name
the input table, its columns and rows, the law and its bootstrap, and the read-then-fit pipeline."""

import argparse
from dataclasses import asdict

from analysis.command import OneLineParser, positive_int
from analysis.failures import FitError, InputError
from analysis.fit_input import Columns, load
from analysis.fits.analyse import Analysis, FitConfig, analyse
from analysis.fits.approach1 import DEFAULT_ENVELOPE_START
from analysis.fits.approach3 import BOOTSTRAPS
from analysis.fits.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT
from analysis.fits.fit_data import FitData
from analysis.fits.huber import DEFAULT_LOSS, HUBER_C, LOSSES, Objective
from analysis.fits.laws import LAWS
from analysis.fits.profiles import DEFAULT_PROFILE, PROFILES
from analysis.fits.rollout import AUTO, LawChoice, percent


def input_parser(prog: str, description: str, several: bool = False) -> argparse.ArgumentParser:
    """The input options every fitting command shares: which table (or tables), which columns, which rows."""
    parser = OneLineParser(prog=prog, description=description)
    if several:
        parser.add_argument("paths", nargs="+", help="sweep folders (results/NAME) or CSV/parquet tables of runs")
    else:
        parser.add_argument("path", help="sweep folder (results/NAME) or a CSV/parquet table of runs")
    parser.add_argument("--n-col", default="N", help="outside tables: column of parameters N")
    parser.add_argument("--d-col", default="D", help="outside tables: column of training tokens D")
    parser.add_argument("--flops-col", help="outside tables: column of training FLOPs C (then D = C / 6N)")
    parser.add_argument("--loss-col", default="loss", help="outside tables: column of final loss")
    parser.add_argument("--budget-col", help="outside tables: column of IsoFLOP budgets (else grouped by C)")
    parser.add_argument(
        "--epochs-col", help="outside tables: column of passes over the data (for --law data_constrained)"
    )
    parser.add_argument("--where", help='pandas query to select rows, e.g. "loss < 3.4"')
    parser.add_argument(
        "--params",
        choices=["total", "nonembedding"],
        default="total",
        help="sweep folders: count N as total (Chinchilla) or non-embedding parameters",
    )
    return parser


def add_law_options(parser: argparse.ArgumentParser) -> None:
    """Bootstrap and approach-3 options: the law, its starts, refits, seed and interval level."""
    parser.add_argument(
        "--law",
        choices=[AUTO, *LAWS],
        default=None,
        help="approach-3 law: auto (the law with the smallest rollout error: fitted on the budgets up to k, "
        "predicting budget k+1; the default, which falls back to chinchilla when there are under 4 budgets), "
        "chinchilla (Hoffmann 2022), tied (Gadre 2024), kaplan (Kaplan 2020), data_constrained "
        "(Muennighoff 2023, needs epochs), farseer (Li 2025)",
    )
    parser.add_argument(
        "--loss",
        choices=list(LOSSES),
        default=DEFAULT_LOSS,
        help="approach-3 objective on log L: huber (delta = --huber-delta x the residuals' robust scale), epoch "
        "(Huber with delta 1e-3, Besiroglu et al. 2024), lsq (least squares)",
    )
    parser.add_argument(
        "--huber-delta",
        type=_positive,
        default=HUBER_C,
        help=f"--loss huber: delta as a multiple of the residuals' robust scale (default {HUBER_C}, Huber's constant)",
    )
    add_bootstrap_options(parser)
    parser.add_argument(
        "--init",
        choices=["varpro", "grid"],
        default="varpro",
        help="approach-3 starts: variable projection, or Hoffmann et al.'s 4,500-point grid (chinchilla only; slow)",
    )
    parser.add_argument(
        "--bootstrap",
        choices=list(BOOTSTRAPS),
        default=BOOTSTRAPS[0],
        help="approach-3 intervals: redraw each run's loss from the fit's smoothed residuals "
        "(calibrated when the law holds), or resample runs (safer when the law may misfit "
        "or N and D are uncertain)",
    )


def add_bootstrap_options(parser: argparse.ArgumentParser) -> None:
    """How many bootstrap refits, their seed, and the interval level."""
    parser.add_argument("--n-boot", type=positive_int, default=DEFAULT_N_BOOT, help="bootstrap refits per approach")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--level", type=_fraction, default=DEFAULT_LEVEL, help="interval level (0.8: 10th-90th)")


def add_budgets_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budgets", type=_float_list, default=(), help="extrapolate to these FLOPs, e.g. 1e21,1e23")


def fit_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Input and fit options shared by analysis.fit and analysis.report."""
    parser = input_parser(prog, description)
    add_law_options(parser)
    add_budgets_option(parser)
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=DEFAULT_PROFILE,
        help="approach-2 IsoFLOP minimum: local (parabola through the 7 sizes nearest the lowest "
        "loss), parabola (all sizes), akima (Akima interpolation, Porian et al. 2024)",
    )
    parser.add_argument(
        "--envelope-start",
        type=_non_negative,
        default=DEFAULT_ENVELOPE_START,
        help="approach 1: use the envelope from this fraction of the smallest run's final compute "
        "(0: from the first evaluation, plateau included)",
    )
    return parser


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


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"expected a number > 0 such as 1.345, got {text!r}")
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


def read_input(args: argparse.Namespace, where: str | None = None) -> FitData:
    """Read the input named on the command line (rows selected by --where, and by `where` too if given)."""
    columns = Columns(
        n=args.n_col,
        d=args.d_col,
        flops=args.flops_col,
        loss=args.loss_col,
        budget=args.budget_col,
        epochs=args.epochs_col,
    )
    selection = " and ".join(f"({w})" for w in (args.where, where) if w) or None
    return load(args.path, columns, args.params, selection)


def read_and_analyse(args: argparse.Namespace) -> Analysis:
    """Read the input named on the command line and fit what can be fitted (InputError on bad input)."""
    config = FitConfig(
        args.n_boot,
        args.seed,
        args.level,
        args.budgets,
        args.init,
        args.envelope_start,
        args.law,
        args.profile,
        bootstrap=args.bootstrap,
        objective=objective_of(args),
    )
    try:
        return analyse(read_input(args), config)
    except FitError as error:  # an explicit --law auto on runs too few to roll out
        raise InputError(str(error)) from error


def objective_of(args: argparse.Namespace) -> Objective:
    """The approach-3 loss the options ask for."""
    return Objective(args.loss, args.huber_delta)


def load_and_analyse(args: argparse.Namespace) -> Analysis:
    """As `read_and_analyse`, and InputError if nothing could be fitted, or if the law asked for by name
    could not be fitted."""
    analysis = read_and_analyse(args)
    # The law named first: its reason is the one the user can act on, whatever else could not be fitted.
    if args.law is not None and "approach3" in analysis.skipped:
        raise InputError(f"--law {args.law}: {analysis.skipped['approach3']}")
    if not analysis.results:
        raise InputError("nothing could be fitted: " + "; ".join([*analysis.skipped.values(), *analysis.data.notes]))
    return analysis


def rollout_json(choice: LawChoice) -> dict:
    """The law choice and its rollout table, as JSON-ready records."""
    return {
        "law": choice.law,
        "how": choice.note,
        "scores": choice.scores,
        "rows": [asdict(row) for row in choice.rows],
    }


def rollout_lines(choice: LawChoice) -> list[str]:
    """The rollout table as text: each predictor fitted on the first k steps, its errors on step k+1."""
    lines = ["", "Rollout (Bhagia et al. 2024): each predictor fitted on the first k steps, then asked for step k+1"]
    if not choice.rows:
        return lines + [f"  not run: {choice.note}"]
    seeds = any(row.has_seeds for row in choice.rows)
    # With seeds, the points' column is the law's own error (seed noise averaged out), which the law is chosen by.
    points_head = f"  {'points':>6}  {'points |error|':>14}" if seeds else ""
    lines.append(
        f"  {'predictor':>24}  {'k':>2}  {'predicts':>26}  {'runs':>4}  {'mean |error|':>12}  {'mean error':>10}  "
        f"{'best loss':>9}{points_head}"
    )
    for row in choice.rows:
        if row.note:
            lines.append(f"  {row.predictor:>24}  {row.fitted:>2}  {row.target:>26}  not fitted: {row.note}")
            continue
        points = f"  {row.n_points or '-':>6}  {percent(row.mean_abs_point_error):>14}" if seeds else ""
        lines.append(
            f"  {row.predictor:>24}  {row.fitted:>2}  {row.target:>26}  {row.n_predicted:>4}  "
            f"{percent(row.mean_abs_error):>12}  {percent(row.mean_error, '+'):>10}  "
            f"{percent(row.best_loss_error, '+'):>9}{points}"
        )
    return lines + [f"  chosen: {choice.note}"]
