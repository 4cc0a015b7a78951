"""How often the fits' nominal 80% intervals hold the truth, and how biased their exponent is, on synthetic sweeps.

    python benchmarks/fit_coverage.py            # quick: 100 sweeps per design, 200 refits each (a few minutes)
    python benchmarks/fit_coverage.py --full     # 400 sweeps per design, 1,000 refits each (about an hour)

Designs (final points, for approaches 2 and 3):
- centred: 5 budgets x 9 sizes over +-0.6 decades centred on the true optimum, 1% noise;
- asymmetric: 5 x 11 over +-1 decade with the window drifting from -0.5 to +0.5 decades off the optimum
  across budgets (a grid placed by a wrong guess), 0.5% noise, a law with alpha 0.45 and beta 0.30;
- noise_by_budget: as centred, but noise rising from 0.3% at the smallest budget to 3% at the largest;
- small: 3 budgets x 5 sizes over +-0.5 decades, 1% noise.
- misspecified: as centred (0.5% noise), but every sweep is drawn from the Farseer law fitted to Marin's
  dclm IsoFLOP sweep (synthetic.FARSEER_MARIN_DCLM): real-like profiles whose shape changes with scale and whose
  frontier is not a power law. Approaches 2 and 3 are fitted as usual, approach 3 under the default law
  choice (the rollout's) and under chinchilla, which is then the wrong law.
Approach 3 fits each law to data drawn from that law (data_constrained: runs repeat their data 1-16 times),
with its default bootstrap (smoothed residuals), and the chinchilla law also resampling runs and under
the rollout's choice of law (`auto`); approach 2 fits the chinchilla draws with each profile estimator.
The quantity is the allocation exponent a (tied: alpha, since its a is 1/2 by construction); where the
true frontier is not a power law (misspecified) its truth is the least-squares slope of the true log N_opt
against log C over the design's budgets, which a perfect estimate of each budget's minimum would give.
Approach 1 needs curves: 25 sizes trained to 400 tokens per parameter, each run's curve offset by 0.5%
(seed-to-seed) plus 0.2% per evaluation. Targets (from the issue): |bias| <= 0.01 and coverage in [0.7, 0.9].
"""

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.failures import FitError
from analysis.fits.approach1 import fit_approach1
from analysis.fits.approach2 import fit_approach2
from analysis.fits.approach3 import fit_approach3
from analysis.fits.laws import LAWS
from analysis.fits.profiles import PROFILES
from analysis.fits.rollout import resolve_law
from analysis.fits.synthetic import FARSEER_MARIN_DCLM, law_runs

LEVEL = 0.8
TRUTH = {
    "chinchilla": dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "tied": dict(E=1.8, A=140.0, B=240.0, alpha=0.26),
    "kaplan": dict(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095),
    "data_constrained": dict(E=1.9, A=500.0, B=1500.0, alpha=0.34, beta=0.32, R_star=15.4),
}
TRUTH["farseer"] = FARSEER_MARIN_DCLM
SKEWED = dict(E=2.0, A=1500.0, B=300.0, alpha=0.45, beta=0.30)
EPOCH_CYCLE = np.array([1.0, 2.0, 4.0, 8.0, 16.0])


@dataclass(frozen=True)
class Design:
    budgets: np.ndarray
    sizes: int
    span: float  # decades from the smallest to the largest size
    drift: float  # decades the window's centre moves off the optimum, from -drift to +drift across budgets
    noise: np.ndarray  # relative noise per budget
    skewed: bool = False
    source: str | None = None  # the law every sweep is drawn from, whatever law is fitted (None: the fitted one)


DESIGNS = {
    "centred": Design(np.logspace(18, 22, 5), 9, 1.2, 0.0, np.full(5, 0.01)),
    "asymmetric": Design(np.logspace(18, 22, 5), 11, 2.0, 0.5, np.full(5, 0.005), skewed=True),
    "noise_by_budget": Design(np.logspace(18, 22, 5), 9, 1.2, 0.0, np.geomspace(0.003, 0.03, 5)),
    "small": Design(np.logspace(18, 20, 3), 5, 1.0, 0.0, np.full(3, 0.01)),
    "misspecified": Design(np.logspace(18, 22, 5), 9, 1.2, 0.0, np.full(5, 0.005), source="farseer"),
}


