"""Orbax checkpoints on a schedule that is data, exact resume, and loading for analysis.

A checkpoint holds the parameters, the optimiser state and a JSON record (step, tokens, digest
of the parameters). The data position is the step itself: the data order is a pure function of
it (scaling/data/order.py), so nothing else is needed to resume exactly.

Restoring tells two failures apart. Damage (files missing or unreadable, parameters that fail their
digest) is DamagedCheckpoint: training sets the step aside in checkpoints_damaged/ (the writing
process only) and resumes from an older one; analysis skips it. A saved tree that differs from the
one the code builds (a parameter renamed or reshaped since) is a one-line ConfigError naming the
differing paths, and nothing is moved: restarting from step 0 would silently throw the run away.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.experimental import multihost_utils

from scaling import contract
from scaling.config import CheckpointConfig, ModelConfig
from scaling.errors import ConfigError
from scaling.model import families
from scaling.model.sizing import legacy_ffn_dim
from scaling.training.mesh import is_writer
from scaling.training.rundir import read_config

CHECKPOINT_DIR = contract.CHECKPOINT_DIR


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
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            leaf = multihost_utils.process_allgather(leaf, tiled=True)
        arr = np.asarray(jax.device_get(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


# One checkpoint on disk: the parameters and Adam's two moments, all float32, plus Orbax's metadata
# (a few dozen small files, each rounded up to the filesystem's blocks).
BYTES_PER_PARAM = 3 * 4
METADATA_BYTES = 256 * 1024


def size_estimate(params_total: int) -> int:
    """Bytes one checkpoint of a model of `params_total` parameters needs, for the free-space check."""
    return BYTES_PER_PARAM * params_total + METADATA_BYTES


def manager(run_dir: str | Path, cfg: CheckpointConfig, read_only: bool = False) -> ocp.CheckpointManager:
    if read_only:
        options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=cfg.keep,
            enable_async_checkpointing=cfg.async_save,
            cleanup_tmp_directories=True,  # leftovers of a save that a kill interrupted
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


def drop_off_schedule(mngr: ocp.CheckpointManager, cfg: CheckpointConfig, total_steps: int) -> None:
    """Delete checkpoints that preemption added outside the schedule."""
    for step in mngr.all_steps():
        if not should_save(cfg, step, total_steps):
            mngr.delete(step)


class DamagedCheckpoint(Exception):
    """A saved step whose files are missing, unreadable, or whose parameters fail their digest."""

    def __init__(self, step: int, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"checkpoint step {step} is damaged ({reason})")


# What TensorStore (under Orbax) says when a file is missing, cut short or garbled: real damage, as
# opposed to a mismatch with the code or a lack of memory, which must never move a checkpoint aside.
DAMAGE_SIGNS = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND", "FAILED_PRECONDITION", "Error reading", "Error decoding")


def _is_damage(err: BaseException | None) -> bool:
    while err is not None:
        if isinstance(err, (OSError, json.JSONDecodeError)) or any(sign in str(err) for sign in DAMAGE_SIGNS):
            return True
        err = err.__cause__ or err.__context__
    return False


def _leaves(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """'path/to/leaf' -> (shape, dtype): the same names for a model's tree and a checkpoint's metadata."""
    return {
        jax.tree_util.keystr(path, simple=True, separator="/"): (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _differences(saved: dict, wanted: dict) -> list[str]:
    """Human-readable differences between two `_leaves` maps (a few of each kind)."""
    only_saved = sorted(saved.keys() - wanted.keys())
    only_wanted = sorted(wanted.keys() - saved.keys())
    changed = [
        f"{k} {saved[k][0]} {saved[k][1]} saved, {wanted[k][0]} {wanted[k][1]} now"
        for k in sorted(saved.keys() & wanted.keys())
        if saved[k] != wanted[k]
    ]
    out = [f"saved only: {', '.join(only_saved[:4])}"] if only_saved else []
    out += [f"in the model only: {', '.join(only_wanted[:4])}"] if only_wanted else []
    return out + changed[:4]


def _check_structure(step_dir: Path, step: int, abstract: dict[str, Any]) -> None:
    """Every item's saved tree against the tree the code builds now, before any array is read.

    Missing or unreadable metadata is damage; a differing tree (a renamed or reshaped parameter after
    a code change) is a one-line error, and nothing is moved."""
    for item in (*abstract, "record"):
        if not (step_dir / item).is_dir():
            raise DamagedCheckpoint(step, f"{item}/ is missing")
    for item, target in abstract.items():
        try:
            saved = ocp.StandardCheckpointHandler().metadata(step_dir / item)
        except Exception as err:  # noqa: BLE001 - whatever stops the metadata being read, it is unreadable
            raise DamagedCheckpoint(step, f"the metadata of {item} cannot be read: {_first_line(err)}") from err
        if saved is None:
            raise DamagedCheckpoint(step, f"the metadata of {item} is missing or unreadable")
        differing = _differences(_leaves(saved), _leaves(target))
        if differing:
            raise ConfigError(
                str(step_dir / item),
                f"the saved tree differs from the one this code builds ({'; '.join(differing)}); nothing was moved",
                "run the code version that wrote it, or start over with overwrite=true",
            )


def _first_line(err: BaseException) -> str:
    """The error's first line, without Orbax's pointer to TensorStore's details (the repr of a method)."""
    text = str(err).splitlines()[0].split(" See full TensorStore details")[0] if str(err) else type(err).__name__
    return text[:200]


