"""Sweeps through Hydra multirun: each job trains one grid point; one tidy table per sweep.

    RESULTS/NAME/
      runs.parquet      one row per run: its summary.json fields plus the swept values
      launches.jsonl    what each launch did with each run (trained, skipped, failed, ...)
      runs/<run name>/  run directories (scaling/rundir.py), named by the run's swept values

A run is named by the values that make it distinct: the keys of the sweep's `hydra.sweeper.params`
and any key swept on the command line (`train.lr=1e-3,3e-3`, which the entry point records in
`sweep.vary`), e.g. `flops=2.4e11,point=-1`. Relaunching a sweep skips finished runs (completed or
diverged), resumes interrupted ones from their checkpoints and retries failed ones; a run another
launch is training is left to it (`busy`). runs.parquet is derived data: when it is missing or
unreadable it is rebuilt from the run directories' summary.json and config.yaml.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from scaling import contract, diskspace, progress, rundir
from scaling.config import RunConfig, to_dataclass
from scaling.config import replace as cfg_replace
from scaling.data.load import load_corpus
from scaling.errors import EXIT_DISK_FULL, ConfigError, DiskFull, RunBusy, Stop
from scaling.files import atomic_write, write_json
from scaling.holdout import fit_sweep, holdout_budget, holdout_point
from scaling.isoflop import describe_sweep_grid, grid_ladder, sweep_values
from scaling.plan import isoflop_point, make_plan
from scaling.runtime import initialize
from scaling.schedule import warmup_steps
from scaling.steptime import time_steps
from scaling.trainer import train
from scaling.validate import validate_config

# Keys that never make runs distinct: where results go and how the launch behaves.
NOT_NAMING = {"sweep", "results_root", "progress", "debug", "overwrite", "hydra/launcher", "sweep.vary", "sweep.launch"}
OUTCOMES = ("trained", "skipped", "busy", "failed", "diverged", "preempted", "dropped")
MAIN_RUN = {"branch_of": "", "shared_tokens": 0, "branch_fraction": 1.0}  # table fields of a run that is no branch


def sweep_dir(cfg: RunConfig) -> Path:
    return Path(cfg.results_root) / str(cfg.sweep.name)


def naming_keys(vary: Iterable[str], sweeper_params: Iterable[str]) -> list[str]:
    """The keys whose values name a run: those swept on the command line and in the sweep's YAML."""
    return sorted((set(vary) | set(sweeper_params)) - NOT_NAMING)


def swept_values(keys: Iterable[str], task_overrides: Iterable[str]) -> dict[str, Any]:
    """key -> this job's value for each naming key, read from the job's own overrides ('key=value')."""
    wanted, out = set(keys), {}
    for item in task_overrides:
        key, _, value = item.partition("=")
        if key in wanted:
            out[key] = _number_or_text(value)
    return out


def run_name(swept: dict[str, Any]) -> str:
    """Readable, stable name from the swept values: 'flops=6e10,point=-1' (full keys if leaves clash)."""
    short = [k.rsplit(".", 1)[-1] for k in swept]
    keys = short if len(set(short)) == len(short) else list(swept)
    return ",".join(f"{name}={_compact(v)}" for name, v in sorted(zip(keys, swept.values()))) or "default"


def named_run(cfg: RunConfig, swept: dict[str, Any]) -> RunConfig:
    """`cfg` with its run directory set (RESULTS/NAME/runs/<run name>) and `sweep.vary` holding every
    naming key, so that config.yaml alone says which values are the run's swept ones."""
    if cfg.run_dir is not None:
        raise ConfigError(
            "run_dir",
            "a sweep names each run's folder itself (RESULTS/NAME/runs/<swept values>)",
            "leave run_dir unset and choose results_root=DIR",
        )
    run_dir = str(sweep_dir(cfg) / contract.RUNS_SUBDIR / run_name(swept))
    return cfg_replace(dataclasses.replace(cfg, run_dir=run_dir), sweep={"vary": sorted(swept)})


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


