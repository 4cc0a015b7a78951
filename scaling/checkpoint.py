"""Orbax checkpoints on a schedule that is data, exact resume, and loading for analysis.

A checkpoint holds the parameters, the optimiser state and a JSON record (step, tokens, digest
of the parameters). The data position is the step itself: the data order is a pure function of
it (scaling/data.py), so nothing else is needed to resume exactly.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from scaling.config import CheckpointConfig

log = logging.getLogger(__name__)
CHECKPOINT_DIR = "checkpoints"


def _is_power_of_two(step: int) -> bool:
    return step > 0 and step & (step - 1) == 0


def _matches_rules(cfg: CheckpointConfig, step: int) -> bool:
    """Rules apply in order, each from the previous rule's `until` (exclusive) to its own."""
    start = 0
    for rule in cfg.rules:
        end = rule.until if rule.until is not None else float("inf")
        if start < step <= end:
            return step % rule.every == 0
        start = end
    return False


def should_save(cfg: CheckpointConfig, step: int, total_steps: int) -> bool:
    """Pure: is `step` on the schedule? Step 0 is the initialisation; the last step always is."""
    if not cfg.enabled or step < 0 or step > total_steps:
        return False
    if step in (0, total_steps) or step in cfg.steps:
        return True
    return (cfg.log_spaced and _is_power_of_two(step)) or _matches_rules(cfg, step)


def schedule(cfg: CheckpointConfig, total_steps: int) -> list[int]:
    return [s for s in range(total_steps + 1) if should_save(cfg, s, total_steps)]


def params_digest(params: Any) -> str:
    """sha256 over the bytes of every parameter, in tree order: equal digests = bitwise equal models."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        arr = np.asarray(jax.device_get(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def manager(run_dir: str | Path, cfg: CheckpointConfig, read_only: bool = False) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=cfg.keep,
        enable_async_checkpointing=cfg.async_save and not read_only,
        read_only=read_only,
        create=not read_only,
    )
    return ocp.CheckpointManager(Path(run_dir).absolute() / CHECKPOINT_DIR, options=options)


def save(mngr: ocp.CheckpointManager, step: int, params: Any, opt_state: Any, record: dict) -> None:
    """Asynchronous and atomic: Orbax writes to a temporary folder and renames it when complete."""
    record = {**record, "step": step, "params_digest": params_digest(params)}
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        record=ocp.args.JsonSave(record),
    )
    mngr.save(step, args=args, force=True)


def _restore_step(mngr: ocp.CheckpointManager, step: int, abstract: dict[str, Any]) -> dict[str, Any]:
    items = {name: ocp.args.StandardRestore(target) for name, target in abstract.items()}
    restored = mngr.restore(step, args=ocp.args.Composite(**items, record=ocp.args.JsonRestore()))
    record = restored["record"]
    if "params" in abstract and params_digest(restored["params"]) != record["params_digest"]:
        raise ValueError("parameter digest does not match the one recorded at save time")
    return dict(restored)


def restore_latest(mngr: ocp.CheckpointManager, abstract: dict[str, Any]) -> dict[str, Any] | None:
    """Newest checkpoint that restores and verifies; damaged ones are skipped with a warning."""
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            return _restore_step(mngr, step, abstract)
        except Exception as err:  # noqa: BLE001 - any failure means the files are not trustworthy
            warnings.warn(f"checkpoint step {step} is damaged ({type(err).__name__}: {err}); trying an older one")
    return None


def saved_steps(run_dir: str | Path) -> list[int]:
    """Steps with a complete checkpoint (Orbax never lists a half-written one)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.exists():
        return []
    return sorted(ocp.CheckpointManager(folder.absolute(), options=ocp.CheckpointManagerOptions(read_only=True)).all_steps())
