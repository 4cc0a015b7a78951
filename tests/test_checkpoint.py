"""Checkpoints: the schedule as data, exact resume after SIGKILL and SIGTERM, damaged checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml

from scaling import contract
from scaling.config import CheckpointConfig, CheckpointRule
from scaling.training.checkpoint import (
    list_checkpoints,
    load_model,
    saved_steps,
    schedule,
    should_save,
)
from scaling.training.runbook import RunBook
from scaling.training.trainer import Trainer, train
from tests.helpers import REPO, compose_config, run_cli, run_in_process

STEPS = 150  # train.tokens / (batch 8 x seq 32)
RUN_ARGS = ["train.tokens=38400", "train.log_every=5"]
COMPARED = ["step", "tokens", "flops", "lr", "train_loss", "eval_loss", "grad_norm", "clipped_fraction"]


def test_default_schedule_is_pythia_like():
    cfg = CheckpointConfig(rules=[CheckpointRule(every=100)])
    assert schedule(cfg, 450) == [0, 1, 2, 4, 8, 16, 32, 64, 100, 128, 200, 256, 300, 400, 450]


def test_rules_apply_in_order_with_explicit_steps():
    cfg = CheckpointConfig(
        log_spaced=False, rules=[CheckpointRule(every=10, until=50), CheckpointRule(every=25)], steps=[7]
    )
    assert schedule(cfg, 120) == [0, 7, 10, 20, 30, 40, 50, 75, 100, 120]


def test_should_save_is_pure_and_bounded():
    cfg = CheckpointConfig()
    assert should_save(cfg, 64, 100) and should_save(cfg, 100, 100)
    assert not should_save(cfg, 65, 100) and not should_save(cfg, 128, 100) and not should_save(cfg, -1, 100)
    assert not should_save(CheckpointConfig(enabled=False), 0, 100)


def _strict_json(path: Path) -> dict:
    """JSON as the standard defines it: a bare NaN or Infinity (which Python writes by default) is an error."""

    def refuse(constant: str):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_run_saving_no_checkpoints_still_evaluates_its_last_step(tmp_path, tiny_overrides, monkeypatch, capsys):
    """checkpoint.enabled=false: the run is completed with a finite final eval loss (issue 25, case 4)."""
    args = [f"run_dir={tmp_path}", *tiny_overrides, "train.tokens=6000", "checkpoint.enabled=false"]
    code, stderr = run_in_process(args, monkeypatch, capsys)
    summary = _strict_json(tmp_path / "summary.json")
    assert code == 0 and summary["status"] == "completed", stderr
    assert np.isfinite(summary["final_eval_loss"]) and saved_steps(tmp_path) == []
    evaluated = pd.read_parquet(tmp_path / "metrics.parquet").dropna(subset=["eval_loss"])
    assert evaluated.step.tolist() == [summary["steps"]]


def _launch(run_dir: Path, overrides: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "scaling.train", f"run_dir={run_dir}", *overrides, *RUN_ARGS]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(run_dir: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (run_dir / "checkpoints" / str(step)).is_dir():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "metrics.parquet")[COMPARED]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_overrides) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    result = run_cli([f"run_dir={run_dir}", *tiny_overrides, *RUN_ARGS])
    assert result.returncode == 0, result.stderr[-2000:]
    assert _summary(run_dir)["steps"] == STEPS
    return run_dir


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    assert _summary(run_dir)["status"] == "completed"
    assert _summary(run_dir)["params_digest"] == _summary(reference)["params_digest"]
    pd.testing.assert_frame_equal(_metrics(run_dir), _metrics(reference))
    assert saved_steps(run_dir) == saved_steps(reference)


def test_sigkill_then_relaunch_is_bitwise_identical(tmp_path, tiny_overrides, reference):
    proc = _launch(tmp_path, tiny_overrides)
    _wait_for_checkpoint(tmp_path, 32, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "summary.json").exists()
    result = run_cli([f"run_dir={tmp_path}", *tiny_overrides, *RUN_ARGS])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming" in result.stderr
    _assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_cleanly(tmp_path, tiny_overrides, reference):
    proc = _launch(tmp_path, tiny_overrides)
    _wait_for_checkpoint(tmp_path, 16, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    summary = _summary(tmp_path)
    assert proc.returncode == (143 if summary["status"] == "preempted" else 0), stderr[-2000:]
    if summary["status"] == "preempted":  # (the run may have finished before the signal landed)
        assert summary["steps_done"] in saved_steps(tmp_path)
        result = run_cli([f"run_dir={tmp_path}", *tiny_overrides, *RUN_ARGS])
        assert result.returncode == 0, result.stderr[-2000:]
    _assert_same_run(tmp_path, reference)


def test_a_crash_just_after_a_checkpoint_resumes_to_the_same_rows(tmp_path, tiny_overrides, reference, monkeypatch):
    """Killed right after a checkpoint between two logs (say 32, between the logs of steps 30 and 35): the
    resumed run's next row counts the clipped steps before the checkpoint too (its checkpoint recorded
    them), as the uninterrupted run's does."""
    clipped = _metrics(reference).dropna(subset=["clipped_fraction"]).set_index("step").clipped_fraction
    next_log = lambda step: -(-step // 5) * 5  # noqa: E731 - train.log_every=5
    # A checkpoint off the logging steps whose window was partly clipped, so that a lost count shows.
    between = [s for s in saved_steps(reference) if s % 5 and 0 < clipped.get(next_log(s), 0) < 1]
    assert between, clipped.to_dict()  # (none: the reference run never clipped part of a window; it can fail)
    crash_at = between[-1]
    original = RunBook.save

    def save(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        if step == crash_at:
            raise RuntimeError("killed")

    cfg = compose_config([f"run_dir={tmp_path}", *tiny_overrides, *RUN_ARGS])
    monkeypatch.setattr(RunBook, "save", save)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg)
    monkeypatch.undo()
    assert saved_steps(tmp_path)[-1] == crash_at and train(cfg)["status"] == "completed"
    _assert_same_run(tmp_path, reference)


def test_a_crash_just_after_the_first_checkpoint_resumes_from_it(tmp_path, tiny_overrides, reference, monkeypatch):
    """Killed right after the step-0 checkpoint (a full disk can stop a run there): the relaunch resumes
    from step 0 without saving that step a second time (Orbax refuses an existing step)."""
    original = RunBook.save

    def save(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        raise RuntimeError("killed")

    cfg = compose_config([f"run_dir={tmp_path}", *tiny_overrides, *RUN_ARGS])
    monkeypatch.setattr(RunBook, "save", save)
    with pytest.raises(RuntimeError, match="killed"):
        train(cfg)
    monkeypatch.undo()
    assert saved_steps(tmp_path) == [0] and train(cfg)["status"] == "completed"
    _assert_same_run(tmp_path, reference)


def _preempted_then_resumed(run_dir: Path, overrides: list[str], at: int, monkeypatch) -> None:
    """SIGTERM delivered at a chosen step (the subprocess test above cannot choose where it lands)."""
    original_init = Trainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        compiled = self.step_fn

        def step_fn(*step_args):
            if self.book.step == at - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return compiled(*step_args)

        self.step_fn = step_fn

    cfg = compose_config([f"run_dir={run_dir}", *overrides, *RUN_ARGS])
    monkeypatch.setattr(Trainer, "__init__", init)
    summary = train(cfg)
    assert (summary["status"], summary["steps_done"]) == ("preempted", at)
    assert at in saved_steps(run_dir)
    assert at not in _metrics(run_dir).dropna(subset=["eval_loss"]).step.tolist()
    monkeypatch.undo()
    assert train(cfg)["status"] == "completed"


@pytest.mark.slow
@pytest.mark.parametrize("at", [23, 25])  # off the checkpoint schedule; 25 is also a logging step
def test_preemption_off_schedule_resumes_to_the_same_run(tmp_path, tiny_overrides, reference, monkeypatch, at):
    _preempted_then_resumed(tmp_path, tiny_overrides, at, monkeypatch)
    _assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_preemption_with_micro_batches_resumes_bitwise(tmp_path, tiny_overrides, monkeypatch):
    overrides = [*tiny_overrides, "train.grad_accum=4"]
    reference = tmp_path / "reference"
    assert train(compose_config([f"run_dir={reference}", *overrides, *RUN_ARGS]))["status"] == "completed"
    _preempted_then_resumed(tmp_path / "resumed", overrides, 40, monkeypatch)
    _assert_same_run(tmp_path / "resumed", reference)


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_previous(tmp_path, tiny_overrides, reference):
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / "summary.json").unlink()
    newest = run_dir / "checkpoints" / str(STEPS)
    for path in (newest / "params").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\0" * path.stat().st_size)  # same size, wrong bytes
    result = run_cli([f"run_dir={run_dir}", *tiny_overrides, *RUN_ARGS])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"checkpoint step {STEPS} is damaged" in result.stderr
    assert "resuming" in result.stderr and "from step 128" in result.stderr
    _assert_same_run(run_dir, reference)


def test_completed_run_relaunched_does_nothing(reference, tiny_overrides):
    before = (reference / "metrics.parquet").stat().st_mtime_ns
    result = run_cli([f"run_dir={reference}", *tiny_overrides, *RUN_ARGS])
    assert result.returncode == 0
    assert "already completed" in result.stderr
    assert (reference / "metrics.parquet").stat().st_mtime_ns == before


def test_changed_config_is_refused_naming_the_field(reference, tiny_overrides):
    result = run_cli([f"run_dir={reference}", *tiny_overrides, *RUN_ARGS, "train.lr=0.01"])
    assert result.returncode == 2
    assert "train.lr" in result.stderr and "Traceback" not in result.stderr


def test_load_any_saved_step_for_analysis(reference):
    listed = list_checkpoints(reference)
    assert [c["step"] for c in listed] == [0, 1, 2, 4, 8, 16, 32, 64, 128, STEPS]
    assert listed[-1]["tokens"] == STEPS * 8 * 32
    tokens = jnp.zeros((1, 8), jnp.int32)
    first, last = load_model(reference, 0)(tokens), load_model(reference)(tokens)
    assert first.shape == (1, 8, 300)
    assert not np.allclose(np.asarray(first), np.asarray(last))


def test_checkpoints_are_plain_orbax(reference):
    import orbax.checkpoint as ocp

    restored = ocp.StandardCheckpointer().restore((reference / "checkpoints" / str(STEPS) / "params").absolute())
    assert "embed" in restored and restored["embed"]["embedding"].shape == (300, 32)


def test_a_swiglu_run_from_before_d_ff_was_recorded_loads_at_its_width(tmp_path, tiny_overrides):
    """SwiGLU was 8/3 d rounded up to a multiple of 64, and config.yaml did not record the width: such a
    run (trained here at that width, its config.yaml then set back to how it was written) loads with it."""
    run_dir = tmp_path / "old"
    train(
        compose_config(
            [*tiny_overrides, "model.mlp=swiglu", "model.d_ff=128", "train.tokens=2048", f"run_dir={run_dir}"]
        )
    )
    path = run_dir / contract.CONFIG_FILE
    stored = yaml.safe_load(path.read_text())
    stored[contract.CONFIG_SECTION]["model"]["d_ff"] = None
    assert stored[contract.DERIVED_SECTION]["model_shape"].pop("d_ff") == 128
    path.write_text(yaml.safe_dump(stored, sort_keys=False))
    (run_dir / contract.RUN_MANIFEST).unlink()  # (such a run is also from before manifests)
    assert load_model(run_dir).blocks[0].mlp.up.kernel.shape == (32, 128)  # today's rule would give 88
