"""Training: gradient accumulation == full batch, a short run whose loss falls, the run directory."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from scaling.training import rundir
from scaling.training.relaunch import prepare_run_dir
from scaling.training.trainer import train
from tests.helpers import compose_config


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, tiny_overrides):
    run_dir = tmp_path_factory.mktemp("run")
    cfg = compose_config([*tiny_overrides, f"run_dir={run_dir}", "train.tokens=40000", "train.log_every=5"])
    return run_dir, train(cfg)


def test_short_run_loss_falls_and_summary_is_complete(short_run):
    run_dir, summary = short_run
    assert summary["status"] == "completed"
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    evals = metrics.dropna(subset=["eval_loss"])
    assert evals.eval_loss.iloc[0] == pytest.approx(np.log(300), abs=0.1)  # step 0 = initialisation
    assert evals.eval_loss.iloc[-1] < evals.eval_loss.iloc[0] - 1.0
    stored = json.loads((run_dir / "summary.json").read_text())
    required = {
        "status",
        "params_total",
        "params_embedding",
        "params_nonembedding",
        "d_model",
        "n_layers",
        "n_heads",
        "seq_len",
        "vocab_size",
        "tokens",
        "flops_6n",
        "flops_chinchilla",
        "steps",
        "final_train_loss",
        "final_eval_loss",
        "wall_s",
        "params_digest",
        "corpus_hash",
        "tokenizer_hash",
        "versions",
        "epochs",
        "runtime",
    }
    assert required <= stored.keys()
    assert stored["steps"] == 40000 // (8 * 32)
    assert stored["tokens"] == stored["steps"] * 8 * 32
    assert stored["final_eval_loss"] == pytest.approx(evals.eval_loss.iloc[-1])


def test_metrics_table_has_one_row_per_logged_step(short_run):
    run_dir, summary = short_run
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert list(metrics.columns) == [
        "step",
        "tokens",
        "flops",
        "lr",
        "train_loss",
        "eval_loss",
        "grad_norm",
        "clipped_fraction",
        "tokens_per_s",
        "wall_s",
    ]
    assert metrics.step.is_unique and metrics.step.is_monotonic_increasing
    assert metrics.step.iloc[-1] == summary["steps"]
    train_rows = metrics.dropna(subset=["train_loss"])
    assert set(range(5, summary["steps"] + 1, 5)) <= set(train_rows.step)
    np.testing.assert_array_equal(metrics.tokens, metrics.step * 8 * 32)
    # Gradient statistics at every logged step: a norm, and the share of the steps since the last log
    # whose gradient norm exceeded train.grad_clip.
    assert (train_rows.grad_norm > 0).all() and train_rows.clipped_fraction.between(0, 1).all()
    assert metrics[metrics.train_loss.isna()].grad_norm.isna().all()


def test_config_yaml_states_derived_numbers(short_run):
    run_dir, summary = short_run
    stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert stored["derived"]["params_total"] == summary["params_total"]
    assert stored["config"]["model"]["d_model"] == 32
    assert stored["data"]["tokenizer_hash"] == summary["tokenizer_hash"]


def test_flops_budget_and_param_target(tmp_path, tiny_overrides):
    cfg = compose_config([*tiny_overrides, f"run_dir={tmp_path}", "model.n_params=60000", "train.flops=2e10"])
    summary = train(cfg)
    assert summary["status"] == "completed"
    assert abs(summary["params_total"] / 60000 - 1) <= 0.10
    assert summary["flops_6n"] <= 2e10
    assert summary["flops_6n"] > 2e10 - 6 * summary["params_total"] * 8 * 32  # within one step of the budget


def test_nan_loss_marks_the_run_diverged(tmp_path, tiny_overrides):
    cfg = compose_config(
        [*tiny_overrides, f"run_dir={tmp_path}", "train.tokens=20000", "train.lr=1e30", "train.warmup_fraction=0"]
    )
    summary = train(cfg)
    assert summary["status"] == "diverged"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_resuming_with_other_micro_batches_warns(tmp_path):
    cfg = compose_config([f"run_dir={tmp_path}", "train.tokens=100000"])
    resolved = {"config": dataclasses.asdict(cfg), "derived": {"grad_accum": 1}, "data": {}}
    rundir.write_config(tmp_path, {**resolved, "derived": {"grad_accum": 8}})  # started elsewhere
    with pytest.warns(UserWarning, match=r"8 micro-batches per step and goes on with 1 .* not bit for bit"):
        assert prepare_run_dir(cfg, tmp_path, resolved) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (prepare_run_dir stored the new value: no warning now)
        assert prepare_run_dir(cfg, tmp_path, resolved) is None
