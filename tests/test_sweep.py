"""Sweeps: the IsoFLOP grid (pure), shipped sweep definitions, a real multirun, the runs table."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pandas as pd
import pytest

from scaling.config import RunConfig
from scaling.config import replace as cfg_replace
from scaling.sweeping.naming import run_name, swept_values
from scaling.sweeping.runs_table import record, swept_of
from tests.helpers import run_cli


def _add_rows(folder: str, start: int) -> None:
    for i in range(start, start + 10):
        record(Path(folder), {"run_name": f"run{i:03d}", "params_total": i, "status": "completed"})


def test_concurrent_writers_never_corrupt_the_table(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_rows, args=(str(tmp_path), 10 * k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    record(tmp_path, {"run_name": "run005", "params_total": -1, "status": "completed"})  # replace, not duplicate
    table = pd.read_parquet(tmp_path / "runs.parquet")
    assert len(table) == 30 and table.run_name.is_unique
    assert table.set_index("run_name").loc["run005", "params_total"] == -1


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """The acceptance command itself, on the embedded corpus, through the joblib launcher."""
    root = tmp_path_factory.mktemp("results")
    args = ["--multirun", "sweep=tiny", f"results_root={root}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    first = run_cli(args, timeout=600)
    return root, args, first


@pytest.mark.slow
def test_tiny_sweep_fills_the_table_then_relaunch_trains_nothing(tiny_sweep):
    root, args, first = tiny_sweep
    assert first.returncode == 0, first.stderr[-3000:]
    table = pd.read_parquet(root / "tiny" / "runs.parquet")
    assert len(table) == 6 and (table.status == "completed").all() and table.run_name.is_unique
    columns = {
        "budget",
        "params_total",
        "tokens",
        "final_eval_loss",
        "flops_6n",
        "run_dir",
        "grad_norm",
        "clipped_fraction",
    }
    assert columns <= set(table.columns)
    assert sorted(table.budget.unique()) == [4e10, 8e10]
    assert "6 trained, 0 skipped, 0 failed" in first.stderr
    for run_dir in table.run_dir:
        assert (root / "tiny" / run_dir / "metrics.parquet").exists()
    again = run_cli(args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 trained, 6 skipped, 0 failed" in again.stderr
    assert len(pd.read_parquet(root / "tiny" / "runs.parquet")) == 6


@pytest.mark.slow
def test_run_names_are_readable_and_stable(tiny_sweep):
    root, _, _ = tiny_sweep
    names = sorted(p.name for p in (root / "tiny" / "runs").iterdir())
    assert names[0] == "flops-4e10_point--1" and len(names) == 6


@pytest.mark.slow
def test_wsd_ladder_branches_share_the_main_runs_prefix(tmp_path, tiny_corpus_dir, cache_dir):
    args = [
        "--multirun",
        "sweep=wsd_ladder",
        f"results_root={tmp_path}",
        "model.n_params=12000",
        "train.tokens=20480",
        "sweep.branches=[0.5]",
        "data=text",
        f"data.path={tiny_corpus_dir}/*.txt",
        "data.vocab_size=300",
        "data.val_fraction=0.3",
        f"data.cache_dir={cache_dir}",
        "data.eval_tokens=2048",
        "model.seq_len=32",
        "train.batch_size=8",
    ]
    result = run_cli(args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "wsd_ladder" / "runs.parquet").set_index("branch_fraction")
    main, branch = table.loc[1.0], table.loc[0.5]
    assert main.steps == 80 and branch.steps == 40
    start = 40 - round(0.2 * 40)
    assert branch.shared_tokens == start * 8 * 32 and branch.branch_of == main.run_name
    m = pd.read_parquet(tmp_path / "wsd_ladder" / main.run_dir / "metrics.parquet").set_index("step")
    b = pd.read_parquet(tmp_path / "wsd_ladder" / branch.run_dir / "metrics.parquet").set_index("step")
    shared = [s for s in b.index if s <= start]
    pd.testing.assert_frame_equal(
        b.loc[shared, ["lr", "train_loss", "eval_loss"]], m.loc[shared, ["lr", "train_loss", "eval_loss"]]
    )
    assert b.lr.loc[40] == pytest.approx(0.0, abs=1e-12) and m.lr.loc[40] > 0  # branch cooled down, main did not


def test_a_key_swept_over_null_and_numbers_names_and_records_every_run(tmp_path):
    """`train.weight_decay_timescale: null,0.25` (sweep=weight_decay): Hydra writes null, the run is named
    by it, and the table's swept column keeps one type, so every run's row is recorded."""
    for value in ("null", "0.25"):
        swept = swept_values(["train.weight_decay_timescale"], [f"train.weight_decay_timescale={value}"])
        assert run_name(swept) == f"weight_decay_timescale-{value}"
        record(tmp_path, {"run_name": run_name(swept), **{f"swept.{k}": v for k, v in swept.items()}})
    table = pd.read_parquet(tmp_path / "runs.parquet").set_index("run_name")["swept.train.weight_decay_timescale"]
    assert table.isna().tolist() == [False, True] and table.iloc[0] == 0.25


def test_a_list_swept_value_read_back_from_a_run_is_recorded_as_the_job_wrote_it(tmp_path):
    """`data.exclude=[],[json_*]` (two mixes side by side): the first run to record finds no table and
    rebuilds it from the run directories, reading the other run's swept values back from its config. They
    must come back as the text its job recorded (parquet refused OmegaConf's ListConfig beside it)."""
    rows = []
    for exclude in ([], ["json_*"]):
        swept = swept_values(["data.exclude"], [f"data.exclude=[{','.join(exclude)}]"])
        cfg = cfg_replace(RunConfig(), data={"exclude": exclude}, sweep={"vary": ["data.exclude"]})
        assert swept_of(cfg) == swept
        rows.append({"run_name": run_name(swept), **{f"swept.{k}": v for k, v in swept_of(cfg).items()}})
    for row in rows:  # one as its job writes it, one as the rebuild reads it back
        record(tmp_path, row)
    table = pd.read_parquet(tmp_path / "runs.parquet").set_index("run_name")["swept.data.exclude"]
    assert table.sort_index().tolist() == ["[]", "[json_*]"]
