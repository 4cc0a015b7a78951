"""Runs of several variants, read and checked for comparison: two or more sweeps (or tables), or one whose runs
differ in a column (`--by`, or found: the one swept column besides the IsoFLOP grid's that takes several values).

Losses are comparable only when every run was evaluated on one set of tokens with one tokenizer. A sweep
table's runs record tokenizer_hash and vocab_size, which must agree, and the identity of their evaluation set:
  eval_digest  (runs since the evaluation set was recorded) the sha256 of the evaluation windows' tokens. When
               every run has one and they agree, the runs may have trained on different data (corpus_hash
               differs: a data change such as data.exclude, scaling/data/mix.py), since they were scored on
               the same tokens under the same tokenizer; a note says so.
  otherwise    corpus_hash must agree, and the set is named by an `eval_set` (or `eval_version`) column where
               the table has one, else by what defines it: the corpus, the held-out share (data.val_fraction),
               its size (data.eval_tokens, from each run's config.yaml) and the context length it is cut into.
Any of these that differs between compared runs is refused in one line naming both.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.failures import InputError
from analysis.fit_input import Columns, ParamsConvention, load, read_table
from scaling import contract

# Swept keys that lay out the IsoFLOP grid or repeat it: never a variant.
GRID_KEYS = (
    "train.flops",
    "train.tokens",
    "sweep.point",
    "sweep.stretch",
    "model.n_params",
    "train.seed",
    "train.data_seed",
)
SEED_COLUMNS = ("seed", f"{contract.SWEPT_PREFIX}train.seed")
EVAL_SET_COLUMNS = ("eval_set", "eval_version", "eval_set_version")
# What must agree between compared runs, and what to do when it does not.
SAME_DATA = {
    contract.TOKENIZER_HASH: "losses in nats per token compare only under one tokenizer",
    "vocab_size": "losses in nats per token compare only under one vocabulary",
}
SAME_EVAL = {
    contract.EVAL_DIGEST: "compared runs must be scored on the same evaluation windows: train them on one corpus "
    "with the same data.val_fraction, data.eval_tokens, data.eval_max_doc_share and context (a data change goes "
    "through data.exclude, which keeps them)",
    # without eval digests, the corpus and evaluation settings stand in for the windows
    contract.CORPUS_HASH: "compare runs trained and evaluated on one corpus",
    "eval_set": "compared runs must be evaluated on one evaluation set",
}
CHECKED = (*SAME_DATA, *SAME_EVAL)


@dataclass(frozen=True)
class Variants:
    """Canonical runs (run, N, D, C, loss, budget, seed, variant), the variants' labels (the reference first)
    and what reading them noted."""

    runs: pd.DataFrame
    labels: tuple[str, ...]
    sources: tuple[Path, ...]
    notes: tuple[str, ...]


def load_variants(
    paths: list[str],
    by: str | None = None,
    reference: str | None = None,
    columns: Columns | None = None,
    params: ParamsConvention = "total",
    where: str | None = None,
) -> Variants:
    """Read every path, label each run's variant (by path, or by the `by` column), check that the runs compare."""
    if by is None and len(paths) == 1:
        by = variant_column(read_table(Path(paths[0]))[0])
        if by is None:
            raise InputError(
                f"{paths[0]}: no swept column besides the grid's takes several values among completed runs; pass "
                "two or more sweeps, or --by COLUMN"
            )
    pieces, notes = [], []
    for path in map(Path, paths):
        table, _ = read_table(path)
        _require_completed(table, path)
        data = load(path, columns or Columns(), params, where)
        rows = _rows_of(table, data.runs["run"])
        extra = {"source": str(path), "seed": _seeds(rows)}
        pieces.append(data.runs.assign(**extra, _label=_labels(rows, by, path, len(paths)), **_checked(rows, path)))
        notes += [f"{path}: {note}" for note in data.notes]
    runs = pd.concat(pieces, ignore_index=True)
    labels = _ordered(runs["_label"], paths, by, reference)
    for column in _identity(runs):
        _check_same(runs, column)
    notes += _unchecked(runs) + _other_training_data(runs)
    runs["variant"] = runs["_label"].map({label: i for i, label in enumerate(labels)})
    runs = runs.drop(columns=["_label", *[c for c in CHECKED if c in runs]])
    return Variants(runs, labels, tuple(map(Path, paths)), tuple(notes))


