"""Reading and writing a run directory's files (named in scaling/contract.py), atomically.

run_dir/
  config.yaml       the resolved RunConfig plus derived numbers (a relaunch must match it)
  metrics.parquet   one row per logged step: step, tokens, flops, lr, train_loss, eval_loss, ...
  summary.json      status and everything a scaling fit needs about the run
  checkpoints/      Orbax checkpoints (scaling/training/checkpoint.py)
  training.lock     held (flock) by the one process training the run
  run_manifest.json the entries the run owns (written first, into a new or empty folder)

What the run owns, and what overwrite=true may delete, is scaling/training/ownership.py. A damaged file is
named in one line: summary.json is rebuilt (the run resumes from its checkpoints and writes it anew);
config.yaml and metrics.parquet cannot be, so the relaunch is refused with the fix.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import yaml

from scaling import contract
from scaling.data.eval_set import UNRECORDED_EVAL_SET
from scaling.data.order import UNRECORDED_ORDER
from scaling.errors import ConfigError, RunBusy
from scaling.files import atomic_write, write_json, write_text
from scaling.training.ownership import read_manifest

# config.yaml ends with YAML's end-of-document line, so a file cut short is told from a whole one.
CONFIG_END = "...\n"

# Fields that may change between launches without changing what is trained: a whole section
# ("bench") or one dotted field ("sweep.launch").
VOLATILE_FIELDS = {
    "progress",
    "overwrite",
    "debug",
    "run_dir",
    "results_root",
    "compilation_cache",
    "bench",
    "tracker",
    "sweep.vary",
    "sweep.launch",
    "sweep.seeds",  # (a run's own seed is train.seed; these say how the sweep chose it)
    "sweep.seed_offset",
    "sweep.jobs",  # how many runs share the machine never changes a run's numbers (tests/test_side_by_side.py)
    "sweep.reach",  # (whether the sweep adds reach runs; a run's own length is sweep.stretch)
    "sweep.holdout_factor",  # (whether the sweep adds a held-out run after its grid; the grid's runs are the same)
}
# Fields config.yaml gained after runs were made, each with the value a stored config.yaml without
# it (or with null) implies: a run started before data.order existed trained with the `permutation`
# order, and one started before data.eval_set was evaluated on spread `windows`; one started before model.family
# existed was a decoder. A launch that leaves such a field unset (null) keeps the stored run's value.
# eval_max_doc_share never shaped a windows set.
ADDED_FIELDS = {
    "data.order": UNRECORDED_ORDER,
    "data.eval_set": UNRECORDED_EVAL_SET,
    "data.eval_max_doc_share": 0.05,
    "model.family": "decoder",
    "data.exclude": [],  # runs made before data.exclude trained on every training document
    "sweep.family_tokens_per_param": {},  # runs made before it: one centre for every family
    "sweep.stretch": 1.0,  # runs made before it trained the tokens their budget gives
}


def unreadable(path: Path, why: str, fix: str) -> ConfigError:
    return ConfigError(str(path), f"unreadable ({why.splitlines()[0][:160] if why else 'empty'})", fix)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Held while this process trains the run, so two launches of one sweep never write the same
    checkpoints: the second gets RunBusy (naming the holder) at once instead of waiting. The kernel
    releases an flock when its holder dies, so a killed run never leaves a stale lock."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / contract.RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "holder unknown"
            raise RunBusy(str(run_dir), holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0
        )
        yield
    finally:
        os.close(fd)  # releases the lock


def check_same_data(stored: dict, meta: dict, run_dir: Path, fix: str) -> None:
    """The corpus and tokenizer a run trained on must be the ones opened now: the config alone does not
    say so (data=pystdlib is the running Python's standard library; a text glob may match new files)."""
    before = stored.get(contract.DATA_SECTION) or {}
    for key in (contract.CORPUS_HASH, contract.TOKENIZER_HASH):
        if key in before and before[key] != meta.get(key):
            raise ConfigError(
                f"data ({key})",
                f"{run_dir} trained on {key} {_short(before[key])} but the data opened now has {_short(meta.get(key))}",
                fix,
            )


def _short(digest: str | None) -> str:
    return str(digest)[:16] if digest else "none"


def _flatten(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _volatile(name: str) -> bool:
    return name.split(".")[0] in VOLATILE_FIELDS or ".".join(name.split(".")[:2]) in VOLATILE_FIELDS


def config_fields(resolved: dict) -> dict[str, object]:
    """A config.yaml's config section by dotted name, with the value it implies for a field it predates."""
    fields = _flatten(resolved.get(contract.CONFIG_SECTION, {}))
    fields.update({name: value for name, value in ADDED_FIELDS.items() if fields.get(name) is None})
    return fields


def config_differences(stored: dict, current: dict) -> list[str]:
    """Dotted names of the fields whose values differ, ignoring fields that do not affect training."""
    a = {k: v for k, v in config_fields(stored).items() if not _volatile(k)}
    b = {k: v for k, v in _flatten(current.get(contract.CONFIG_SECTION, {})).items() if not _volatile(k)}
    b.update({name: a.get(name) for name in ADDED_FIELDS if b.get(name) is None})  # unset: as the run started
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def recorded_order(stored: dict | None) -> str | None:
    """The data order a stored config.yaml says its run trained with (None: no run there yet)."""
    return None if stored is None else str(config_fields(stored)["data.order"])


CONFIG_FIX = (
    "it records the run's settings and cannot be rebuilt: restore it, or start the run over with overwrite=true"
)


def recorded_eval_set(stored: dict | None) -> str | None:
    """The eval set a stored config.yaml says its run was evaluated on (None: no run there yet)."""
    return None if stored is None else str(config_fields(stored)["data.eval_set"])


def read_config(run_dir: Path) -> dict | None:
    """config.yaml (None when there is none); a one-line error naming it when it is damaged or cut short."""
    path = Path(run_dir) / contract.CONFIG_FILE
    if not path.exists():
        return None
    try:
        text = path.read_text()
        stored = yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise unreadable(path, str(err), CONFIG_FIX) from None
    if read_manifest(run_dir) is not None and not text.endswith(CONFIG_END):
        raise unreadable(path, f"cut short: it lacks the closing {CONFIG_END.strip()!r} line", CONFIG_FIX)
    if not isinstance(stored, dict) or not isinstance(stored.get(contract.CONFIG_SECTION), dict):
        raise unreadable(path, f"no {contract.CONFIG_SECTION} section", CONFIG_FIX)
    return stored


def write_config(run_dir: Path, resolved: dict) -> None:
    write_text(run_dir / contract.CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False, explicit_end=True))


def read_summary(run_dir: Path) -> dict | None:
    """summary.json, or None when there is none. A damaged one is named and taken as missing: the relaunch
    resumes the run from its newest checkpoint (the last step, if it had finished) and writes it anew."""
    path = Path(run_dir) / contract.SUMMARY_FILE
    if not path.exists():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        summary, why = None, str(err)
    else:
        why = "not a JSON object"
    if isinstance(summary, dict):
        return summary
    warnings.warn(
        f"{path} is unreadable ({why.splitlines()[0][:120]}); relaunching rebuilds it (the run resumes from its "
        "newest checkpoint)"
    )
    return None


def write_summary(run_dir: Path, summary: dict) -> None:
    write_json(Path(run_dir) / contract.SUMMARY_FILE, summary)


def read_metrics(run_dir: Path, up_to_step: int | None = None, needed_step: int = 0) -> pd.DataFrame:
    """The metrics table, cut at `up_to_step` when resuming so no step is duplicated. A resume needs the
    rows up to the checkpoint (`needed_step`: the last logged step it covers), which nothing else holds: a
    table missing, damaged or short of it is a one-line error naming it."""
    path = Path(run_dir) / contract.METRICS_FILE
    fix = (
        f"it holds the curve up to step {up_to_step}, which the checkpoints do not: restore it, or start the run "
        "over with overwrite=true (the same run, bit for bit)"
    )
    if not path.exists():
        if needed_step > 0:
            raise ConfigError(str(path), "missing", fix)
        return pd.DataFrame(columns=contract.METRIC_COLUMNS)
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise unreadable(path, str(err), fix) from None
    if needed_step > 0 and not (df.step == needed_step).any():
        raise ConfigError(str(path), f"has no row for step {needed_step}", fix)
    return df[df.step <= up_to_step] if up_to_step is not None else df


def metrics_frame(rows: list[dict]) -> pd.DataFrame:
    """One row per step: a step's train-loss row and eval row are merged."""
    df = pd.DataFrame(rows, columns=contract.METRIC_COLUMNS).astype({"step": "int64", "tokens": "int64"})
    return df.groupby("step", as_index=False).last()


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    df = metrics_frame(rows)
    atomic_write(run_dir / contract.METRICS_FILE, lambda tmp: df.to_parquet(tmp, index=False))


def write_eval_windows(run_dir: Path, document_N, loss_N) -> None:
    """The latest evaluation's loss on every window, with the document it comes from."""
    df = pd.DataFrame(dict(zip(contract.EVAL_WINDOW_COLUMNS, (document_N, loss_N))))
    atomic_write(run_dir / contract.EVAL_WINDOWS_FILE, lambda tmp: df.to_parquet(tmp, index=False))
