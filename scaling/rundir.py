"""The run directory: resolved config, metrics table and summary, written atomically.

    run_dir/
      config.yaml       the resolved RunConfig plus derived numbers (a relaunch must match it)
      metrics.parquet   one row per logged step: step, tokens, flops, lr, train_loss, eval_loss, ...
      summary.json      status and everything a scaling fit needs about the run
      checkpoints/      Orbax checkpoints (scaling/checkpoint.py)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from scaling.errors import ConfigError

CONFIG_FILE, METRICS_FILE, SUMMARY_FILE = "config.yaml", "metrics.parquet", "summary.json"
METRIC_COLUMNS = ["step", "tokens", "flops", "lr", "train_loss", "eval_loss", "tokens_per_s", "wall_s"]
# Fields that may change between launches without changing what is trained.
VOLATILE_FIELDS = {"progress", "overwrite", "debug", "run_dir", "results_root", "compilation_cache", "bench"}


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def ensure_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=run_dir, prefix=".probe", delete=True)
        probe.close()
    except OSError as err:
        raise ConfigError("run_dir", f"cannot write to {run_dir} ({err.strerror})", "pass a writable run_dir=DIR") from err


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(stored: dict, current: dict) -> list[str]:
    """Dotted names of the fields whose values differ, ignoring fields that do not affect training."""
    a = {k: v for k, v in _flatten(stored.get("config", {})).items() if k.split(".")[0] not in VOLATILE_FIELDS}
    b = {k: v for k, v in _flatten(current.get("config", {})).items() if k.split(".")[0] not in VOLATILE_FIELDS}
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def read_config(run_dir: Path) -> dict | None:
    path = run_dir / CONFIG_FILE
    return yaml.safe_load(path.read_text()) if path.exists() else None


def write_config(run_dir: Path, resolved: dict) -> None:
    write_text(run_dir / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False))


def read_metrics(run_dir: Path, up_to_step: int | None = None) -> pd.DataFrame:
    """The metrics table, cut at `up_to_step` when resuming so no step is duplicated."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return pd.DataFrame(columns=METRIC_COLUMNS)
    df = pd.read_parquet(path)
    return df[df.step <= up_to_step] if up_to_step is not None else df


def metrics_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per step: a step's train-loss row and eval row are merged."""
    df = pd.DataFrame(rows, columns=METRIC_COLUMNS).astype({"step": "int64", "tokens": "int64"})
    return df.groupby("step", as_index=False).last()


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    df = metrics_frame(rows)
    atomic_write(run_dir / METRICS_FILE, lambda tmp: df.to_parquet(tmp, index=False))


def clear(run_dir: Path) -> None:
    """overwrite=true: remove what a previous run wrote (only our own files and checkpoints)."""
    import shutil

    for name in (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
