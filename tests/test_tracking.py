"""Trackers: TensorBoard event files read back with TensorBoard's own reader, a resumed run's curves
without duplicate steps, W&B offline runs, and a one-line error for a tracker that is not installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from scaling.config import TrackerConfig
from scaling.errors import ConfigError
from scaling.training import tracking
from tests.helpers import run_cli

pytest.importorskip("tensorboardX", reason="the tensorboard tracker needs tensorboardX (the track extra)")
event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="reading events back needs tensorboard (the test extra)",
)


def read_scalars(run_dir: Path, axis: str, tag: str) -> list[tuple[int, float]]:
    """(position, value) pairs of one tag, as TensorBoard's reader presents them (purges applied)."""
    reader = event_accumulator.EventAccumulator(
        str(run_dir / tracking.TENSORBOARD_DIR / axis), size_guidance={"scalars": 0}
    )
    reader.Reload()
    return [(event.step, event.value) for event in reader.Scalars(tag)]


def _tracker(run_dir: Path, resumed_step: int, **kwargs) -> tracking.Tracker:
    cfg = TrackerConfig(**{"tensorboard": True, **kwargs})
    return tracking.Tracker(
        cfg,
        run_dir,
        resumed_step,
        tokens_per_step=100,
        flops_per_token=6e6,
        config={"lr": 1e-3},
        group="sweep",
        name="run",
    )


def test_a_resumed_run_continues_its_curves_without_duplicate_steps(tmp_path):
    first = _tracker(tmp_path, 0)
    for step in range(1, 11):  # killed after step 10; its last checkpoint was step 6
        first.log(step, {"train/loss": 10.0 - step, "eval/loss": float("nan")})
    first.writers["step"].flush()
    for writer in first.writers.values():
        writer.close()
    resumed = _tracker(tmp_path, 6)
    for step in range(7, 13):
        resumed.log(step, {"train/loss": 100.0 + step})
    resumed.finish({"lr": 1e-3, "schedule": "wsd"}, {"final_eval_loss": 3.5, "status": "completed"})
    steps = read_scalars(tmp_path, "step", "train/loss")
    assert [s for s, _ in steps] == list(range(1, 13))  # 7..10 once, from the resumed run
    assert dict(steps)[8] == 108.0 and dict(steps)[6] == 4.0
    tokens = read_scalars(tmp_path, "tokens", "train/loss")
    assert [s for s, _ in tokens] == [100 * s for s in range(1, 13)]
    mflops = read_scalars(tmp_path, "mflops", "train/loss")
    assert [s for s, _ in mflops] == [int(100 * s * 6e6 / 1e6) for s in range(1, 13)]


def test_a_missing_tracker_package_is_one_line_naming_the_extra(monkeypatch):
    real = importlib.import_module

    def missing(name, *args):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real(name, *args)

    monkeypatch.setattr(tracking.importlib, "import_module", missing)
    with pytest.raises(ConfigError) as caught:
        tracking.check_available(TrackerConfig(wandb=True))
    assert str(caught.value).startswith("error: tracker: ") and "pip install -e '.[track]'" in str(caught.value)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="W&B is the track extra's; CI installs it")
def test_wandb_writes_an_offline_run_in_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = _tracker(tmp_path, 0, tensorboard=False, wandb=True)
    tracker.log(1, {"train/loss": 5.0})
    tracker.finish({"lr": 1e-3}, {"final_eval_loss": 3.5})
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_probe_measurements_join_the_runs_curves(tmp_path):
    (tmp_path / tracking.TENSORBOARD_DIR).mkdir()  # the run trained with TensorBoard
    log = tracking.ProbeLog(tmp_path, flops_per_token=6 * 1000)
    log.log(64, 6400, "loss", {"val": 3.25, "unmeasured": float("nan")})
    log.log(128, 12800, "loss", {"val": 3.0})
    log.close()
    assert read_scalars(tmp_path, "step", "probe/loss/val") == [(64, 3.25), (128, 3.0)]
    assert [s for s, _ in read_scalars(tmp_path, "tokens", "probe/loss/val")] == [6400, 12800]
    assert [s for s, _ in read_scalars(tmp_path, "mflops", "probe/loss/val")] == [38, 76]
    reader = event_accumulator.EventAccumulator(str(tmp_path / tracking.TENSORBOARD_DIR / "step"))
    reader.Reload()
    assert "probe/loss/unmeasured" not in reader.Tags()["scalars"]
    elsewhere = tmp_path / "no_tensorboard"
    tracking.ProbeLog(elsewhere, 6e3).close()  # a run trained without TensorBoard gets no event files
    assert not elsewhere.exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="W&B is the track extra's; CI installs it")
def test_the_tiny_sweep_with_wandb_leaves_an_offline_run_per_run_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run_cli(
        ["--multirun", "sweep=tiny", f"results_root={tmp_path}", "sweep.point=0", "tracker=[tensorboard,wandb]"],
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dirs = sorted((tmp_path / "tiny" / "runs").iterdir())
    assert len(run_dirs) == 2  # the two budgets at point 0
    for run_dir in run_dirs:
        assert list((run_dir / "wandb").glob("offline-run-*")), run_dir
        assert read_scalars(run_dir, "step", "train/loss")  # and TensorBoard beside it