def sweep_table(path: Path) -> pd.DataFrame | None:
    """A sweep folder's runs table, or None: not a sweep folder, or a table that cannot be read (the fit's loader
    then says so, and how to rebuild it)."""
    table = Path(path) / contract.RUNS_TABLE
    try:
        return pd.read_parquet(table) if table.is_file() else None
    except (OSError, ValueError):
        return None


def variant_column(table: pd.DataFrame) -> str | None:
    """The one swept column besides the grid's whose completed runs take several values, or None."""
    completed = table[table["status"] == contract.COMPLETED] if "status" in table else table
    varying = [
        column
        for column in table.columns
        if column.startswith(contract.SWEPT_PREFIX)
        and column.removeprefix(contract.SWEPT_PREFIX) not in GRID_KEYS
        and completed[column].nunique() > 1
    ]
    return varying[0] if len(varying) == 1 else None


def resolve_by(table: pd.DataFrame, by: str, path: Path) -> str:
    """The table column `--by` names: as given, or a swept key (model.norm_position -> swept.model.norm_position)."""
    for column in (by, f"{contract.SWEPT_PREFIX}{by}"):
        if column in table.columns:
            return column
    swept = [c.removeprefix(contract.SWEPT_PREFIX) for c in table.columns if c.startswith(contract.SWEPT_PREFIX)]
    raise InputError(f"--by {by}: {path} has no such column (swept keys: {', '.join(swept) or 'none'})")


def _is_sweep(table: pd.DataFrame) -> bool:
    return contract.RUN_NAME in table.columns and contract.PARAMS_TOTAL in table.columns


def _require_completed(table: pd.DataFrame, path: Path) -> None:
    """A sweep table with no completed run is named, with what its runs did instead."""
    if _is_sweep(table) and "status" in table and not (table["status"] == contract.COMPLETED).any():
        counts = table["status"].value_counts()
        found = ", ".join(f"{count} {status}" for status, count in counts.items()) or "no runs"
        raise InputError(f"{path}: no completed runs ({found}); train the sweep first, or pass another folder")


def _rows_of(table: pd.DataFrame, runs: pd.Series) -> pd.DataFrame:
    """The table's rows of the loaded runs, in their order (a sweep's by run name, a table's by row label)."""
    if _is_sweep(table):
        keyed = table.set_index(table[contract.RUN_NAME].astype(str))
    else:
        keyed = table.set_index(table.index.astype(str))
    return keyed.loc[runs.to_numpy()].reset_index(drop=True)


def _labels(rows: pd.DataFrame, by: str | None, path: Path, n_paths: int) -> np.ndarray:
    name = path.stem if path.is_file() else path.name
    if by is None:
        return np.full(len(rows), name, dtype=object)
    values = rows[resolve_by(rows, by, path)].astype(str).to_numpy(dtype=object)
    return values if n_paths == 1 else np.array([f"{name}/{value}" for value in values], dtype=object)


def _seeds(rows: pd.DataFrame) -> np.ndarray:
    column = next((c for c in SEED_COLUMNS if c in rows.columns), None)
    return rows[column].to_numpy() if column else np.zeros(len(rows), dtype=int)


def _checked(rows: pd.DataFrame, path: Path) -> dict[str, np.ndarray]:
    """The columns that must agree across compared runs, as far as this table records them (an eval digest
    missing for some run is left out: the corpus and eval set then stand in for it)."""
    columns = [*SAME_DATA, contract.CORPUS_HASH]
    if contract.EVAL_DIGEST in rows.columns and rows[contract.EVAL_DIGEST].notna().all():
        columns.append(contract.EVAL_DIGEST)
    out = {column: rows[column].astype(str).to_numpy() for column in columns if column in rows.columns}
    named = next((c for c in EVAL_SET_COLUMNS if c in rows.columns), None)
    if named is not None:
        out["eval_set"] = rows[named].astype(str).to_numpy()
    elif contract.EVAL_DIGEST not in out and contract.RUN_DIR in rows.columns and contract.CORPUS_HASH in rows.columns:
        out["eval_set"] = np.array([_eval_set(path, row) for row in rows.itertuples()], dtype=object)
    return out