def truth_of(law: str, design: Design) -> dict:
    skewed = design.skewed and law in ("chinchilla", "data_constrained")
    return {**TRUTH[law], **(SKEWED if skewed else {})}


def target(law: str, params: dict, budgets: np.ndarray) -> tuple[str, float]:
    """The quantity checked, and its true value: tied's alpha, else the slope of log N_opt against log C
    over the budgets (a itself for a law whose frontier is a power law)."""
    if law == "tied":
        return "alpha", params["alpha"]
    log_n = np.log(LAWS[law].frontier(params, budgets)[0])
    return "a", float(np.polyfit(np.log(budgets), log_n, 1)[0])


def draw(law: str, design: Design, seed: int) -> pd.DataFrame:
    """One IsoFLOP sweep of the design, its losses drawn from `law`."""
    rng, params, pieces = np.random.default_rng(seed), truth_of(law, design), []
    shifts = np.linspace(-design.drift, design.drift, design.budgets.size)
    for i, (C, shift, noise) in enumerate(zip(design.budgets, shifts, design.noise)):
        n_opt = LAWS[law].frontier(params, np.array([C]))[0][0]
        N = n_opt * 10 ** (shift + np.linspace(-design.span / 2, design.span / 2, design.sizes))
        epochs = np.resize(np.roll(EPOCH_CYCLE, i), N.size) if law == "data_constrained" else 1.0
        piece = law_runs(LAWS[law], params, N, C / (6 * N), epochs, noise, int(rng.integers(2**31)))
        pieces.append(piece.assign(budget=C))
    runs = pd.concat(pieces, ignore_index=True)
    return runs.assign(run=[f"run{i:04d}" for i in range(len(runs))])


