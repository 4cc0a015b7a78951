"""The jitted step and evaluation: accumulation equals the full batch, determinism, one program per shape, bf16, micro-batched evaluation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scaling.config import ModelConfig, TrainConfig
from scaling.model.transformer import build_model
from scaling.training.optimizer import make_optimizer, optimizer_factory
from scaling.training.schedule import schedule_values
from scaling.training.step import loss_fn, make_eval, make_train_step

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
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5
        )  # Adam divides by sqrt(v): a near-zero gradient magnifies float32 summation order


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


def test_evaluation_in_micro_batches_equals_whole_chunks():
    graphdef, _, params, _ = _state()
    chunks = jnp.asarray(np.random.default_rng(2).integers(0, VOCAB, (3, 8, 17)), jnp.int32)
    whole = np.asarray(make_eval(graphdef, 1)(params, chunks))  # every window's loss, in the windows' order
    per_window = [float(loss_fn(graphdef, params, chunks[c, i : i + 1])) for c in range(3) for i in range(8)]
    np.testing.assert_allclose(whole, per_window, rtol=1e-5)
    for micro in (2, 4, 8):
        np.testing.assert_allclose(np.asarray(make_eval(graphdef, micro)(params, chunks)), whole, rtol=1e-6)
