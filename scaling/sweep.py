"""Sweeps through Hydra multirun: one isolated process per run, one tidy table per sweep.

    RESULTS/NAME/
      runs.parquet      one row per run: its summary.json fields plus the swept values
      launches.jsonl    what each launch did with each run (trained, skipped, failed, ...)
      runs/<run name>/  run directories (scaling/rundir.py); the name is Hydra's override_dirname

Relaunching a sweep skips completed runs, resumes interrupted ones from their checkpoints and
retries failed ones. Each run trains in a fresh spawned process, so JAX memory and XLA state never
leak between jobs, whatever the launcher (basic, joblib, submitit).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from scaling import rundir
from scaling.config import RunConfig
from scaling.config import replace as cfg_replace
from scaling.optimizer import warmup_steps
from scaling.errors import EXIT_BAD_INPUT, ConfigError

TABLE, LAUNCH_LOG = "runs.parquet", "launches.jsonl"
LAUNCH_ENV = "SCALING_LAUNCH_ID"
SWEPT_ENV = "SCALING_SWEPT_KEYS"  # set by the callback before jobs start, read by every job
NOT_SWEPT = {"sweep", "results_root", "progress", "debug", "overwrite"}


def sweep_dir(cfg: RunConfig) -> Path:
    return Path(cfg.results_root) / str(cfg.sweep.name)


def swept_keys(config: DictConfig) -> list[str]:
    """Keys a multirun varies: those of hydra.sweeper.params and command-line sweeps (a,b,c)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys = set((config.hydra.sweeper.get("params") or {}).keys())
    for override in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task)):
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return sorted(keys - NOT_SWEPT)


def swept_values() -> dict[str, Any]:
    """key -> value of this job for each swept key (what makes the run distinct)."""
    hydra_cfg = HydraConfig.get()
    keys = os.environ.get(SWEPT_ENV)
    keys = keys.split(",") if keys else list((hydra_cfg.sweeper.get("params") or {}).keys())
    out = {}
    for item in hydra_cfg.overrides.task:
        key, _, value = item.partition("=")
        if key in keys:
            out[key] = _number_or_text(value)
    return out


def run_name() -> str:
    """Readable, stable name from the swept values: 'flops=6e10,point=-1'."""
    swept = swept_values()
    short = [k.rsplit(".", 1)[-1] for k in swept]
    keys = short if len(set(short)) == len(short) else list(swept)
    return ",".join(f"{name}={_compact(v)}" for name, v in sorted(zip(keys, swept.values()))) or "default"


def _compact(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
        return text.replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")
    return str(value).replace("/", "_")


def _number_or_text(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def table_row(summary: dict, cfg: RunConfig, swept: dict[str, Any]) -> dict[str, Any]:
    """Flat row: nested values (package versions) become JSON text so parquet keeps one schema."""
    row = {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in summary.items()}
    run_path = Path(cfg.run_dir)
    row.update(run_name=run_path.name, run_dir=str(run_path.relative_to(sweep_dir(cfg))), sweep=cfg.sweep.name)
    if cfg.train.flops is not None:
        row["budget"] = float(cfg.train.flops)
    row.update({f"swept.{k}": v for k, v in swept.items()})
    return row


def record(folder: Path, row: dict[str, Any]) -> int:
    """Insert or replace this run's row; a file lock serialises concurrent jobs. Returns the row count."""
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{TABLE}.lock")):
        path = folder / TABLE
        table = pd.read_parquet(path) if path.exists() else pd.DataFrame()
        if len(table):
            table = table[table.run_name != row["run_name"]]
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True).sort_values("run_name")
        rundir.atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))
        return len(table)


