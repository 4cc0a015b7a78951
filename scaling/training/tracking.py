"""Experiment trackers: TensorBoard event files and Weights & Biases runs, written while a run trains.

`tracker=tensorboard` (the default), `tracker=wandb`, both (`tracker=[tensorboard,wandb]`) or
`tracker=none`. Only process 0 writes. tensorboardX is a dependency; wandb is the `track` extra, and
asking for a tracker that is not installed is a one-line error naming the extra.

TensorBoard: one writer per x-axis under run_dir/tensorboard/ (`step`, `tokens`, `mflops`: training
compute in millions of FLOPs, 6ND; an int64 step holds up to 9e24 FLOPs), so a curve can be read against any of them; the hyperparameters and the
summary are written as hparams at the end. A resumed run opens its writers with TensorBoard's own
purge step (the resumed step + 1 on each axis), so what a killed run logged after its last checkpoint
is dropped by TensorBoard's reader and no step appears twice.

W&B: offline by default (`tracker.wandb_mode=offline`; sync later with `wandb sync`), runs of a sweep
grouped by the sweep's name, one run per run directory (its id is derived from the path, so a resumed
run continues the same W&B run), with the swept values and the whole config as its config.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import math
import sys
import time
from pathlib import Path
from typing import Any

from scaling.config import TrackerConfig
from scaling.errors import ConfigError

TENSORBOARD_DIR, WANDB_DIR = "tensorboard", "wandb"
AXES = ("step", "tokens", "mflops")
EXTRA = "track"  # pip install -e '.[track]'


def _require(module: str, tracker: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(
            "tracker",
            f"{tracker} needs the package {module.split('.')[0]}, which is not installed",
            f"pip install -e '.[{EXTRA}]', or choose tracker=none",
        ) from err


def check_available(cfg: TrackerConfig) -> None:
    """Refuse, before anything trains, a tracker whose package is missing."""
    if cfg.tensorboard:
        _require("tensorboardX", "tracker=tensorboard")
    if cfg.wandb:
        _require("wandb", "tracker=wandb")


class Tracker:
    """Where a run's curves go besides metrics.parquet; a no-op when no tracker is chosen."""

    def __init__(
        self,
        cfg: TrackerConfig,
        run_dir: Path,
        resumed_step: int,
        tokens_per_step: int,
        flops_per_token: float,
        config: dict[str, Any],
        group: str | None,
        name: str,
    ):
        self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
        self.writers: dict[str, Any] = {}
        if cfg.tensorboard:
            writer = _require("tensorboardX", "tracker=tensorboard").SummaryWriter
            first = self._positions(resumed_step + 1) if resumed_step else {}
            # Event files are named by the second they were opened in; the suffix keeps a quick resume's
            # file from overwriting the previous one and sorts after it, as the reader needs.
            suffix = f".{time.time_ns()}"
            for axis in AXES:
                self.writers[axis] = writer(
                    str(run_dir / TENSORBOARD_DIR / axis), purge_step=first.get(axis), filename_suffix=suffix
                )
        self.wandb = None
        if cfg.wandb:
            wandb = _require("wandb", "tracker=wandb")
            run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
            self.wandb = wandb.init(
                project=cfg.wandb_project,
                group=group,
                name=name,
                id=run_id,
                resume="allow",
                dir=str(run_dir),
                config=config,
                mode=cfg.wandb_mode,
                reinit="create_new",
            )

    def _positions(self, step: int) -> dict[str, int]:
        tokens = step * self.tokens_per_step
        return {"step": step, "tokens": tokens, "mflops": int(tokens * self.flops_per_token / 1e6)}

    def log(self, step: int, values: dict[str, float]) -> None:
        """Scalars at one step (NaN values, e.g. no evaluation at this step, are left out)."""
        values = {k: v for k, v in values.items() if v == v}
        if not values:
            return
        for axis, position in self._positions(step).items():
            if axis in self.writers:
                for key, value in values.items():
                    self.writers[axis].add_scalar(key, value, position)
        if self.wandb is not None:
            self.wandb.log({**values, "tokens": step * self.tokens_per_step}, step=step)

    def finish(self, hparams: dict[str, Any], summary: dict[str, Any]) -> None:
        """The run's hyperparameters and final numbers, then close everything."""
        numbers = {
            f"summary/{k}": float(v)
            for k, v in summary.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        if "step" in self.writers:
            self.writers["step"].add_hparams(_plain(hparams), numbers, name="hparams")
        if self.wandb is not None:
            self.wandb.summary.update(numbers)
        self.close()

    def close(self) -> None:
        """Close every writer, however the run ended. On a full disk what a writer still held is lost, said in
        one line (the run's own error says what to do), and its thread is stopped, not left to fail at exit."""
        failed = {}
        for axis, writer in self.writers.items():
            try:
                writer.close()
            except OSError as err:
                failed[axis] = err
                _stop_threads(writer)
        if failed:
            axes = ", ".join(failed)
            print(f"warning: TensorBoard lost its last events ({axes}: {next(iter(failed.values()))})", file=sys.stderr)
        self.writers = {}
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _stop_threads(writer: Any) -> None:
    """After a close that failed half way (tensorboardX flushes before it stops its writer thread): stop the
    thread and mark the event file closed, so neither fails again, with a traceback, at interpreter exit."""
    for file_writer in (getattr(writer, "all_writers", None) or {}).values():
        events = file_writer.event_writer
        with contextlib.suppress(Exception):
            events._worker.stop()
        events._closed = True


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters TensorBoard accepts: numbers, strings and booleans (others as text)."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in values.items()}


class ProbeLog:
    """Probe measurements of a run's checkpoints (`python -m analysis.probe`) added to its TensorBoard
    curves as `probe/<probe>/<key>`, on the same three axes as training's. Only for a run trained with
    TensorBoard (its folder has event files); the probes write event files of their own beside training's."""

    def __init__(self, run_dir: Path, flops_per_token: float):
        self.flops_per_token, self.writers = flops_per_token, {}
        folder = Path(run_dir) / TENSORBOARD_DIR
        if folder.is_dir():
            writer = _require("tensorboardX", "the probes' TensorBoard curves").SummaryWriter
            suffix = f".probes.{time.time_ns()}"
            self.writers = {axis: writer(str(folder / axis), filename_suffix=suffix) for axis in AXES}

    def log(self, step: int, tokens: int, probe: str, values: dict[str, float]) -> None:
        positions = {"step": step, "tokens": tokens, "mflops": int(tokens * self.flops_per_token / 1e6)}
        for axis, writer in self.writers.items():
            for key, value in values.items():
                if value == value:  # NaN: not measured at this checkpoint
                    writer.add_scalar(f"probe/{probe}/{key}", float(value), positions[axis])

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
