"""What a run directory owns, and the file-safety rule built on it: a run trains only into a new or empty
folder, or a run directory of ours (its run_manifest.json, or a config.yaml of ours from before
manifests), and `overwrite=true` deletes only the entries its manifest lists, and inside its folders only
what the run writes there. A folder holding anything else is refused and left as it was.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import yaml

from scaling import contract
from scaling.errors import ConfigError
from scaling.files import unwritable_reason, write_json
from scaling.training.tracking import AXES, TENSORBOARD_DIR, WANDB_DIR

# Every entry a run directory may hold, each written by the run (or its trackers): the only names
# overwrite=true may delete, and only when the folder's manifest lists them.
OWN_ENTRIES = (
    contract.CONFIG_FILE,
    contract.METRICS_FILE,
    contract.SUMMARY_FILE,
    contract.EVAL_WINDOWS_FILE,
    contract.CHECKPOINT_DIR,
    contract.DAMAGED_CHECKPOINT_DIR,
    TENSORBOARD_DIR,
    WANDB_DIR,
    contract.RUN_LOCK,
    contract.RUN_MANIFEST,
)
# What the run writes inside the folders it owns (Orbax's step folders and their temporary names, set-aside
# steps, the trackers' own folders): overwrite=true deletes these and leaves anything else there.
OWN_CONTENTS = {
    contract.CHECKPOINT_DIR: re.compile(r"\d+(\.orbax-checkpoint-tmp.*)?"),
    contract.DAMAGED_CHECKPOINT_DIR: re.compile(r"\d+-\d+"),
    TENSORBOARD_DIR: re.compile("|".join(AXES)),
    WANDB_DIR: re.compile(r".*"),
}
MANIFEST_OF = "a run directory of the scaling suite"  # tells our manifest apart from another program's file


def check_writable(run_dir: Path) -> None:
    """A one-line error when the run directory could not be created or written; creates nothing."""
    reason = unwritable_reason(run_dir)
    if reason is not None:
        raise ConfigError("run_dir", f"cannot write to {run_dir} ({reason})", "pass a writable run_dir=DIR")


def check_run_dir(run_dir: str | None, overwrite: bool) -> None:
    """Read-only, before anything is written: `run_dir` names a writable folder that is new, empty, or a
    run directory of ours, and with overwrite=true one whose manifest says what may be deleted."""
    if run_dir is None or not str(run_dir).strip():
        raise ConfigError(
            "run_dir",
            f"{run_dir!r} names no folder (training would write into the current one)",
            "pass run_dir=DIR: a new folder, or a run directory to resume",
        )
    if str(run_dir).startswith("~"):
        raise ConfigError(
            "run_dir",
            f"{run_dir!r} starts with ~, which is not expanded here (it would name a folder '~' in the current one)",
            "write the path out, e.g. run_dir=$HOME/...",
        )
    folder = Path(run_dir)
    check_writable(folder)
    entries = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if set(entries) <= {contract.RUN_LOCK} or read_manifest(folder) is not None:
        return  # new, empty (a first launch may have died just after taking the lock), or ours
    if overwrite and (folder / contract.RUN_MANIFEST).exists():
        raise ConfigError(
            str(folder / contract.RUN_MANIFEST),
            "unreadable, and it lists what overwrite=true may delete; nothing was deleted",
            "delete the folder yourself to start over, or pass another run_dir",
        )
    if is_earlier_run(folder):
        if overwrite:
            raise ConfigError(
                "overwrite",
                f"{folder} was written before runs kept a {contract.RUN_MANIFEST}, so nothing proves which of its "
                "files are the run's; nothing was deleted",
                "delete the folder yourself to start over, or pass another run_dir",
            )
        return
    shown = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
    raise ConfigError(
        "run_dir",
        f"{folder} holds files that are not a run of ours ({shown}) and no {contract.RUN_MANIFEST}; nothing was "
        "changed",
        "pass a new or empty folder as run_dir",
    )


def read_manifest(run_dir: Path) -> dict | None:
    """The run's manifest, or None when the folder has none of ours (or an unreadable one)."""
    try:
        manifest = json.loads((Path(run_dir) / contract.RUN_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("manifest_of") == MANIFEST_OF else None


def write_manifest(run_dir: Path) -> None:
    """Claim a new or empty folder for the run: the entries listed are the ones overwrite=true may delete."""
    write_json(run_dir / contract.RUN_MANIFEST, {"manifest_of": MANIFEST_OF, "entries": list(OWN_ENTRIES)})


def is_earlier_run(run_dir: Path) -> bool:
    """A run directory from before manifests: a config.yaml with our three sections."""
    try:
        stored = yaml.safe_load((Path(run_dir) / contract.CONFIG_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    sections = {contract.CONFIG_SECTION, contract.DERIVED_SECTION, contract.DATA_SECTION}
    return isinstance(stored, dict) and sections <= stored.keys()


def clear(run_dir: Path) -> None:
    """overwrite=true: delete the entries the run's manifest lists (never the manifest itself, nor the lock
    this process holds), and inside its folders only what the run writes there: anything else in the
    folder, a person's file among the checkpoints included, stays, and is named."""
    listed = set((read_manifest(run_dir) or {}).get("entries", ()))
    kept = []
    for name in sorted(listed & set(OWN_ENTRIES) - {contract.RUN_MANIFEST, contract.RUN_LOCK}):
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            kept += _clear_folder(path, OWN_CONTENTS[name])
        elif path.exists() or path.is_symlink():
            path.unlink()
    if kept:
        warnings.warn(f"overwrite=true kept what the run did not write: {', '.join(kept[:5])}")


def _clear_folder(folder: Path, ours: re.Pattern) -> list[str]:
    """Delete the entries of `folder` named as the run names them; the folder too if nothing else is left."""
    kept = []
    for child in sorted(folder.iterdir()):
        if not ours.fullmatch(child.name):
            kept.append(str(child))
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    if not kept:
        folder.rmdir()
    return kept
