"""Process set-up, done once by each command's entry point and never as a side effect of an import.

`initialize` sets XLA's CPU flags (read when JAX's backend starts, so it must run first), quietens
Orbax's per-save logging, prints warnings as one `warning: ...` line each, turns on JAX's persistent
compilation cache, and picks a file-only plotting backend. It returns what it set, the number of XLA:CPU
compute threads included; training records that in summary.json. `use_cores` pins a worker process (runs
trained side by side, scaling/sweeping/workers.py) to its own cores before its backend starts: XLA:CPU
sizes its thread pool to the cores the process may run on.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scaling.errors import ConfigError

# XLA:CPU by default fuses elementwise work into its YNNPACK matmul calls, materialising broadcasts
# (norm scales, softmax sums) to feed them; calling YNNPACK for dots only took ~15% off forward +
# backward on one CPU core. A flag the user already set in XLA_FLAGS wins.
CPU_XLA_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "individual_dot"}
ONE_CORE_XLA_FLAGS = {"xla_cpu_multi_thread_eigen": "false"}
# Compiled programs that took less than this to compile are not worth a file in the cache (JAX's own
# default is 1 s). $SCALING_COMPILE_CACHE_MIN_S overrides it: the test suite sets 0, because its hundreds
# of small programs, each compiled in under half a second, are most of what a second run of a test file
# would compile again.
CACHE_MIN_COMPILE_S = 0.5
CACHE_MIN_COMPILE_ENV = "SCALING_COMPILE_CACHE_MIN_S"


def cache_root() -> Path:
    """$SCALING_CACHE, else ~/.cache/scaling: corpora, compiled programs, the CPU peak."""
    return Path(os.environ.get("SCALING_CACHE") or "~/.cache/scaling").expanduser()


def backend_started() -> bool:
    """Whether JAX's backend already started (then new XLA flags can no longer take effect)."""
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):  # an internal API: assume the worst if it moves
        return True


def set_xla_flags() -> dict[str, Any]:
    """Add CPU_XLA_FLAGS to XLA_FLAGS (a user's own setting of a flag wins); says whether they apply.
    On one core Eigen's own threading is off as well, so that a process's flags follow from its core count
    alone (a worker pinned to one core and a command under `taskset -c 0` compute alike)."""
    flags = os.environ.get("XLA_FLAGS", "")
    wanted = {**CPU_XLA_FLAGS, **(ONE_CORE_XLA_FLAGS if cpu_threads() == 1 else {})}
    added = [f"--{name}={value}" for name, value in wanted.items() if name not in flags]
    if added:
        os.environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
    return {"xla_flags": os.environ.get("XLA_FLAGS", ""), "xla_flags_effective": not backend_started()}


def usable_cores() -> list[int]:
    """The cores this process may run on (taskset, cgroups): XLA:CPU starts one compute thread for each."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))  # macOS, Windows: no affinity, every core


def can_pin() -> bool:
    """Whether processes can be pinned to cores here (Linux): without it runs are not set side by side."""
    return hasattr(os, "sched_setaffinity")


def cpu_threads() -> int:
    return len(usable_cores())


def use_cores(cores: Sequence[int]) -> dict[str, Any]:
    """Pin this process to `cores` (a worker's share of the machine), so that XLA:CPU's thread pool has one
    thread per core, and set its XLA flags for that count. Only before the backend starts."""
    if backend_started():
        raise RuntimeError("use_cores must run before JAX's backend starts (its thread pool is sized then)")
    os.sched_setaffinity(0, cores)
    return {"cores": sorted(cores), **set_xla_flags()}


def cache_min_compile_s() -> float:
    """The shortest compile worth caching: $SCALING_COMPILE_CACHE_MIN_S (seconds, >= 0), else 0.5."""
    text = os.environ.get(CACHE_MIN_COMPILE_ENV, "").strip()
    if not text:
        return CACHE_MIN_COMPILE_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also refuses NaN
        raise ConfigError(
            f"${CACHE_MIN_COMPILE_ENV}", f"{text!r} is not a number of seconds >= 0", "unset it or give e.g. 0.5"
        )
    return seconds


def enable_compilation_cache() -> str:
    """Persist compiled XLA programs so a relaunch (same shapes) skips compilation; returns the folder."""
    import jax

    folder = str(cache_root() / "jax")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", cache_min_compile_s())
    return folder


def share_accelerators(job: int) -> dict[str, str]:
    """For sweep jobs that may run side by side: no GPU memory pre-allocation (they would clash), and
    with SCALING_GPUS=0,1,.. each job its own GPU. Read when the backend starts, so set before it does."""
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    gpus = [g for g in os.environ.get("SCALING_GPUS", "").split(",") if g]
    if gpus and not backend_started():
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[job % len(gpus)]
    return {k: os.environ[k] for k in ("XLA_PYTHON_CLIENT_PREALLOCATE", "CUDA_VISIBLE_DEVICES") if k in os.environ}


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the commands print it: `warning: MESSAGE`, without the source line that raised it."""
    return f"warning: {message}\n"


def initialize(compilation_cache: bool = True, plotting: bool = False, job: int | None = None) -> dict[str, Any]:
    """Set up this process for training or analysis (`job`: the sweep job number, when one); returns
    what was set."""
    record = set_xla_flags()
    record["cpu_threads"] = cpu_threads()
    if job is not None:
        record["accelerators"] = share_accelerators(job)
    # Orbax reports every save at INFO/WARNING through absl; a sweep of hundreds of saves drowns the
    # progress lines, and real failures still raise.
    logging.getLogger("absl").setLevel(logging.ERROR)
    record["absl_log_level"] = "ERROR"
    warnings.formatwarning = one_line_warning
    record["compilation_cache"] = enable_compilation_cache() if compilation_cache else None
    if plotting:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display, and no GUI toolkit needed on a cluster node
        record["matplotlib_backend"] = "Agg"
    return record
