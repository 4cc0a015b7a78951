"""Fit Chinchilla approaches 1-3 with bootstrap intervals and extrapolate the compute-optimal frontier.

    python -m analysis.fit results/NAME                 # readable summary
    python -m analysis.fit runs.csv --n-col "Model Size" --flops-col "Training FLOP" --format json
    python -m analysis.fit runs.csv --law tied --profile akima

Each approach runs when the data support it; one that cannot says why in one line and the others go on.
Every predictor is rolled out (fitted on the budgets up to k, asked for budget k+1; JSON key `rollout`),
and approach 3's law is the one with the smallest rollout error unless --law names one. With 4 or more
IsoFLOP budgets, the floor law E + k C^-g is fitted to approach 2's minima (JSON key `frontier_law`).
The CLI exits 2 with a one-line error when the input cannot be read, nothing can be fitted, the law
named cannot be fitted, or --law auto meets too few budgets to roll out.
"""

import argparse
import json
import sys

import numpy as np

from analysis.command import finite_or_none, run
from analysis.fits.analyse import Analysis
from analysis.fits.extrapolate import frontier_table
from analysis.fits.frontier_law import FrontierLaw
from analysis.fits.laws import LAWS
from analysis.fitting import fit_parser, load_and_analyse, rollout_json, rollout_lines
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
        "law": analysis.choice.law,
        "loss": analysis.config.objective.kind,
        "profile": analysis.config.profile,
        "rollout": rollout_json(analysis.choice),
    }
    if analysis.frontier_law is not None:
        out["frontier_law"] = _frontier_json(analysis.frontier_law, analysis.budgets, level)
    for name, result in analysis.results.items():
        extrapolation = frontier_table(result, analysis.budgets, level)
        out[name] = {
            **result.estimate,
            "ci": {key: list(result.interval(key, level)) for key in result.estimate},
            "n_boot_failed": result.n_failed,
            "warnings": list(result.warnings),
            "notes": list(result.notes),
            contract.FIT_EXTRAPOLATION: extrapolation.to_dict(orient="records"),
        }
    if "approach3" in out:
        law = LAWS[analysis.choice.law]
        out["approach3"] |= {
            "law": law.name,
            "formula": law.formula,
            "frontier_note": law.frontier_note,
            "bootstrap": analysis.config.bootstrap,
            "huber_delta": analysis.results["approach3"].details.delta,
        }
    if "approach2" in out:
        details = analysis.results["approach2"].details
        out["approach2"] |= {"profile": details.kind, "between_budget_sd": details.between_sd}
    return finite_or_none(out)


def _frontier_json(law: FrontierLaw, budgets, level: float) -> dict:
    """The floor law's parameters with intervals, and its best loss at the extrapolation budgets."""
    tail = 50.0 * (1.0 - level)
    low, high = np.nanpercentile(law.replicas(budgets), [tail, 100.0 - tail], axis=0)
    return {
        **law.estimate,
        "ci": {key: list(law.interval(key, level)) for key in law.estimate},
        "formula": "L*(C) = E + k (C / 1e18)^-g",
        "best_loss": [
            {"C": float(c), "loss": float(value), "loss_low": float(lo), "loss_high": float(hi)}
            for c, value, lo, hi in zip(budgets, law.predict(budgets), low, high)
        ],
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
        lines += [f"  note: {note}" for note in result.notes]
    if analysis.frontier_law is not None:
        law = analysis.frontier_law
        lines += ["", "Frontier with a floor, fitted to approach 2's minima: L*(C) = E + k (C / 1e18)^-g"]
        for key, value in law.estimate.items():
            low, high = law.interval(key, level)
            lines.append(f"  {key:>14} = {value:<12.5g} {level:.0%} interval [{low:.5g}, {high:.5g}]")
    lines += [""] + [f"skipped {name}: {reason}" for name, reason in analysis.skipped.items()]
    return "\n".join(lines + rollout_lines(analysis.choice)).rstrip() + "\n"


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