def log_outcome(folder: Path, run_name: str, outcome: str, summary: dict | None) -> None:
    entry = {"launch": os.environ.get(LAUNCH_ENV, ""), "run_name": run_name, "outcome": outcome, "time": time.time()}
    if summary:
        entry.update({k: summary.get(k) for k in ("status", "params_total", "tokens", "final_eval_loss", "wall_s")})
    with FileLock(str(folder / f"{LAUNCH_LOG}.lock")):
        with open(folder / LAUNCH_LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")


def completed_summary(cfg: RunConfig) -> dict | None:
    """The stored summary when this exact configuration already completed in its run_dir."""
    run_dir = Path(cfg.run_dir)
    summary = rundir.read_json(run_dir / rundir.SUMMARY_FILE)
    stored = rundir.read_config(run_dir)
    if not summary or summary.get("status") != "completed" or stored is None:
        return None
    same = not rundir.config_differences(stored, {"config": dataclasses.asdict(cfg)})
    return summary if same else None


def _child(config_path: str) -> None:
    """Entry of the training process: `python -m scaling.sweep CONFIG.yaml`."""
    from omegaconf import OmegaConf

    from scaling.config import to_dataclass
    from scaling.train import train

    cfg = to_dataclass(OmegaConf.load(config_path))
    try:
        train(cfg)
    except ConfigError as err:
        print(err.line(), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except Exception as err:  # noqa: BLE001 - record the failure so the sweep table shows it
        rundir.write_json(Path(cfg.run_dir) / rundir.SUMMARY_FILE, {"status": "failed", "error": repr(err)[:2000]})
        raise


def _child_env(job_num: int) -> dict[str, str]:
    """No GPU memory pre-allocation (parallel jobs would clash), and one GPU per job when several."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    gpus = [g for g in os.environ.get("SCALING_GPUS", "").split(",") if g]
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[job_num % len(gpus)]
    return env


def train_isolated(cfg: RunConfig, job_num: int = 0) -> int:
    """Train in a fresh process; SIGTERM/SIGUSR2 (preemption, timeout) are forwarded so it checkpoints."""
    from omegaconf import OmegaConf

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "scaling.sweep", f.name], env=_child_env(job_num))
        return _wait_forwarding_signals(proc)
    finally:
        os.unlink(f.name)


def _wait_forwarding_signals(proc: subprocess.Popen) -> int:
    handled = (signal.SIGTERM, signal.SIGUSR2)  # preemption; submitit's pre-timeout signal
    previous = {sig: signal.getsignal(sig) for sig in handled}

    def forward(signum, frame):
        # The child checkpoints and exits first; then the launcher's own handler (submitit requeues
        # the job on timeout) runs, and the requeued job resumes from that checkpoint.
        proc.send_signal(signal.SIGTERM)
        proc.wait()
        if callable(previous[signum]):
            previous[signum](signum, frame)

    for sig in handled:
        signal.signal(sig, forward)
    try:
        return proc.wait()
    finally:
        for sig in handled:
            signal.signal(sig, previous[sig])


def wsd_ladder(cfg: RunConfig) -> list[tuple[RunConfig, dict[str, Any]]]:
    """One warmup-stable-decay run plus a cooldown branch per fraction in sweep.branches.

    Branch k reaches T_k = fraction * T steps: it starts from the main run's checkpoint at
    S_k = T_k - decay_fraction * T_k (where both runs still share the same constant learning rate,
    warmup and data order) and cools down over its last decay_fraction (Hagele et al. 2024).
    Returns [(config, extra table fields)], main run first.
    """
    if cfg.train.tokens is None:
        raise ConfigError("train.tokens", "a WSD ladder needs the longest budget in tokens", "set train.tokens")
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
    total = cfg.train.tokens // tokens_per_step
    warm = warmup_steps(cfg.train, total)
    ends = sorted({int(f * total) for f in cfg.sweep.branches if 0 < f < 1})
    starts = [end - int(round(cfg.train.decay_fraction * end)) for end in ends]
    shared = {"schedule": "wsd", "warmup_steps": warm}
    main = cfg_replace(
        cfg,
        train=shared,
        checkpoint={"steps": sorted(set(cfg.checkpoint.steps) | set(starts))},
        sweep={"branches": []},
    )
    runs = [(main, {"branch_of": "", "shared_tokens": 0, "branch_fraction": 1.0})]
    for end, start in zip(ends, starts):
        branch = cfg_replace(
            main,
            train={"tokens": end * tokens_per_step, "decay_start": start, "init_from": main.run_dir, "init_step": start},
            checkpoint={"steps": [start]},
        )
        branch = dataclasses.replace(branch, run_dir=f"{main.run_dir},branch={end / total:.3g}")
        extra = {"branch_of": Path(main.run_dir).name, "shared_tokens": start * tokens_per_step, "branch_fraction": end / total}
        runs.append((branch, extra))
    return runs


def run_job(cfg: RunConfig, drop_reason: str | None) -> dict:
    """One multirun job (a WSD ladder job trains its main run, then its branches)."""
    if drop_reason:
        name = Path(cfg.run_dir).name
        print(f"[{cfg.sweep.name}] {name}: dropped ({drop_reason})", file=sys.stderr)
        log_outcome(sweep_dir(cfg), name, "dropped", None)
        return {"status": "dropped", "reason": drop_reason}
    if cfg.sweep.branches:
        return {Path(c.run_dir).name: run_one(c, extra) for c, extra in wsd_ladder(cfg)}
    return run_one(cfg, {})


def run_one(cfg: RunConfig, extra: dict[str, Any]) -> dict:
    """Skip if done, else train in isolation; record the table row and print one line."""
    folder, name = sweep_dir(cfg), Path(cfg.run_dir).name
    summary = completed_summary(cfg)
    outcome = "skipped"
    if summary is None:
        exitcode = train_isolated(cfg, HydraConfig.get().job.num)
        summary = rundir.read_json(Path(cfg.run_dir) / rundir.SUMMARY_FILE) or {"status": "failed"}
        if exitcode != 0 and summary.get("status") == "completed":
            summary = {"status": "failed", "error": f"exit code {exitcode}"}
        outcome = "trained" if summary.get("status") == "completed" else summary.get("status", "failed")
    if "params_total" in summary:
        record(folder, {**table_row(summary, cfg, swept_values()), **extra})
    log_outcome(folder, name, outcome, summary)
    print(f"[{cfg.sweep.name}] {name}: {outcome} {_describe(summary)}", file=sys.stderr)
    return summary


def _describe(s: dict) -> str:
    if "params_total" not in s:
        return s.get("error", "")
    return f"N={s['params_total']:,} D={s['tokens']:,} eval_loss={s['final_eval_loss']:.4f} ({s['wall_s']:.0f}s)"


class SweepCallback(Callback):
    """Prints the plan before a sweep and a tally after it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ[LAUNCH_ENV] = f"{time.time():.6f}-{os.getpid()}"
        os.environ[SWEPT_ENV] = ",".join(swept_keys(config))
        print(f"sweep {config.sweep.name}: results in {Path(config.results_root) / str(config.sweep.name)}", file=sys.stderr)
        if "sweep.point" in swept_keys(config):
            from scaling.isoflop import describe_sweep_grid

            print(describe_sweep_grid(config), file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(config.results_root) / str(config.sweep.name) / LAUNCH_LOG
        launch = os.environ.get(LAUNCH_ENV, "")
        entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        mine = [e for e in entries if e["launch"] == launch]
        counts = {k: sum(e["outcome"] == k for e in mine) for k in ("trained", "skipped", "failed", "diverged", "preempted", "dropped")}
        tally = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k in ("trained", "skipped", "failed"))
        print(f"sweep {config.sweep.name} finished: {tally}; table: {path.parent / TABLE}", file=sys.stderr)


if __name__ == "__main__":
    _child(sys.argv[1])
