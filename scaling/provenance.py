"""What ran where: package versions, device, and the persistent compilation cache."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import jax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tokenizers", "hydra-core")


def cache_root() -> Path:
    """$SCALING_CACHE, else ~/.cache/scaling: corpora, compiled programs, the CPU peak."""
    return Path(os.environ.get("SCALING_CACHE") or "~/.cache/scaling").expanduser()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment() -> dict[str, object]:
    device = jax.devices()[0]
    return {
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "n_devices": jax.device_count(),
        "versions": versions(),
    }


def enable_compilation_cache() -> None:
    """Persist compiled XLA programs so a sweep relaunch (same shapes) skips compilation."""
    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
