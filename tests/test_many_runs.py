"""One process trains many runs (a sweep job): memory does not grow from run to run, a failed run does
not stop the next, and a run trained after many others is bit for bit the run trained alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaling import contract
from scaling.runtime import initialize
from scaling.sweeping.jobs import train_here
from tests.helpers import compose_config, run_cli

RUNS = 20
SETTLE = 5  # the first runs fill caches (compiled programs, the corpus, Orbax's threads)
# The growth allowed over the last 15 runs: a leak of even one run's parameters, optimiser state and
# evaluation set per run would pass 15 x 1 MB; what is allowed is allocator noise.
MAX_GROWTH_MB = 24


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_twenty_runs_in_one_process(tiny_overrides, tmp_path):
    runtime, memory, summaries = initialize(compilation_cache=False), [], []
    for i in range(RUNS):
        lr = 1e-3 * (1 + i % 4)  # one shape, several learning rates: one compiled program
        overrides = [
            *tiny_overrides,
            f"run_dir={tmp_path / f'run{i}'}",
            "train.tokens=2560",
            f"train.lr={lr}",
            "tracker=none",
        ]
        if i == 7:
            overrides.append("train.init_from=/nonexistent/run")  # this run fails; the next ones must not
        summaries.append(train_here(compose_config(overrides), {}, runtime))
        memory.append(rss_mb())
    assert summaries[7]["status"] == contract.FAILED
    assert all(s["status"] == contract.COMPLETED for i, s in enumerate(summaries) if i != 7)
    growth = memory[-1] - memory[SETTLE - 1]
    assert growth < MAX_GROWTH_MB, f"RSS grew {growth:.0f} MB over {RUNS - SETTLE} runs: {[round(m) for m in memory]}"

    # The last run, trained after 19 others in this process, equals the same run trained alone.
    alone = tmp_path / "alone"
    lr = 1e-3 * (1 + (RUNS - 1) % 4)
    result = run_cli([*tiny_overrides, f"run_dir={alone}", "train.tokens=2560", f"train.lr={lr}", "tracker=none"])
    assert result.returncode == 0, result.stderr[-2000:]
    solo = json.loads((alone / contract.SUMMARY_FILE).read_text())
    assert solo["params_digest"] == summaries[-1]["params_digest"]
    assert solo["final_eval_loss"] == summaries[-1]["final_eval_loss"]
