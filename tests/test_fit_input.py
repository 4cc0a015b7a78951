"""Tables read for fits (analysis/fit_input.py): rows repeated, values no run could have, and text where a
number belongs are named, never fitted silently (issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import fit
from analysis.fit_input import Columns, load
from analysis.fits.reference import HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs

EPOCH_CSV = Path(__file__).parent / "data" / "svg_extracted_data.csv"
EPOCH_COLUMNS = Columns(n="Model Size", flops="Training FLOP")
FLAGS = ["--n-col", "Model Size", "--flops-col", "Training FLOP"]


def _table(tmp_path: Path, change) -> Path:
    table = pd.read_csv(EPOCH_CSV).query("loss < 3.44").reset_index(drop=True)
    path = tmp_path / "runs.csv"
    change(table).to_csv(path, index=False)
    return path


def test_exact_repeats_are_dropped_and_named_so_the_fit_is_the_clean_tables(tmp_path, capsys):
    clean = _table(tmp_path, lambda t: t)
    fits = {}
    for name, path in (("clean", clean), ("repeated", None)):
        path = path or _table(tmp_path, lambda t: pd.concat([t, t.iloc[::4]], ignore_index=True))
        assert fit.main([str(path), *FLAGS, "--n-boot", "50", "--format", "json"]) == 0
        fits[name] = json.loads(capsys.readouterr().out)
    repeats = len(pd.read_csv(EPOCH_CSV).query("loss < 3.44").iloc[::4])
    notes = [note for note in fits["repeated"]["notes"] if "duplicate" in note]
    assert len(notes) == 1 and notes[0].startswith(f"dropped {repeats} duplicate rows (row ")
    for approach in ("approach2", "approach3"):  # the same runs, so the same estimate and interval
        assert fits["repeated"][approach]["a"] == fits["clean"][approach]["a"]
        assert fits["repeated"][approach]["ci"]["a"] == fits["clean"][approach]["ci"]["a"]


def test_runs_at_the_same_size_and_tokens_but_other_losses_are_kept(tmp_path):
    runs = isoflop_runs(HOFFMANN_2022, np.logspace(18, 20, 3), sizes=5, noise=0.0, seed=0)
    seeds = pd.concat([runs, runs.assign(loss=runs["loss"] + 0.01)], ignore_index=True)  # two seeds per point
    path = tmp_path / "seeds.csv"
    seeds[["N", "D", "loss"]].to_csv(path, index=False)
    data = load(path)
    assert len(data.runs) == 2 * len(runs) and not any("duplicate" in note for note in data.notes)


@pytest.mark.parametrize(
    "column, row, value, named",
    [
        ("loss", 7, 1e300, "loss = 1e+300 in row 7"),
        ("loss", 2, 1e-300, "loss = 1e-300 in row 2"),
        ("Model Size", 3, 1e300, "Model Size = 1e+300 in row 3"),
        ("Training FLOP", 5, 1e-30, "D (= Training FLOP / 6N) = "),
        ("loss", 4, 3e4, "loss = 3e+04 in row 4 lies 4 decades from the column's median"),
    ],
)
def test_values_no_run_could_have_are_refused_naming_row_and_value(tmp_path, capsys, column, row, value, named):
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table.loc[row, column] = value
        return table

    assert fit.main([str(_table(tmp_path, change)), *FLAGS, "--n-boot", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs.csv" in err and named in err and "no run has such a value" in err


def test_sizes_beyond_any_units_are_named_even_when_every_row_has_them(tmp_path, capsys):
    """No row stands out from the others, and 6 N D stays finite (D = C / 6N): still no run has them."""
    path = _table(tmp_path, lambda t: t.assign(**{"Model Size": t["Model Size"] * 1e295}))
    assert fit.main([str(path), *FLAGS, "--n-boot", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Model Size = " in err and "outside 1e-100 to 1e100" in err
    assert "missing or infinite" not in err


def test_text_where_a_number_belongs_is_refused_in_one_line(tmp_path, capsys):
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table["loss"] = table["loss"].astype(object)
        table.loc[5, "loss"] = "3.1x"
        table.loc[9, "loss"] = "loss"  # a header repeated where two files were joined
        return table

    assert fit.main([str(_table(tmp_path, change)), *FLAGS, "--n-boot", "20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "column 'loss' holds '3.1x' in row 5, which is not a number (and 1 more rows)" in err


def test_the_published_tables_pass_unchanged():
    """The checks never fire on real studies (Hoffmann et al. via Epoch; Gadre et al.)."""
    assert load(EPOCH_CSV, EPOCH_COLUMNS).notes == ("using 245 rows",)
    gadre = load(
        Path(__file__).parent / "data" / "gadre2024_rpj_c4_eval.csv",
        Columns(n="params", d="tokens", loss="loss_c4_val"),
    )
    assert len(gadre.runs) == 35 and gadre.notes == ("using 35 rows",)
