"""`python -m scaling.bench`: time the trainer's own jitted step on random tokens; tokens/s and MFU.

Same Hydra config as `python -m scaling.train` (model.*, data.vocab_size, train.batch_size,
train.grad_accum, bench.steps, bench.warmup); no corpus is read, batches are random token ids.
`bench.pack=K` also times K runs of the shape trained together in one vmapped program (as
`hydra/launcher=local` packs them on an accelerator) and reports their aggregate tokens/s and its ratio
to one run's. `bench.jobs=K` also times K runs side by side, each in its own process on its own
cores with XLA's threads to match (as `hydra/launcher=local` trains a sweep on a CPU; 0: as many as
it would choose for this size), all compiled before any starts timing, and reports their aggregate
tokens/s and FLOP/s, its share of the peak, and its ratio to one run with every core.
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
import statistics
import time

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig

from scaling.cli import validated_entry
from scaling.config import RunConfig, replace, to_dataclass
from scaling.errors import ConfigError, exit_with
from scaling.model import families
from scaling.model.attention import resolve_attention_impl
from scaling.model.layers import resolve_compute_dtype
from scaling.model.mup import optimizer_multipliers
from scaling.peak import cpu_name, peak_flops
from scaling.planning.cores import split, step_flops
from scaling.planning.plan import make_plan
from scaling.runtime import cache_root, initialize, usable_cores
from scaling.sweeping.workers import Pool, core_groups
from scaling.training.optimizer import make_optimizer, optimizer_factory
from scaling.training.provenance import environment
from scaling.training.schedule import schedule_values
from scaling.training.step import make_packed_step
from scaling.training.steptime import StepTimer, random_batches, time_steps
from scaling.training.validate import validate_config

FLOPS_CONVENTION = "chinchilla: forward+backward, attention included, causal mask not halved"


def time_packed_steps(cfg: RunConfig, plan, k: int) -> list[float]:
    """Seconds per step of K runs of this shape trained together in one vmapped program
    (scaling/training/packed.py), each with its own initialisation and batches."""
    models = [families.build(plan.model, plan.vocab_size, cfg.train.seed + i) for i in range(k)]
    graphdef = nnx.split(models[0], nnx.Param)[0]
    params = jax.tree.map(lambda *x: jnp.stack(x), *[nnx.to_pure_dict(nnx.split(m, nnx.Param)[1]) for m in models])
    n_total = cfg.bench.warmup + cfg.bench.steps
    multipliers = optimizer_multipliers(nnx.to_pure_dict(nnx.split(models[0], nnx.Param)[1]), plan.model)
    opt_state = jax.vmap(make_optimizer(cfg.train, n_total, multipliers).init)(params)
    schedule = jnp.tile(jnp.asarray(schedule_values(cfg.train, n_total)), (k, 1))
    step_fn = make_packed_step(graphdef, optimizer_factory(cfg.train, multipliers), plan.grad_accum)
    per_run = [
        random_batches(n_total, cfg.train.batch_size, plan.model, plan.vocab_size, cfg.train.seed + i) for i in range(k)
    ]
    times = []
    for i in range(n_total):
        seqs_KxBxT1 = jnp.stack([batches[i] for batches in per_run])
        t0 = time.perf_counter()
        params, opt_state, metrics = step_fn(params, opt_state, seqs_KxBxT1, schedule)
        jax.block_until_ready((params, metrics))
        if i >= cfg.bench.warmup:
            times.append(time.perf_counter() - t0)
    return times


def pack_row(cfg: RunConfig, plan, solo_tokens_per_s: float) -> dict:
    """`bench.pack=K`: aggregate tokens/s of K packed runs, and its ratio to one run's."""
    k = cfg.bench.pack
    step_time = statistics.median(time_packed_steps(cfg, plan, k))
    tokens_per_s = k * plan.tokens_per_step / step_time
    return {
        "pack": k,
        "pack_step_time_s": step_time,
        "pack_tokens_per_s": tokens_per_s,
        "pack_speedup": tokens_per_s / solo_tokens_per_s,
    }


class SideBySide:
    """One worker's run of `bench.jobs`: "prepare" builds, compiles and warms up the step, "time" times it;
    two tasks, so that every worker has compiled before any starts timing."""

    def __init__(self, cfg: RunConfig, plan):
        self.cfg, self.plan, self.timer = cfg, plan, None

    def __call__(self, phase: str) -> list[float] | None:
        if phase == "prepare":
            initialize(self.cfg.compilation_cache)
            self.timer = StepTimer(self.cfg, self.plan, self.cfg.bench.warmup + self.cfg.bench.steps)
            self.timer.time(self.cfg.bench.warmup)
            return None
        return self.timer.time(self.cfg.bench.steps)


