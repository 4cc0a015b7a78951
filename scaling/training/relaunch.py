"""What a launch does with the run directory it finds: refuse a relaunch that would train something
else (another config, or other data under the same config), leave a finished run alone, and train
only while holding the run's lock, so two launches of one sweep never write the same run.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from scaling import contract
from scaling.config import RunConfig
from scaling.data.corpus import Corpus
from scaling.errors import ConfigError, RunBusy
from scaling.planning.plan import Plan
from scaling.training import ownership, rundir
from scaling.training.mesh import is_writer

OTHER_DATA_FIX = "relaunch with the data it trained on (data=pystdlib: the same Python), another run_dir, or overwrite=true to start over"


def resolved_config(cfg: RunConfig, plan: Plan, corpus: Corpus) -> dict[str, Any]:
    """What config.yaml holds: the config, the plan derived from it, and the corpus's metadata."""
    return {
        contract.CONFIG_SECTION: dataclasses.asdict(cfg),
        contract.DERIVED_SECTION: plan.as_dict(),
        contract.DATA_SECTION: corpus.meta,
    }


def check_stored(cfg: RunConfig, run_dir: Path, resolved: dict) -> dict | None:
    """Read-only: the summary of a finished run (nothing to do); a one-line error when the stored run
    differs from this launch in config or in data; None when there is training to do."""
    stored = None if cfg.overwrite else rundir.read_config(run_dir)  # (overwrite=true: even a damaged one)
    if stored is None:
        return None
    differing = rundir.config_differences(stored, resolved)
    if differing:
        raise ConfigError(
            ", ".join(differing[:6]),
            f"differs from the configuration stored in {run_dir}",
            "use the stored values, another run_dir, or overwrite=true",
        )
    summary = rundir.read_summary(run_dir)
    if summary and summary.get("status") in contract.FINISHED:
        return summary
    rundir.check_same_data(stored, resolved[contract.DATA_SECTION], run_dir, OTHER_DATA_FIX)
    return None


def prepare_run_dir(cfg: RunConfig, run_dir: Path, resolved: dict) -> dict | None:
    """Under the run's lock: `check_stored` again (another launch may have finished the run since),
    then the folder readied for training (cleared first with overwrite=true)."""
    done = check_stored(cfg, run_dir, resolved)
    if done is not None:
        return done
    stored = None if cfg.overwrite else rundir.read_config(run_dir)
    if stored is not None:
        before = stored.get(contract.DERIVED_SECTION, {}).get("grad_accum")
        now = resolved[contract.DERIVED_SECTION]["grad_accum"]
        if before is not None and before != now:
            warnings.warn(
                f"{run_dir} was trained with {before} micro-batches per step and goes on with {now} (the backend or "
                "device count changed): it continues to float tolerance, not bit for bit"
            )
    if is_writer():
        if cfg.overwrite:
            ownership.clear(run_dir)  # only what its manifest lists (scaling/training/ownership.py)
        if ownership.read_manifest(run_dir) is None and not ownership.is_earlier_run(run_dir):
            ownership.write_manifest(run_dir)  # a new or empty folder (checked before the lock was taken)
        rundir.write_config(run_dir, resolved)
    return None


@contextmanager
def exclusive(run_dir: Path) -> Iterator[None]:
    """The run's lock, taken by the writing process; in a multi-process job every process learns
    whether it was free, so none of them starts a step the others will not join."""
    with ExitStack() as stack:
        busy = None
        if is_writer():
            try:
                stack.enter_context(rundir.run_lock(run_dir))
            except RunBusy as err:
                busy = err
        if jax.process_count() > 1:
            free = bool(multihost_utils.broadcast_one_to_all(np.int32(busy is None)))
            busy = busy or (None if free else RunBusy(str(run_dir), "found held by the writing process"))
        if busy is not None:
            raise busy
        yield
