"""Issue 23's acceptance on the real published runs in tests/data, each through the command a user would type.

    python benchmarks/real_data_acceptance.py                      # all three parts
    python benchmarks/real_data_acceptance.py --parts isoflop --n-boot 200

Parts (default settings everywhere; only the table, its columns and the held-out runs are named):
- porian: approach 2 with the default profile estimator and refits on Porian et al. (2024)'s 15 configurations
  (as `python -m analysis.fit TABLE --where "config == '...'" --budget-col C` fits it): how many exponents a
  lie within 0.03 of the published one, how many 80% intervals hold it, and whether any estimate lies outside
  its own interval.
- gadre: `python -m analysis.backtest TABLE --fit-where "not heldout" --format json` on Gadre et al. (2024)'s
  rpj, rw and c4 tables: each held-out run's relative error and whether its 80% interval held it, against the
  authors' own law (0.73%, 1.6%, 4.3% on the 6.9B model; reproduced in /work/staging/data/SOURCES.md).
- isoflop: `python -m analysis.backtest TABLE --where ... --format json` (largest budget held out) on Marin's
  three IsoFLOP sweeps (comma, dclm, nemotron; the points Open-Athena's QC keeps: 6 budgets each) and on Porian
  et al.'s two "tuned" sweeps (rw, owt2; their 6 largest budgets): the share of held-out runs inside their 80%
  intervals, and the mean |relative error|.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fit_input import Columns, load
from analysis.fits.approach2 import fit_approach2
from analysis.fits.bootstrap import DEFAULT_N_BOOT

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
AUTHORS_7B = {"rpj": 0.0073, "rw": 0.016, "c4": 0.043}
ISOFLOP = {
    "marin comma": ("isoflop_real_marin.csv", "dataset == 'comma' and openathena_qc == 'none'", []),
    "marin dclm": ("isoflop_real_marin.csv", "dataset == 'dclm' and openathena_qc == 'none'", []),
    "marin nemotron": ("isoflop_real_marin.csv", "dataset == 'nemotron' and openathena_qc == 'none'", []),
    "porian rw_tuned": ("porian2024_isoflop.csv", "config == 'rw_tuned' and C >= 8e17", ["--budget-col", "C"]),
    "porian owt2_tuned": ("porian2024_isoflop.csv", "config == 'owt2_tuned' and C >= 8e17", ["--budget-col", "C"]),
}


def refits(n_boot: int | None) -> list[str]:
    return [] if n_boot is None else ["--n-boot", str(n_boot)]


def command(module: str, args: list[str]) -> dict:
    """Run `python -m module args --format json` and return its JSON (exit status 0 required)."""
    argv = [sys.executable, "-m", module, *args, "--format", "json"]
    print("$ " + " ".join(argv[1:]), flush=True)
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"exit {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def porian(n_boot: int | None) -> None:
    published = pd.read_csv(DATA / "porian2024_published_a.csv").set_index("config")["a_published"]
    within = held = outside = 0
    for config, truth in published.items():
        runs = load(DATA / "porian2024_isoflop.csv", Columns(budget="C"), where=f"config == '{config}'").runs
        fit = fit_approach2(runs, n_boot or DEFAULT_N_BOOT, seed=0)
        a, (low, high) = fit.estimate["a"], fit.interval("a", 0.8)
        within += abs(a - truth) <= 0.03
        held += low <= truth <= high
        outside += not low <= a <= high
        print(f"  {config:20} published {truth:.3f}  a {a:.3f} [{low:.3f}, {high:.3f}]", flush=True)
    print(f"porian: {within}/15 within 0.03, {held}/15 intervals hold it, {outside} estimates outside their interval")


def gadre(n_boot: int | None) -> None:
    for dataset, authors in AUTHORS_7B.items():
        table = DATA / f"gadre2024_{dataset}_c4_eval.csv"
        out = command("analysis.backtest", [str(table), "--fit-where", "not heldout", *refits(n_boot)])
        names = pd.read_csv(table)["name"]
        for row in out["predictions"]:
            print(
                f"  {dataset:4} {names[int(row['run'])]:28} {row['relative_error']:+.2%} "
                f"[{row['low']:.4f}, {row['high']:.4f}] observed {row['observed']:.4f} "
                f"{'held' if row['interval_held'] else 'NOT held'}"
            )
        print(
            f"gadre {dataset}: law {out['law']}, mean |error| {out['mean_abs_relative_error']:.2%} "
            f"(authors' 6.9B error {authors:.2%}), coverage {out['coverage']:.2f}",
            flush=True,
        )


def isoflop(n_boot: int | None) -> None:
    held, errors = [], []
    for name, (table, where, columns) in ISOFLOP.items():
        out = command("analysis.backtest", [str(DATA / table), "--where", where, *columns, *refits(n_boot)])
        rows = out["predictions"]
        held += [row["interval_held"] for row in rows]
        errors += [abs(row["relative_error"]) for row in rows]
        best = min(rows, key=lambda row: row["observed"])
        print(
            f"  {name:18} law {out['law']:11} held {sum(r['interval_held'] for r in rows)}/{len(rows)}  "
            f"mean |error| {out['mean_abs_relative_error']:.2%}  best run {best['relative_error']:+.2%}",
            flush=True,
        )
    print(f"isoflop: coverage {np.mean(held):.2f} ({sum(held)}/{len(held)}), mean |error| {np.mean(errors):.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="porian,gadre,isoflop", help="comma-separated: porian, gadre, isoflop")
    parser.add_argument("--n-boot", type=int, help="bootstrap refits (default: the commands' own default)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()}")
    wall = time.perf_counter()
    parts = {"porian": porian, "gadre": gadre, "isoflop": isoflop}
    for name in args.parts.split(","):
        parts[name](args.n_boot)
    print(f"{time.perf_counter() - wall:.0f} s wall; load {os.getloadavg()}")


if __name__ == "__main__":
    main()
