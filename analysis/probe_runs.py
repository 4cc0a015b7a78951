"""Which runs a path holds, what each was trained on, and which sequences it saw when.

Everything here is read from run directories (config.yaml, checkpoints) and the run's corpus;
nothing reaches into the training loop. The data order is rebuilt exactly as training built it,
so "the batch of update s" and "the sequence at training position p" have exact answers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scaling.checkpoint import list_checkpoints
from scaling.config import DataConfig
from scaling.corpus import Corpus, load_corpus
from scaling.data import DataOrder, n_sequences, sequences
from scaling.errors import ConfigError
from scaling.rundir import CONFIG_FILE, read_config

RUNS_TABLE = "runs.parquet"


@dataclass(frozen=True)
class RunInfo:
    """One run as the probes see it: its name, size, data order and saved checkpoints."""

    name: str
    run_dir: Path
    data: DataConfig
    params: int
    seq_len: int
    vocab_size: int
    batch_size: int
    data_seed: int
    steps: int  # planned optimiser steps
    checkpoints: tuple[tuple[int, int], ...]  # (step, tokens seen)
    corpus_hash: str | None

    @property
    def data_fingerprint(self) -> tuple:
        """Equal fingerprints = the same sequence at every training position (sizes of one suite)."""
        return self.corpus_hash, self.data_seed, self.batch_size, self.seq_len


def find_run_dirs(path: Path) -> list[Path]:
    """The run folder itself, or every run of a sweep folder (its runs.parquet); one-line error otherwise."""
    if (path / CONFIG_FILE).is_file():
        return [path]
    if not (path / RUNS_TABLE).is_file():
        raise ConfigError(
            "PATH", f"{path} is neither a run folder (no {CONFIG_FILE}) nor a sweep folder (no {RUNS_TABLE})",
            "pass a run directory or a results/NAME sweep folder",
        )  # fmt: skip
    listed = pd.read_parquet(path / RUNS_TABLE, columns=["run_dir"]).run_dir.dropna()
    run_dirs = [_locate(path, Path(str(entry))) for entry in listed]
    if not run_dirs:
        raise ConfigError("PATH", f"{path / RUNS_TABLE} lists no runs", "train the sweep first")
    return run_dirs


def _locate(sweep: Path, listed: Path) -> Path:
    """A runs.parquet entry as written (absolute or relative to the working folder), else runs/<name> beside it."""
    for candidate in (listed, sweep / "runs" / listed.name):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise ConfigError(
        "PATH", f"run {listed} listed in {sweep / RUNS_TABLE} has no {CONFIG_FILE}", "re-run the sweep or fix runs.parquet"
    )


def read_run(run_dir: Path) -> RunInfo:
    """A run's probe-relevant facts from its config.yaml and checkpoint folder (no corpus needed).

    Only the fields used are read, so a run stays readable when later versions add or drop config fields."""
    stored = read_config(run_dir)
    config, derived = stored["config"], stored["derived"]
    train = config["train"]
    known = {f.name for f in dataclasses.fields(DataConfig)}
    return RunInfo(
        name=run_dir.name,
        run_dir=run_dir,
        data=DataConfig(**{k: v for k, v in config["data"].items() if k in known}),
        params=int(derived["params_total"]),
        seq_len=int(derived["model_shape"]["seq_len"]),
        vocab_size=int(derived["vocab_size"]),
        batch_size=int(train["batch_size"]),
        data_seed=int(train["data_seed"] if train.get("data_seed") is not None else train["seed"]),
        steps=int(derived["steps"]),
        checkpoints=tuple((c["step"], c["tokens"]) for c in list_checkpoints(run_dir)),
        corpus_hash=stored["data"].get("corpus_hash"),
    )


@dataclass(frozen=True, eq=False)
class RunData:
    """A run's corpus and exact data order, opened only when something is left to measure."""

    corpus: Corpus
    order: DataOrder
    seq_len: int

    def update_batch(self, update: int) -> np.ndarray:
        """(B, L + 1) sequences of 0-based update `update`, the one that produced checkpoint update + 1."""
        return sequences(self.corpus.train, self.order.indices(update), self.seq_len)

    def at_positions(self, positions: np.ndarray) -> np.ndarray:
        """(N, L + 1) sequences at training positions (update * B + slot) of the stream of training sequences."""
        updates, slots = np.divmod(np.asarray(positions, np.int64), self.order.batch_size)
        ids = np.array([self.order.indices(int(u))[s] for u, s in zip(updates, slots)], np.int64)
        return sequences(self.corpus.train, ids, self.seq_len)


def open_data(run: RunInfo) -> RunData:
    corpus = load_corpus(run.data, progress=False)
    order = DataOrder(run.data_seed, run.batch_size, n_sequences(len(corpus.train), run.seq_len))
    return RunData(corpus, order, run.seq_len)
