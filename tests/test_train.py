"""Training: gradient accumulation == full batch, a short run whose loss falls, the run directory."""

from __future__ import annotations

import dataclasses
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml
from flax import nnx

from scaling import rundir
from scaling.config import ModelConfig, TrainConfig
from scaling.model import build_model
from scaling.optimizer import make_optimizer, optimizer_factory, schedule_values
from scaling.train import loss_fn, make_eval, make_train_step, micro_batches, prepare_run_dir, train
from tests.helpers import compose_config

VOCAB = 61
TRAIN = TrainConfig(lr=1e-2, warmup_fraction=0.0)
SCHEDULE = jnp.asarray(schedule_values(TRAIN, 100))


def _state(seed: int = 0):
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, seq_len=16, compute_dtype="float32")
    graphdef, params = nnx.split(build_model(cfg, VOCAB, seed), nnx.Param)
    params = nnx.to_pure_dict(params)
    return graphdef, optimizer_factory(TRAIN), params, make_optimizer(TRAIN, 100).init(params)


def test_gradient_accumulation_equals_full_batch():
    seqs = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, (8, 17)), jnp.int32)
    results = []
    for accum in (1, 4):
        graphdef, tx, params, opt_state = _state()
        step = make_train_step(graphdef, tx, accum)
        for _ in range(3):
            params, opt_state, metrics = step(params, opt_state, seqs, SCHEDULE)
        results.append((params, float(metrics["loss"])))
    (full, loss_full), (accum, loss_accum) = results
    assert loss_full == pytest.approx(loss_accum, rel=1e-5)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(accum)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("requested", "batch", "d_model", "seq_len", "devices", "backend", "expected"),
    [
        (None, 16, 256, 256, 1, "cpu", 8),  # 2 x 256 = 512 tokens per micro-batch
        (None, 8, 512, 512, 1, "cpu", 8),  # one 512-token sequence each
        (None, 16, 256, 256, 2, "cpu", 4),  # per device: 8 sequences -> 4 x 2
        (None, 16, 256, 64, 1, "cpu", 2),  # 8 x 64 = 512 tokens
        (None, 6, 256, 100, 1, "cpu", 1),  # 600 tokens in all: splitting would go below 512
        (None, 16, 32, 256, 1, "cpu", 1),  # too narrow to gain
        (None, 16, 256, 256, 3, "cpu", 1),  # does not split over the devices (validation says so)
        (None, 16, 256, 256, 1, "gpu", 1),  # accelerators: the whole batch
        (3, 12, 256, 256, 1, "gpu", 3),  # an explicit value is kept
    ],
)
def test_micro_batches_are_chosen_for_the_backend(requested, batch, d_model, seq_len, devices, backend, expected):
    model = ModelConfig(d_model=d_model, n_layers=2, n_heads=2, seq_len=seq_len)
    assert micro_batches(requested, batch, model, devices, backend) == expected


def test_train_step_is_deterministic():
    seqs = jnp.asarray(np.random.default_rng(1).integers(0, VOCAB, (4, 17)), jnp.int32)
    digests = []
    for _ in range(2):
        graphdef, tx, params, opt_state = _state(seed=3)
        params, _, _ = make_train_step(graphdef, tx, 1)(params, opt_state, seqs, SCHEDULE)
        digests.append(b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves(params)))
    assert digests[0] == digests[1]


def _step_program(train: TrainConfig, total_steps: int) -> str:
    graphdef, _, params, opt_state = _state()
    seqs = jax.ShapeDtypeStruct((4, 17), jnp.int32)
    schedule = jnp.asarray(schedule_values(train, total_steps))
    return make_train_step(graphdef, optimizer_factory(train), 1).lower(params, opt_state, seqs, schedule).as_text()


