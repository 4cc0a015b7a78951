"""The divergence rule: healthy curves (noisy, or with an early bump that recovers) pass; a loss that
leaves its best for good, blows up before the first log, or is not finite is caught at the right step;
a real run at lr=10 is recorded `diverged` and stops, and a resumed run reaches the same verdict."""

from __future__ import annotations

import json
import math
import os
import signal

import numpy as np
import pandas as pd
import pytest

from analysis.fit_input import load
from analysis.fits.reference import HOFFMANN_2022
from analysis.fits.synthetic import isoflop_runs
from scaling import contract
from scaling.training.divergence import PATIENCE, RATIO, DivergenceMonitor, first_divergence
from scaling.training.trainer import Trainer, train
from tests.helpers import compose_config, write_sweep

VOCAB = 300
RNG = np.random.default_rng(0)


def healthy_curve(n: int = 200, noise: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """A power-law decay from ln(V) to about 3.7 with batch noise, logged every step."""
    steps = np.arange(1, n + 1)
    return steps, 3.5 + (math.log(VOCAB) - 3.5) * steps**-0.4 + RNG.normal(0, noise, n)


def test_noisy_healthy_curve_is_not_flagged():
    for _ in range(20):
        assert first_divergence(*healthy_curve(), VOCAB) is None


def test_early_bump_that_recovers_within_patience_is_forgiven():
    steps, losses = healthy_curve()
    losses[10 : 10 + PATIENCE - 3] = 2 * math.log(VOCAB)  # (the median needs 3 high values to move)
    assert first_divergence(steps, losses, VOCAB) is None


def test_sustained_rise_is_caught_at_its_first_step():
    steps, losses = healthy_curve()
    losses[120:] = RATIO * 1.3 * losses[:120].min()  # leaves its best for good at step 121
    verdict = first_divergence(steps, losses, VOCAB)
    assert verdict is not None and verdict.step == 123  # the median of 5 turns with the third high loss


def test_blow_up_before_the_first_log_is_measured_against_uniform_guessing():
    steps = np.arange(10, 310, 10)
    losses = np.full(len(steps), 48.0) + RNG.normal(0, 1, len(steps))
    assert first_divergence(steps, losses, VOCAB).step == 10


def test_short_run_that_ends_above_its_limit_diverged():
    steps, losses = healthy_curve(30)
    losses[-5:] = 3 * losses.min()
    assert first_divergence(steps, losses, VOCAB).step == 28
    assert first_divergence(*healthy_curve(30), VOCAB) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_diverges_at_once(bad):
    monitor = DivergenceMonitor(VOCAB)
    assert monitor.add(1, 5.0) is None and monitor.add(2, bad).step == 2


def test_state_is_a_function_of_the_losses_so_far():
    """What a resumed run relies on: replaying the logged losses gives the same monitor."""
    steps, losses = healthy_curve()
    losses[120:] = 3 * losses.min()
    whole, replayed = DivergenceMonitor(VOCAB), DivergenceMonitor(VOCAB)
    for step, loss in zip(steps, losses):
        whole.add(int(step), float(loss))
    for step, loss in zip(steps[:125], losses[:125]):
        replayed.add(int(step), float(loss))
    for step, loss in zip(steps[125:], losses[125:]):
        replayed.add(int(step), float(loss))
    assert whole.verdict == replayed.verdict is not None


LR10 = ["train.tokens=40000", "train.lr=10", "train.log_every=1"]


@pytest.fixture(scope="module")
def lr10_run(tmp_path_factory, tiny_overrides):
    run_dir = tmp_path_factory.mktemp("lr10")
    return run_dir, train(compose_config([f"run_dir={run_dir}", *tiny_overrides, *LR10]))


def test_real_run_at_lr_10_is_recorded_diverged_and_stops(lr10_run):
    run_dir, summary = lr10_run
    stored = json.loads((run_dir / "summary.json").read_text())
    assert stored["status"] == "diverged" and stored["diverged_step"] == summary["diverged_step"]
    assert 1 <= stored["diverged_step"] < 20 and "smoothed train loss" in stored["diverged_reason"]
    assert stored["steps_done"] == stored["diverged_step"] + PATIENCE - 1 < stored["steps"]  # stopped there


def test_resumed_run_reaches_the_same_verdict(lr10_run, tmp_path, tiny_overrides, monkeypatch):
    """Preempted inside the excursion, then resumed: the rule's state is rebuilt from metrics.parquet."""
    reference, summary = lr10_run
    cfg = compose_config([f"run_dir={tmp_path}", *tiny_overrides, *LR10, "checkpoint.steps=[5]"])
    original_init = Trainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        compiled = self.step_fn

        def step_fn(*step_args):
            if self.book.step == 4:
                os.kill(os.getpid(), signal.SIGTERM)
            return compiled(*step_args)

        self.step_fn = step_fn

    monkeypatch.setattr(Trainer, "__init__", init)
    assert train(cfg)["status"] == "preempted"
    monkeypatch.undo()
    resumed = train(cfg)
    assert (resumed["status"], resumed["diverged_step"], resumed["steps_done"]) == (
        "diverged",
        summary["diverged_step"],
        summary["steps_done"],
    )
    rows = pd.read_parquet(tmp_path / "metrics.parquet").dropna(subset=["train_loss"])
    assert rows.step.min() == 1  # the steps before the preemption were kept, not relogged


def test_diverged_runs_are_left_out_of_fits_and_named(tmp_path):
    runs = isoflop_runs(HOFFMANN_2022, np.array([1e18, 1e19]), sizes=5)
    folder = write_sweep(tmp_path, runs, runs, failed=2)  # the last two are marked diverged
    table = pd.read_parquet(folder / contract.RUNS_TABLE)
    table[contract.DIVERGED_STEP] = np.where(table.status == contract.DIVERGED, 40, np.nan)
    table.to_parquet(folder / contract.RUNS_TABLE)
    data = load(folder)
    diverged = table[table.status == contract.DIVERGED].run_name
    assert len(data.runs) == len(runs) - 2 and not set(diverged) & set(data.runs.run)
    assert any(
        note.startswith("diverged, so left out of every fit:")
        and all(f"{name} (at step 40)" in note for name in diverged)
        for note in data.notes
    )
