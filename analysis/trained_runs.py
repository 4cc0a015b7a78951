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

from analysis.failures import InputError
from analysis.fit_input import rebuild_hint
from scaling import contract
from scaling.config import DataConfig
from scaling.data.corpus import Corpus
from scaling.data.load import load_corpus
from scaling.data.order import DataOrder, n_sequences, sequences
from scaling.training.checkpoint import list_checkpoints
from scaling.training.rundir import check_same_data, read_config, recorded_order


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
    data_order: str  # the kind of order (scaling/data/order.py) it trained with
    steps: int  # planned optimiser steps
    checkpoints: tuple[tuple[int, int], ...]  # (step, tokens seen)
    corpus_hash: str | None
    family: str = "decoder"  # model.family: decoder | encoder | encoder_decoder (scaling/model/families.py)
    # The prepared corpus whose held-out documents the run was scored on: its corpus_hash, or, for a run
    # that left training documents out (data.exclude), the hash of the corpus before that filter.
    held_out_hash: str | None = None

    @property
    def data_fingerprint(self) -> tuple:
        """Equal fingerprints = the same sequence at every training position (sizes of one suite)."""
        return self.corpus_hash, self.data_seed, self.data_order, self.batch_size, self.seq_len


def find_run_dirs(path: Path) -> list[Path]:
    """The run folder itself, or every run of a sweep folder (its runs.parquet); one-line error otherwise."""
    if contract.is_run_dir(path):
        return [path]
    if not contract.is_sweep_dir(path):
        raise InputError(
            f"PATH: {path} is neither a run folder (no {contract.CONFIG_FILE}) nor a sweep folder "
            f"(no {contract.RUNS_TABLE}); pass a run directory or a results/NAME sweep folder"
        )
    table = path / contract.RUNS_TABLE
    try:
        listed = pd.read_parquet(table, columns=[contract.RUN_DIR])[contract.RUN_DIR].dropna()
    except (OSError, ValueError) as err:  # a truncated file (pyarrow raises ValueError), or no run_dir column
        raise InputError(f"PATH: cannot read {table} ({str(err).splitlines()[0]}){rebuild_hint(table)}") from err
    run_dirs = [contract.run_dir_in_sweep(path, str(entry)) for entry in listed]
    if not run_dirs:
        raise InputError(f"PATH: {path / contract.RUNS_TABLE} lists no runs; train the sweep first")
    missing = [str(run_dir) for run_dir in run_dirs if not contract.is_run_dir(run_dir)]
    if missing:
        raise InputError(
            f"PATH: {path / contract.RUNS_TABLE} lists {missing[0]}, which has no "
            f"{contract.CONFIG_FILE}; re-run the sweep"
        )
    return run_dirs


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
        data_order=recorded_order(stored),  # `permutation` for a run made before config.yaml recorded it
        steps=int(derived["steps"]),
        checkpoints=tuple((c["step"], c["tokens"]) for c in list_checkpoints(run_dir)),
        corpus_hash=stored[contract.DATA_SECTION].get(contract.CORPUS_HASH),
        held_out_hash=stored[contract.DATA_SECTION].get(
            "prepared_corpus_hash", stored[contract.DATA_SECTION].get(contract.CORPUS_HASH)
        ),
        family=config["model"].get("family") or "decoder",  # runs made before families were decoders
    )


@dataclass(frozen=True, eq=False)
class RunStream:
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


def open_data(run: RunInfo) -> RunStream:
    """The run's corpus and data order; refused in one line when the corpus rebuilt now is not the one it
    trained on (data=pystdlib under another Python, a text glob matching other files)."""
    corpus = load_corpus(run.data, progress=False)
    check_same_data(
        read_config(run.run_dir),
        corpus.meta,
        run.run_dir,
        "probe it where its data can be rebuilt as it was (data=pystdlib: the Python it trained with)",
    )
    order = DataOrder(run.data_seed, run.batch_size, n_sequences(len(corpus.train), run.seq_len), run.data_order)
    return RunStream(corpus, order, run.seq_len)


def size_label(run: RunInfo) -> str:
    """A run's size for legends and tables: '78k params', '1.20M params'."""
    return f"{run.params / 1e6:.2f}M params" if run.params >= 1e5 else f"{run.params / 1e3:.0f}k params"
