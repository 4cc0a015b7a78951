"""How a CPU's cores are shared among runs: how many train side by side, and with how many threads each.

A run's train step is a few hundred small operations. XLA:CPU splits an operation over its threads only
when it is large enough, so a tiny model's step leaves a second thread mostly waiting, while two runs,
each on its own core, keep both cores busy. A large model's matmuls split well, and then one run with
every thread finishes each run sooner at the same total rate. `split` chooses by the size of the step:
`FLOPS_PER_THREAD` of training arithmetic per step for each thread a run gets, found by measuring both
splits at each size (benchmarks/RESULTS.md, "Cores"). It is a pure function of the core count and
the step, so a sweep's split can be stated, tested and reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

# A run gets one thread per this many FLOPs of its train step (6ND-style count with attention, per
# step): below it a second thread gained a run less than a second run beside it did.
FLOPS_PER_THREAD = 2e9


@dataclass(frozen=True)
class Split:
    """`runs` side by side, each with `threads` cores (runs x threads <= the cores)."""

    runs: int
    threads: int


def threads_per_run(cores: int, flops_per_step: float) -> int:
    """One thread per FLOPS_PER_THREAD of the step, at least 1, rounded down to a divisor of `cores`
    so that every core has a run."""
    if cores < 1:
        raise ValueError(f"cores={cores}: a machine has at least one core")
    wanted = max(1, int(flops_per_step // FLOPS_PER_THREAD))
    return max(d for d in range(1, cores + 1) if cores % d == 0 and d <= wanted)


def split(cores: int, flops_per_step: float) -> Split:
    """How `cores` cores train runs whose step costs `flops_per_step`: as many side by side as fit."""
    threads = threads_per_run(cores, flops_per_step)
    return Split(runs=cores // threads, threads=threads)


def step_flops(plan) -> float:
    """A plan's training FLOPs per optimiser step (chinchilla count: attention included)."""
    return plan.tokens_per_step * plan.flops_per_token["chinchilla"]