def curve_draw(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """25 sizes trained to 400 tokens per parameter, with a per-run offset and per-evaluation noise."""
    rng, law, params = np.random.default_rng(seed), LAWS["chinchilla"], TRUTH["chinchilla"]
    N = np.geomspace(1e8, 1e11, 25)
    runs = pd.DataFrame(
        {
            "run": [f"r{i}" for i in range(N.size)],
            "N": N,
            "D": 400 * N,
            "C": 2400 * N * N,
            "loss": 0.0,
            "budget": np.nan,
        }
    )
    pieces = []
    for run, n, offset in zip(runs["run"], N, 0.005 * rng.standard_normal(N.size)):
        D = 400 * n * np.geomspace(0.02, 1.0, 60)
        loss = law.loss(params, n, D) * np.exp(offset + 0.002 * rng.standard_normal(D.size))
        pieces.append(pd.DataFrame({"run": run, "N": n, "D": D, "C": 6 * n * D, "loss": loss}))
    return runs, pd.concat(pieces, ignore_index=True)


def score(results: list, key: str, truth: float) -> dict:
    """Bias, spread and coverage of `key` over the fits that succeeded."""
    estimates, hits, failed, stalled = [], [], [], []
    for result in results:
        if result is None:
            continue
        low, high = result.interval(key, LEVEL)
        estimates.append(result.estimate[key])
        hits.append(low <= truth <= high)
        failed.append(result.n_failed / result.n_boot)
        stalled.append(any("without converging" in w for w in result.warnings))
    return {
        "fits": len(estimates),
        "skipped": len(results) - len(estimates),
        "bias": np.mean(estimates) - truth,
        "sd": np.std(estimates),
        "coverage": np.mean(hits),
        "refits failed": np.mean(failed),
        "stalled": int(np.sum(stalled)),
    }


def attempt(fit):
    try:
        return fit()
    except FitError:
        return None


def approach3_auto(runs: pd.DataFrame, n_boot: int, seed: int):
    """Approach 3 under the default law choice: the law with the smallest rollout error."""
    return fit_approach3(runs, n_boot, seed, law_name=resolve_law(runs, None).law)


def fits_for(law: str, design: Design) -> dict:
    """Label -> (approach, fit(runs, n_boot, seed)) for the fits made on draws of `law` under `design`."""
    fits = {} if design.source else {law: ("3", lambda r, b, s: fit_approach3(r, b, s, law_name=law))}
    if law != "chinchilla" and not design.source:
        return fits
    fits |= {
        "chinchilla" + (" (the wrong law)" if design.source else ""): (
            "3",
            lambda r, b, s: fit_approach3(r, b, s, law_name="chinchilla"),
        ),
        "chinchilla, --bootstrap runs": ("3", lambda r, b, s: fit_approach3(r, b, s, bootstrap="runs")),
        "auto (the default)": ("3", approach3_auto),
    }
    return fits | {profile: ("2", lambda r, b, s, p=profile: fit_approach2(r, b, s, p)) for profile in PROFILES}


def run(repeats: int, n_boot: int, designs: list[str], laws: list[str]) -> pd.DataFrame:
    rows = []
    for name in designs:
        if name == "curves":
            continue
        design = DESIGNS[name]
        for law in [design.source] if design.source else laws:
            draws = [draw(law, design, 1000 * seed + 7) for seed in range(repeats)]
            key, truth = target(law, truth_of(law, design), design.budgets)
            for label, (approach, fit) in fits_for(law, design).items():
                results = [attempt(lambda r=r, s=s, fit=fit: fit(r, n_boot, s)) for s, r in enumerate(draws)]
                row = {"design": name, "approach": approach, "law / profile": label, "quantity": key}
                rows.append(row | score(results, key, truth))
                print(f"  done {name} {law} {label}", flush=True)
    if "curves" in designs:
        truth = target("chinchilla", TRUTH["chinchilla"], DESIGNS["centred"].budgets)[1]
        results = [attempt(lambda s=s: fit_approach1(*curve_draw(s), n_boot, s)) for s in range(repeats)]
        rows.append(
            {
                "design": "curves",
                "approach": "1",
                "law / profile": "envelope",
                "quantity": "a",
                **score(results, "a", truth),
            }
        )
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    lines = [
        "| design | approach | law / profile | quantity | fits | bias | sd | 80% coverage | refits failed | stalled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict(orient="records"):
        flag = "" if abs(row["bias"]) <= 0.01 and 0.7 <= row["coverage"] <= 0.9 else " **miss**"
        lines.append(
            f"| {row['design']} | {row['approach']} | {row['law / profile']} | {row['quantity']} | "
            f"{row['fits']} | {row['bias']:+.4f} | {row['sd']:.4f} | {row['coverage']:.2f}{flag} | "
            f"{row['refits failed']:.1%} | {row['stalled']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="400 sweeps per design and 1,000 refits (about an hour)")
    parser.add_argument("--repeats", type=int, help="sweeps per design (default 100, or 400 with --full)")
    parser.add_argument("--designs", default=",".join([*DESIGNS, "curves"]), help="comma-separated designs to run")
    parser.add_argument(
        "--laws",
        default="chinchilla,tied,kaplan,data_constrained",
        help="comma-separated laws to draw from and fit (chinchilla also brings approach 2 and the default law choice)",
    )
    args = parser.parse_args()
    repeats, n_boot = (args.repeats or (400 if args.full else 100)), (1000 if args.full else 200)
    print(f"{repeats} sweeps per design, {n_boot} refits each; {os.cpu_count()} CPUs, load {os.getloadavg()}")
    wall, cpu = time.perf_counter(), time.process_time()
    table = run(repeats, n_boot, args.designs.split(","), args.laws.split(","))
    print(markdown(table))
    print(f"{time.perf_counter() - wall:.0f} s wall, {time.process_time() - cpu:.0f} s CPU; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