def _restore_step(mngr: ocp.CheckpointManager, step: int, abstract: dict[str, Any]) -> dict[str, Any]:
    """Restore and verify one step: DamagedCheckpoint for damaged files, ConfigError for a tree that
    no longer matches the code; any other failure (memory, a bug) propagates as it is."""
    _check_structure(Path(mngr.directory) / str(step), step, abstract)
    items = {name: ocp.args.StandardRestore(target) for name, target in abstract.items()}
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**items, record=ocp.args.JsonRestore()))
    except Exception as err:
        if _is_damage(err):
            raise DamagedCheckpoint(step, _first_line(err)) from err
        raise
    record = restored["record"]
    if "params" in abstract and params_digest(restored["params"]) != record.get("params_digest"):
        raise DamagedCheckpoint(step, "the parameters' digest differs from the one recorded at save time")
    return dict(restored)


def restore_latest(mngr: ocp.CheckpointManager, abstract: dict[str, Any]) -> dict[str, Any] | None:
    """Newest checkpoint that restores and verifies. A damaged one is set aside (by the writing
    process only) with a warning, and the next older one is tried."""
    steps = sorted(mngr.all_steps(), reverse=True)
    for step, older in zip(steps, [*steps[1:], None]):
        try:
            return _restore_step(mngr, step, abstract)
        except DamagedCheckpoint as err:
            then = f"trying step {older}" if older is not None else "no older one is left: the run starts over"
            warnings.warn(f"{err}; set aside in {contract.DAMAGED_CHECKPOINT_DIR}/, {then}")
            if is_writer():
                _quarantine(mngr, step)
    return None


def _quarantine(mngr: ocp.CheckpointManager, step: int) -> None:
    """Move a damaged step out of the way (kept for inspection) so training can save it anew."""
    folder = Path(mngr.directory)
    target = folder.parent / contract.DAMAGED_CHECKPOINT_DIR / f"{step}-{int(time.time())}"
    target.parent.mkdir(exist_ok=True)
    shutil.move(str(folder / str(step)), target)
    mngr.reload()


def restore_step(run_dir: str | Path, step: int | None, abstract: dict[str, Any]) -> dict[str, Any]:
    """One named step of a run, read-only (a WSD branch starts from its parent's checkpoint; analysis
    loads models): DamagedCheckpoint when its files are damaged, which are left where they are."""
    if step is None or step not in saved_steps(run_dir):
        raise ConfigError(
            "train.init_step", f"step {step} is not saved in {run_dir}", f"use one of {saved_steps(run_dir)}"
        )
    mngr = manager(run_dir, CheckpointConfig(), read_only=True)
    try:
        return _restore_step(mngr, step, abstract)
    finally:
        mngr.close()


def saved_steps(run_dir: str | Path) -> list[int]:
    """Steps with a complete checkpoint (Orbax never lists a half-written one)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.exists():
        return []
    mngr = manager(run_dir, CheckpointConfig(), read_only=True)
    steps = sorted(mngr.all_steps())
    mngr.close()
    return steps


def _stored_model_config(run_dir: Path) -> tuple[ModelConfig, int, int]:
    """(ModelConfig with the resolved shape, vocab size, tokens per step) from config.yaml."""
    stored = read_config(Path(run_dir))
    if stored is None:
        raise FileNotFoundError(f"{run_dir} has no {contract.CONFIG_FILE}: not a run directory")
    derived = stored[contract.DERIVED_SECTION]
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    model_cfg = ModelConfig(**{k: v for k, v in stored[contract.CONFIG_SECTION]["model"].items() if k in fields})
    model_cfg = dataclasses.replace(model_cfg, **derived["model_shape"], n_params=None)
    if "d_ff" not in derived["model_shape"]:  # written before config.yaml recorded it
        model_cfg = dataclasses.replace(model_cfg, d_ff=legacy_ffn_dim(model_cfg))
    return model_cfg, derived["vocab_size"], derived["tokens_per_step"]


def list_checkpoints(run_dir: str | Path) -> list[dict[str, int]]:
    """Saved steps of a run with the tokens seen at each: [{"step": s, "tokens": t}, ...]."""
    _, _, tokens_per_step = _stored_model_config(Path(run_dir))
    return [{"step": s, "tokens": s * tokens_per_step} for s in saved_steps(run_dir)]


def load_model(run_dir: str | Path, step: int | None = None, compute_dtype: str | None = None) -> families.Model:
    """A ready-to-run NNX model of the run's family from any saved step (default: the newest); no training code
    needed."""
    model_cfg, vocab_size, _ = _stored_model_config(Path(run_dir))
    if compute_dtype is not None:
        model_cfg = dataclasses.replace(model_cfg, compute_dtype=compute_dtype)
    abstract = nnx.eval_shape(lambda: families.build(model_cfg, vocab_size, seed=0))
    graphdef, params = nnx.split(abstract, nnx.Param)
    steps = saved_steps(run_dir)
    if not steps:
        raise FileNotFoundError(f"{run_dir} has no complete checkpoint")
    step = steps[-1] if step is None else step
    # The target says where the arrays go: here, one device, whatever mesh saved them.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), nnx.to_pure_dict(params))
    restored = restore_step(run_dir, step, {"params": target})
    return nnx.merge(graphdef, restored["params"])
