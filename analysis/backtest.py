"""Backtest a scaling law: fit it on the smaller runs, predict the held-out ones, and check each prediction.

    python -m analysis.backtest results/NAME                          # hold out the largest budget
    python -m analysis.backtest runs.csv --holdout-largest 2 --law tied
    python -m analysis.backtest runs.csv --fit-where "params < 1e9" --format json

Per held-out run: the predicted loss with its prediction interval, the observed loss, relative_error =
(predicted - observed) / observed, and whether the interval held the observed loss. The interval carries
parameter uncertainty, one run's noise, and the law's own misfit as the rollout of the kept runs measured
it (fits/prediction.py). Without --law, the law is the one with the smallest rollout error on the kept
runs (never on the held-out ones). Without --holdout-largest or --fit-where, the largest IsoFLOP budget is
held out (or, without budgets, the largest tenth of the runs by compute). Bad input exits 2 with one line.
"""

import argparse
import json
import sys

from analysis.command import finite_or_none, run
from analysis.failures import FitError, InputError
from analysis.fits.prediction import (
    Backtest,
    backtest,
    default_holdout,
    fitted_on,
    largest,
)
from analysis.fitting import add_law_options, input_parser, objective_of, read_input, rollout_json, rollout_lines


def holdout_of(args: argparse.Namespace, runs):
    """The held-out runs the options ask for."""
    if args.fit_where:
        fit_runs = set(read_input(args, args.fit_where).runs["run"])
        return fitted_on(runs, fit_runs, args.fit_where)
    if args.holdout_largest is not None:
        return largest(runs, args.holdout_largest)
    return default_holdout(runs)


def to_json(result: Backtest, source: str, bootstrap: str) -> dict:
    """Backtest as one JSON-ready object: the fit on the kept runs, and each held-out prediction."""
    fit, level = result.fit, result.level
    return finite_or_none(
        {
            "source": source,
            "law": result.law,
            "huber_delta": fit.details.delta,
            "level": level,
            "n_boot": fit.n_boot,
            "bootstrap": bootstrap,
            "held_out": result.holdout,
            "n_fit": len(fit.details.data.u),
            "n_held_out": len(result.predictions),
            "estimate": fit.estimate,
            "ci": {key: list(fit.interval(key, level)) for key in fit.estimate},
            "warnings": list(fit.warnings),
            "mean_abs_relative_error": result.mean_abs_relative_error,
            "coverage": result.coverage,
            "rollout": rollout_json(result.choice),
            "calibration": None
            if result.calibration is None
            else {
                "rollout_steps": result.calibration.steps,
                "n_scores": int(result.calibration.scores.size),
                "quantile": result.calibration.quantile(level),
            },
            "predictions": [
                {**row, "interval_held": bool(row["interval_held"])}
                for row in result.predictions.to_dict(orient="records")
            ],
        }
    )


def to_text(result: Backtest, source: str) -> str:
    """A readable table: one line per held-out run."""
    fit, level = result.fit, result.level
    lines = [
        f"{source}: law {result.law} fitted on {len(fit.details.data.u)} runs, predicting {result.holdout}",
        "  " + ", ".join(f"{key} = {value:.4g}" for key, value in fit.estimate.items()),
        "",
        f"  {'run':>24}  {'N':>9}  {'D':>9}  {'observed':>9}  {'predicted':>9}  "
        f"{f'{level:.0%} interval':>19}  {'relative_error':>14}  held",
    ]
    for row in result.predictions.itertuples():
        lines.append(
            f"  {row.run:>24}  {row.N:>9.3g}  {row.D:>9.3g}  {row.observed:>9.4f}  {row.predicted:>9.4f}  "
            f"[{row.low:>7.4f}, {row.high:>7.4f}]  {row.relative_error:>+14.2%}  "
            f"{'yes' if row.interval_held else 'no'}"
        )
    lines += [
        "",
        f"mean |relative error| {result.mean_abs_relative_error:.2%}; the {level:.0%} intervals held "
        f"{int(result.predictions['interval_held'].sum())} of {len(result.predictions)}",
    ]
    lines.append(
        "interval: the bootstrap's, widened to the rollout's conformal interval "
        f"({result.calibration.quantile(level):.2f} predictive s.d. from {result.calibration.scores.size} rollout "
        "predictions) where wider"
        if result.calibration is not None
        else "interval: the bootstrap's only (too few steps to roll the law out and calibrate it)"
    )
    lines += [f"warning: {warning}" for warning in fit.warnings]
    return "\n".join(lines + rollout_lines(result.choice)) + "\n"


def backtest_command(args: argparse.Namespace) -> int:
    data = read_input(args)
    try:
        result = backtest(
            data.runs,
            holdout_of(args, data.runs),
            args.law,
            args.n_boot,
            args.seed,
            args.level,
            args.init,
            args.bootstrap,
            objective_of(args),
        )
    except FitError as error:
        raise InputError(str(error)) from error
    source = str(data.source)
    text = (
        to_text(result, source)
        if args.format == "text"
        else json.dumps(to_json(result, source, args.bootstrap), indent=2)
    )
    print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = input_parser("python -m analysis.backtest", __doc__.split("\n")[0])
    add_law_options(parser)
    held = parser.add_mutually_exclusive_group()
    held.add_argument("--holdout-largest", type=int, metavar="K", help="hold out the K runs with the largest compute")
    held.add_argument(
        "--fit-where",
        metavar="EXPR",
        help="fit on the rows this pandas query selects (same syntax as --where), predict the rest",
    )
    parser.add_argument("--format", choices=["text", "json"], default="text")
    return run(backtest_command, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
