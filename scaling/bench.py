"""`python -m scaling.bench`: time the trainer's own jitted step on random tokens; tokens/s and MFU.

Same Hydra config as `python -m scaling.train` (model.*, data.vocab_size, train.batch_size,
train.grad_accum, bench.steps, bench.warmup); no corpus is read, batches are random token ids.
Each timed step ends in one host sync (waiting for the new parameters), nothing inside the step
syncs, and the median over `bench.steps` steps after `bench.warmup` untimed ones is reported.

FLOPs per token follow `sizing.flops_per_token(...)["chinchilla"]`: attention scores and the
weighted sum are included and the causal mask does not halve them. MFU divides the achieved FLOP
rate by the device's peak: datasheet dense bf16 peaks for GPUs and TPUs, and on CPU the best
rate of a jitted 2048^3 fp32 matmul ever measured on this machine, kept under the cache root.
The last line printed is one JSON object; the line before it says the same for a person.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig

from scaling.attention import resolve_attention_impl
from scaling.cli import validated_entry
from scaling.config import RunConfig, replace, to_dataclass
from scaling.errors import ConfigError, exit_with
from scaling.layers import resolve_compute_dtype
from scaling.model import build_model
from scaling.mup import optimizer_multipliers
from scaling.optimizer import make_optimizer, optimizer_factory
from scaling.plan import make_plan
from scaling.provenance import environment, versions
from scaling.runtime import cache_root, initialize
from scaling.schedule import schedule_values
from scaling.step import make_train_step
from scaling.validate import validate_config

FLOPS_CONVENTION = "chinchilla: forward+backward, attention included, causal mask not halved"
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


def measure_matmul_peak(n: int = PEAK_MATMUL_SIZE, repeats: int = 5) -> float:
    """Best FLOP/s of a jitted square fp32 matmul (the CPU's practical peak)."""
    matmul = jax.jit(jnp.matmul)
    a_NxN = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul(a_NxN, a_NxN).block_until_ready()
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a_NxN, a_NxN).block_until_ready()
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


def cpu_peak_flops(cache_dir: Path) -> tuple[float, str]:
    """The best fp32 matmul rate ever measured on this machine, kept in the cache.

    Every call adds one short measurement and keeps the maximum, so a peak first measured while
    other work shared the CPU rises to the true one instead of flattering MFU forever.
    """
    path = cache_dir / "bench" / "cpu_matmul_peak.json"
    key = f"{platform.node()}|{cpu_name()}|{os.cpu_count()} cores|jaxlib {versions().get('jaxlib')}"
    cached = json.loads(path.read_text()) if path.exists() else {}
    cached[key] = max(cached.get(key, 0.0), measure_matmul_peak())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cached, indent=1))
    return cached[key], f"best measured fp32 {PEAK_MATMUL_SIZE}^3 matmul on this machine, kept in {path}"


def peak_flops(device: jax.Device, cache_dir: Path) -> tuple[float | None, str]:
    """(peak FLOP/s, where the number comes from); None when the device is not in the table."""
    if device.platform == "cpu":
        return cpu_peak_flops(cache_dir)
    for name, flops in DATASHEET_PEAK_FLOPS:
        if name.lower() in device.device_kind.lower():
            return flops, f"datasheet dense bf16 ({name})"
    return None, f"no datasheet peak for '{device.device_kind}'"


def random_batches(n: int, batch_size: int, seq_len: int, vocab_size: int, seed: int) -> list[jax.Array]:
    """`n` batches of uniform random token ids (B, T + 1), already on the device."""
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.integers(0, vocab_size, (batch_size, seq_len + 1)), jnp.int32) for _ in range(n)]


