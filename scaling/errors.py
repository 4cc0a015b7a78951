"""User-facing errors and exit statuses: one line each, never a traceback.

ConfigError is bad input (exit 2): the field, the value and the fix. `Stop` is any other condition a
person must act on (a full disk, a run another process is training), with its own exit status so a
script or a sweep can tell them apart.

Exit statuses are an interface, the same for every command (scripts chain them with `&&`):

    0    done: what was asked was done (a run completed, or was found completed already)
    2    bad input: a value, a path, a damaged file that cannot be rebuilt; nothing was changed
    3    a run diverged or failed (a sweep: any of its runs; analysis: every run did, nothing to use)
    74   the disk is full (what is on disk is intact; relaunch once there is room)
    75   another process is training the run (nothing was done here)
    130  stopped by Ctrl-C, 143 by SIGTERM (128 + the signal, as a shell reports it): what was saved is
         intact and the same command resumes it
"""

from __future__ import annotations

import signal
import sys

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 3
EXIT_DISK_FULL = 74  # EX_IOERR of sysexits.h
EXIT_BUSY = 75  # EX_TEMPFAIL: another process is training the run; nothing was done here
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130


def signal_exit_code(signal_name: str | None) -> int:
    """128 + the signal's number (143 for SIGTERM), as a shell reports a process a signal stopped."""
    try:
        return 128 + signal.Signals[signal_name]
    except KeyError:
        return 128 + signal.SIGTERM


class ConfigError(ValueError):
    """A configuration or input problem the user can fix; printed as one line, never a traceback."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(self.line())

    def line(self) -> str:
        fix = f"; {self.fix}" if self.fix else ""
        return f"error: {self.field}: {self.problem}{fix}"


class Stop(Exception):
    """Not bad input, but the command cannot go on: one line, and `exit_code`."""

    exit_code = 1

    def line(self) -> str:
        return str(self)


class DiskFull(Stop):
    """A write failed, or would fail, for lack of space; what is already on disk is intact."""

    exit_code = EXIT_DISK_FULL

    def __init__(self, path: str, needed: int, free: int):
        self.path, self.needed, self.free = path, needed, free
        super().__init__(
            f"error: disk full: writing {path} needs about {needed:,} bytes and {free:,} are free; free some "
            "space and relaunch the same command (it resumes from the last complete checkpoint)"
        )


class RunFailed(Stop):
    """A run ended diverged or failed (a sweep: one of its runs did): its line is printed already."""

    exit_code = EXIT_RUN_FAILED


class Interrupted(Stop):
    """Ctrl-C outside the training loop (inside it, the run checkpoints first and stops as preempted)."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, where: str):
        super().__init__(
            f"interrupted (Ctrl-C): {where}; what was saved is intact: relaunch the same command to go on from it"
        )


class RunBusy(Stop):
    """Another process holds the run's lock: it is training the run, so this one leaves it alone."""

    exit_code = EXIT_BUSY

    def __init__(self, run_dir: str, holder: str):
        self.run_dir, self.holder = run_dir, holder
        super().__init__(f"skipped: {run_dir} is being trained by another process ({holder}); it records the result")


def exit_with(err: ConfigError | Stop, debug: bool = False) -> None:
    """Print the one-line message and exit (2 for bad input, the Stop's own status otherwise);
    re-raise instead when debugging."""
    if debug:
        raise err
    print(err.line(), file=sys.stderr)
    raise SystemExit(err.exit_code if isinstance(err, Stop) else EXIT_BAD_INPUT)
