"""Worker processes that each train on their own cores: the CPU side of `hydra/launcher=local`
(scaling/sweeping/launcher.py) and of `python -m scaling.bench bench.jobs=K`.

Each worker is a fresh interpreter (spawned, never forked: a fork would copy the parent's JAX runtime
and its threads) pinned to its share of the cores before its JAX backend starts, so XLA:CPU starts one
compute thread per core it owns (scaling/runtime.py: `use_cores`). A `Pool` hands tasks to its
workers one at a time, in the order given (longest first, from the launcher), so the pool ends close
to together; a worker keeps its imports, corpus and compiled programs from one task to the next.

Why not Hydra's joblib launcher: it cannot pin a worker to cores before JAX starts, order the jobs,
pass a preemption signal on to the runs in flight (they would die without their checkpoint), or keep
going when a worker process dies (joblib stops the whole sweep). This pool does those four things
and nothing else.

Tasks, their results and the function travel pickled by cloudpickle (Hydra's configs hold classes that
the standard pickle cannot name). Outcomes of a task: ("done", value), ("exit", code) when the task asked the process to exit (a `Stop`:
preempted, disk full), ("error", traceback) when it raised, ("lost", exitcode) when its worker died.
"""

from __future__ import annotations

import contextlib
import os
import signal
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing import connection, get_context
from typing import Any

import cloudpickle

from scaling.runtime import use_cores

# The signals a run checkpoints and stops on (scaling/training/trainer.py: PREEMPTION_SIGNALS).
FORWARDED = (signal.SIGTERM, signal.SIGUSR2)


def core_groups(cores: Sequence[int], runs: int, threads: int) -> list[tuple[int, ...]]:
    """`runs` disjoint groups of `threads` cores each, taken in order from `cores`."""
    if runs * threads > len(cores):
        raise ValueError(f"{runs} runs x {threads} threads need {runs * threads} cores; {len(cores)} are usable")
    return [tuple(cores[i * threads : (i + 1) * threads]) for i in range(runs)]


def _serve(cores: tuple[int, ...], conn, function_bytes: bytes) -> None:
    """A worker: pin to `cores`, then run each task received until told to stop (None)."""
    use_cores(cores)  # before anything starts JAX's backend
    function = cloudpickle.loads(function_bytes)
    # Between tasks a forwarded preemption signal must not kill the worker (it has nothing to save);
    # during a run the trainer's own handler takes over and checkpoints.
    for sig in FORWARDED:
        signal.signal(sig, lambda *_: None)
    while (task := cloudpickle.loads(conn.recv_bytes())) is not None:
        key, payload = task
        try:
            outcome = ("done", function(payload))
        except SystemExit as stop:
            outcome = ("exit", stop.code if isinstance(stop.code, int) else 1)
        except BaseException:  # noqa: BLE001 - reported to the parent, which records the task as failed
            outcome = ("error", traceback.format_exc())
        try:
            message = cloudpickle.dumps((key, outcome))
        except Exception as err:  # noqa: BLE001 - a value that cannot be pickled is reported, not lost
            message = cloudpickle.dumps((key, ("error", f"the task's result could not be sent back: {err!r}")))
        conn.send_bytes(message)


@dataclass
class _Worker:
    cores: tuple[int, ...]
    process: Any
    conn: Any
    task: Any = None  # the key of the task in flight


class Pool:
    """One worker per core group, running `function(payload)` for each task; `forward`: pass preemption
    signals that reach this process on to the workers while tasks run."""

    def __init__(self, groups: Sequence[tuple[int, ...]], function: Callable[[Any], Any], forward: bool = False):
        self._ctx = get_context("spawn")
        self._forwarding = forward  # pass preemption signals on to the workers (a sweep's runs checkpoint)
        self._function = cloudpickle.dumps(function)
        self.workers = [self._start(cores) for cores in groups]
        self.signal: int | None = None  # a preemption signal received while the pool ran

    def _start(self, cores: tuple[int, ...]) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_serve, args=(cores, child, self._function), daemon=True)
        process.start()
        child.close()
        return _Worker(cores, process, parent)

    def run(self, tasks: Sequence[tuple[Any, Any]], on_outcome: Callable[[Any, tuple], None]) -> None:
        """Run (key, payload) tasks in order on the next free worker; `on_outcome(key, outcome)` as each ends.

        A task that asks to exit, or a preemption signal (passed on to every worker), stops the handing
        out of new tasks; the tasks in flight finish (a preempted run checkpoints first). A worker that
        dies is replaced, and its task's outcome is ("lost", exit code). After a SIGUSR2, once the runs
        have checkpointed, the handler that was there before (submitit's requeue) gets it too."""
        todo, stopping = list(tasks), False
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED} if self._forwarding else {}
        try:
            self._serve_all(todo, on_outcome, stopping)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.signal == signal.SIGUSR2 and callable(previous.get(signal.SIGUSR2)):
            previous[signal.SIGUSR2](self.signal, None)

    def _serve_all(self, todo: list, on_outcome: Callable[[Any, tuple], None], stopping: bool) -> None:
        while True:
            for worker in self.workers:
                if worker.task is None and todo and not (stopping or self.signal):
                    worker.task, payload = todo.pop(0)
                    worker.conn.send_bytes(cloudpickle.dumps((worker.task, payload)))
            busy = [w for w in self.workers if w.task is not None]
            if not busy:
                return
            ready = connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
            for worker in busy:
                outcome = self._collect(worker, ready)
                if outcome is not None:
                    key, worker.task = worker.task, None
                    stopping = stopping or outcome[0] == "exit"
                    on_outcome(key, outcome)

    def _collect(self, worker: _Worker, ready: list) -> tuple | None:
        """The outcome of `worker`'s task if it ended (replacing the worker if it died), else None."""
        if worker.conn in ready:
            try:
                return cloudpickle.loads(worker.conn.recv_bytes())[1]
            except (EOFError, OSError):
                pass  # it died while sending: handled below
        elif worker.process.sentinel not in ready:
            return None
        worker.process.join()
        self.workers[self.workers.index(worker)] = self._start(worker.cores)
        return ("lost", worker.process.exitcode)

    def _forward(self, signum, frame) -> None:
        """Pass a preemption signal on to every worker: its run checkpoints and stops."""
        self.signal = signum
        for worker in self.workers:
            if worker.process.is_alive():
                os.kill(worker.process.pid, signum)

    def close(self) -> None:
        """Tell every worker to stop and wait for it."""
        for worker in self.workers:
            if worker.process.is_alive():
                with contextlib.suppress(OSError):  # it died meanwhile: nothing to tell it
                    worker.conn.send_bytes(cloudpickle.dumps(None))
        for worker in self.workers:
            worker.process.join(timeout=60)
            if worker.process.is_alive():
                worker.process.terminate()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
