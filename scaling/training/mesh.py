"""Devices: a (data, fsdp) mesh, how parameters and batches are sharded on it, and multi-host start.

Data parallelism splits the batch over every device. FSDP additionally splits each parameter (and
so its Adam moments) along its largest dimension divisible by the `fsdp` axis size, so a model too
large for one device's memory still trains; XLA inserts the all-gathers and reduce-scatters.
On one device both are no-ops, so the same code runs on a laptop and on a pod.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from scaling.config import MeshConfig
from scaling.errors import ConfigError

BATCH_AXES = ("data", "fsdp")


def initialize_distributed(cfg: MeshConfig) -> None:
    """Join a multi-process job: explicit coordinator settings, or the SLURM job step (`srun -n 2`)."""
    if jax.distributed.is_initialized():
        return
    if cfg.coordinator:
        jax.distributed.initialize(cfg.coordinator, num_processes=cfg.num_processes, process_id=cfg.process_id)
    elif slurm_step_tasks(os.environ) > 1:
        # JAX reads the coordinator (the step's first node), the process count and id from SLURM.
        jax.distributed.initialize()


def slurm_step_tasks(environ: Mapping[str, str]) -> int:
    """How many processes the SLURM job step this one belongs to has; 1 outside a step.

    Not the job's SLURM_NTASKS: the batch script of an `sbatch -n 2` job sees 2 there yet runs as one
    process, outside any step, where JAX finds no coordinator to join."""
    return int(environ.get("SLURM_STEP_NUM_TASKS", "1"))


def make_mesh(cfg: MeshConfig) -> Mesh:
    n = jax.device_count()
    fsdp = cfg.fsdp
    data = n // fsdp if cfg.data == -1 else cfg.data
    if fsdp < 1 or data < 1 or data * fsdp != n:
        raise ConfigError(
            "mesh.data",
            f"mesh.data={cfg.data} x mesh.fsdp={cfg.fsdp} does not use the {n} devices",
            "make data * fsdp equal the device count (data=-1 fills it)",
        )
    return Mesh(np.asarray(jax.devices()).reshape(data, fsdp), BATCH_AXES)


def _param_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    """Shard the largest dimension that the fsdp axis divides; replicate what it cannot split."""
    if fsdp == 1 or not shape:
        return PartitionSpec()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return PartitionSpec(*spec)
    return PartitionSpec()


def tree_shardings(tree: Any, mesh: Mesh) -> Any:
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, _param_spec(np.shape(x), fsdp)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sequences are split over every device (both axes); the sequence dimension is not."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def global_batch(batch_NxT: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """Every process computes the same global batch (the data order is a pure function) and hands
    over only the rows its own devices hold."""
    return jax.make_array_from_callback(batch_NxT.shape, sharding, lambda index: batch_NxT[index])


def is_writer() -> bool:
    """Only process 0 writes tables, summaries and logs; every process joins checkpoint saves."""
    return jax.process_index() == 0
