"""How close analysis.compare's effective compute multiplier comes to the truth, and how often its intervals hold it,
on synthetic pairs of variants whose multiplier is known.

    python benchmarks/compare_coverage.py                 # 100 pairs per case, 200 refits each
    python benchmarks/compare_coverage.py --trials 400 --n-boot 1000 --cases constant,growing
    python benchmarks/compare_coverage.py --weights counts    # the classic resample of runs instead

Every pair is trained on one ladder: the design of sweeps/sweep/norm_position.yaml (4 budgets 5e10-4e11 FLOPs x
4 sizes sqrt(2) apart around the reference's optimum), each run's loss times exp(noise x standard normal).
Cases (reference: the chinchilla law E 1.8, A 40, B 120, alpha 0.35, beta 0.33, near our ladder's losses):
- constant: the variant counts every parameter as 2x (L_v(N, D) = L(2N, D)): multiplier 2 at every C;
- growing: the variant has larger exponents (alpha 0.40, beta 0.37) with the same E: the multiplier grows
  from 1.12 to 1.48 over the budgets trained (2.0 at 10x the largest); exponent difference and crossover known;
- kaplan (data from another law than the one fitted): the reference follows Kaplan et al.'s law (no E) and the
  variant counts parameters and tokens as 1.5x each: multiplier 2.25 at every C;
- e_differs (the shared E assumed by the fit is false): the variant's E is 0.1 lower, nothing else differs.
For each the multiplier is checked at the smallest and largest budget trained and at 10x the largest; the
truth is computed from the true laws by root finding, independently of the code under test.
Targets (issue 26): the estimate within 10% of the truth; 80% intervals covering the truth 0.7-0.9 of the time.
"""

import argparse
import os
import time

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from analysis.failures import FitError
from analysis.fits.laws import LAWS
from analysis.fits.lossmodel import LossParams
from analysis.fits.synthetic import noisy_loss, scaled_law, variant_runs
from analysis.fits.variant_comparison import CompareConfig, compare

LEVEL = 0.8
BUDGETS = np.array([5e10, 1e11, 2e11, 4e11])
CHECKED = np.array([5e10, 4e11, 4e12])  # smallest and largest trained, and 10x beyond
REFERENCE = LossParams(E=1.8, A=40.0, B=120.0, alpha=0.35, beta=0.33)
GROWING = LossParams(E=1.8, A=40.0 * 1.3, B=120.0 * 2.0, alpha=0.40, beta=0.37)
KAPLAN = {"N_c": 9.5e6, "D_c": 1.1e8, "alpha_N": 0.20, "alpha_D": 0.22}


def chinchilla(params: LossParams) -> tuple[str, dict]:
    return "chinchilla", params.as_dict()


def kaplan_scaled(params: dict, n_factor: float, d_factor: float) -> dict:
    """Kaplan's law with every parameter counting n_factor and every token d_factor times: L(n N, d D)."""
    return {**params, "N_c": params["N_c"] / n_factor, "D_c": params["D_c"] / d_factor}


CASES = {
    "constant": (chinchilla(REFERENCE), chinchilla(scaled_law(REFERENCE, 2.0, 1.0))),
    "growing": (chinchilla(REFERENCE), chinchilla(GROWING)),
    "kaplan": (("kaplan", KAPLAN), ("kaplan", kaplan_scaled(KAPLAN, 1.5, 1.5))),
    "e_differs": (chinchilla(REFERENCE), chinchilla(LossParams(1.7, 40.0, 120.0, 0.35, 0.33))),
}


def frontier_loss(law: str, params: dict, C: np.ndarray) -> np.ndarray:
    """The true compute-optimal loss, minimised over N numerically (no closed form assumed)."""
    out = []
    for c in np.atleast_1d(C):
        log_n = np.linspace(np.log(c / 6.0) / 2 - 6, np.log(c / 6.0) / 2 + 6, 4001)
        N = np.exp(log_n)
        out.append(LAWS[law].loss(params, N, c / (6.0 * N)).min())
    return np.array(out)


def true_multiplier(case: str, C: np.ndarray) -> np.ndarray:
    """C_ref / C with the reference's frontier at C_ref equal to the variant's at C, by root finding."""
    (ref_law, ref), (var_law, var) = CASES[case]
    target = frontier_loss(var_law, var, C)
    roots = [
        brentq(lambda x, t=t: frontier_loss(ref_law, ref, np.array([np.exp(x)]))[0] - t, np.log(c) - 12, np.log(c) + 12)
        for c, t in zip(C, target)
    ]
    return np.exp(roots) / C