def _identity(runs: pd.DataFrame) -> list[str]:
    """The columns checked for agreement: the eval digest where every run has one (its training data may then
    differ), else the corpus and the eval set."""
    if contract.EVAL_DIGEST in runs and runs[contract.EVAL_DIGEST].notna().all():
        return [*SAME_DATA, contract.EVAL_DIGEST, "eval_set"]
    return [*SAME_DATA, contract.CORPUS_HASH, "eval_set"]


def _eval_set(path: Path, row) -> str:
    """What defines a run's evaluation set today: corpus, held-out share, eval tokens, context (config.yaml)."""
    config_path = contract.run_dir_in_sweep(path, str(getattr(row, contract.RUN_DIR))) / contract.CONFIG_FILE
    try:
        data = yaml.safe_load(config_path.read_text())[contract.CONFIG_SECTION]["data"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as error:
        raise InputError(f"{config_path}: cannot read the run's data config ({error}); re-run the sweep") from error
    corpus = str(getattr(row, contract.CORPUS_HASH))[:12]
    return (
        f"corpus {corpus}, val_fraction {data.get('val_fraction')}, eval_tokens {data.get('eval_tokens')}, "
        f"seq_len {getattr(row, 'seq_len', '?')}"
    )


def _ordered(labels: pd.Series, paths: list[str], by: str | None, reference: str | None) -> tuple[str, ...]:
    """Variants in order, the reference first: --reference, else the order the sweep lists the values in (its
    multirun.yaml), else the order they first appear."""
    found = list(dict.fromkeys(labels))
    if by is not None and len(paths) == 1:
        listed = _listed_values(Path(paths[0]), by)
        found = sorted(found, key=lambda label: listed.index(label) if label in listed else len(listed))
    if len(found) < 2:
        raise InputError(f"only one variant ({found[0]}) among the runs: pass two or more sweeps, or --by COLUMN")
    if reference is None:
        return tuple(found)
    if reference not in found:
        raise InputError(f"--reference {reference}: no such variant (variants: {', '.join(found)})")
    return (reference, *[label for label in found if label != reference])


def _listed_values(folder: Path, by: str) -> list[str]:
    """The values of `by` in the order the sweep's file lists them (Hydra's multirun.yaml), if it is there."""
    try:
        params = yaml.safe_load((folder / "multirun.yaml").read_text())["hydra"]["sweeper"]["params"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return []
    key = by.removeprefix(contract.SWEPT_PREFIX)
    return _choices(str(params.get(key, "")))


def _choices(text: str) -> list[str]:
    """A swept key's values as Hydra lists them: split at the commas outside brackets ('[],[a,b]': two lists)."""
    values, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[{(") - (char in "]})")
        if char == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    return [*values, text[start:].strip()]


def _check_same(runs: pd.DataFrame, column: str) -> None:
    """InputError naming two runs (and their variants) that differ in `column`."""
    if column not in runs or runs[column].nunique() < 2:
        return
    first = runs.iloc[0]
    other = runs[runs[column] != first[column]].iloc[0]
    fix = {**SAME_DATA, **SAME_EVAL}[column]
    raise InputError(
        f"{column} differs: {first['source']} (variant {first['_label']}, run {first['run']}) has {first[column]} but "
        f"{other['source']} (variant {other['_label']}, run {other['run']}) has {other[column]}; {fix}"
    )


def _unchecked(runs: pd.DataFrame) -> list[str]:
    if "eval_set" in runs or contract.EVAL_DIGEST in runs:
        return []
    return ["the runs record no corpus or evaluation set, so that the losses were measured on one set was not checked"]


def _other_training_data(runs: pd.DataFrame) -> list[str]:
    """A note when the runs trained on different data (a data change) but were scored on one evaluation set."""
    if contract.CORPUS_HASH not in runs or runs[contract.CORPUS_HASH].nunique() < 2:
        return []
    digest = runs[contract.EVAL_DIGEST].iloc[0]
    return [
        f"the variants trained on {runs[contract.CORPUS_HASH].nunique()} different training sets (corpus_hash) and "
        f"were scored on one evaluation set (eval_digest {digest}) under one tokenizer"
    ]
