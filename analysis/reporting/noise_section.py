"""The report's "noise" section: how much of what the fits see is noise. Seed noise per model size (a grid
point trained at several seeds, `sweep.seeds`), the fits' residuals on seed means tested against it, and
the evaluation set: its standard error over documents, the error of a difference between two runs scored
on the same windows, the smallest loss difference the fits rely on, and what evaluating costs."""

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.fits.analyse import Analysis
from analysis.fits.seeds import misfit_test, parabola_residuals, seed_means, seed_noise, seed_sd_by_size
from scaling import contract

PARABOLA_TARGET = 0.01  # nats: the IsoFLOP parabola residual RMS on seed means the demo aims at
SE_SHARE = 1 / 3  # an evaluation error below this share of the smallest difference the fits rely on


def misfit_rows(analysis: Analysis) -> list[dict]:
    """The approach-3 law and each budget's parabola: residual RMS of the seed means, and the F test."""
    runs, noise = analysis.data.runs, seed_noise(analysis.data.runs)
    means = seed_means(runs)
    rows = []
    result = analysis.results.get("approach3")
    if result is not None:
        predicted = result.details.predict(means["N"].to_numpy(float), means["D"].to_numpy(float))
        test = misfit_test(means["loss"] - predicted, means["seeds"], noise, len(result.details.theta))
        rows.append({"curve": f"approach 3, law `{result.details.law.name}`", "points": len(means), "test": test})
    for budget, at in means.dropna(subset=["budget"]).groupby("budget"):
        if len(at) >= 4:
            residual = parabola_residuals(np.log(at["N"].to_numpy(float)), at["loss"].to_numpy(float))
            test = misfit_test(residual, at["seeds"], noise, 3)
            rows.append({"curve": f"parabola at C = {budget:.3g}", "points": len(at), "test": test})
    return rows


def rung_difference(analysis: Analysis) -> float:
    """The smallest loss difference the IsoFLOP fits rely on: over budgets, the change of the parabola through
    the seed means over one step of the ladder near its minimum, c2 (delta log N)^2 (NaN: no budget of 4 sizes)."""
    means = seed_means(analysis.data.runs).dropna(subset=["budget"])
    steps = []
    for _, at in means.groupby("budget"):
        log_n = np.sort(np.log(at["N"].to_numpy(float)))
        if log_n.size >= 4:
            c2 = np.polyfit(log_n, at.sort_values("N")["loss"].to_numpy(float), 2)[0]
            steps.append(c2 * np.median(np.diff(log_n)) ** 2)
    return float(min(steps)) if steps else np.nan


def paired_errors(folder: Path) -> pd.DataFrame:
    """For each budget and seed, neighbouring sizes scored on the same windows: the difference of their losses
    and its standard error over documents, from each run's eval_windows.parquet."""
    table = pd.read_parquet(folder / contract.RUNS_TABLE)
    needed = {contract.EVAL_DIGEST, contract.SEED, contract.BUDGET, contract.RUN_DIR}
    if not needed <= set(table.columns):
        return pd.DataFrame()
    held = table[contract.HOLDOUT].fillna(False).astype(bool) if contract.HOLDOUT in table else False
    table = table[(table["status"] == contract.COMPLETED) & ~held]
    rows = []
    for _, group in table.groupby([contract.BUDGET, contract.SEED, contract.EVAL_DIGEST]):
        group = group.sort_values(contract.PARAMS_TOTAL)
        windows = [_windows(folder, entry) for entry in group[contract.RUN_DIR]]
        names = group[contract.RUN_NAME].tolist()
        for a, b, name_a, name_b in zip(windows, windows[1:], names, names[1:]):
            if a is None or b is None:
                continue
            difference, se = contract.loss_and_se(b["loss"].to_numpy() - a["loss"].to_numpy(), a["document"].to_numpy())
            rows.append({"smaller": name_a, "larger": name_b, "difference": difference, "se": se})
    return pd.DataFrame(rows)


def _windows(folder: Path, entry: str) -> pd.DataFrame | None:
    path = contract.run_dir_in_sweep(folder, entry) / contract.EVAL_WINDOWS_FILE
    return pd.read_parquet(path) if path.is_file() else None


