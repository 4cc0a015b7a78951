"""One sweep job, from its config to its rows in the runs table: its runs (one per seed), each named, a
grid point that cannot train dropped, a finished run skipped, else trained in this process.

A run's failure is recorded (in its summary, the table and the launch log), never raised, so one bad run
never takes the others down; the launch then exits 3 (scaling/sweeping/callback.py). Two things stop a
whole job: a full disk (every later run would meet it too) and a preemption (the run checkpointed; the job
exits 128 + the signal, and submitit requeues it or a relaunch resumes it).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Any

from scaling import contract, diskspace
from scaling.config import RunConfig
from scaling.config import replace as cfg_replace
from scaling.data.load import load_corpus
from scaling.errors import EXIT_DISK_FULL, ConfigError, DiskFull, RunBusy, Stop, signal_exit_code
from scaling.planning.plan import isoflop_point, make_plan
from scaling.sweeping import progress
from scaling.sweeping.naming import named_run, naming_keys, sweep_dir, swept_values
from scaling.sweeping.runs_table import completed_summary, log_outcome, record, table_row
from scaling.sweeping.wsd import wsd_ladder
from scaling.training import rundir
from scaling.training.trainer import train
from scaling.training.validate import validate_config


def seeded_runs(cfg: RunConfig, swept: dict[str, Any]) -> list[tuple[RunConfig, dict[str, Any]]]:
    """A grid point's runs, one per seed (sweep.seeds): train.seed + seeds x seed_offset + k, the data order's
    seed shifted alike when it is set apart. A run at a seed other than train.seed is named by it (a swept
    `train.seed`), so a one-seed sweep relaunched with more seeds trains only the new ones."""
    k_seeds, runs = cfg.sweep.seeds, []
    for k in range(k_seeds):
        shift = k_seeds * cfg.sweep.seed_offset + k
        seed, data_seed = cfg.train.seed + shift, cfg.train.data_seed
        seeded = cfg_replace(cfg, train={"seed": seed, "data_seed": None if data_seed is None else data_seed + shift})
        runs.append((seeded, {**swept, "train.seed": seed} if shift else swept))
    return runs


def plan_job(cfg: RunConfig, sweeper_params, task_overrides) -> tuple[list[tuple[RunConfig, dict]], str | None]:
    """A multirun job's runs (one per seed), each named from its swept values, and why the grid point
    cannot train (None if it can)."""
    validate_config(cfg)
    keys = naming_keys(cfg.sweep.vary, (sweeper_params or {}).keys())
    swept = swept_values(keys, task_overrides)
    drop_reason = None
    if cfg.sweep.point is not None:
        corpus = load_corpus(cfg.data, progress=cfg.progress)
        drop_reason = isoflop_point(cfg, corpus.vocab_size, max_tokens=len(corpus.train)).dropped
    return [(named_run(c, s), s) for c, s in seeded_runs(cfg, swept)], drop_reason


def plan_run(cfg: RunConfig):
    """A run's plan (size, tokens, steps) as its job will make it."""
    return make_plan(cfg, load_corpus(cfg.data, progress=False).vocab_size)


def run_job(runs: list[tuple[RunConfig, dict[str, Any]]], drop_reason: str | None, runtime: dict[str, Any]) -> dict:
    """One multirun job, in this process: its runs one after another (a WSD ladder run trains its main
    run, then its branches). The summary of a job of one run; name -> summary for several."""
    if drop_reason:
        for cfg, _ in runs:
            name = Path(cfg.run_dir).name
            print(f"[{cfg.sweep.name}] {name}: dropped ({drop_reason})", file=sys.stderr)
            log_outcome(sweep_dir(cfg), cfg.sweep.launch, name, "dropped", None)
        return {"status": "dropped", "reason": drop_reason}
    done = {}
    for cfg, swept in runs:
        ladder = wsd_ladder(cfg) if cfg.sweep.branches else [(cfg, {})]
        done.update({Path(c.run_dir).name: run_one(c, swept, extra, runtime) for c, extra in ladder})
    return done if len(done) > 1 else next(iter(done.values()))


ROW_BYTES = 64 * 1024  # room for one more row of runs.parquet and launches.jsonl


class DiskFullStop(Stop):
    """A run found the disk full (it said where, in one line): the sweep stops there."""

    exit_code = EXIT_DISK_FULL


class Preempted(Stop):
    """A run was preempted (or Ctrl-C'd) and checkpointed: the job stops with 128 + the signal, and its
    relaunch (submitit requeues it) resumes the run."""

    def __init__(self, message: str, signal_name: str | None):
        super().__init__(message)
        self.exit_code = signal_exit_code(signal_name)


