"""Time approach 3 for every law: the full fit plus 1,000 bootstrap refits on 250 synthetic runs (target: under
20 s on 2 cores per law).

    python benchmarks/bench_fit.py                    # the timing, every law
    python benchmarks/bench_fit.py --law tied         # one law
    python benchmarks/bench_fit.py --hoffmann-grid    # also: Hoffmann's 4,500 starts against variable projection

Wall time depends on what else the machine runs, so the load average and CPU time are printed beside it.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

from analysis.fit_input import Columns, load
from analysis.fits.approach3 import fit_approach3, fit_law, prepare
from analysis.fits.laws import LAWS
from analysis.fits.synthetic import law_runs

EPOCH_CSV = Path(__file__).resolve().parent.parent / "tests" / "data" / "svg_extracted_data.csv"


TRUTH = {
    "chinchilla": dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "tied": dict(E=1.8, A=140.0, B=240.0, alpha=0.26),
    "kaplan": dict(N_c=8.8e13, D_c=5.4e13, alpha_N=0.076, alpha_D=0.095),
    "data_constrained": dict(E=1.9, A=500.0, B=1500.0, alpha=0.34, beta=0.32, R_star=15.4),
}


def sweep(law: str):
    """10 budgets x 25 sizes (250 runs) over 1.2 decades around the law's own optimum, 1% log-normal noise;
    for data_constrained the runs repeat their data 1-16 times."""
    budgets = np.logspace(18, 22, 10)
    n_opt = LAWS[law].frontier(TRUTH[law], budgets)[0]
    N = np.outer(n_opt, np.logspace(-0.6, 0.6, 25)).ravel()
    D = np.repeat(budgets, 25) / (6 * N)
    epochs = np.resize([1.0, 2.0, 4.0, 8.0, 16.0], N.size) if law == "data_constrained" else 1.0
    return law_runs(LAWS[law], TRUTH[law], N, D, epochs, noise=0.01, seed=0)


def time_bootstrap(law: str, n_boot: int, repeats: int) -> None:
    """Fit + n_boot refits on 250 runs drawn from `law`, `repeats` times."""
    runs = sweep(law)
    print(f"law {law}: {len(runs)} runs, {n_boot} bootstrap refits, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    for repeat in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fit_approach3(runs, n_boot=n_boot, seed=repeat, law_name=law)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        key = "alpha" if law == "tied" else "a"
        low, high = result.interval(key, 0.8)
        stalled = sum("without converging" in w for w in result.warnings)
        print(
            f"  repeat {repeat}: {wall:.2f} s wall, {cpu:.2f} s CPU; {key} = {result.estimate[key]:.4f} "
            f"[{low:.4f}, {high:.4f}], failed refits {result.n_failed}, convergence warnings {stalled}"
        )
    print(f"load average after: {os.getloadavg()}")


def compare_starts() -> None:
    """Hoffmann's grid and variable projection on Epoch's 240 points: same optimum, very different cost."""
    runs = load(EPOCH_CSV, Columns(n="Model Size", flops="Training FLOP")).runs.sort_values("loss").iloc[:-5]
    law = LAWS["chinchilla"]
    data = prepare(law, *(runs[c].to_numpy(float) for c in ("N", "D", "loss")), None)
    for init in ("varpro", "grid"):
        wall = time.perf_counter()
        fit = fit_law(law, data, init=init)
        print(f"  {init:>6}: {time.perf_counter() - wall:6.2f} s, objective {fit.objective:.12g}, {fit.params}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--law", choices=list(LAWS), help="time this law only (default: every law)")
    parser.add_argument("--hoffmann-grid", action="store_true", help="also time Hoffmann's 4,500-start grid (~1 min)")
    args = parser.parse_args()
    for law in [args.law] if args.law else LAWS:
        time_bootstrap(law, args.n_boot, args.repeats)
    if args.hoffmann_grid:
        compare_starts()


if __name__ == "__main__":
    main()