def seeds_lines(analysis: Analysis) -> list[str]:
    runs = analysis.data.runs
    by_size = seed_sd_by_size(runs)
    noise = seed_noise(runs)
    if noise.dof == 0:
        return [
            "Every grid point trained at one seed, so seed noise is not measured (`sweep.seeds=3` measures it) and "
            f"the fits' residuals cannot be tested against it. Their size (the IsoFLOP parabolas aim at an RMS of at "
            f"most {PARABOLA_TARGET} nats):",
            "",
            "| curve | points | RMS residual |",
            "|---|---:|---:|",
            *(f"| {row['curve']} | {row['points']} | {row['test'].rms:.4f} |" for row in misfit_rows(analysis)),
        ]
    lines = [
        f"Seed noise: grid points trained at several seeds (initialisation and data order; `sweep.seeds`). Pooled "
        f"over every point, one run's loss scatters about its point's mean by **{noise.sd:.4f}** nats "
        f"({noise.dof} degrees of freedom).",
        "",
        "| N | points with 2+ seeds | seeds per point | seed sd |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {r.N:,.0f} | {r.points} | {r.seeds} | {r.sd:.4f} |" for r in by_size.itertuples()]
    lines += [
        "",
        "Are the fits' residuals on the seed means more than seed noise? chi2 = sum of k (mean - curve)^2 / "
        "sigma^2 over points (k seeds each); chi2 / dof is about 1 when they are not, and p is the F test's "
        f"(small: the curve misses by more than noise). The IsoFLOP parabolas aim at an RMS of at most "
        f"{PARABOLA_TARGET} nats.",
        "",
        "| curve | points | RMS residual of seed means | chi2 / dof | p |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in misfit_rows(analysis):
        test = row["test"]
        lines.append(f"| {row['curve']} | {row['points']} | {test.rms:.4f} | {test.ratio:.2f} | {test.p_value:.3g} |")
    return lines


def eval_lines(analysis: Analysis, folder: Path) -> list[str]:
    table = pd.read_parquet(folder / contract.RUNS_TABLE) if (folder / contract.RUNS_TABLE).is_file() else None
    if table is None or contract.FINAL_EVAL_LOSS_SE not in table:
        return []
    done = table[table["status"] == contract.COMPLETED]
    first = done.iloc[0]
    se = done[contract.FINAL_EVAL_LOSS_SE]
    step = rung_difference(analysis)
    pairs = paired_errors(folder)
    lines = [
        f"Evaluation set: `{first[contract.EVAL_SET]}`, {int(first['eval_windows']):,} windows of "
        f"{int(first['seq_len'])} tokens from {int(first['eval_documents'])} validation documents, none over "
        f"{first['eval_largest_document_share']:.1%} of them. A run's loss has a standard error over documents "
        f"of {se.median():.4f} (median; {se.min():.4f} to {se.max():.4f}): how far it would move with other "
        "documents held out, which every run shares. A difference between two runs scored on the same windows "
        "has its own, paired, error"
        + (
            f": {pairs['se'].median():.4f} (median over {len(pairs)} pairs of neighbouring sizes)."
            if len(pairs)
            else "."
        )
    ]
    if np.isfinite(step):
        paired = pairs["se"].median() if len(pairs) else np.nan
        lines += [
            "",
            f"The smallest loss difference the fits rely on, one ladder step near an IsoFLOP minimum (the parabola "
            f"through the seed means, at the flattest budget): **{step:.4f}** nats. A third of it is "
            f"{SE_SHARE * step:.4f}: the paired error is {'below' if paired < SE_SHARE * step else '**above**'} "
            f"it ({paired / step:.2f} of the step), a run's own error "
            f"{'below' if se.median() < SE_SHARE * step else '**above**'} it ({se.median() / step:.2f}).",
        ]
    eval_s, wall_s = done["eval_s"].sum(), done["wall_s"].sum()
    lines += [
        "",
        f"Cost: {done['eval_s_median'].median():.2f} s per evaluation (median), {done['eval_count'].median():.0f} "
        f"evaluations per run; {eval_s:,.0f} s of the runs' {wall_s:,.0f} s ({eval_s / wall_s:.1%}) went to "
        "evaluating.",
    ]
    return lines


def section(analysis: Analysis, folder: Path) -> str | None:
    """Markdown for the noise section (None for an outside table, which has neither seeds nor eval sets)."""
    if not analysis.data.ours:
        return None
    return "\n".join(["## Noise: seeds and the evaluation set", "", *seeds_lines(analysis), "",
                      *eval_lines(analysis, folder)])  # fmt: skip
