"""Predictions on synthetic sweeps with known truth: held-out coverage, the law choice, and the loss function.

    python benchmarks/prediction_coverage.py                  # all three parts, 40 sweeps per cell
    python benchmarks/prediction_coverage.py --parts predict --repeats 100

Parts:
- predict: 6 budgets (1e18 to 3e20) x 9 sizes over +-0.6 decades around the true optimum, 0.5% noise; the
  largest budget held out and predicted by `analysis.backtest`'s default (the law chosen by the rollout,
  intervals widened by the rollout's conformal scores), by chinchilla with the same conformal intervals (the
  law choice alone), and by the old default (chinchilla, Huber delta 1e-3, bootstrap intervals only). Sweeps
  are drawn from chinchilla (the old default's law: correct), from kaplan and from Farseer fitted to Marin's
  dclm sweep (misspecified for chinchilla). Reported: the share of held-out runs inside their 80% intervals,
  and the mean |relative error|.
- choice: how often the rollout picks the law each sweep was drawn from, on the same design, for draws
  from chinchilla, tied, kaplan and farseer (well separated laws).
- demo_choice: the same on a design the size of the demo's (4 budgets over 8x, 5 sizes over 0.6 decades,
  0.5% noise: a mean of four seeds at the demo's seed noise), where the rollout has a single step to judge by.
- loss: approach 3's allocation exponent a under each `--loss` (huber: delta relative to the residuals;
  epoch: delta 1e-3; lsq), on the `centred` design of fit_coverage.py (1% noise) with and without
  outliers (5% of runs, chosen at random, with their loss raised by 5%, as a run with a bad seed or a
  loss spike would be): bias and 80% coverage of a. The chinchilla law is fitted to chinchilla draws.
"""

import argparse
import os
import time

import numpy as np
import pandas as pd
from fit_coverage import DESIGNS, TRUTH, Design, attempt, draw, score, target, truth_of

from analysis.fits.approach3 import fit_approach3
from analysis.fits.huber import LOSSES, Objective
from analysis.fits.prediction import backtest, default_holdout, prediction_interval
from analysis.fits.rollout import resolve_law

LEVEL = 0.8
PREDICT = Design(np.geomspace(1e18, 3e20, 6), 9, 1.2, 0.0, np.full(6, 0.005))
GENERATORS = ("chinchilla", "kaplan", "farseer")
CHOICE_LAWS = ("chinchilla", "tied", "kaplan", "farseer")
DEMO = Design(np.geomspace(1e19, 8e19, 4), 5, 0.6, 0.0, np.full(4, 0.005))
OUTLIER_SHARE, OUTLIER_FACTOR = 0.05, 1.05


def predict(repeats: int, n_boot: int) -> pd.DataFrame:
    rows = []
    for law in GENERATORS:
        for label, fixed, calibrated in (
            ("default: rollout's law, conformal intervals", None, True),
            ("chinchilla, conformal intervals", "chinchilla", True),
            ("old default: chinchilla, bootstrap only", "chinchilla", False),
        ):
            held, errors, chosen = [], [], []
            for seed in range(repeats):
                runs = draw(law, PREDICT, 1000 * seed + 11)
                found = attempt(lambda runs=runs, seed=seed, f=fixed, c=calibrated: _held_out(runs, n_boot, seed, f, c))
                if found is not None:
                    held += list(found[0])
                    errors += list(found[1])
                    chosen.append(found[2])
            rows.append(
                {
                    "drawn from": law,
                    "predictor": label,
                    "sweeps": len(chosen),
                    "held-out runs": len(held),
                    "80% coverage": np.mean(held),
                    "mean |error|": np.mean(errors),
                    "laws chosen": ", ".join(f"{n} {chosen.count(n)}" for n in sorted(set(chosen))),
                }
            )
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def _held_out(runs: pd.DataFrame, n_boot: int, seed: int, law: str | None, calibrated: bool):
    """Whether each held-out run fell inside its interval, its |relative error|, and the law fitted: by
    `analysis.backtest`'s default, or (a law named, not calibrated) by the old default, approach 3 and its
    bootstrap interval alone."""
    holdout = default_holdout(runs)
    test = runs[holdout.mask]
    if calibrated:
        result = backtest(runs, holdout, law, n_boot, seed)
        fit, calibration, law = result.fit, result.calibration, result.law
    else:
        old = Objective("epoch")  # the old default loss: Huber with delta 1e-3
        fit, calibration = fit_approach3(runs[~holdout.mask], n_boot, seed, law_name=law, objective=old), None
    predicted, low, high = prediction_interval(fit, test, LEVEL, seed, calibration)
    observed = test["loss"].to_numpy(float)
    return (low <= observed) & (observed <= high), np.abs(predicted - observed) / observed, law


def choice(repeats: int, design: Design = PREDICT) -> pd.DataFrame:
    rows = []
    for law in CHOICE_LAWS:
        picked = [resolve_law(draw(law, design, 1000 * seed + 13), None).law for seed in range(repeats)]
        rows.append({"drawn from": law, "sweeps": repeats, **{name: picked.count(name) for name in CHOICE_LAWS}})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def with_outliers(runs: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hit = rng.random(len(runs)) < OUTLIER_SHARE
    return runs.assign(loss=np.where(hit, runs["loss"] * OUTLIER_FACTOR, runs["loss"]))


def losses(repeats: int, n_boot: int) -> pd.DataFrame:
    rows, design = [], DESIGNS["centred"]
    key, truth = target("chinchilla", truth_of("chinchilla", design), design.budgets)
    for outliers in (False, True):
        draws = [draw("chinchilla", design, 1000 * seed + 17) for seed in range(repeats)]
        draws = [with_outliers(runs, seed) if outliers else runs for seed, runs in enumerate(draws)]
        for kind in LOSSES:
            results = [
                attempt(lambda r=r, s=s, k=kind: fit_approach3(r, n_boot, s, objective=Objective(k)))
                for s, r in enumerate(draws)
            ]
            rows.append(
                {"outliers": "5% of runs +5%" if outliers else "none", "loss": kind} | score(results, key, truth)
            )
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=40, help="sweeps per cell")
    parser.add_argument("--n-boot", type=int, default=200, help="bootstrap refits per fit")
    parser.add_argument(
        "--parts", default="predict,choice,loss", help="comma-separated: predict, choice, demo_choice, loss"
    )
    args = parser.parse_args()
    print(f"{args.repeats} sweeps per cell, {args.n_boot} refits; {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(f"truth for farseer draws: {TRUTH['farseer']}")
    wall, cpu = time.perf_counter(), time.process_time()
    parts = {"predict": lambda: predict(args.repeats, args.n_boot), "choice": lambda: choice(args.repeats)}
    parts["demo_choice"] = lambda: choice(args.repeats, DEMO)
    parts["loss"] = lambda: losses(args.repeats, args.n_boot)
    for name in args.parts.split(","):
        print(f"\n{name}\n" + markdown(parts[name]()), flush=True)
    print(f"{time.perf_counter() - wall:.0f} s wall, {time.process_time() - cpu:.0f} s CPU; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
