"""Time approach 3: the full fit plus 1,000 bootstrap refits on 250 synthetic runs (target: under 20 s on 2 cores).

    python benchmarks/bench_fit.py                    # the timing
    python benchmarks/bench_fit.py --hoffmann-grid    # also: Hoffmann's 4,500 starts against variable projection

Wall time depends on what else the machine runs, so the load average and CPU time are printed beside it.
"""

import argparse
import os
import time
from pathlib import Path

import numpy as np

from analysis.fits.approach3 import fit_approach3, fit_loss_model
from analysis.fits.reference import HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs
from analysis.runs import Columns, load

EPOCH_CSV = Path(__file__).resolve().parent.parent / "tests" / "data" / "svg_extracted_data.csv"


def time_bootstrap(n_boot: int, repeats: int) -> None:
    """Fit + n_boot refits on 10 budgets x 25 sizes (250 runs, 1% log-normal noise), `repeats` times."""
    runs = isoflop_runs(HOFFMANN_2022, np.logspace(18, 22, 10), sizes=25, noise=0.01, seed=0)
    print(f"{len(runs)} runs, {n_boot} bootstrap refits, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    for repeat in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fit_approach3(runs, n_boot=n_boot, seed=repeat)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        low, high = result.interval("a", 0.8)
        print(f"  repeat {repeat}: {wall:.2f} s wall, {cpu:.2f} s CPU; a = {result.estimate['a']:.4f} "
              f"[{low:.4f}, {high:.4f}], failed refits {result.n_failed}")
    print(f"load average after: {os.getloadavg()}")


def compare_starts() -> None:
    """Hoffmann's grid and variable projection on Epoch's 240 points: same optimum, very different cost."""
    runs = load(EPOCH_CSV, Columns(n="Model Size", flops="Training FLOP")).runs.sort_values("loss").iloc[:-5]
    N, D, loss = (runs[c].to_numpy() for c in ("N", "D", "loss"))
    for init in ("varpro", "grid"):
        wall = time.perf_counter()
        fit = fit_loss_model(N, D, loss, init=init)
        print(f"  {init:>6}: {time.perf_counter() - wall:6.2f} s, objective {fit.objective:.12g}, {fit.params}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hoffmann-grid", action="store_true", help="also time Hoffmann's 4,500-start grid (~1 min)")
    args = parser.parse_args()
    time_bootstrap(args.n_boot, args.repeats)
    if args.hoffmann_grid:
        compare_starts()


if __name__ == "__main__":
    main()