def draw(case: str, noise: float, seed: int) -> pd.DataFrame:
    """One pair of sweeps on the reference's ladder, losses from each variant's true law."""
    runs = variant_runs([REFERENCE, REFERENCE], BUDGETS, sizes=4, span_decades=1.5 * np.log10(2.0), seed=seed)
    rng = np.random.default_rng([seed, 7])
    losses = []
    for index, (law, params) in enumerate(CASES[case]):
        mine = runs["variant"] == index
        N, D = runs.loc[mine, "N"].to_numpy(), runs.loc[mine, "D"].to_numpy()
        if law == "chinchilla":
            losses.append(noisy_loss(LossParams(**params), N, D, noise, rng))
        else:
            losses.append(LAWS[law].loss(params, N, D) * np.exp(noise * rng.standard_normal(N.size)))
    return runs.assign(loss=np.concatenate(losses))


def trial(case: str, noise: float, seed: int, n_boot: int, truth: np.ndarray, shared_e: bool, weights: str) -> dict:
    runs = draw(case, noise, seed)
    try:
        result = compare(
            runs, ("reference", "variant"), CompareConfig(n_boot, seed, LEVEL, shared_e, tuple(CHECKED), weights)
        )
    except FitError:
        return {"failed": True}
    table = result.gaps[0].multiplier.set_index("C").loc[CHECKED]
    gap = result.gaps[0]
    row = {"failed": False, "d_gamma": gap.exponent_difference.point}
    row |= {"d_gamma_low": gap.exponent_difference.low, "d_gamma_high": gap.exponent_difference.high}
    row |= {"cross": gap.crossover_log10.point, "cross_low": gap.crossover_log10.low}
    row |= {"cross_high": gap.crossover_log10.high}
    for C, t, item in zip(CHECKED, truth, table.itertuples()):
        row[f"err_{C:.0e}"] = item.point / t - 1
        row[f"cover_{C:.0e}"] = item.low <= t <= item.high
        row[f"width_{C:.0e}"] = item.high / item.low
    return row


def summarise(case: str, rows: pd.DataFrame, truth: np.ndarray, noise: float, shared_e: bool) -> list[str]:
    ok = rows[~rows["failed"]]
    lines = [f"{case} (noise {noise:.1%}, E {'shared' if shared_e else 'free'}): {len(ok)} of {len(rows)} pairs fitted"]
    for C, t in zip(CHECKED, truth):
        err, cover, width = ok[f"err_{C:.0e}"], ok[f"cover_{C:.0e}"], ok[f"width_{C:.0e}"]
        lines.append(
            f"  C = {C:.0e}: true multiplier {t:.3f}; median estimate error {err.median():+.1%}, "
            f"median |error| {err.abs().median():.1%}, within 10% in {(err.abs() <= 0.1).mean():.0%}; "
            f"80% interval covers {cover.mean():.2f}, median width (high/low) {width.median():.2f}"
        )
    return lines


def exponent_lines(case: str, rows: pd.DataFrame) -> list[str]:
    """Coverage of the exponent difference and (growing) of the crossover, whose truths are closed forms."""
    ok = rows[~rows["failed"]]
    (_, ref), (_, var) = CASES[case]
    if case not in ("constant", "growing"):
        return []
    gamma = [p["alpha"] * p["beta"] / (p["alpha"] + p["beta"]) for p in (ref, var)]
    d_true = gamma[1] - gamma[0]
    cover = ((ok["d_gamma_low"] <= d_true) & (d_true <= ok["d_gamma_high"])).mean()
    lines = [
        f"  exponent difference: true {d_true:+.4f}, median estimate {ok['d_gamma'].median():+.4f}, "
        f"80% interval covers {cover:.2f}"
    ]
    if case == "growing":
        k = [
            p["A"] * g ** -p["alpha"] + p["B"] * g ** p["beta"]
            for p, g in (
                (p, (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))) for p in (ref, var)
            )
        ]
        cross = np.log10(6.0) + np.log10(k[1] / k[0]) / (gamma[1] - gamma[0])
        covered = ((ok["cross_low"] <= cross) & (cross <= ok["cross_high"])).mean()
        lines.append(
            f"  crossover: true 10^{cross:.2f} FLOPs, median estimate 10^{ok['cross'].median():.2f}, "
            f"80% interval covers {covered:.2f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.005)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--free-e", action="store_true")
    parser.add_argument("--weights", choices=["dirichlet", "counts"], default="dirichlet")
    args = parser.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}, {args.trials} pairs x {args.n_boot} refits"
    )
    for case in args.cases.split(","):
        start = time.time()
        truth = true_multiplier(case, CHECKED)
        rows = pd.DataFrame(
            [
                trial(case, args.noise, seed, args.n_boot, truth, not args.free_e, args.weights)
                for seed in range(args.trials)
            ]
        )
        lines = summarise(case, rows, truth, args.noise, not args.free_e) + exponent_lines(case, rows)
        print("\n".join(lines) + f"\n  ({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