def jobs_row(cfg: RunConfig, plan, solo_tokens_per_s: float, peak: float | None) -> dict:
    """`bench.jobs=K`: K runs side by side, each on cores/K cores; their aggregate rate against one run's."""
    cores = usable_cores()
    k = cfg.bench.jobs or split(len(cores), step_flops(plan)).runs
    if k > len(cores):
        raise ConfigError("bench.jobs", f"{k} runs side by side on {len(cores)} usable cores", f"at most {len(cores)}")
    groups = core_groups(cores, k, len(cores) // k)
    outcomes: dict[int, tuple] = {}
    with Pool(groups, SideBySide(cfg, plan)) as pool:
        for phase in ("prepare", "time"):
            pool.run([(i, phase) for i in range(k)], outcomes.__setitem__)
            failed = [o for o in outcomes.values() if o[0] != "done"]
            if failed:
                raise RuntimeError(f"a side-by-side run failed: {failed[0][1]}")
    tokens_per_s = sum(plan.tokens_per_step / statistics.median(outcomes[i][1]) for i in range(k))
    flops_per_s = tokens_per_s * plan.flops_per_token["chinchilla"]
    return {
        "jobs": k,
        "threads_per_job": len(groups[0]),
        "jobs_tokens_per_s": tokens_per_s,
        "jobs_flops_per_s": flops_per_s,
        "jobs_mfu": flops_per_s / peak if peak else None,
        "jobs_speedup": tokens_per_s / solo_tokens_per_s,
    }


def bench(cfg: RunConfig) -> dict:
    """Run the benchmark described by `cfg` and return the result row."""
    if cfg.train.tokens is None and cfg.train.flops is None:
        cfg = replace(cfg, train={"tokens": cfg.train.batch_size * cfg.model.seq_len})  # no budget is spent
    validate_config(cfg)
    if cfg.bench.steps < 1 or cfg.bench.warmup < 0:
        raise ConfigError(
            "bench.steps",
            f"needs steps >= 1 and warmup >= 0, got {cfg.bench.steps}/{cfg.bench.warmup}",
            "e.g. bench.steps=10 bench.warmup=3",
        )
    if cfg.bench.pack < 1:
        raise ConfigError("bench.pack", f"{cfg.bench.pack} runs in a pack", "bench.pack=8 (or 1: one run alone)")
    if cfg.bench.jobs < 0:
        raise ConfigError(
            "bench.jobs", f"{cfg.bench.jobs} runs side by side", "bench.jobs=2 (0: chosen for the machine)"
        )
    plan = make_plan(cfg, cfg.data.vocab_size)
    times = time_steps(cfg, plan, cfg.bench.steps, cfg.bench.warmup)
    step_time = statistics.median(times)
    tokens_per_s = plan.tokens_per_step / step_time
    per_token = plan.flops_per_token["chinchilla"]
    device = jax.devices()[0]
    peak, peak_source = peak_flops(device, cache_root())
    m = plan.model
    packed = pack_row(cfg, plan, tokens_per_s) if cfg.bench.pack > 1 else {}
    side_by_side = jobs_row(cfg, plan, tokens_per_s, peak) if cfg.bench.jobs != 1 else {}
    return (
        packed
        | side_by_side
        | {
            "d_model": m.d_model,
            "n_layers": m.n_layers,
            "n_heads": m.n_heads,
            "seq_len": m.seq_len,
            "vocab_size": plan.vocab_size,
            "batch_size": cfg.train.batch_size,
            "grad_accum": plan.grad_accum,
            "steps": len(times),
            "step_time_s": step_time,
            "step_time_min_s": min(times),
            "tokens_per_s": tokens_per_s,
            "flops_per_token": per_token,
            "flops_convention": FLOPS_CONVENTION,
            "params_total": plan.params.total,
            "params_nonembedding": plan.params.nonembedding,
            "flops_per_s": tokens_per_s * per_token,
            "threads": len(usable_cores()),
            "mfu": tokens_per_s * per_token / peak if peak else None,
            "peak_flops_per_s": peak,
            "peak_source": peak_source,
            "device": environment()["device"] + (f" ({cpu_name()})" if device.platform == "cpu" else ""),
            "attention_impl": resolve_attention_impl(m),
            "compute_dtype": str(np.dtype(resolve_compute_dtype(m.compute_dtype))),
        }
    )


def summary_line(r: dict) -> str:
    """One human-readable line for the result row."""
    mfu = (
        f"MFU {100 * r['mfu']:.1f}% of {r['peak_flops_per_s'] / 1e9:,.0f} GFLOP/s"
        if r["mfu"] is not None
        else "MFU n/a"
    )
    return (
        (
            f"d_model={r['d_model']} n_layers={r['n_layers']} n_heads={r['n_heads']} seq_len={r['seq_len']} "
            f"vocab={r['vocab_size']} batch={r['batch_size']}: {r['tokens_per_s']:,.0f} tokens/s, "
            f"{r['step_time_s'] * 1e3:,.1f} ms/step (median of {r['steps']}), "
            f"{r['flops_per_token'] / 1e6:,.1f} MFLOP/token (chinchilla, attention included), {mfu} "
            f"({r['peak_source']}); {r['device']}, attention={r['attention_impl']}, {r['compute_dtype']}"
        )
        + (
            f"; {r['pack']} packed runs: {r['pack_tokens_per_s']:,.0f} tokens/s together, {r['pack_speedup']:.2f}x one run"
            if "pack" in r
            else ""
        )
        + (
            f"; {r['jobs']} runs side by side ({r['threads_per_job']} threads each): {r['jobs_tokens_per_s']:,.0f} "
            f"tokens/s, {r['jobs_flops_per_s'] / 1e9:,.1f} GFLOP/s together"
            + (f" ({100 * r['jobs_mfu']:.1f}% of peak)" if r["jobs_mfu"] is not None else "")
            + f", {r['jobs_speedup']:.2f}x one run with {r['threads']} threads"
            if "jobs" in r
            else ""
        )
    )


@hydra.main(version_base="1.3", config_path="pkg://sweeps", config_name="config")
def main(node: DictConfig) -> dict | None:
    cfg = to_dataclass(node)
    try:
        initialize(cfg.compilation_cache)
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
