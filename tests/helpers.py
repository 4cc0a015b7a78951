"""Test helpers: compose a RunConfig exactly as the CLI does, run the CLI in a subprocess, and write a
synthetic sweep folder in the training side's format (scaling/contract.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_module

from scaling import contract
from scaling.cli import train_cli
from scaling.config import RunConfig, register_configs, to_dataclass

REPO = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str]) -> RunConfig:
    register_configs()
    with initialize_config_module(config_module="sweeps", version_base="1.3"):
        return to_dataclass(compose(config_name="config", overrides=overrides))


def run_cli(
    args: list[str], module: str = "scaling.train", timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        **kwargs,
    )


def run_in_process(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """`python -m scaling.train ARGV` in this process, through its real entry point: (exit status, stderr).
    Seconds instead of a fresh interpreter's start, so tables of bad inputs stay fast."""
    monkeypatch.setattr(sys, "argv", ["scaling.train", *argv])
    try:
        train_cli()
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def tree_digest(folder: Path) -> str:
    """One hash of every path and file under `folder`: equal digests = nothing on disk changed."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


VOCAB_SIZE = 32_000


def embedding_params(N: np.ndarray) -> np.ndarray:
    """Plausible embedding counts: vocab x d_model, d_model ~ sqrt(N / 1000), so small models are embedding-heavy."""
    return VOCAB_SIZE * np.round(np.sqrt(np.asarray(N) / 1000.0))


def write_sweep(folder: Path, runs: pd.DataFrame, curves: pd.DataFrame, failed: int = 0) -> Path:
    """Write runs (N = total parameters) and curves as a sweep folder in the training side's format.

    The last `failed` runs are marked diverged, so loaders must drop them.
    """
    folder = Path(folder)
    status = np.where(np.arange(len(runs)) >= len(runs) - failed, contract.DIVERGED, contract.COMPLETED)
    embedding = embedding_params(runs["N"].to_numpy()).astype(np.int64)
    table = pd.DataFrame(
        {
            contract.RUN_NAME: runs["run"],
            "status": status,
            "params_total": runs["N"].astype(np.int64),
            "params_embedding": embedding,
            "params_nonembedding": runs["N"].astype(np.int64) - embedding,
            "tokens": runs["D"].astype(np.int64),
            "flops_6n": runs["C"],
            "flops_chinchilla": 1.05 * runs["C"],
            "final_eval_loss": runs["loss"],
            "final_train_loss": runs["loss"],
            "d_model": np.round(np.sqrt(runs["N"] / 1000.0)).astype(np.int64),
            "n_layers": 4,
            "n_heads": 4,
            "seq_len": 256,
            "vocab_size": VOCAB_SIZE,
            "steps": 1000,
            "wall_s": 1.0,
            contract.BUDGET: runs["budget"],
            contract.RUN_DIR: f"{contract.RUNS_SUBDIR}/" + runs["run"],
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    table.to_parquet(folder / contract.RUNS_TABLE)
    for name, curve in curves.groupby("run"):
        run_dir = folder / contract.RUNS_SUBDIR / str(name)
        run_dir.mkdir(parents=True, exist_ok=True)
        steps = np.arange(1, len(curve) + 1) * 50
        pd.DataFrame(
            {
                "step": steps,
                "tokens": curve["D"].astype(np.int64),
                "flops": curve["C"],
                "lr": 1e-3,
                "train_loss": np.nan,
                "eval_loss": curve["loss"],
                "tokens_per_s": 1e5,
                "wall_s": steps / 10.0,
            }
        ).to_parquet(run_dir / contract.METRICS_FILE)
    return folder
