"""`python -m scaling.bench`: the last line is one JSON row with sane values (timings never asserted)."""

from __future__ import annotations

import json

import pytest

from scaling.bench import FLOPS_CONVENTION
from scaling.config import ModelConfig
from scaling.model.sizing import flops_per_token, param_count
from scaling.peak import DATASHEET_PEAK_FLOPS
from scaling.runtime import cache_root
from tests.helpers import run_cli

TINY = dict(d_model=32, n_layers=2, n_heads=2, seq_len=32)
VOCAB = 300
KEYS = {
    "tokens_per_s",
    "step_time_s",
    "flops_per_token",
    "params_total",
    "params_nonembedding",
    "mfu",
    "device",
    "attention_impl",
}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One tiny benchmark: 2 timed steps after 1 warm-up, alone, 2 packed and 2 side by side. Its cache root
    is private, so the CPU peak below is measured and stored afresh; its compiled programs are the test
    session's (a link), which halves the benchmark's time once they are cached."""
    cache = tmp_path_factory.mktemp("bench_cache")
    (cache_root() / "jax").mkdir(parents=True, exist_ok=True)
    (cache / "jax").symlink_to(cache_root() / "jax", target_is_directory=True)
    args = [f"model.{k}={v}" for k, v in TINY.items()]
    args += [
        f"data.vocab_size={VOCAB}",
        "train.batch_size=4",
        "bench.steps=2",
        "bench.warmup=1",
        "bench.pack=2",
        "bench.jobs=2",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCALING_CACHE", str(cache))
        # 30-90 s on 2 cores (loaded); the limit only catches a hang, so it leaves room for a busy machine.
        return run_cli(args, module="scaling.bench", timeout=600), cache


@pytest.mark.timeout(900)  # its setup runs the benchmark (the fixture above), inside this test's time limit
def test_last_line_is_json_with_the_promised_keys(bench_run):
    result, _ = bench_run
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    row = json.loads(lines[-1])
    assert row.keys() >= KEYS
    assert "tokens/s" in lines[-2]  # the human-readable line comes just before


def test_values_are_sane_and_match_the_analytic_counts(bench_run):
    row = json.loads(bench_run[0].stdout.strip().splitlines()[-1])
    cfg = ModelConfig(**TINY)
    assert row["params_total"] == param_count(cfg, VOCAB).total
    assert row["params_nonembedding"] == param_count(cfg, VOCAB).nonembedding
    assert row["flops_per_token"] == flops_per_token(cfg, VOCAB)["chinchilla"]
    assert row["flops_convention"] == FLOPS_CONVENTION
    assert row["steps"] == 2 and row["step_time_s"] > 0
    assert row["tokens_per_s"] == pytest.approx(4 * TINY["seq_len"] / row["step_time_s"])
    assert 0 < row["mfu"] < 1.5  # achieved FLOP rate over a measured peak; a loaded machine may exceed 1
    assert row["device"].startswith("cpu") and row["attention_impl"] == "xla"


def test_packed_runs_are_timed_together(bench_run):
    row = json.loads(bench_run[0].stdout.strip().splitlines()[-1])
    assert row["pack"] == 2 and row["pack_step_time_s"] > 0
    assert row["pack_tokens_per_s"] == pytest.approx(2 * 4 * TINY["seq_len"] / row["pack_step_time_s"])
    assert row["pack_speedup"] == pytest.approx(row["pack_tokens_per_s"] / row["tokens_per_s"])
    assert "2 packed runs" in bench_run[0].stdout.strip().splitlines()[-2]


def test_runs_side_by_side_are_timed_together(bench_run):
    """bench.jobs=2: two worker processes, one core each (this machine has at least two), both compiled
    before either starts timing; their aggregate rate against one run's."""
    row = json.loads(bench_run[0].stdout.strip().splitlines()[-1])
    assert row["jobs"] == 2 and row["threads_per_job"] == row["threads"] // 2
    assert row["jobs_flops_per_s"] == pytest.approx(row["jobs_tokens_per_s"] * row["flops_per_token"])
    assert row["jobs_speedup"] == pytest.approx(row["jobs_tokens_per_s"] / row["tokens_per_s"])
    assert row["jobs_mfu"] == pytest.approx(row["jobs_flops_per_s"] / row["peak_flops_per_s"])
    assert "2 runs side by side" in bench_run[0].stdout.strip().splitlines()[-2]


def test_cpu_peak_is_the_best_library_and_cached_per_machine(bench_run):
    result, cache = bench_run
    stored = json.loads((cache / "bench" / "cpu_matmul_peaks.json").read_text())
    libraries = {key.rsplit("|", 1)[1].split()[0] for key in stored}
    assert {"jax", "numpy"} <= libraries and all(rate > 1e9 for rate in stored.values())
    row = json.loads(result.stdout.strip().splitlines()[-1])
    best = max(stored, key=stored.get)
    assert row["peak_flops_per_s"] == stored[best]  # MFU is against the fastest library, not JAX's alone
    assert f"({best.rsplit('|', 1)[1]})" in row["peak_source"]  # the library and its version


def test_datasheet_table_matches_specific_names_first():
    names = [name for name, _ in DATASHEET_PEAK_FLOPS]
    for i, name in enumerate(names):
        assert not any(name in later for later in names[i + 1 :]), f"{name} would shadow a later, longer name"


@pytest.mark.parametrize("override", ["bench.stpes=3", "bench.pack=0"])
def test_bad_override_is_one_line_exit_2(override):
    result = run_cli([override], module="scaling.bench", timeout=60)
    assert result.returncode == 2, result.stderr[-2000:]
    assert override.split("=")[0] in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
