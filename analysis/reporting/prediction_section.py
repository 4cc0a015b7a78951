"""The report's "prediction" section: the fits' prediction for a sweep's held-out run, then its outcome.

A sweep with `sweep.holdout_factor` trains, after its grid, one run at a budget beyond every fitted
one, at the size the fits called compute-optimal (scaling/sweeping/holdout.py). The fits never see it
(analysis/fit_input.py). Here a parametric law (approach 3, the law chosen by the grid's rollout unless
--law names one) predicts its loss with a prediction interval for one new run (parameter uncertainty,
one run's noise, and the law's misfit as its rollout measured it: analysis/fits/prediction.py), and the
measured loss is set beside it: the OLMo ladder's check that a law fitted on small runs predicts a larger
one (Bhagia et al. 2024, "Establishing Task Scaling Laws via Compute-Efficient Model Ladders"). Every
other predictor's error on the held-out run is listed beside it: each law, approach 2's power law
through the minima and the floor law E + k C^-g (these two predict the best loss at a budget, which the
held-out run, placed at the predicted optimum, approximates).
"""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from analysis.failures import FitError
from analysis.fits.analyse import Analysis
from analysis.fits.powerlaw import evaluate_power_law
from analysis.fits.prediction import Holdout, calibrate, check_law, leave_one_out, prediction_interval
from analysis.fits.result import ApproachResult
from analysis.fits.rollout import APPROACH2, FRONTIER, applicable_laws
from analysis.reporting.document import figure
from scaling import contract

FIGURE = "prediction.png"
PREDICTOR = "approach3"  # the only approach that predicts the loss of any (N, D), not only of the optimum


def predictor(analysis: Analysis) -> ApproachResult | None:
    """Approach 3 under the law the analysis fitted (chosen by the rollout unless --law named one)."""
    return analysis.results.get(PREDICTOR)


def predictions(analysis: Analysis, result: ApproachResult | None) -> pd.DataFrame | None:
    """Each held-out run: observed loss, predicted loss, its calibrated interval, relative error, and the
    range its prediction spans when any one fitted run is left out; None when there is no held-out run or
    no parametric fit to predict it."""
    held = analysis.data.held_out
    if held is None or held.empty or result is None:
        return None
    config = analysis.config
    calibration = calibrate(
        analysis.data.runs,
        result.details.law.name,
        config.objective,
        config.seed,
        config.init,
        config.bootstrap,
        config.n_boot,
    )
    predicted, low, high = prediction_interval(result, held, config.level, config.seed, calibration)
    loo = leave_one_out(analysis.data.runs, held, result.details.law.name, config.objective)
    observed = held["loss"].to_numpy(float)
    return pd.DataFrame(
        {
            "run": held["run"],
            "N": held["N"],
            "D": held["D"],
            "C": held["C"],
            "observed": observed,
            "predicted": predicted,
            "low": low,
            "high": high,
            "relative_error": (observed - predicted) / predicted,
            "interval_held": (low <= observed) & (observed <= high),
            "loo_low": np.nanmin(loo, axis=0),
            "loo_high": np.nanmax(loo, axis=0),
            "calibrated": calibration is not None,
        }
    )


def predictor_errors(analysis: Analysis) -> dict[str, float | str]:
    """Every predictor fitted on the grid (point estimates) and its mean |relative error| on the held-out runs,
    or why it could not be fitted: each law, and the two best-loss predictors through approach 2's minima."""
    runs = pd.concat([analysis.data.runs, analysis.data.held_out], ignore_index=True)
    mask = np.arange(len(runs)) >= len(analysis.data.runs)
    held = analysis.data.held_out
    observed, C = held["loss"].to_numpy(float), held["C"].to_numpy(float)
    errors: dict[str, float | str] = {}
    for name in applicable_laws(analysis.data.runs):
        try:
            errors[name] = check_law(runs, Holdout(mask, "the held-out run"), name, analysis.config.objective)
        except FitError as error:
            errors[name] = str(error).split(":")[0]
    if "approach2" in analysis.results:
        estimate = analysis.results["approach2"].estimate
        power = evaluate_power_law(C, estimate["log_k_loss"], estimate["loss_exponent"])
        errors[APPROACH2] = float(np.mean(np.abs(power - observed) / observed))
    if analysis.frontier_law is not None:
        errors[FRONTIER] = float(np.mean(np.abs(analysis.frontier_law.predict(C) - observed) / observed))
    else:
        errors[FRONTIER] = analysis.skipped.get("frontier law", "approach 2 did not fit").split(":")[0]
    return errors


