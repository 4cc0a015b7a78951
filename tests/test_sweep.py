"""Sweeps: the IsoFLOP grid (pure), shipped sweep definitions, a real multirun, the runs table."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from scaling.config import ModelConfig, register_configs
from scaling.isoflop import expected_optimum, grid_point, isoflop_grid, offsets, sweep_grid
from scaling.sizing import param_count
from scaling.sweep import record
from tests.helpers import run_cli


def _compose_sweep(name: str, overrides: list[str] = ()) -> object:
    register_configs()
    with initialize_config_module(config_module="sweeps", version_base="1.3"):
        return compose(config_name="config", overrides=[f"sweep={name}", *overrides], return_hydra_config=True)


def test_offsets_are_symmetric_around_the_optimum():
    assert offsets(5) == [-2, -1, 0, 1, 2]
    assert offsets(4) == [-2, -1, 0, 1]


def test_grid_points_are_log_spaced_with_d_from_c_over_6n():
    model = ModelConfig(seq_len=256)
    grid = isoflop_grid([1e17, 1e18], offsets(5), model, 4096, 256 * 64, spacing=2.0)
    for g in grid:
        assert g.dropped is None
        assert g.n_params == param_count(ModelConfig(d_model=g.shape[0], n_layers=g.shape[1], n_heads=g.shape[2], seq_len=256), 4096).total
        assert abs(g.n_params / g.n_target - 1) <= 0.10
        assert 0 <= g.budget / (6 * g.n_params) - g.tokens < 256 * 64  # whole steps, at most one short
    targets = np.log([g.n_target for g in grid if g.budget == 1e17])
    np.testing.assert_allclose(np.diff(targets), math.log(2.0), atol=1e-3)
    centre = next(g for g in grid if g.budget == 1e18 and g.point == 0)
    assert centre.n_target == round(expected_optimum(1e18))


def test_grid_drops_points_with_reasons():
    model = ModelConfig(seq_len=64)
    too_small = grid_point(1e8, -2, model, 512, 1024)
    assert too_small.dropped and "smallest model" in too_small.dropped
    under_a_step = grid_point(1e10, 10, model, 512, 1024)
    assert under_a_step.dropped and "one step" in under_a_step.dropped
    beyond_data = grid_point(1e13, 0, model, 512, 1024, max_tokens=1_000_000)
    assert beyond_data.dropped and "exceeds" in beyond_data.dropped
    assert grid_point(1e12, 0, model, 512, 1024, max_tokens=10**9).dropped is None


def test_chinchilla_isoflop_grid_matches_hoffmann_design():
    grid = sweep_grid(_compose_sweep("chinchilla_isoflop"))
    budgets = sorted({g.budget for g in grid})
    assert budgets == [6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21]
    for c in budgets:
        points = [g for g in grid if g.budget == c]
        assert len(points) == 7 and all(g.dropped is None for g in points)
        n = sorted(g.n_params for g in points)
        optimum = expected_optimum(c)
        assert n[0] < optimum / 3 and n[-1] > optimum * 3  # spans the optimum on both sides
        assert n == sorted(set(n))  # distinct sizes
        for g in points:
            assert g.tokens * 6 * g.n_params == pytest.approx(c, rel=0.01)


def test_demo_grid_spans_the_optimum_with_five_sizes_per_budget():
    grid = sweep_grid(_compose_sweep("demo"))
    budgets = sorted({g.budget for g in grid})
    assert len(budgets) >= 3
    for c in budgets:
        kept = [g for g in grid if g.budget == c and g.dropped is None]
        assert len(kept) >= 5
        assert min(g.point for g in kept) < 0 < max(g.point for g in kept)


def test_pythia_suite_shares_budget_and_data_order():
    config = _compose_sweep("pythia_suite")
    sizes = str(config.hydra.sweeper.params["model.n_params"]).split(",")
    assert len(sizes) >= 3
    assert config.train.tokens and config.train.data_seed is not None
    assert config.checkpoint.log_spaced


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


def test_tiny_sweep_fills_the_table_then_relaunch_trains_nothing(tiny_sweep):
    root, args, first = tiny_sweep
    assert first.returncode == 0, first.stderr[-3000:]
    table = pd.read_parquet(root / "tiny" / "runs.parquet")
    assert len(table) == 6 and (table.status == "completed").all() and table.run_name.is_unique
    assert {"budget", "params_total", "tokens", "final_eval_loss", "flops_6n", "run_dir"} <= set(table.columns)
    assert sorted(table.budget.unique()) == [4e10, 8e10]
    assert "6 trained, 0 skipped, 0 failed" in first.stderr
    for run_dir in table.run_dir:
        assert (root / "tiny" / run_dir / "metrics.parquet").exists()
    again = run_cli(args, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 trained, 6 skipped, 0 failed" in again.stderr
    assert len(pd.read_parquet(root / "tiny" / "runs.parquet")) == 6


def test_run_names_are_readable_and_stable(tiny_sweep):
    root, _, _ = tiny_sweep
    names = sorted(p.name for p in (root / "tiny" / "runs").iterdir())
    assert names[0] == "flops=4e10,point=-1" and len(names) == 6


def test_wsd_ladder_branches_share_the_main_runs_prefix(tmp_path, tiny_corpus_dir, cache_dir):
    args = [
        "--multirun", "sweep=wsd_ladder", f"results_root={tmp_path}", "model.n_params=12000", "train.tokens=20480",
        "sweep.branches=[0.5]", "data=text", f"data.path={tiny_corpus_dir}/*.txt", "data.vocab_size=300",
        "data.val_fraction=0.2", f"data.cache_dir={cache_dir}", "data.eval_tokens=2048", "model.seq_len=32",
        "train.batch_size=8",
    ]  # fmt: skip
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
    pd.testing.assert_frame_equal(b.loc[shared, ["lr", "train_loss", "eval_loss"]], m.loc[shared, ["lr", "train_loss", "eval_loss"]])
    assert b.lr.loc[40] == pytest.approx(0.0, abs=1e-12) and m.lr.loc[40] > 0  # branch cooled down, main did not