def time_steps(cfg: RunConfig, plan) -> list[float]:
    """Seconds per step for `bench.steps` steps after `bench.warmup` untimed ones."""
    graphdef, params = nnx.split(build_model(plan.model, plan.vocab_size, cfg.train.seed), nnx.Param)
    params = nnx.to_pure_dict(params)
    n_total = cfg.bench.warmup + cfg.bench.steps
    multipliers = optimizer_multipliers(params, plan.model)
    opt_state = make_optimizer(cfg.train, n_total, multipliers).init(params)
    schedule = jnp.asarray(schedule_values(cfg.train, n_total))
    step_fn = make_train_step(graphdef, optimizer_factory(cfg.train, multipliers), plan.grad_accum)
    batches = random_batches(n_total, cfg.train.batch_size, plan.model.seq_len, plan.vocab_size, cfg.train.seed)
    times = []
    for i, seqs_BxT1 in enumerate(batches):
        t0 = time.perf_counter()
        params, opt_state, metrics = step_fn(params, opt_state, seqs_BxT1, schedule)
        jax.block_until_ready((params, metrics))
        if i >= cfg.bench.warmup:
            times.append(time.perf_counter() - t0)
    return times


def bench(cfg: RunConfig) -> dict:
    """Run the benchmark described by `cfg` and return the result row."""
    if cfg.train.tokens is None and cfg.train.flops is None:
        cfg = replace(cfg, train={"tokens": cfg.train.batch_size * cfg.model.seq_len})  # no budget is spent
    validate_config(cfg)
    if cfg.bench.steps < 1 or cfg.bench.warmup < 0:
        raise ConfigError("bench.steps", f"needs steps >= 1 and warmup >= 0, got {cfg.bench.steps}/{cfg.bench.warmup}", "e.g. bench.steps=10 bench.warmup=3")
    plan = make_plan(cfg, cfg.data.vocab_size)
    times = time_steps(cfg, plan)
    step_time = statistics.median(times)
    tokens_per_s = plan.tokens_per_step / step_time
    per_token = plan.flops_per_token["chinchilla"]
    device = jax.devices()[0]
    peak, peak_source = peak_flops(device, cache_root())
    m = plan.model
    return {
        "d_model": m.d_model, "n_layers": m.n_layers, "n_heads": m.n_heads, "seq_len": m.seq_len,
        "vocab_size": plan.vocab_size, "batch_size": cfg.train.batch_size, "grad_accum": plan.grad_accum,
        "steps": len(times), "step_time_s": step_time, "step_time_min_s": min(times),
        "tokens_per_s": tokens_per_s, "flops_per_token": per_token, "flops_convention": FLOPS_CONVENTION,
        "params_total": plan.params.total, "params_nonembedding": plan.params.nonembedding,
        "mfu": tokens_per_s * per_token / peak if peak else None, "peak_flops_per_s": peak, "peak_source": peak_source,
        "device": environment()["device"] + (f" ({cpu_name()})" if device.platform == "cpu" else ""),
        "attention_impl": resolve_attention_impl(m), "compute_dtype": str(np.dtype(resolve_compute_dtype(m.compute_dtype))),
    }  # fmt: skip


def summary_line(r: dict) -> str:
    """One human-readable line for the result row."""
    mfu = f"MFU {100 * r['mfu']:.1f}% of {r['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s" if r["mfu"] is not None else "MFU n/a"
    return (
        f"d_model={r['d_model']} n_layers={r['n_layers']} n_heads={r['n_heads']} seq_len={r['seq_len']} "
        f"vocab={r['vocab_size']} batch={r['batch_size']}: {r['tokens_per_s']:,.0f} tokens/s, "
        f"{r['step_time_s'] * 1e3:,.1f} ms/step (median of {r['steps']}), "
        f"{r['flops_per_token'] / 1e6:,.1f} MFLOP/token (chinchilla, attention included), {mfu} "
        f"({r['peak_source']}); {r['device']}, attention={r['attention_impl']}, {r['compute_dtype']}"
    )


@hydra.main(version_base="1.3", config_path="pkg://sweeps", config_name="config")
def main(node: DictConfig) -> dict | None:
    cfg = to_dataclass(node)
    initialize(cfg.compilation_cache)
    try:
        result = bench(cfg)
    except ConfigError as err:
        exit_with(err, debug=cfg.debug)
        return None
    print(summary_line(result))
    print(json.dumps(result), flush=True)
    return result


def cli() -> None:
    validated_entry(main)


if __name__ == "__main__":
    cli()