def table_row(summary: dict, cfg: RunConfig, swept: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Flat row: nested values (package versions) become JSON text so parquet keeps one schema."""
    row = {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in summary.items()}
    run_path = Path(cfg.run_dir)
    row.update(
        {
            contract.RUN_NAME: run_path.name,
            contract.RUN_DIR: str(run_path.relative_to(folder)),
            contract.SWEEP: cfg.sweep.name,
        }
    )
    if cfg.train.flops is not None:
        row[contract.BUDGET] = float(cfg.train.flops)
    row[contract.HOLDOUT] = False
    row.update({f"{contract.SWEPT_PREFIX}{k}": v for k, v in swept.items()})
    return row


def record(folder: Path, row: dict[str, Any]) -> int:
    """Insert or replace this run's row; a file lock serialises concurrent jobs. Returns the row count."""
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{contract.RUNS_TABLE}.lock")):
        path = folder / contract.RUNS_TABLE
        table = _read_or_rebuild(folder)
        if len(table):
            table = table[table[contract.RUN_NAME] != row[contract.RUN_NAME]]
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True).sort_values(contract.RUN_NAME)
        atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False))
        return len(table)


def _read_or_rebuild(folder: Path) -> pd.DataFrame:
    """The runs table; rebuilt from the run directories when missing or unreadable (a truncated file
    after a crash or a full disk): it is derived data, and the caller writes it back at once."""
    path = folder / contract.RUNS_TABLE
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        return pd.DataFrame(rebuilt_rows(folder))
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        rows = rebuilt_rows(folder)
        print(
            f"warning: {path} is unreadable ({str(err).splitlines()[0][:120]}); rebuilt it from the summary.json "
            f"of {len(rows)} run directories",
            file=sys.stderr,
        )
        return pd.DataFrame(rows)


def rebuilt_rows(folder: Path) -> list[dict[str, Any]]:
    """Every run's table row from its own files (summary.json, config.yaml), as `run_one` records it."""
    runs = {}
    for run_dir in sorted((folder / contract.RUNS_SUBDIR).glob("*")):
        cfg, summary = _read_run(run_dir)
        if cfg is not None and summary is not None and contract.PARAMS_TOTAL in summary:
            runs[run_dir.name] = (cfg, summary)
    mains = {Path(cfg.train.init_from).name for cfg, _ in runs.values() if cfg.train.init_from}  # of WSD ladders
    rows = []
    for name, (cfg, summary) in runs.items():
        node = OmegaConf.structured(cfg)
        swept = {key: OmegaConf.select(node, key) for key in cfg.sweep.vary}  # (named_run stored every naming key)
        if cfg.train.init_from and Path(cfg.train.init_from).name in runs:
            extra = branch_fields(cfg, runs[Path(cfg.train.init_from).name][0])
        else:
            extra = MAIN_RUN if name in mains else {}
        rows.append({**table_row(summary, cfg, swept, folder), **extra})
    return rows


def _read_run(run_dir: Path) -> tuple[RunConfig | None, dict | None]:
    """A run directory's config (its run_dir where it is now) and summary; (None, None) when unreadable."""
    try:
        stored, summary = rundir.read_config(run_dir), rundir.read_summary(run_dir)
        cfg = to_dataclass(stored[contract.CONFIG_SECTION]) if stored else None
    except Exception as err:  # noqa: BLE001 - a damaged run directory must not stop the rebuild of the others
        print(f"warning: {run_dir} left out of the rebuilt table: {str(err).splitlines()[0][:120]}", file=sys.stderr)
        return None, None
    return (dataclasses.replace(cfg, run_dir=str(run_dir)) if cfg else None), summary


