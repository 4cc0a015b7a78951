"""Load runs into one canonical table: a sweep folder (results/NAME) or any CSV/parquet table of runs.

Canonical columns: run, N (parameters), D (tokens), C = 6 N D (FLOPs), loss, budget (FLOPs; NaN when
unknown), epochs (passes over the training data; NaN when unknown, read as 1), seed (NaN when unknown) and
loss_se (the loss's standard error over evaluation documents; NaN when unknown). Runs sharing N and D are one
grid point at several seeds (analysis/fits/seeds.py). Our own runs also bring training curves (run, N, D, C,
loss at each evaluation).
Only the files are read, by the names in scaling/contract.py; no training code is imported.
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from analysis.failures import InputError, NoCompletedRuns
from analysis.fit_checks import check_plausible, numbers
from analysis.fits.fit_data import FitData
from analysis.fits.lossmodel import FLOPS_PER_PARAM_TOKEN, tokens_from_flops
from scaling import contract

ParamsConvention = Literal["total", "nonembedding"]
# The summary field a run records its passes over the data in (scaling/training/trainer.py writes it; the contract
# does not name it yet).
EPOCHS = "epochs"
# Names outside tables commonly give N and D (Gadre et al.'s tables: params, tokens), used when the default
# N or D column is missing and exactly one of these is there.
COMMON_NAMES = {"n": ("params", "parameters", "n_params"), "d": ("tokens", "n_tokens")}


@dataclass(frozen=True)
class Columns:
    """Column names in an outside table (--n-col, --d-col, --flops-col, --loss-col, --budget-col, --epochs-col)."""

    n: str = "N"
    d: str = "D"
    flops: str | None = None
    loss: str = "loss"
    budget: str | None = None
    epochs: str | None = None


def load(
    path: Path | str, columns: Columns = Columns(), params: ParamsConvention = "total", where: str | None = None
) -> FitData:
    """Read PATH (sweep folder, runs.parquet, or outside CSV/parquet) into canonical runs."""
    path = Path(path)
    table, folder = read_table(path)
    table = _filter(table, where)
    if contract.PARAMS_TOTAL in table.columns and contract.FINAL_EVAL_LOSS in table.columns:
        return _load_sweep(one_family(table, path), folder, params, path)
    data = _load_outside(table, columns, path)
    if params != "total":
        return replace(
            data,
            notes=data.notes + (f"--params {params} applies to sweep tables only; N is {data.convention} as given",),
        )
    return data


def read_table(path: Path) -> tuple[pd.DataFrame, Path]:
    """The table at PATH (a sweep folder's runs.parquet, or a CSV/parquet file) and the folder it is in."""
    if path.is_dir():
        if not (path / contract.RUNS_TABLE).is_file():
            raise InputError(
                f"{path} has no {contract.RUNS_TABLE}: pass a sweep folder (results/NAME) or a CSV/parquet table"
            )
        path = path / contract.RUNS_TABLE
    if not path.is_file():
        raise InputError(f"{path} does not exist: pass a sweep folder (results/NAME) or a CSV/parquet table")
    readers = {".csv": pd.read_csv, ".parquet": pd.read_parquet}
    if path.suffix not in readers:
        raise InputError(f"{path}: unknown table type {path.suffix!r}; use a .csv or .parquet file")
    try:
        return readers[path.suffix](path), path.parent
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read the table ({str(error).splitlines()[0]}){rebuild_hint(path)}") from error


def rebuild_hint(path: Path) -> str:
    """For a sweep's own runs.parquet: it is derived data, and relaunching the sweep rebuilds it."""
    if path.name != contract.RUNS_TABLE or not (path.parent / contract.RUNS_SUBDIR).is_dir():
        return ""
    return (
        "; it is derived data: relaunch the sweep's command, which trains nothing already finished and "
        "rebuilds the table from the run directories' summary.json files"
    )


def one_family(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """A sweep table of one pre-training family: their losses measure different predictions, so one fit across
    families means nothing (analysis.report compares them in its families section)."""
    found = sorted(set(table[contract.FAMILY].fillna(contract.DEFAULT_FAMILY))) if contract.FAMILY in table else []
    if len(found) > 1:
        raise InputError(
            f"family: {path} holds runs of the families {', '.join(found)}, whose losses measure different "
            f"predictions; fit one at a time with --where \"family == '{found[0]}'\" (analysis.report compares them)"
        )
    return table


def _family_note(table: pd.DataFrame) -> list[str]:
    """For another family than the decoder: which approaches count its compute as it spent it."""
    if contract.FAMILY not in table or (table[contract.FAMILY].fillna(contract.DEFAULT_FAMILY) == "decoder").all():
        return []
    family = table[contract.FAMILY].dropna().iloc[0]
    ratio = (table["flops_6n"] / (table[contract.PARAMS_TOTAL] * table["tokens"])).median()
    return [
        f"family {family}: it spends {ratio:.2f} FLOPs per parameter per token (its own count, flops_6n), not 6; "
        "approach 2 reads the IsoFLOP budgets in that count, approaches 1 and 3 and every D_opt take C = 6 N D"
    ]


def _filter(table: pd.DataFrame, where: str | None) -> pd.DataFrame:
    if not where:
        return table
    try:
        return table.query(where)
    except Exception as error:  # pandas raises many types for a bad expression; all mean the same to a user
        columns = ", ".join(map(str, table.columns))
        raise InputError(f"--where {where!r} is not a valid pandas query on columns {columns}: {error}") from error


def _require(table: pd.DataFrame, column: str, fix: str) -> None:
    if column not in table.columns:
        columns = ", ".join(map(str, table.columns))
        raise InputError(f"column {column!r} not found (columns: {columns}); {fix}")


def _load_sweep(table: pd.DataFrame, folder: Path, params: ParamsConvention, path: Path) -> FitData:
    """Our runs.parquet: completed runs only, N by the chosen convention, curves from each run's metrics."""
    n_column = {"total": contract.PARAMS_TOTAL, "nonembedding": contract.PARAMS_NONEMBEDDING}[params]
    missing = [c for c in (contract.RUN_NAME, "status", n_column, "tokens") if c not in table.columns]
    if missing:
        raise InputError(f"{path}: a sweep table needs columns {', '.join(missing)} (see the sweep contract)")
    completed = table[table["status"] == contract.COMPLETED]
    others = table.loc[table["status"] != contract.COMPLETED, "status"].value_counts()
    dropped = ", ".join(f"{count} {status}" for status, count in others.items()) or "none"
    # A held-out run tests the fits' prediction, so it must never be fitted (scaling/sweeping/holdout.py).
    held = completed[contract.HOLDOUT].fillna(False).astype(bool) if contract.HOLDOUT in completed else None
    held_rows = completed[held] if held is not None else completed.iloc[:0]
    completed = completed[~held] if held is not None else completed
    if completed.empty and len(table):
        named = ", ".join(table[contract.RUN_NAME].astype(str)[:5]) + (", ..." if len(table) > 5 else "")
        raise NoCompletedRuns(
            f"{path}: none of its {len(table)} runs completed ({dropped}: {named}), so there is nothing to fit; "
            "each run's summary.json says why (a diverged run: lower train.lr and train it anew)"
        )
    notes = [f"using {len(completed)} completed runs of {len(table)} (left out: {dropped})"] + _diverged_note(table)
    notes += _family_note(completed)
    notes += eval_set_note(completed)
    if len(held_rows):
        notes.append(
            f"held out to test the prediction, so not fitted: {', '.join(held_rows[contract.RUN_NAME].astype(str))}"
        )
    names = {"N": n_column, "D": "tokens", "loss": contract.FINAL_EVAL_LOSS}
    runs, dropped = _valid(_canonical(completed, n_column, path), names, path, ours=True)
    run_dirs = (
        dict(zip(completed[contract.RUN_NAME].astype(str), completed[contract.RUN_DIR]))
        if contract.RUN_DIR in completed
        else {}
    )
    curves, curve_notes = _load_curves(runs, folder, run_dirs)
    held_out = _canonical(held_rows, n_column, path) if len(held_rows) else None
    return FitData(runs, curves, path, params, tuple(notes + dropped + curve_notes), ours=True, held_out=held_out)


def _canonical(rows: pd.DataFrame, n_column: str, path: Path) -> pd.DataFrame:
    """Sweep-table rows as canonical runs (N by the chosen convention)."""
    N = numbers(rows, n_column, path)
    D = numbers(rows, "tokens", path)
    return pd.DataFrame(
        {
            "run": rows[contract.RUN_NAME].astype(str).to_numpy(),
            "N": N,
            "D": D,
            "C": FLOPS_PER_PARAM_TOKEN * N * D,
            "loss": numbers(rows, contract.FINAL_EVAL_LOSS, path),
            "budget": rows[contract.BUDGET].to_numpy(float) if contract.BUDGET in rows else np.nan,
            "epochs": rows[EPOCHS].to_numpy(float) if EPOCHS in rows else np.nan,
            "seed": rows[contract.SEED].to_numpy(float) if contract.SEED in rows else np.nan,
            "loss_se": rows[contract.FINAL_EVAL_LOSS_SE].to_numpy(float)
            if contract.FINAL_EVAL_LOSS_SE in rows
            else np.nan,
        }
    )


def eval_set_note(table: pd.DataFrame) -> list[str]:
    """Say so when the runs were evaluated on different eval sets (another kind, size or data): their losses
    do not compare, and a fit through them mixes two measurements."""
    if contract.EVAL_DIGEST not in table:
        return []
    digests = table[contract.EVAL_DIGEST].fillna("none recorded (made before eval sets were recorded)")
    if digests.nunique() < 2:
        return []
    kinds = table[contract.EVAL_SET].fillna("windows") if contract.EVAL_SET in table else digests
    counts = ", ".join(f"{count} on {digest} ({kind})" for (digest, kind), count in
                       pd.Series(list(zip(digests, kinds))).value_counts().items())  # fmt: skip
    return [
        f"warning: these runs were evaluated on {digests.nunique()} different eval sets ({counts}): their losses do "
        "not compare; relaunch the sweep with one data.eval_set (or overwrite=true for the odd runs)"
    ]


def _diverged_note(table: pd.DataFrame) -> list[str]:
    """Name the diverged runs (and where their loss blew up): they are left out, and a reader should know which."""
    diverged = table[table["status"] == contract.DIVERGED]
    if diverged.empty:
        return []
    steps = (
        diverged[contract.DIVERGED_STEP] if contract.DIVERGED_STEP in diverged else pd.Series(np.nan, diverged.index)
    )
    named = [
        f"{run} (at step {step:.0f})" if np.isfinite(step) else str(run)
        for run, step in zip(diverged[contract.RUN_NAME], steps.astype(float))
    ]
    return [f"diverged, so left out of every fit: {', '.join(named)}"]


def _load_curves(runs: pd.DataFrame, folder: Path, run_dirs: dict) -> tuple[pd.DataFrame | None, list[str]]:
    """Each run's eval-loss curve, with C = 6 N tokens under the chosen N; runs without a table are named."""
    pieces, missing = [], []
    for run, n in zip(runs["run"], runs["N"]):
        entry = run_dirs.get(run)
        run_dir = contract.run_dir_in_sweep(
            folder, entry if isinstance(entry, str) else f"{contract.RUNS_SUBDIR}/{run}"
        )
        metrics_path = run_dir / contract.METRICS_FILE
        try:
            metrics = pd.read_parquet(metrics_path, columns=["tokens", "eval_loss"]).dropna()
        except (OSError, ValueError):  # missing, or damaged (pyarrow's ArrowInvalid is a ValueError)
            missing.append(run)
            continue
        metrics = metrics[(metrics["tokens"] > 0) & (metrics["eval_loss"] > 0)]
        D = metrics["tokens"].to_numpy(float)
        pieces.append(
            pd.DataFrame(
                {
                    "run": run,
                    "N": n,
                    "D": D,
                    "C": FLOPS_PER_PARAM_TOKEN * n * D,
                    "loss": metrics["eval_loss"].to_numpy(float),
                }
            )
        )
    named = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    notes = (
        [f"no readable {contract.METRICS_FILE} for {len(missing)} runs ({named}): approach 1 leaves them out"]
        if missing
        else []
    )
    return (pd.concat(pieces, ignore_index=True) if pieces else None), notes


def _with_common_names(table: pd.DataFrame, columns: Columns) -> tuple[Columns, list[str]]:
    """Columns left at their default names that the table lacks, taken from the one column the table has under a
    common name for the same thing (params for N, tokens for D, one loss_* column for the loss), and a
    `budget` column as the IsoFLOP budgets; each such choice is noted."""
    chosen, notes = {}, []
    candidates = {
        "n": [name for name in COMMON_NAMES["n"] if name in table.columns],
        "d": [name for name in COMMON_NAMES["d"] if name in table.columns],
        "loss": [str(name) for name in table.columns if str(name).startswith("loss_")],
    }
    for field, default in (("n", "N"), ("d", "D"), ("loss", "loss")):
        if getattr(columns, field) == default and default not in table.columns and len(candidates[field]) == 1:
            chosen[field] = candidates[field][0]
            notes.append(f"no column {default!r}: using {chosen[field]!r} (pass --{field}-col to choose)")
    if columns.budget is None and "budget" in table.columns:
        chosen["budget"] = "budget"
        notes.append("IsoFLOP budgets from the column 'budget' (pass --budget-col to choose another)")
    return replace(columns, **chosen), notes


def _load_outside(table: pd.DataFrame, columns: Columns, path: Path) -> FitData:
    """Any table: N and loss columns, plus D or FLOPs (D = C / 6N), and optionally budget and epochs columns."""
    columns, named = _with_common_names(table, columns)
    _require(table, columns.n, "pass --n-col NAME")
    _require(table, columns.loss, "pass --loss-col NAME")
    if columns.flops is not None:
        _require(table, columns.flops, "pass --flops-col NAME")
    else:
        _require(table, columns.d, "pass --d-col NAME, or --flops-col NAME to derive D = C / (6 N)")
    for column, flag in ((columns.budget, "--budget-col"), (columns.epochs, "--epochs-col")):
        if column is not None:
            _require(table, column, f"pass {flag} NAME")
    number = lambda column: numbers(table, column, path)  # noqa: E731
    N = number(columns.n)
    D = tokens_from_flops(number(columns.flops), N) if columns.flops is not None else number(columns.d)
    runs = pd.DataFrame(
        {
            "run": table.index.astype(str),
            "N": N,
            "D": D,
            "C": FLOPS_PER_PARAM_TOKEN * N * D,
            "loss": number(columns.loss),
            "budget": number(columns.budget) if columns.budget else np.nan,
            "epochs": number(columns.epochs) if columns.epochs else np.nan,
            "seed": np.nan,
            "loss_se": np.nan,
        }
    )
    names = {"N": columns.n, "D": f"D (= {columns.flops} / 6N)" if columns.flops else columns.d, "loss": columns.loss}
    runs, dropped = _valid(runs, names, path, ours=False)
    notes = tuple([f"using {len(runs)} rows"] + named + dropped)
    return FitData(runs, None, path, f"column {columns.n!r}", notes, ours=False)


def _valid(runs: pd.DataFrame, names: dict[str, str], path: Path, ours: bool) -> tuple[pd.DataFrame, list[str]]:
    """Drop rows whose N, D or loss is missing or not positive, and exact repeats of a row (each dropped row
    counted in a note); refuse a value no run could have; fail if no row is left."""
    what = f"{names['N']}, {names['D']} or {names['loss']}"
    label = (lambda run: f"run {run}") if ours else (lambda run: f"row {run}")  # noqa: E731
    check_plausible(runs, names, path, label)
    values = runs[["N", "D", "loss"]].to_numpy(float)
    missing, non_positive = (
        ~np.isfinite(values).all(axis=1),
        np.isfinite(values).all(axis=1) & ~(values > 0).all(axis=1),
    )
    good = ~missing & ~non_positive
    if not good.any():
        raise InputError(f"no row has positive, finite {what}: check the columns and units")
    counts = {"a missing or infinite value": int(missing.sum()), "a value <= 0": int(non_positive.sum())}
    why = ", ".join(f"{count} with {reason}" for reason, count in counts.items() if count)
    notes = [f"dropped {int((~good).sum())} rows of {len(runs)} for their {what} ({why})"] if not good.all() else []
    runs = runs[good].reset_index(drop=True)
    repeated = runs.duplicated(subset=["N", "D", "loss"], keep="first").to_numpy()
    if repeated.any():
        shown = ", ".join(label(run) for run in runs.run[repeated][:5]) + (", ..." if repeated.sum() > 5 else "")
        notes.append(
            f"dropped {int(repeated.sum())} duplicate rows ({shown}): the same {names['N']}, {names['D']} and "
            f"{names['loss']} as an earlier row, which would count twice in every fit and narrow its intervals"
        )
    return runs[~repeated].reset_index(drop=True), notes
