"""Training a run in a fresh process, so JAX memory and XLA state never leak between the runs of a
sweep whatever the launcher (basic, joblib, submitit). SIGTERM and SIGUSR2 (preemption, submitit's
pre-timeout signal) are forwarded, so the child checkpoints before the launcher requeues the job.

The child is `python -m scaling.isolate CONFIG.yaml`: it sets up the process, trains, and on an
unexpected error records a failed summary so the sweep table shows it. Bad input, a full disk and a
run another process is training are one line each, told apart by the exit status (scaling/errors.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from scaling import contract, rundir
from scaling.config import RunConfig, to_dataclass
from scaling.errors import ConfigError, Stop, exit_with
from scaling.runtime import initialize
from scaling.trainer import train


def child(config_path: str) -> None:
    """Entry of the training process."""
    # SLURM signals every process of a job step, this one included: the pre-timeout SIGUSR2 would
    # kill it before it checkpoints. The parent forwards it as the SIGTERM that the training loop
    # answers with a checkpoint.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    cfg = to_dataclass(OmegaConf.load(config_path))
    runtime = initialize(cfg.compilation_cache)
    try:
        train(cfg, runtime)
    except (ConfigError, Stop) as err:
        exit_with(err, debug=cfg.debug)
    except Exception as err:  # noqa: BLE001 - record the failure so the sweep table shows it
        rundir.write_summary(Path(cfg.run_dir), {"status": contract.FAILED, "error": repr(err)[:2000]})
        raise


def _child_env(job_num: int) -> dict[str, str]:
    """No GPU memory pre-allocation (parallel jobs would clash), and one GPU per job when several."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    gpus = [g for g in os.environ.get("SCALING_GPUS", "").split(",") if g]
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[job_num % len(gpus)]
    return env


def train_isolated(cfg: RunConfig, job_num: int = 0) -> int:
    """Train in a fresh process; SIGTERM/SIGUSR2 (preemption, timeout) are forwarded so it checkpoints."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "scaling.isolate", f.name], env=_child_env(job_num))
        return _wait_forwarding_signals(proc)
    finally:
        os.unlink(f.name)


def _wait_forwarding_signals(proc: subprocess.Popen) -> int:
    handled = (signal.SIGTERM, signal.SIGUSR2)  # preemption; submitit's pre-timeout signal
    previous = {sig: signal.getsignal(sig) for sig in handled}
    received = []

    def forward(signum, frame):
        # Only forward here: this handler interrupts proc.wait() below, which holds the Popen's lock,
        # so waiting again inside it would deadlock.
        received.append((signum, frame))
        proc.send_signal(signal.SIGTERM)

    for sig in handled:
        signal.signal(sig, forward)
    try:
        code = proc.wait()
    finally:
        for sig in handled:
            signal.signal(sig, previous[sig])
    # The child has checkpointed and exited; now the launcher's own handler runs (submitit requeues
    # the job on its pre-timeout signal) and the requeued job resumes from that checkpoint.
    for signum, frame in received:
        if callable(previous[signum]):
            previous[signum](signum, frame)
    return code


if __name__ == "__main__":
    child(sys.argv[1])
