"""The device's peak FLOP rate, against which `python -m scaling.bench` states MFU.

GPUs and TPUs: their datasheet dense bf16 peak. CPUs have no such number that a program reaches, so
the peak is the best rate of a square fp32 matmul measured on this machine by ANY library installed
(JAX's XLA, NumPy's BLAS, and torch's when present): MFU against JAX's own matmul alone overstates
when another library multiplies faster on the same cores. The best rate ever measured is kept under
the cache root, so a peak first measured while other work shared the CPU rises to the true one
instead of flattering MFU forever.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 peaks per device from vendor datasheets (FLOP/s). Matched in order against the
# device kind, so more specific names come first ("H100 PCIe" before "H100").
DATASHEET_PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12),
    ("TPU v6e", 918e12),
)
PEAK_MATMUL_SIZE = 2048  # 17 GFLOP a call: long enough to time, short enough to run on every bench


def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it (falls back to the platform string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _best_rate(multiply, n: int, repeats: int) -> float:
    multiply()  # warm up: compile, allocate, start threads
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        multiply()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def measure_matmul_peaks(n: int = PEAK_MATMUL_SIZE, repeats: int = 5) -> dict[str, float]:
    """Best FLOP/s of a square fp32 matmul in each installed library: {"jax": ..., "numpy": ..., "torch": ...}."""
    a_jax = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    rates = {"jax": _best_rate(lambda: matmul(a_jax, a_jax).block_until_ready(), n, repeats)}
    a_np = np.array(a_jax)  # a writable copy (torch shares its memory)
    rates["numpy"] = _best_rate(lambda: a_np @ a_np, n, repeats)
    if importlib.util.find_spec("torch") is not None:
        import torch  # optional (the bench and hf extras); imported only to measure it

        a_torch = torch.from_numpy(a_np)
        rates["torch"] = _best_rate(lambda: a_torch @ a_torch, n, repeats)
    return rates


def cpu_peak_flops(cache_dir: Path) -> tuple[float, str]:
    """The best fp32 matmul rate of any library ever measured on this machine (kept in the cache);
    every call adds one short measurement per library and keeps the maxima."""
    path = cache_dir / "bench" / "cpu_matmul_peaks.json"
    machine = f"{platform.node()}|{cpu_name()}|{os.cpu_count()} cores"
    cached = json.loads(path.read_text()) if path.exists() else {}
    for library, rate in measure_matmul_peaks().items():
        key = f"{machine}|{library} {metadata.version('jaxlib' if library == 'jax' else library)}"
        cached[key] = max(cached.get(key, 0.0), rate)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached, indent=1))
    best = max((key for key in cached if key.startswith(machine + "|")), key=cached.get)
    library = best.rsplit("|", 1)[1]
    return cached[
        best
    ], f"best fp32 {PEAK_MATMUL_SIZE}^3 matmul of any library on this machine ({library}), kept in {path}"


def peak_flops(device: jax.Device, cache_dir: Path) -> tuple[float | None, str]:
    """(peak FLOP/s, where the number comes from); None when the device is not in the table."""
    if device.platform == "cpu":
        return cpu_peak_flops(cache_dir)
    for name, flops in DATASHEET_PEAK_FLOPS:
        if name.lower() in device.device_kind.lower():
            return flops, f"datasheet dense bf16 ({name})"
    return None, f"no datasheet peak for '{device.device_kind}'"