def train_here(cfg: RunConfig, swept: dict[str, Any], runtime: dict[str, Any]) -> dict:
    """Train one run of the sweep in this process; its failure is recorded, not raised, so one bad run
    never takes the others down. A full disk stops the sweep (every later run would meet it too)."""
    try:
        return train(cfg, runtime, swept)
    except DiskFull as err:
        print(err.line(), file=sys.stderr)
        raise DiskFullStop(
            f"error: [{cfg.sweep.name}] {Path(cfg.run_dir).name}: stopped the sweep, the disk is full"
        ) from err
    except RunBusy as err:
        print(err.line(), file=sys.stderr)
        return {"status": "busy", "error": "another launch is training it and records its row"}
    except ConfigError as err:
        print(err.line(), file=sys.stderr)
        return {"status": contract.FAILED, "error": err.line()}
    except Exception as err:  # noqa: BLE001 - recorded in the run's summary and the table, and shown in full
        traceback.print_exc()
        summary = {"status": contract.FAILED, "error": repr(err)[:2000]}
        if Path(cfg.run_dir).is_dir():
            rundir.write_summary(Path(cfg.run_dir), summary)
        return summary


def worker_failure(kind: str, value: Any) -> str:
    """Why a run failed when its worker process raised ("error", the traceback) or died ("lost", exit code)."""
    return f"its worker process died (exit code {value})" if kind == "lost" else value.strip().splitlines()[-1]


def record_failed(cfg: RunConfig, reason: str) -> dict:
    """Record a run that its worker could not record itself as failed: one line, its summary (when its
    folder exists) and the launch log. Returns the summary."""
    summary = {"status": contract.FAILED, "error": reason[:2000]}
    print(f"[{cfg.sweep.name}] {Path(cfg.run_dir).name}: failed: {reason}", file=sys.stderr)
    if Path(cfg.run_dir).is_dir():
        rundir.write_summary(Path(cfg.run_dir), summary)
    log_outcome(sweep_dir(cfg), cfg.sweep.launch, Path(cfg.run_dir).name, contract.FAILED, summary)
    return summary


def run_one(
    cfg: RunConfig, swept: dict[str, Any], extra: dict[str, Any], runtime: dict[str, Any], trained: dict | None = None
) -> dict:
    """Skip if done, else train here (or take the summary of a pack that trained it); record the table
    row and print one line.

    A run another launch is training (its lock is held) is left to that launch, which records it."""
    folder, name = sweep_dir(cfg), Path(cfg.run_dir).name
    try:
        summary = trained or completed_summary(cfg)
    except ConfigError as err:  # a damaged config.yaml: this run cannot go on, the others can
        print(err.line(), file=sys.stderr)
        trained = summary = {"status": contract.FAILED, "error": err.line()}
    outcome = "trained" if trained and trained.get("status") == contract.COMPLETED else "skipped"
    if trained is not None and outcome != "trained":
        outcome = trained.get("status", contract.FAILED)
    if summary is None:
        summary = train_here(cfg, swept, runtime)
        outcome = "trained" if summary.get("status") == contract.COMPLETED else summary.get("status", contract.FAILED)
    table = folder / contract.RUNS_TABLE
    with diskspace.reported(folder, (table.stat().st_size if table.exists() else 0) + ROW_BYTES):
        if contract.PARAMS_TOTAL in summary:
            record(folder, {**table_row(summary, cfg, swept, folder), **extra})
        log_outcome(folder, cfg.sweep.launch, name, outcome, summary)
    print(f"[{cfg.sweep.name}] {name}: {outcome} {_describe(summary)}", file=sys.stderr)
    where = progress.line(folder, cfg.sweep.launch)
    if where:
        print(f"[{cfg.sweep.name}] {where}", file=sys.stderr)
    if summary.get("status") == contract.PREEMPTED:
        signal_name = summary.get(contract.STOP_SIGNAL)
        raise Preempted(
            f"[{cfg.sweep.name}] {name}: stopped by {signal_name} and checkpointed; the relaunched job resumes it",
            signal_name,
        )
    return summary


def _describe(s: dict) -> str:
    if contract.PARAMS_TOTAL not in s:
        return s.get("error", "")
    where = f" at step {s[contract.DIVERGED_STEP]}" if contract.DIVERGED_STEP in s else ""
    loss = s.get(contract.FINAL_EVAL_LOSS)
    loss = "none" if loss is None else f"{loss:.4f}"  # (null in JSON when there was no finite one)
    return f"N={s['params_total']:,} D={s['tokens']:,} eval_loss={loss} ({s['wall_s']:.0f}s){where}"
