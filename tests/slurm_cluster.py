"""A private single-node SLURM cluster for the tests: MUNGE, slurmctld and slurmd started on this
machine from a generated slurm.conf (tests/slurm.conf.in: this machine's real CPUs and memory), with
configuration, state, sockets and logs in one folder, and every job and daemon stopped at the end.

Commands reach it through SLURM_CONF (the cluster's `env`); the daemons run in the foreground as
children of the test process, so stopping them never touches anything else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).with_name("slurm.conf.in")
COMMANDS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scancel", "scontrol", "sinfo")
NODE = "localhost"
START_TIMEOUT_S = 60
HARDWARE_KEYS = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")


class ClusterUnavailable(Exception):
    """This machine cannot run the cluster; the message says why (the tests skip with it)."""


@dataclass
class SlurmCluster:
    root: Path
    daemons: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """What a command needs to talk to this cluster rather than a system one."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 60) -> str:
        """Run a SLURM command against this cluster; returns its stdout, raises on failure."""
        env = {**os.environ, **self.env}
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, check=True).stdout

    def job_ids(self) -> list[str]:
        return self.run("squeue", "--noheader", "--format=%A").split()

    def stop(self) -> None:
        """Cancel every job, wait until the queue is empty, then stop the daemons (newest first)."""
        if any(name == "slurmctld" for name, _ in self.daemons):
            # If the controller is already gone, its jobs' processes die with slurmd below.
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                _cancel_all(self)
        for _, proc in reversed(self.daemons):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.daemons.clear()


def _cancel_all(cluster: SlurmCluster) -> None:
    jobs = cluster.job_ids()
    if jobs:
        cluster.run("scancel", *jobs)
    deadline = time.monotonic() + 60
    while cluster.job_ids() and time.monotonic() < deadline:
        time.sleep(0.5)


def check_machine() -> None:
    """Raise ClusterUnavailable unless SLURM and MUNGE are installed and we may run slurmd (root)."""
    missing = [c for c in COMMANDS if shutil.which(c) is None]
    if missing:
        raise ClusterUnavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurmd must run as root to start jobs as their user")


def node_hardware() -> str:
    """This machine as slurmd sees it ('CPUs=2 Boards=1 ... RealMemory=24105'), for the node line."""
    first = subprocess.run(
        ["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in first.split())
    return " ".join(f"{key}={fields[key]}" for key in HARDWARE_KEYS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path) -> Path:
    """slurm.conf for this machine, from tests/slurm.conf.in."""
    values = {
        "root": root,
        "hostname": socket.gethostname().split(".")[0],
        "ctld_port": free_port(),
        "slurmd_port": free_port(),
        "munge_socket": root / "munge" / "socket",
        "hardware": node_hardware(),
        "first_job_id": random.randrange(1, 1_000_000),
    }
    conf = root / "slurm.conf"
    conf.write_text(Template(TEMPLATE.read_text()).substitute(values))
    return conf


def write_munge_key(folder: Path) -> Path:
    """A fresh key, readable only by its owner as munged demands."""
    folder.mkdir(mode=0o755, exist_ok=True)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    return key


def start(cluster: SlurmCluster, name: str, args: list[str]) -> None:
    """Start one daemon in the foreground, its output in NAME.out."""
    with open(cluster.root / f"{name}.out", "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **cluster.env})
    cluster.daemons.append((name, proc))


def wait_until(cluster: SlurmCluster, ready: Callable[[], bool], what: str) -> None:
    """Poll `ready()` until it holds; raise ClusterUnavailable (with the daemons' logs) if a daemon
    dies or START_TIMEOUT_S passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        dead = [name for name, proc in cluster.daemons if proc.poll() is not None]
        if dead:
            raise ClusterUnavailable(f"{', '.join(dead)} exited while waiting for {what}: {logs(cluster)}")
        if ready():
            return
        time.sleep(0.3)
    raise ClusterUnavailable(f"timed out after {START_TIMEOUT_S}s waiting for {what}: {logs(cluster)}")


def node_idle(cluster: SlurmCluster) -> bool:
    try:
        return cluster.run("sinfo", "--noheader", "--format=%T", timeout=10).split() == ["idle"]
    except (subprocess.SubprocessError, OSError):
        return False


def logs(cluster: SlurmCluster) -> str:
    """The last lines each daemon wrote, so a skip or failure says what went wrong."""
    tails = []
    for path in sorted(cluster.root.glob("*.out")) + sorted(cluster.root.glob("*.log")):
        lines = path.read_text(errors="replace").splitlines()[-5:]
        tails.append(f"[{path.name}] " + " | ".join(lines))
    return " ".join(tails)


def start_cluster(root: Path) -> SlurmCluster:
    """Start MUNGE, slurmctld and slurmd under `root` and wait until the node is idle."""
    check_machine()
    root.mkdir(parents=True, exist_ok=True)
    cluster = SlurmCluster(root)
    try:
        key = write_munge_key(root / "munge")
        write_config(root)
        sock = root / "munge" / "socket"
        start(
            cluster,
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--socket={sock}",
                f"--key-file={key}",
                f"--pid-file={root / 'munge' / 'pid'}",
                f"--log-file={root / 'munge' / 'log'}",
                f"--seed-file={root / 'munge' / 'seed'}",
            ],
        )
        wait_until(cluster, sock.exists, "munged's socket")
        start(cluster, "slurmctld", ["slurmctld", "-D", "-c", "-f", str(cluster.conf)])
        start(cluster, "slurmd", ["slurmd", "-D", "-f", str(cluster.conf), "-N", NODE])
        wait_until(cluster, lambda: node_idle(cluster), "the node to be idle")
    except BaseException:
        cluster.stop()
        raise
    return cluster
