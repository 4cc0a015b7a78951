"""Fit Chinchilla approaches 1-3 with bootstrap intervals and extrapolate the compute-optimal frontier.

    python -m analysis.fit results/NAME                 # readable summary
    python -m analysis.fit runs.csv --n-col "Model Size" --flops-col "Training FLOP" --format json
    python -m analysis.fit runs.csv --law tied --profile akima

Each approach runs when the data support it; one that cannot says why in one line and the others go on.
Every law is also fitted without the largest runs and asked for them, so the summary shows which law
extrapolates best (analysis.backtest does the same for one law, with prediction intervals).
The CLI exits 2 with a one-line error when the input cannot be read or nothing can be fitted.
"""

import argparse
import json
import sys

from analysis.command import finite_or_none, run
from analysis.fits.analyse import Analysis
from analysis.fits.extrapolate import frontier_table
from analysis.fits.laws import LAWS
from analysis.fits.prediction import LawCheck
from analysis.fitting import fit_parser, load_and_analyse
from scaling import contract
from scaling.runtime import initialize


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
        "law": analysis.config.law,
        "profile": analysis.config.profile,
        "law_checks": {name: _check_json(check) for name, check in analysis.law_checks.items()},
    }
    for name, result in analysis.results.items():
        extrapolation = frontier_table(result, analysis.budgets, level)
        out[name] = {
            **result.estimate,
            "ci": {key: list(result.interval(key, level)) for key in result.estimate},
            "n_boot_failed": result.n_failed,
            "warnings": list(result.warnings),
            contract.FIT_EXTRAPOLATION: extrapolation.to_dict(orient="records"),
        }
    if "approach3" in out:
        law = LAWS[analysis.config.law]
        out["approach3"] |= {
            "law": law.name,
            "formula": law.formula,
            "frontier_note": law.frontier_note,
            "bootstrap": analysis.config.bootstrap,
        }
    if "approach2" in out:
        details = analysis.results["approach2"].details
        out["approach2"] |= {"profile": details.kind, "between_budget_sd": details.between_sd}
    return finite_or_none(out)


def _check_json(check: LawCheck | str) -> dict:
    """One law's extrapolation check, or the reason it could not run."""
    if isinstance(check, str):
        return {"skipped": check}
    return {
        "held_out": check.holdout,
        "n_fit": check.n_fit,
        "n_held_out": check.n_held_out,
        "mean_abs_relative_error": check.mean_abs_relative_error,
        "max_abs_relative_error": check.max_abs_relative_error,
    }


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
    return "\n".join(lines + law_check_lines(analysis)).rstrip() + "\n"


def law_check_lines(analysis: Analysis) -> list[str]:
    """Each law fitted without the held-out runs, and its relative error on them."""
    checks = analysis.law_checks
    held = next((c.holdout for c in checks.values() if isinstance(c, LawCheck)), None)
    if not checks or held is None:
        return []
    lines = [
        "",
        f"Extrapolation check: each law fitted without {held}, then asked for them",
        f"  {'law':>16}  {'mean |relative error|':>22}  {'max':>8}",
    ]
    for name, check in checks.items():
        lines.append(
            f"  {name:>16}  {check.mean_abs_relative_error:>22.2%}  {check.max_abs_relative_error:>8.2%}"
            if isinstance(check, LawCheck)
            else f"  {name:>16}  not fitted: {check}"
        )
    return lines


def _with_interval(row, name: str) -> str:
    return f"{getattr(row, name):.3g} [{getattr(row, name + '_low'):.3g}, {getattr(row, name + '_high'):.3g}]"


def fit(args: argparse.Namespace) -> int:
    analysis = load_and_analyse(args)
    print(json.dumps(to_json(analysis), indent=2) if args.format == "json" else to_text(analysis), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    initialize(compilation_cache=False)
    parser = fit_parser("python -m analysis.fit", __doc__.split("\n")[0])
    parser.add_argument("--format", choices=["text", "json"], default="text")
    return run(fit, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