def test_budget_lr_and_warmup_do_not_change_the_compiled_program():
    """Runs of one shape share a compile (and a persistent-cache entry) across an IsoFLOP or lr sweep."""
    base = _step_program(TrainConfig(lr=1e-3, schedule="cosine"), 100)
    assert _step_program(TrainConfig(lr=3e-3, warmup_steps=7, schedule="cosine"), 5000) == base
    assert _step_program(TrainConfig(lr=1e-3, schedule="wsd"), 100) != base  # the schedule's form is the program's


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
        "status", "params_total", "params_embedding", "params_nonembedding", "d_model", "n_layers", "n_heads",
        "seq_len", "vocab_size", "tokens", "flops_6n", "flops_chinchilla", "steps", "final_train_loss",
        "final_eval_loss", "wall_s", "params_digest", "data_hash", "tokenizer_hash", "versions", "epochs",
    }  # fmt: skip
    assert required <= stored.keys()
    assert stored["steps"] == 40000 // (8 * 32)
    assert stored["tokens"] == stored["steps"] * 8 * 32
    assert stored["final_eval_loss"] == pytest.approx(evals.eval_loss.iloc[-1])


def test_metrics_table_has_one_row_per_logged_step(short_run):
    run_dir, summary = short_run
    metrics = pd.read_parquet(run_dir / "metrics.parquet")
    assert list(metrics.columns) == ["step", "tokens", "flops", "lr", "train_loss", "eval_loss", "tokens_per_s", "wall_s"]
    assert metrics.step.is_unique and metrics.step.is_monotonic_increasing
    assert metrics.step.iloc[-1] == summary["steps"]
    train_rows = metrics.dropna(subset=["train_loss"])
    assert set(range(5, summary["steps"] + 1, 5)) <= set(train_rows.step)
    np.testing.assert_array_equal(metrics.tokens, metrics.step * 8 * 32)


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
    cfg = compose_config([*tiny_overrides, f"run_dir={tmp_path}", "train.tokens=20000", "train.lr=1e30", "train.warmup_fraction=0"])
    summary = train(cfg)
    assert summary["status"] == "diverged"
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_bf16_compute_keeps_fp32_master_weights_and_tracks_fp32_training():
    """The GPU path's mixed precision, run on CPU: bf16 matmuls, fp32 params and AdamW moments."""
    seqs = jnp.asarray(np.random.default_rng(2).integers(0, VOCAB, (8, 17)), jnp.int32)
    losses = {}
    for dtype in ("float32", "bfloat16"):
        cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, seq_len=16, compute_dtype=dtype)
        graphdef, params = nnx.split(build_model(cfg, VOCAB, 0), nnx.Param)
        params = nnx.to_pure_dict(params)
        opt_state = make_optimizer(TRAIN, 100).init(params)
        step = make_train_step(graphdef, optimizer_factory(TRAIN), 1)
        curve = []
        for _ in range(25):
            params, opt_state, metrics = step(params, opt_state, seqs, SCHEDULE)
            curve.append(float(metrics["loss"]))
        losses[dtype] = np.array(curve)
        assert {x.dtype for x in jax.tree.leaves((params, opt_state)) if x.ndim > 0} == {jnp.dtype(jnp.float32)}
    assert losses["bfloat16"][-1] < 0.5 * losses["bfloat16"][0]  # it learns the fixed batch
    assert not np.array_equal(losses["bfloat16"], losses["float32"])  # the matmuls really ran in bf16
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05)


def test_resuming_with_other_micro_batches_warns(tmp_path):
    cfg = compose_config([f"run_dir={tmp_path}", "train.tokens=100000"])
    resolved = {"config": dataclasses.asdict(cfg), "derived": {"grad_accum": 1}, "data": {}}
    rundir.write_config(tmp_path, {**resolved, "derived": {"grad_accum": 8}})  # started elsewhere
    with pytest.warns(UserWarning, match=r"8 micro-batches per step and goes on with 1 .* not bit for bit"):
        assert prepare_run_dir(cfg, tmp_path, resolved) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (prepare_run_dir stored the new value: no warning now)
        assert prepare_run_dir(cfg, tmp_path, resolved) is None


def test_evaluation_in_micro_batches_equals_whole_chunks():
    graphdef, _, params, _ = _state()
    chunks = jnp.asarray(np.random.default_rng(2).integers(0, VOCAB, (3, 8, 17)), jnp.int32)
    whole = float(make_eval(graphdef, 1)(params, chunks))
    per_window = [float(loss_fn(graphdef, params, chunks[c, i : i + 1])) for c in range(3) for i in range(8)]
    assert whole == pytest.approx(np.mean(per_window), rel=1e-6)
    for micro in (2, 4, 8):
        assert float(make_eval(graphdef, micro)(params, chunks)) == pytest.approx(whole, rel=1e-6)