def log_outcome(folder: Path, launch: str | None, run_name: str, outcome: str, summary: dict | None) -> None:
    """Append what this launch did with one run to launches.jsonl."""
    entry = {"launch": launch or "", "run_name": run_name, "outcome": outcome, "time": time.time()}
    if summary:
        entry.update({k: summary.get(k) for k in ("status", "params_total", "tokens", "final_eval_loss", "wall_s")})
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / f"{contract.LAUNCH_LOG}.lock")):
        with open(folder / contract.LAUNCH_LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")


def completed_summary(cfg: RunConfig) -> dict | None:
    """The stored summary when this exact configuration already finished (completed or diverged)."""
    run_dir = Path(cfg.run_dir)
    summary = rundir.read_summary(run_dir)
    stored = rundir.read_config(run_dir)
    if not summary or summary.get("status") not in contract.FINISHED or stored is None:
        return None
    same = not rundir.config_differences(stored, {contract.CONFIG_SECTION: dataclasses.asdict(cfg)})
    return summary if same else None


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
    runs = [(main, MAIN_RUN)]
    for end, start in zip(ends, starts):
        branch = cfg_replace(
            main,
            train={
                "tokens": end * tokens_per_step,
                "decay_start": start,
                "init_from": main.run_dir,
                "init_step": start,
            },
            checkpoint={"steps": [start]},
        )
        branch = dataclasses.replace(branch, run_dir=f"{main.run_dir},branch={end / total:.3g}")
        runs.append((branch, branch_fields(branch, main)))
    return runs


def branch_fields(branch: RunConfig, main: RunConfig) -> dict[str, Any]:
    """A cooldown branch's table fields: its main run, the tokens it shares with it, its share of the budget."""
    per_step = main.train.batch_size * main.model.seq_len
    return {
        "branch_of": Path(main.run_dir).name,
        "shared_tokens": branch.train.init_step * per_step,
        "branch_fraction": (branch.train.tokens // per_step) / (main.train.tokens // per_step),
    }


def plan_job(cfg: RunConfig, sweeper_params, task_overrides) -> tuple[RunConfig, dict, str | None]:
    """A multirun job's run: named from its swept values, and why it cannot train (None if it can)."""
    validate_config(cfg)
    keys = naming_keys(cfg.sweep.vary, (sweeper_params or {}).keys())
    swept = swept_values(keys, task_overrides)
    cfg = named_run(cfg, swept)
    drop_reason = None
    if cfg.sweep.point is not None:
        corpus = load_corpus(cfg.data, progress=cfg.progress)
        drop_reason = isoflop_point(cfg, corpus.vocab_size, max_tokens=len(corpus.train)).dropped
    return cfg, swept, drop_reason


def plan_run(cfg: RunConfig):
    """A run's plan (size, tokens, steps) as its job will make it."""
    return make_plan(cfg, load_corpus(cfg.data, progress=False).vocab_size)


def run_job(cfg: RunConfig, swept: dict[str, Any], drop_reason: str | None, runtime: dict[str, Any]) -> dict:
    """One multirun job (a WSD ladder job trains its main run, then its branches), in this process."""
    if drop_reason:
        name = Path(cfg.run_dir).name
        print(f"[{cfg.sweep.name}] {name}: dropped ({drop_reason})", file=sys.stderr)
        log_outcome(sweep_dir(cfg), cfg.sweep.launch, name, "dropped", None)
        return {"status": "dropped", "reason": drop_reason}
    if cfg.sweep.branches:
        return {Path(c.run_dir).name: run_one(c, swept, extra, runtime) for c, extra in wsd_ladder(cfg)}
    return run_one(cfg, swept, {}, runtime)


ROW_BYTES = 64 * 1024  # room for one more row of runs.parquet and launches.jsonl


class DiskFullStop(Stop):
    """A run found the disk full (it said where, in one line): the sweep stops there."""

    exit_code = EXIT_DISK_FULL


class Preempted(Stop):
    """A run was preempted and checkpointed: the job stops, and its relaunch (submitit requeues it)
    resumes the run. Exit 0: nothing went wrong."""

    exit_code = 0


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


def run_one(
    cfg: RunConfig, swept: dict[str, Any], extra: dict[str, Any], runtime: dict[str, Any], trained: dict | None = None
) -> dict:
    """Skip if done, else train here (or take the summary of a pack that trained it); record the table
    row and print one line.

    A run another launch is training (its lock is held) is left to that launch, which records it."""
    folder, name = sweep_dir(cfg), Path(cfg.run_dir).name
    summary = trained or completed_summary(cfg)
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
        raise Preempted(f"[{cfg.sweep.name}] {name}: preempted, checkpointed; the relaunched job resumes it")
    return summary


def _describe(s: dict) -> str:
    if contract.PARAMS_TOTAL not in s:
        return s.get("error", "")
    where = f" at step {s[contract.DIVERGED_STEP]}" if contract.DIVERGED_STEP in s else ""
    return f"N={s['params_total']:,} D={s['tokens']:,} eval_loss={s['final_eval_loss']:.4f} ({s['wall_s']:.0f}s){where}"


class SweepCallback(Callback):
    """Prints the plan before a sweep and a tally of this launch's outcomes after it."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        print(
            f"sweep {config.sweep.name}: results in {Path(config.results_root) / str(config.sweep.name)}",
            file=sys.stderr,
        )
        keys = naming_keys(config.sweep.vary, (config.hydra.sweeper.get("params") or {}).keys())
        if "sweep.point" in keys:
            print(describe_sweep_grid(config), file=sys.stderr)
        cfg = to_dataclass(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
        progress.announce(
            sweep_dir(cfg),
            cfg.sweep.launch,
            lambda: [
                run for run in progress.planned_runs(config, plan_job, plan_run) if completed_summary(run.cfg) is None
            ],
            lambda c, p: statistics.median(time_steps(c, p, progress.TIMED_STEPS, warmup=1)),
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.sweep.holdout_factor > 1:
            run_holdout(config)
        path = Path(config.results_root) / str(config.sweep.name) / contract.LAUNCH_LOG
        entries = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        mine = [e for e in entries if e["launch"] == (config.sweep.launch or "")]
        counts = {k: sum(e["outcome"] == k for e in mine) for k in OUTCOMES}
        tally = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k in ("trained", "skipped", "failed"))
        print(
            f"sweep {config.sweep.name} finished: {tally}; table: {path.parent / contract.RUNS_TABLE}", file=sys.stderr
        )


def run_holdout(config: DictConfig) -> dict | None:
    """After the grid: fit it, then train the held-out run the fits place (scaling/holdout.py)."""
    cfg = to_dataclass(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
    budgets = [float(c) for c in sweep_values(config, "train.flops")]
    budget = holdout_budget(budgets, cfg.sweep.holdout_factor)
    vocab = cfg.data.vocab_size
    rungs = grid_ladder(cfg.model, vocab, cfg.sweep.spacing, [budget], [0], cfg.sweep.tokens_per_param)
    plan = holdout_point(fit_sweep(sweep_dir(cfg), budget), budget, rungs, cfg.sweep.tokens_per_param)
    if plan is None:
        print(f"[{cfg.sweep.name}] holdout: skipped, no fit predicts the optimal size", file=sys.stderr)
        return None
    swept = {"train.flops": plan.budget, "sweep.point": plan.point}
    cfg = cfg_replace(cfg, train={"flops": plan.budget, "tokens": None}, sweep={"point": plan.point})
    cfg = dataclasses.replace(cfg, run_dir=str(sweep_dir(cfg) / contract.RUNS_SUBDIR / f"holdout,{run_name(swept)}"))
    write_json(sweep_dir(cfg) / contract.HOLDOUT_FILE, {**plan.as_dict(), "run_name": Path(cfg.run_dir).name})
    print(
        f"[{cfg.sweep.name}] holdout: the fits ({plan.approach}) put the optimum at N = {plan.n_opt:,.0f} for "
        f"C = {plan.budget:.3g} FLOPs; training point {plan.point} of that budget",
        file=sys.stderr,
    )
    return run_one(cfg, swept, {contract.HOLDOUT: True}, initialize(cfg.compilation_cache))
