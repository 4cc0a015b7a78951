"""Will a run fit in memory? An estimate made before anything is allocated, so that a model far too
large for the machine is refused in one line instead of being killed by the kernel minutes later.

Training state: 16 bytes per parameter (fp32 parameters, gradients, and Adam's two moments).
Activations kept for the backward pass, per micro-batch: per layer and token about 34 d_model + 5
n_heads x seq_len values (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", section 4.1, counted there in 16-bit units; here at 4 bytes each for fp32), plus
the logits and their gradient (2 x vocab x 4 bytes per token). The estimate errs low (no compiler
scratch space), so a refusal is never a false alarm; a run that passes may still be tight.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from scaling.planning.plan import Plan

STATE_BYTES_PER_PARAM = 16
BYTES_PER_VALUE = 4


def needed_bytes(plan: Plan, batch_size: int) -> int:
    """Bytes the run needs at least: training state plus one micro-batch's activations."""
    return state_bytes(plan) + batch_size // plan.grad_accum * sequence_bytes(plan)


def state_bytes(plan: Plan) -> int:
    """The training state alone (parameters, gradients, Adam's moments): what no batch size changes."""
    return STATE_BYTES_PER_PARAM * plan.params.total


def sequence_bytes(plan: Plan) -> int:
    """The activations one sequence of a micro-batch keeps for the backward pass."""
    m = plan.model
    per_token = m.n_layers * (34 * m.d_model + 5 * m.n_heads * m.seq_len) + 2 * plan.vocab_size
    return BYTES_PER_VALUE * m.seq_len * per_token


def available_bytes() -> tuple[int | None, str]:
    """(bytes, what they are) over every device: accelerator memory, or the host's available memory."""
    devices = jax.devices()
    if devices[0].platform == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available host memory"
        except OSError:
            pass
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host memory"
        except (ValueError, OSError):
            return None, "unknown"
    limits = [(d.memory_stats() or {}).get("bytes_limit") for d in devices]
    if any(limit is None for limit in limits):
        return None, "unknown"
    return int(sum(limits)), f"memory of {len(devices)} {devices[0].device_kind}"