def plan(folder: Path) -> dict | None:
    """What the sweep recorded when it placed the held-out run (the fitted N_opt), if it did."""
    path = Path(folder) / contract.HOLDOUT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def plot(analysis: Analysis, result: ApproachResult, table: pd.DataFrame, path: Path) -> None:
    """Loss against compute: fitted runs, the law along its compute-optimal frontier with its prediction
    band, and each held-out run's prediction (bar) and outcome (star)."""
    runs, level = analysis.data.runs, analysis.config.level
    flops = np.geomspace(runs["C"].min(), table["C"].max() * 1.5, 80)
    n_opt, d_opt, _ = result.frontier(result.estimate, flops)
    frontier = pd.DataFrame({"N": n_opt, "D": d_opt, "loss": np.nan})
    line, low, high = prediction_interval(result, frontier, level, analysis.config.seed)
    wide = 1 + 0.6 * (len(table) - 1)  # the close-up grows with the held-out runs it shows side by side
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(9 + wide, 5), gridspec_kw={"width_ratios": [3, wide]})
    ax.scatter(runs["C"], runs["loss"], s=22, color="0.55", label=f"fitted runs ({len(runs)})", zorder=2)
    ax.plot(flops, line, color="C0", label=f"fitted law ({result.details.law.name}) on its compute-optimal frontier")
    ax.fill_between(flops, low, high, color="C0", alpha=0.18, label=f"{level:.0%} prediction interval")
    ax.axvline(runs["C"].max(), color="0.7", lw=0.8, ls=":")
    ax.scatter(
        table["C"], table["observed"], marker="*", s=180, color="black", label="held-out run, measured", zorder=4
    )
    ax.set(
        xscale="log",
        xlabel="training compute C = 6ND (FLOPs)",
        ylabel="final eval loss (nats/token)",
        title="Predict, then verify: a run beyond every fitted budget",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    # The zoom: at the whole curve's scale, the prediction's interval is smaller than the star.
    at = np.arange(len(table))
    zoom.errorbar(
        at,
        table["predicted"],
        yerr=[table["predicted"] - table["low"], table["high"] - table["predicted"]],
        fmt="o",
        color="C3",
        capsize=8,
        label=f"predicted, {level:.0%} interval",
    )
    zoom.scatter(at, table["observed"], marker="*", s=180, color="black", label="measured", zorder=3)
    for i, row in enumerate(table.itertuples()):
        zoom.annotate(
            f"{row.relative_error:+.2%}",
            (i, row.observed),
            xytext=(10, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    zoom.set(
        xticks=at,
        # Both numbers: two held-out runs may share a budget (a relaunch whose fits placed the run elsewhere).
        xticklabels=[f"C = {c:.2g}\nN = {n:.3g}" for c, n in zip(table["C"], table["N"])],
        xlim=(-0.8, len(table) - 0.2),
        ylabel="final eval loss (nats/token)",
        title="held-out run, close up",
    )
    zoom.grid(alpha=0.3, axis="y")
    zoom.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def section(analysis: Analysis, folder: Path, figures: Path, table: pd.DataFrame | None) -> str | None:
    """Markdown for the prediction section (`table` from `predictions`), or None when the sweep has no
    held-out run."""
    if analysis.data.held_out is None or analysis.data.held_out.empty:
        return None
    lines = ["## Prediction vs outcome", ""]
    result = predictor(analysis)
    if table is None:
        return "\n".join(
            lines
            + [
                f"The held-out run trained, but {PREDICTOR} did not fit, so nothing predicts its loss: "
                + "; ".join(analysis.skipped.values())
                + "."
            ]
        )
    placed = plan(folder)
    if placed:
        lines += [
            f"After the grid, the fits ({placed['approach']}) put the compute-optimal size at "
            f"{placed['budget']:.3g} FLOPs at N = {placed['n_opt_predicted']:,.0f}; the run trained at the "
            "ladder rung nearest it, on C / (6 N) tokens.",
            "",
        ]
    level, law = f"{analysis.config.level:.0%}", result.details.law.name
    lines += [f"The prediction is approach 3 under the `{law}` law ({analysis.choice.note}).", ""]
    lines += [
        f"| run | N | D | C | predicted loss | {level} prediction interval | measured | error | inside | "
        "leave one run out |",
        "|---|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.run} | {row.N:,.0f} | {row.D:,.0f} | {row.C:.3g} | {row.predicted:.4f} | "
            f"[{row.low:.4f}, {row.high:.4f}] | {row.observed:.4f} | {row.relative_error:+.2%} | "
            f"{'yes' if row.interval_held else '**no**'} | [{row.loo_low:.4f}, {row.loo_high:.4f}] |"
        )
    calibrated = (
        " widened, where wider, to the rollout's conformal interval (the law's own misfit one step ahead)"
        if table["calibrated"].all()
        else " (too few budgets to roll the law out and calibrate it)"
    )
    lines += [
        "",
        "Error is (measured - predicted) / predicted. The interval is for one new run: the bootstrap's "
        f"parameter uncertainty times one run's noise about the law,{calibrated}. The last column is the "
        "range of the prediction when any one fitted run is left out.",
        "",
    ]
    errors = predictor_errors(analysis)
    lines += [
        f"Every predictor fitted on the same runs (point estimates; the interval above is for `{law}`):",
        "",
        "| predictor | absolute error on the held-out run |",
        "|---|---:|",
    ]
    lines += [
        f"| {name} | {error:.2%} |" if isinstance(error, float) else f"| {name} | not fitted ({error}) |"
        for name, error in errors.items()
    ]
    lines.append("")
    figures.mkdir(parents=True, exist_ok=True)
    plot(analysis, result, table, figures / FIGURE)
    lines.append(
        figure(
            FIGURE,
            f"each fitted run's final loss (grey) against compute; the law fitted to them "
            f"(approach 3, {law}) along its compute-optimal frontier with its {level} prediction band; "
            "the held-out run's measured loss (star); dotted: the largest fitted compute. Right: "
            "close up, the prediction (red, with its interval) and the measured loss, labelled with "
            "the error",
        )
    )
    return "\n".join(lines)
